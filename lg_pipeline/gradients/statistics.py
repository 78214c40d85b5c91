"""The engine's per-example gradient statistics, as a consumer of the capture: two schedules, same numbers.

- `in-hook` (the default on CUDA): each target's statistics, for every example of the batch at
  once, are computed inside the backward hook as its Δ arrives (on a side stream on CUDA, so the
  backward's kernels keep running), and the Δ is dropped: at most one layer's Δ is alive. Right
  on an accelerator, where the small factorisations are fast and memory is what runs out.
- `after-backward` (the default on a CPU): the hooks keep X and Δ; once the backward is done,
  jobs (one example, a run of consecutive layers) run on `workers` threads, each single-threaded,
  longest first so that every worker stays busy until the last. On a CPU the small QRs and
  eigensolves (a few hundred rows) scale badly across threads, so one per core beats every core
  on one: the LAPACK calls stop waiting on each other.
Either way the matrices of one shape go through `spectra.stacked_factor_stats` together, and
layers fed the same input tensor (q/k/v, gate/up) share one QR of it. An example's last position
predicts nothing and no position attends to it, so its Δ is exactly 0: it is left out, which
changes no entry of G and makes the rank rule exact (σ_min = 0 whenever the T−1 positions with a
gradient are fewer than min(out, in)).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any, Literal

from lg_pipeline.errors import InputError
from lg_pipeline.gradients import spectra
from lg_pipeline.gradients.backends import is_cuda, join_side_stream, side_stream
from lg_pipeline.gradients.capture import Factors
from lg_pipeline.gradients.targets import Target

Schedule = Literal["after-backward", "in-hook"]
SCHEDULES: tuple[str, ...] = ("after-backward", "in-hook")
N_STATS = 9  # len(lg_pipeline.schema.MATRIX_STATS); a stat vector is in that column order
# Jobs per worker in the after-backward schedule: enough that the last one leaves little idle time.
JOBS_PER_WORKER = 8


def default_schedule(device: Any) -> str:
    """In the hook on CUDA (bounded memory), after the backward on a CPU (one worker per core)."""
    return "in-hook" if is_cuda(device) else "after-backward"


def default_workers(device: Any) -> int:
    """Threads for the after-backward schedule: one per torch thread on a CPU, one on an accelerator."""
    import torch

    return max(1, torch.get_num_threads()) if not is_cuda(device) else 1


def check_schedule(schedule: str) -> str:
    if schedule not in SCHEDULES:
        raise InputError(f"stats schedule '{schedule}' is not one of {', '.join(SCHEDULES)}")
    return schedule


class MatrixStatistics:
    """Statistics of every target's gradient for every example of one batch with the given token counts.

    `on_matrices(done, total)` hears how many (matrix, example) statistics are complete as they complete (in the
    hook, or as each after-backward job ends): the run's progress inside a batch.
    """

    def __init__(
        self,
        targets: Sequence[Target],
        lengths: Sequence[int],
        schedule: str = "after-backward",
        workers: int = 1,
        on_matrices: Callable[[int, int], None] | None = None,
    ):
        self.targets, self.schedule, self.workers = list(targets), check_schedule(schedule), workers
        self.on_matrices = on_matrices
        self._done = 0
        self.rows = [n - 1 for n in lengths]  # positions whose Δ can be non-zero (all but the last)
        self._results: dict[int, Any] = {}  # target index -> (batch, N_STATS)
        self._kept: dict[int, Factors] = {}
        self._r_cache: dict[tuple, Any] = {}
        self._device: Any = None

    def on_factors(self, factors: Factors) -> None:
        self._device = factors.x.device
        if self.schedule == "after-backward":
            self._kept[factors.index] = factors
            return
        with side_stream(self._device, (factors.x, factors.delta)):
            self._results[factors.index] = spectra.stacked_factor_stats(
                factors.x, factors.delta, self.rows, self._shared_r(factors)
            )
        self._count(len(self.rows))

    def finish(self) -> None:
        if self.schedule == "in-hook":
            join_side_stream(self._device)
            self._r_cache.clear()
            return
        kept, self._kept = self._kept, {}
        table: dict[tuple[int, int], Any] = {}
        each = lambda done: self._count(len(done))  # noqa: E731
        for done in on_single_threaded_workers(run_job, self.jobs(kept), self.workers, each):
            table.update(done)
        import torch

        for index in {i for i, _ in table}:
            self._results[index] = torch.stack([table[index, b] for b in range(len(self.rows))])

    def _count(self, matrices: int) -> None:
        self._done += matrices
        if self.on_matrices is not None:
            self.on_matrices(self._done, len(self.targets) * len(self.rows))

    def table(self) -> Any:
        """(targets, batch, N_STATS) once the backward is over; every target must have had its gradient."""
        import torch

        if len(self._results) != len(self.targets):
            raise RuntimeError(f"gradients reached {len(self._results)} of {len(self.targets)} target layers")
        return torch.stack([self._results[i] for i in range(len(self.targets))])

    def _shared_r(self, factors: Factors) -> Callable[[list[int], int], Any]:
        """R factors of this input for the picked examples, computed once for all layers it feeds."""

        def r_of(picked: list[int], width: int) -> Any:
            key = (factors.source, tuple(picked), width)
            if key not in self._r_cache:
                self._r_cache[key] = spectra.r_factor(factors.x[picked, :width])
            return self._r_cache[key]

        return r_of

    def jobs(self, kept: dict[int, Factors]) -> list[Job]:
        """(example, a run of consecutive layers) per job, the longest first."""
        layers: dict[int, list[int]] = {}
        for index in sorted(kept):
            layers.setdefault(self.targets[index].layer, []).append(index)
        runs = list(layers.values())
        per_example = min(len(runs), max(1, math.ceil(JOBS_PER_WORKER * self.workers / max(1, len(self.rows)))))
        size = math.ceil(len(runs) / per_example) if runs else 1
        chunks = [[i for run in runs[s : s + size] for i in run] for s in range(0, len(runs), size)]
        jobs = [Job(b, rows, [kept[i] for i in chunk]) for b, rows in enumerate(self.rows) for chunk in chunks]
        return sorted(jobs, key=lambda job: -job.rows * len(job.factors))


class Job:
    """One example's statistics for some targets (after the backward): the same-shape ones as one stack."""

    def __init__(self, example: int, rows: int, factors: list[Factors]):
        self.example, self.rows, self.factors = example, rows, factors


