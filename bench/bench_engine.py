"""Benchmark the gradient engine: `core` vs the study's `full-svd`, and what `core` adds to a plain backward.

Four ratios, each from timings taken side by side in this one run (never compared
with numbers from another machine or run):
1. throughput of `core` (batched) over `full-svd` on Detailed-CoT-length examples;
2. overhead of `core` over its floor, `core / floor − 1` (the floor: the same forward and
   backward with the same chunked loss, no weight gradients, no statistics);
3. `(core − floor) / spectra alone`: the spectra alone are only the exact singular values of
   the same examples' captured factors, on the same workers, in the same stacks; what `core`
   spends beyond its floor and them is engineering (forming G for max/min, copies, idle workers).
   Forming G alone (the GEMM its exact max/min need, same stacks) is printed beside it;
4. one 4096×4096 gradient from T=512 tokens: `factor_stats(X, Δ)` vs `matrix_stats(Δᵀ X)`.

`full-svd` is the study's call, `torch.linalg.svd(grad)`, which also computes the
singular vectors it then discards; ratios 1 and 3 are printed against `svdvals` too, the
same values without the vectors, a stronger baseline than the study's. `core` is timed
with its statistics after the backward on one single-threaded worker per torch thread
(the CPU default) and in the hook (the CUDA default). A last pass, `core` without its
statistics, is the least any exact engine must spend: full-svd / that floor is the
ceiling of ratio 1.

The machine may be shared, so the runners alternate batch by batch and each batch is
timed `--repeats` times; the best and the median are printed (sums over batches of each
batch's best and median): load from elsewhere then slows them alike instead of skewing
one. The load average is printed. No target is asserted.

    .venv/bin/python bench/bench_engine.py [--n-examples 4] [--batch-size 4] [--repeats 2] [--skip-matrix]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RELEASE = ROOT.parent / "shared/layer_gradient_release/cot_500"
RELEASE_FILES = {"detailed": "gsm8k_train_with_cot_gpt4o.json", "none": "gsm8k_train_no_cot.json"}
RUNNERS = ("core", "core-in-hook", "full-svd", "full-svdvals", "bare", "floor", "spectra", "form-g")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m-instruct", help="catalog name or local transformers folder")
    p.add_argument("--cache-dir", default=os.environ.get("LG_CACHE_DIR", str(ROOT / ".cache")))
    p.add_argument("--n-examples", type=int, default=4, help="examples timed (~25 s each, all runners, best of 2)")
    p.add_argument("--batch-size", type=int, default=4, help="core batch size")
    p.add_argument("--max-length", type=int, default=1024)
    p.add_argument("--targets", default="q,k,v,o")
    p.add_argument("--matrix-size", type=int, default=4096)
    p.add_argument("--matrix-tokens", type=int, default=512)
    p.add_argument("--repeats", type=int, default=2, help="time each batch this often, keep the best")
    p.add_argument("--skip-matrix", action="store_true", help="skip the per-matrix comparison (~25 s)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--runners", default=",".join(RUNNERS), help=f"comma-separated, of {', '.join(RUNNERS)}")
    p.add_argument("--level", choices=sorted(RELEASE_FILES), default="detailed",
                   help="the study's GSM8K file: Detailed CoT (the slow-thinking case) or None CoT (short, T << width)")
    return p.parse_args(argv)


def load_examples(n: int, level: str = "detailed") -> tuple[list[Any], str]:
    """The study's GSM8K examples at `level` if the release is here, else synthetic Detailed-CoT-length ones."""
    from lg_pipeline.example import Example, example_from_row

    release = RELEASE / RELEASE_FILES[level]
    if release.is_file():
        rows = json.loads(release.read_text())[:n]
        return [example_from_row(r, f"{release.name} row {i}") for i, r in enumerate(rows)], str(release)
    if level != "detailed":
        raise SystemExit(f"--level {level} needs the study's release at {release}")
    step = "Next, we multiply the {i} boxes by 12 eggs each, giving {j} eggs, and subtract the {i} broken ones. "
    response = lambda k: "".join(step.format(i=i + k, j=12 * (i + k)) for i in range(18))  # noqa: E731
    examples = [Example(f"synthetic-{k}", f"Question {k}: how many eggs are left?", response(k)) for k in range(n)]
    return examples, "synthetic (~400-token responses)"


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def best(fn: Callable[[], Any], repeats: int, warm_up: bool = True) -> float:
    """The least of `repeats` timings, after one untimed call (first calls pay allocator growth, kernel choice)."""
    if warm_up:
        fn()
    return min(timed(fn) for _ in range(repeats))


