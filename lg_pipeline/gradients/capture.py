"""Hooks that keep each target layer's input X and output gradient Δ, and turn them into statistics.

Two schedules, same numbers:
- in the hook (`workers=0`): each target's statistics are computed as its output gradient
  arrives, so at most one layer's Δ is alive at a time. Right on CUDA, where the small
  factorisations are fast and memory is what runs out.
- after the backward (`workers>0`): the hooks only keep X and Δ; once the backward is done
  the per-example jobs run on `workers` threads, each single-threaded. On a CPU the
  small QRs and eigensolves (a few hundred rows) scale badly across threads, so one per
  core beats every core on one: the LAPACK calls stop waiting on each other.
Layers fed the same input tensor (q/k/v, gate/up) share one QR of it in both schedules.
An example's last position predicts nothing and no position attends to it, so its Δ is
exactly 0: it is left out, which changes no entry of G and makes the rank rule exact
(σ_min = 0 whenever the T−1 positions with a gradient are fewer than min(out, in)).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from lg_pipeline.gradients.spectra import factor_stats, r_factor
from lg_pipeline.gradients.targets import Target

# One job: an example's slice of one layer input, and the (target index, example, Δ) fed by it.
Job = tuple[Any, list[tuple[int, int, Any]]]


class FactorCapture:
    """Register on `model` for one forward/backward of a batch with the given token counts."""

    def __init__(self, model: Any, targets: list[Target], lengths: list[int], workers: int = 0):
        self.lengths = lengths
        self.rows = [n - 1 for n in lengths]  # positions whose Δ can be non-zero (all but the last)
        self.workers = workers
        self.stats: dict[tuple[int, int], Any] = {}  # (target index, example) -> stat vector
        self._jobs: dict[tuple[int, int, int], Job] = {}  # (input id, input version, example) -> job
        self._r_cache: dict[tuple[int, int, int], Callable[[], Any]] = {}
        # Inputs are keyed by id(): hold them so no freed tensor's id is reused by a later layer's input.
        self._inputs: list[Any] = []
        modules = dict(model.named_modules())
        self._handles = [
            modules[t.module_path].register_forward_hook(self._forward_hook(i)) for i, t in enumerate(targets)
        ]
        # No parameter requires a gradient: make the graph start at the embeddings.
        self._handles.append(
            model.get_input_embeddings().register_forward_hook(lambda m, a, out: out.requires_grad_(True))
        )

    def _forward_hook(self, index: int) -> Callable:
        def hook(module, args, output):
            self._inputs.append(args[0])
            x = self._per_example(args[0].detach())
            key = (id(args[0]), args[0]._version)
            output.register_hook(lambda grad: self._on_grad(index, x, key, grad))

        return hook

    def _per_example(self, t: Any) -> Any:
        """(batch, width, features) whatever the layer saw: OPT-style blocks flatten tokens to 2-D."""
        return t.reshape(len(self.lengths), -1, t.shape[-1])

    def _on_grad(self, index: int, x: Any, key: tuple[int, int], grad: Any) -> None:
        import torch

        grad = self._per_example(grad)
        for b, n in enumerate(self.rows):
            if self.workers:
                self._jobs.setdefault((*key, b), (x[b, :n], []))[1].append((index, b, grad[b, :n]))
                continue
            xb = x[b, :n]
            shared_r = self._r_cache.setdefault((*key, b), _once(lambda xb=xb: r_factor(xb)))
            with torch.no_grad():
                self.stats[index, b] = factor_stats(xb, grad[b, :n], shared_r)

    def finish(self) -> None:
        """Run the jobs kept by the hooks (after-backward schedule); a no-op for the in-hook one."""
        jobs, self._jobs = list(self._jobs.values()), {}
        for done in _on_single_threaded_workers(_run_job, jobs, self.workers):
            self.stats.update(done)

    def close(self) -> None:
        for h in self._handles:
            h.remove()
        self._r_cache.clear()
        self._jobs.clear()
        self._inputs.clear()


def _run_job(job: Job) -> dict[tuple[int, int], Any]:
    """Statistics of every target fed by one input slice, sharing the input's R factor."""
    import torch

    x, items = job
    shared_r = _once(lambda: r_factor(x))
    with torch.no_grad():  # grad mode is per thread
        return {(index, b): factor_stats(x, delta, shared_r) for index, b, delta in items}


def _once(fn: Callable[[], Any]) -> Callable[[], Any]:
    """fn, computed on the first call only."""
    box: list[Any] = []
    return lambda: box[0] if box else (box.append(fn()) or box[0])


def _on_single_threaded_workers(fn: Callable[[Any], Any], jobs: list, workers: int) -> list:
    """map(fn, jobs) on `workers` threads, torch limited to one thread each.

    In a process whose main thread has not run an OpenMP region yet, a worker's setting is
    the process-wide default: the caller's is restored. (numpy's BLAS, which the eigensolves
    use on a CPU, is held to one thread for the whole batch by `single_threaded_blas`.)
    """
    import torch

    if not jobs:
        return []
    saved = torch.get_num_threads()
    try:
        with ThreadPoolExecutor(workers, initializer=torch.set_num_threads, initargs=(1,)) as pool:
            return list(pool.map(fn, jobs))
    finally:
        torch.set_num_threads(saved)


def single_threaded_blas(device: Any) -> contextlib.AbstractContextManager:
    """On a CPU, numpy's BLAS (OpenBLAS: `spectra.singular_values`' Grams and eigensolves) on one thread.

    Its calls come from one-threaded workers or from inside torch's backward; OpenBLAS threads of
    its own would compete with both (and spin after each call). Process-wide while it is held.
    """
    from threadpoolctl import threadpool_limits

    cpu = getattr(device, "type", str(device)) == "cpu"
    return threadpool_limits(1, user_api="blas") if cpu else contextlib.nullcontext()


def default_workers(device: Any) -> int:
    """CPU with several torch threads: one worker per thread, after the backward; otherwise in the hook."""
    import torch

    threads = torch.get_num_threads()
    return threads if getattr(device, "type", str(device)) == "cpu" and threads > 1 else 0