def run_job(job: Job) -> dict[tuple[int, int], Any]:
    """(target, example) -> stat vector for one job, one `spectra.stacked_factor_stats` call per shape."""
    out: dict[tuple[int, int], Any] = {}
    for group, x, delta, rows, r_of in job_stacks(job):
        stats = spectra.stacked_factor_stats(x, delta, rows, r_of)
        out.update({(f.index, job.example): row for f, row in zip(group, stats, strict=True)})
    return out


def job_stacks(job: Job) -> Iterator[tuple[list[Factors], Any, Any, list[int], Callable[[list[int], int], Any]]]:
    """(targets' factors, X stack, Δ stack, rows, shared R factors) per shape of one job (grad mode off)."""
    import torch

    b, rows = job.example, job.rows
    shapes: dict[tuple[int, int], list[Factors]] = {}
    for f in job.factors:
        shapes.setdefault((f.x.shape[-1], f.delta.shape[-1]), []).append(f)
    r_cache: dict[tuple[int, int], Any] = {}

    def r_of(group: list[Factors]) -> Callable[[list[int], int], Any]:
        def shared(picked: list[int], width: int) -> Any:
            missing = {group[i].source: group[i] for i in picked if group[i].source not in r_cache}
            if missing:
                stacked = torch.stack([f.x[b, :width] for f in missing.values()])
                r_cache.update(zip(missing, spectra.r_factor(stacked), strict=True))
            return torch.stack([r_cache[group[i].source] for i in picked])

        return shared

    with torch.no_grad():  # grad mode is per thread
        for group in shapes.values():
            x = torch.stack([f.x[b, :rows] for f in group])
            delta = torch.stack([f.delta[b, :rows] for f in group])
            yield group, x, delta, [rows] * len(group), r_of(group)


def on_single_threaded_workers(
    fn: Callable[[Any], Any], jobs: list, workers: int, each: Callable[[Any], None] | None = None
) -> list:
    """map(fn, jobs) on `workers` threads, torch limited to one thread each (one worker: this thread).

    `each(result)` is called on this thread as each job finishes (in the order they finish), for progress.

    In a process whose main thread has not run an OpenMP region yet, a worker's setting is
    the process-wide default: the caller's is restored. (numpy's BLAS, which the eigensolves
    use on a CPU, is held to one thread for the whole batch by `single_threaded_blas`.)
    """
    import torch

    if not jobs:
        return []
    each = each or (lambda _result: None)
    if workers <= 1:
        results = []
        for job in jobs:
            results.append(fn(job))
            each(results[-1])
        return results
    saved = torch.get_num_threads()
    try:
        with ThreadPoolExecutor(workers, initializer=torch.set_num_threads, initargs=(1,)) as pool:
            futures = [pool.submit(fn, job) for job in jobs]
            for future in as_completed(futures):
                each(future.result())
            return [future.result() for future in futures]
    finally:
        torch.set_num_threads(saved)


def single_threaded_blas(device: Any) -> contextlib.AbstractContextManager:
    """On a CPU, numpy's BLAS (OpenBLAS: the Grams and eigensolves of `backends`) on one thread.

    Its calls come from one-threaded workers or from inside torch's backward; OpenBLAS threads of
    its own would compete with both (and spin after each call). Process-wide while it is held.
    """
    from threadpoolctl import threadpool_limits

    return contextlib.nullcontext() if is_cuda(device) else threadpool_limits(1, user_api="blas")