def engine_run(model: Any, tokenizer: Any, examples: list[Any], config: Any) -> list[Any]:
    from lg_pipeline.gradients.engine import compute_gradient_stats

    results = list(compute_gradient_stats(model, tokenizer, examples, config))
    bad = [r for r in results if r.status != "ok"]
    if bad:
        raise SystemExit(f"benchmark example not ok: {bad[0].example_id}: {bad[0].status} {bad[0].reason}")
    return results


def _batch_tensors(model: Any, tokenizer: Any, examples: list[Any], chat: bool, max_length: int) -> tuple:
    """The engine's own padding, labels and kept logit positions, so every runner sees the same batch."""
    from lg_pipeline.gradients.encoding import encode
    from lg_pipeline.gradients.engine import pad_token_id, positions_with_loss
    from lg_pipeline.gradients.padding import encoded_batch

    batch = encoded_batch([encode(tokenizer, e, chat, max_length) for e in examples], pad_token_id(tokenizer),
                          next(model.parameters()).device)
    return batch.ids, batch.mask, batch.labels, positions_with_loss(model, batch.labels)


def engine_passes(model: Any, tokenizer: Any, examples: list[Any], chat: bool, args: argparse.Namespace) -> list:
    """The examples grouped as `core` groups them into forward/backward passes (its token budget included)."""
    from lg_pipeline.gradients.encoding import encode
    from lg_pipeline.gradients.engine import default_token_budget, fits_one_pass, pass_groups

    budget = default_token_budget(next(model.parameters()).device)
    pairs = [(encode(tokenizer, e, chat, args.max_length), e) for e in examples]
    example_of = {id(enc): e for enc, e in pairs}  # `pairs` keeps every encoding alive, so ids stay unique

    def fits(group: list) -> bool:
        return fits_one_pass(group, args.batch_size, budget)

    return [[example_of[id(enc)] for enc in group] for group in pass_groups([enc for enc, _ in pairs], fits)]


def bare_step(model: Any, tensors: tuple) -> None:
    """What any training step does: forward with the model's loss, backward into every parameter's .grad."""
    from lg_pipeline.gradients.backends import synchronize

    ids, mask, labels, _ = tensors
    model(input_ids=ids, attention_mask=mask, labels=labels, use_cache=False).loss.backward()
    model.zero_grad(set_to_none=True)
    synchronize(ids.device)


def floor_step(model: Any, tensors: tuple, consumers: tuple = (), targets: tuple = ()) -> None:
    """`core` without its statistics: no weight gradient, the graph starting at the embeddings, the same loss.

    No exact engine can cost less (every target needs its output gradient), so
    full-svd time / this time bounds the throughput ratio `core` can reach. With `targets` and
    `consumers`, the same pass hands their factors to them (what the spectra-alone runner keeps).
    """
    from lg_pipeline.gradients.backends import synchronize
    from lg_pipeline.gradients.capture import Capture
    from lg_pipeline.gradients.loss import response_losses

    ids, mask, labels, keep = tensors
    with Capture(model, targets, len(ids), consumers) as capture:
        capture.backward(response_losses(model, ids, mask, labels, keep).sum())
    synchronize(ids.device)


def stacks_alone(model: Any, tensors: tuple, targets: list, stack: Callable) -> float:
    """Seconds of `stack` alone over the after-backward schedule's jobs of one pass, on the engine's workers.

    The pass itself (capturing the factors) is not timed; the jobs are the ones `core` runs.
    """
    from lg_pipeline.gradients.backends import synchronize
    from lg_pipeline.gradients.capture import KeptFactors
    from lg_pipeline.gradients.statistics import (
        MatrixStatistics,
        default_workers,
        job_stacks,
        on_single_threaded_workers,
        single_threaded_blas,
    )

    device = tensors[0].device
    kept = KeptFactors()
    floor_step(model, tensors, (kept,), tuple(targets))
    lengths = tensors[1].sum(1).tolist()
    workers = default_workers(device)
    jobs = MatrixStatistics(targets, lengths, "after-backward", workers).jobs(kept.factors)
    with single_threaded_blas(device):
        synchronize(device)
        began = time.perf_counter()
        on_single_threaded_workers(lambda job: [stack(*args[1:]) for args in job_stacks(job)], jobs, workers)
        synchronize(device)
        return time.perf_counter() - began


def form_g(x: Any, delta: Any, rows: Any, r_of: Any = None) -> list:
    """Only what exact max/min of G need: G itself, and one pass over it."""
    import torch

    return [torch.aminmax(g) for g in delta.float().mT @ x.float()]


def runners(
    model: Any, tokenizer: Any, args: argparse.Namespace, chat: bool, only: tuple[str, ...] | None = None
) -> dict[str, Callable[[list], list]]:
    """name -> run one batch of examples (returning engine results, or [] for the plain passes); `only` picks some."""
    from lg_pipeline.gradients.engine import EngineConfig
    from lg_pipeline.gradients.spectra import stacked_singular_values
    from lg_pipeline.gradients.targets import parse_suffixes

    targets = parse_suffixes(args.targets)
    core = EngineConfig("core", targets, args.batch_size, args.max_length, chat, stats_schedule="after-backward")
    in_hook = EngineConfig("core", targets, args.batch_size, args.max_length, chat, stats_schedule="in-hook")
    full = EngineConfig("full-svd", targets, 1, args.max_length, chat)

    def plain(step: Callable[[Any, tuple], Any]) -> Callable[[list], list]:
        """`step` over the passes `core` would make of the batch, so both spend the same padding."""

        def run(batch: list) -> list:
            for group in engine_passes(model, tokenizer, batch, chat, args):
                step(model, _batch_tensors(model, tokenizer, group, chat, args.max_length))
            return []

        return run

    def alone(stack: Callable) -> Callable[[list], float]:
        """Seconds of `stack` alone on the factors of `core`'s passes (a float: the runner times itself)."""
        from lg_pipeline.gradients.targets import find_targets

        found = find_targets(model, targets)

        def run(batch: list) -> float:
            return sum(stacks_alone(model, _batch_tensors(model, tokenizer, group, chat, args.max_length), found, stack)
                       for group in engine_passes(model, tokenizer, batch, chat, args))

        return run

    every = {
        "core": lambda batch: engine_run(model, tokenizer, batch, core),
        "core-in-hook": lambda batch: engine_run(model, tokenizer, batch, in_hook),
        "full-svd": lambda batch: engine_run(model, tokenizer, batch, full),
        "full-svdvals": lambda batch: without_vectors(lambda: engine_run(model, tokenizer, batch, full)),
        "bare": plain(bare_step),
        "floor": plain(floor_step),
        "spectra": alone(stacked_singular_values),
        "form-g": alone(form_g),
    }
    return {name: fn for name, fn in every.items() if only is None or name in only}


def without_vectors(fn: Callable[[], Any]) -> Any:
    """Run the engine's full-svd with `svdvals` in place of the study's `torch.linalg.svd`."""
    from functools import partial

    from lg_pipeline.gradients import engine
    from lg_pipeline.gradients.spectra import matrix_stats

    engine.matrix_stats = partial(matrix_stats, vectors=False)
    try:
        return fn()
    finally:
        engine.matrix_stats = matrix_stats


def time_engine(
    model: Any, tokenizer: Any, examples: list[Any], args: argparse.Namespace, chat: bool,
    only: tuple[str, ...] | None = None,
) -> dict:
    """Seconds per runner over the same batches, runners alternating batch by batch: for each runner the sum of
    each batch's best of `repeats` (`name`) and of each batch's median (`name@median`)."""
    import statistics

    run = runners(model, tokenizer, args, chat, only)
    seconds = dict.fromkeys([*run, *(f"{name}@median" for name in run)], 0.0)
    rows: dict[str, list] = {name: [] for name in run}
    for start in range(0, len(examples), args.batch_size):
        batch = examples[start : start + args.batch_size]
        taken: dict[str, list[float]] = {name: [] for name in run}
        for repeat in range(args.repeats):
            for name, fn in run.items():
                began = time.perf_counter()
                out = fn(batch)
                taken[name].append(out if isinstance(out, float) else time.perf_counter() - began)
                rows[name] += out if repeat == 0 and isinstance(out, list) else []
        for name in run:
            seconds[name] += min(taken[name])
            seconds[f"{name}@median"] += statistics.median(taken[name])
    if "core" in rows and "full-svd" in rows:
        seconds["agreement"] = max_relative_difference(rows["core"], rows["full-svd"])
    return seconds


def max_relative_difference(a: list[Any], b: list[Any]) -> float:
    """Largest relative difference of nuclear norm, σ_max and Frobenius norm between two runs' rows."""
    pairs = zip((r for res in a for r in res.rows), (r for res in b for r in res.rows), strict=True)
    cols = ("nuclear_norm", "sigma_max", "frobenius_norm")
    return max(abs(x[c] - y[c]) / abs(y[c]) for x, y in pairs for c in cols if y[c])


def time_matrix(size: int, tokens: int, device: str = "cpu") -> dict:
    """One size×size gradient from `tokens` tokens: factors vs full SVD of the materialised matrix.

    factor_stats is timed before and after the (long) SVDs, best of both, and split into
    its two parts: forming G (only for its max and min entries) and the spectrum. The
    SVDs (the study's call, then svdvals) are timed once each. Every timing waits for the device.
    """
    import torch

    from lg_pipeline.gradients.backends import synchronize
    from lg_pipeline.gradients.spectra import factor_stats, matrix_stats, r_factor, singular_values

    def synced(fn: Callable[[], Any]) -> Callable[[], Any]:
        return lambda: (fn(), synchronize(device))[0]

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(tokens, size, generator=gen).to(device)
    delta = (torch.randn(tokens, size, generator=gen) * 1e-3).to(device)

    before = best(synced(lambda: factor_stats(x, delta)), 3)
    result: dict = {}
    full = timed(synced(lambda: result.setdefault("ref", matrix_stats(delta.T @ x))))
    svdvals = timed(synced(lambda: matrix_stats(delta.T @ x, vectors=False)))
    times = {
        "factor": min(before, best(synced(lambda: factor_stats(x, delta)), 3)),
        "full": full,
        "svdvals": svdvals,
        "form_g": best(synced(lambda: torch.aminmax(delta.T @ x)), 3),
        "spectrum": best(synced(lambda: singular_values(delta.T @ r_factor(x).T)), 3),
    }
    got = factor_stats(x, delta)
    times["agreement"] = max(float(abs(got[i] - result["ref"][i]) / abs(result["ref"][i])) for i in (0, 1, 3))
    return times


def warm_up(
    model: Any, tokenizer: Any, example: Any, args: argparse.Namespace, chat: bool, only: tuple[str, ...] | None = None
) -> None:
    """First calls pay one-off costs (allocator growth, kernel selection): keep them out of the timings."""
    from dataclasses import replace

    short = replace(example, response=example.response[:400])
    warm = argparse.Namespace(**{**vars(args), "batch_size": 2, "repeats": 1})
    time_engine(model, tokenizer, [short, short], warm, chat, only)


def report(args: argparse.Namespace, info: dict, eng: dict, mat: dict | None) -> None:
    n, b = info["n_examples"], args.batch_size
    print(f"\nmodel {info['model']}, {n} examples from {info['source']}")
    print(f"tokens per example: mean {info['mean_tokens']:.0f}, max {info['max_tokens']}; targets {args.targets}; "
          f"torch threads {info['threads']}; best of {args.repeats}; load average {info['load']} -> "
          f"{os.getloadavg()[0]:.2f}")
    print(f"\n{'measurement':<52}{'best s':>10}{'median s':>10}{'examples/s':>12}")
    lines = (
        (f"core (batch {b}, stats after the backward)", "core"),
        (f"core (batch {b}, stats in the hook)", "core-in-hook"),
        ("full-svd (batch 1, the study's method)", "full-svd"),
        ("full-svd with svdvals (no singular vectors)", "full-svdvals"),
        ("bare forward+backward (core's passes, all .grad)", "bare"),
        ("core's floor: fwd+bwd, no weight grads, no stats", "floor"),
        ("spectra alone (same factors, same workers)", "spectra"),
        ("forming G for max/min alone (same stacks, workers)", "form-g"),
    )
    for label, key in lines:
        if key in eng:
            print(f"{label:<52}{eng[key]:>10.2f}{eng[key + '@median']:>10.2f}{n / eng[key]:>12.3f}")
    if mat:
        shape = f"{args.matrix_size}x{args.matrix_size}, T={args.matrix_tokens}"
        for label, key in ((f"factor_stats  {shape}", "factor"), ("  of which: forming G for max/min", "form_g"),
                           ("  of which: spectrum (QR of X, Δᵀ R_xᵀ, eigvalsh)", "spectrum"),
                           ("matrix_stats(Δᵀ X)  (the study's torch.linalg.svd)", "full"),
                           ("matrix_stats(Δᵀ X)  (svdvals)", "svdvals")):
            print(f"{label:<52}{mat[key]:>10.3f}")
    print(f"\n{'ratio':<52}{'measured':>10}{'target':>12}")
    nan = float("nan")
    e = {k: eng.get(k, nan) for k in (*RUNNERS, *(f"{r}@median" for r in RUNNERS))}
    overhead_target = "<= 12%" if args.level == "none" else ""
    rows = (
        ("core throughput / full-svd throughput", e["full-svd"] / e["core"], "x", ">= 1.4x"),
        ("  (against svdvals)", e["full-svdvals"] / e["core"], "x", ""),
        ("  (ceiling: full-svd / core floor)", e["full-svd"] / e["floor"], "x", ""),
        ("core / floor - 1 (the overhead of the statistics)", e["core"] / e["floor"] - 1, "%", overhead_target),
        ("  (medians)", e["core@median"] / e["floor@median"] - 1, "%", ""),
        ("(core - floor) / spectra alone", (e["core"] - e["floor"]) / e["spectra"], "x",
         "<= 1.25x" if args.level == "detailed" else ""),
        ("  (medians)", (e["core@median"] - e["floor@median"]) / e["spectra@median"], "x", ""),
        ("  (forming G alone / floor: the part of max/min)", e["form-g"] / e["floor"], "%", ""),
        ("  (core / bare forward+backward - 1, all .grad)", e["core"] / e["bare"] - 1, "%", ""),
    )
    for label, value, unit, target in rows:
        if value == value:  # runners left out with --runners give NaN: no line
            shown = f"{value:>9.1%}" if unit == "%" else f"{value:>9.2f}x"
            print(f"{label:<52}{shown}{target:>12}")
    if mat:
        print(f"{'matrix_stats time / factor_stats time':<52}{mat['full'] / mat['factor']:>9.0f}x{'>= 100x':>12}")
        print(f"{'  (against svdvals)':<52}{mat['svdvals'] / mat['factor']:>9.0f}x")
        print(f"{'  (spectrum alone: matrix_stats / spectrum)':<52}{mat['full'] / mat['spectrum']:>9.0f}x")
    agreement = f"engine {eng.get('agreement', nan):.1e}" + (f", matrix {mat['agreement']:.1e}" if mat else "")
    print(f"\nagreement, max relative difference of nuclear norm, σ_max, Frobenius: {agreement}")


def main(argv: list[str] | None = None) -> int:
    import torch

    from data_sources.models.catalog import open_model
    from lg_pipeline.gradients.encoding import encode

    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    load = f"{os.getloadavg()[0]:.2f}"
    model, tokenizer, spec = open_model(args.model, cache_dir=args.cache_dir)
    examples, source = load_examples(args.n_examples, args.level)
    lengths = [encode(tokenizer, e, spec.chat, args.max_length).n_tokens for e in examples]
    only = tuple(r.strip() for r in args.runners.split(",") if r.strip())
    warm_up(model, tokenizer, examples[0], args, spec.chat, only)
    eng = time_engine(model, tokenizer, examples, args, spec.chat, only)
    mat = None if args.skip_matrix else time_matrix(args.matrix_size, args.matrix_tokens)
    info = {"model": spec.display_name, "n_examples": len(examples), "source": source, "load": load,
            "threads": torch.get_num_threads(), "mean_tokens": sum(lengths) / len(lengths), "max_tokens": max(lengths)}
    report(args, info, eng, mat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
