"""Every ratio the engine is held to, from one run, on the study's released examples.

1. Gemma-3-270M (262k vocabulary), AQuA Detailed CoT: `core` at the default batch 4, `core`
   at batch 1 and the study's `full-svd`, each in its own child process so that each peak
   RSS is its own: throughput of `core` over `full-svd`, and peak RSS of batch 4 over batch 1.
   The default batch is cut into passes of at most the device's token budget (1024 padded
   tokens on a CPU); batch 4 in one padded pass, without the budget, is shown beside it.
2. SmolLM2-135M-Instruct, GSM8K Detailed CoT: `core / floor − 1` (the floor: the same
   forward+backward and chunked loss, no weight gradients, no statistics), `(core − floor) /
   spectra alone` (only the exact spectra of the same factors on the same workers) and `core`
   over `full-svd`, runners alternating batch by batch (bench_engine.time_engine).
3. The same on GSM8K None CoT (T ≪ width).
4. One 4096×4096 gradient from T=512: `factor_stats` vs the study's SVD, with the GEMM
   that forming G needs (for its max/min) timed alone: the bound no exact method escapes.

No target is asserted; the targets are printed beside the measurements.

    .venv/bin/python bench/bench_suite.py [--n-examples 4] [--skip gemma,detailed,none,matrix] [--repeats 1]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_engine as be  # noqa: E402  (the runners and timings shared with `make bench`)

RELEASE = be.RELEASE
GEMMA, SMOLLM = "gemma-3-270m", "smollm2-135m-instruct"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-examples", type=int, default=4)
    p.add_argument("--repeats", type=int, default=1, help="time each SmolLM2 batch this often, keep the best")
    p.add_argument("--skip", default="", help="comma-separated: gemma, detailed, none, matrix")
    p.add_argument("--cache-dir", default=os.environ.get("LG_CACHE_DIR", str(be.ROOT / ".cache")))
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)  # internal: one Gemma configuration
    return p.parse_args(argv)


def release_examples(name: str, n: int) -> list[Any]:
    from lg_pipeline.example import example_from_row

    path = RELEASE / name
    if not path.is_file():
        raise SystemExit(f"the study's release is needed: {path}")
    return [example_from_row(r, f"{name} row {i}") for i, r in enumerate(json.loads(path.read_text())[:n])]


# --------------------------------------------------------------------------- 1. Gemma, one process per configuration


def child(spec: dict) -> None:
    """Run one configuration on the examples; print seconds and this process's peak RSS as one JSON line."""
    from data_sources.models.catalog import open_model
    from lg_pipeline.gradients.engine import EngineConfig

    model, tokenizer, model_spec = open_model(GEMMA, cache_dir=spec["cache_dir"])
    examples = release_examples("aqua_train_with_cot_gpt4o.json", spec["n"])
    config = EngineConfig(
        spec["method"], batch_size=spec["batch_size"], chat=model_spec.chat, max_batch_tokens=spec["budget"]
    )
    began = time.perf_counter()
    be.engine_run(model, tokenizer, examples, config)
    seconds = time.perf_counter() - began
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB
    print(json.dumps({"seconds": seconds, "peak_rss_gib": peak_gib}))


def gemma_case(args: argparse.Namespace) -> None:
    configs = {  # label -> (method, batch size, padded tokens per pass; None: the device's default)
        "core, batch 4 (default)": ("core", 4, None),
        "core, batch 1": ("core", 1, None),
        "full-svd (the study's)": ("full-svd", 1, None),
        "core, batch 4 in one padded pass": ("core", 4, 1 << 30),
    }
    got = {}
    for label, (method, batch, budget) in configs.items():
        spec = {"method": method, "batch_size": batch, "budget": budget, "n": args.n_examples}
        spec["cache_dir"] = args.cache_dir
        out = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True)
        if out.returncode:
            raise SystemExit(f"{label}: child failed\n{out.stderr[-2000:]}")
        got[label] = json.loads(out.stdout.strip().splitlines()[-1])
    n = args.n_examples
    print(f"\n1. {GEMMA}, AQuA Detailed CoT, {n} examples (one child process each)")
    print(f"{'configuration':<34}{'seconds':>10}{'examples/s':>12}{'peak RSS GiB':>14}")
    for label, r in got.items():
        print(f"{label:<34}{r['seconds']:>10.1f}{n / r['seconds']:>12.3f}{r['peak_rss_gib']:>14.2f}")
    core, single, full, one_pass = (got[k] for k in configs)
    ratio("core throughput / full-svd throughput", full["seconds"] / core["seconds"], "x", ">= 1.3x")
    ratio("peak RSS batch 4 / batch 1", core["peak_rss_gib"] / single["peak_rss_gib"], "x", "<= 1.5x")
    ratio("  (batch 4 in one padded pass / batch 1)", one_pass["peak_rss_gib"] / single["peak_rss_gib"], "x", "")


# --------------------------------------------------------------------------- 2-3. SmolLM2, in this process


def smollm_case(args: argparse.Namespace, level: str, targets: dict[str, str]) -> None:
    from data_sources.models.catalog import open_model

    model, tokenizer, spec = open_model(SMOLLM, cache_dir=args.cache_dir)
    examples, _ = be.load_examples(args.n_examples, level)
    bench_args = be.parse_args(["--n-examples", str(args.n_examples), "--repeats", str(args.repeats)])
    only = ("core", "floor", "spectra", "full-svd")
    be.warm_up(model, tokenizer, examples[0], bench_args, spec.chat, only)
    eng = be.time_engine(model, tokenizer, examples, bench_args, spec.chat, only)
    n = len(examples)
    print(f"\n{targets['number']}. {SMOLLM}, GSM8K {level} CoT, {n} examples, best of {args.repeats}")
    print(f"{'runner':<34}{'seconds':>10}{'examples/s':>12}")
    for name in only:
        print(f"{name:<34}{eng[name]:>10.2f}{n / eng[name]:>12.3f}")
    ratio("core / floor - 1", eng["core"] / eng["floor"] - 1, "%", targets.get("overhead", ""))
    beyond = (eng["core"] - eng["floor"]) / eng["spectra"]
    ratio("(core - floor) / spectra alone", beyond, "x", targets.get("beyond", ""))
    ratio("core throughput / full-svd throughput", eng["full-svd"] / eng["core"], "x", targets["speed"])
    ratio("  (ceiling: full-svd / floor)", eng["full-svd"] / eng["floor"], "x", "")
    print(f"agreement core vs full-svd, max relative difference: {eng['agreement']:.1e}")


# --------------------------------------------------------------------------- 4. one large matrix


def matrix_case() -> None:
    mat = be.time_matrix(4096, 512)
    print("\n4. one 4096x4096 gradient from T=512 tokens")
    lines = (
        ("factor_stats", "factor"),
        ("  of which forming G (one 4096x512x4096 GEMM) + max/min", "form_g"),
        ("  of which the spectrum (QR of X, M = Δᵀ R_xᵀ, its Gram's eigvalsh)", "spectrum"),
        ("the study's torch.linalg.svd of G", "full"),
        ("svdvals of G", "svdvals"),
    )
    for label, key in lines:
        print(f"{label:<60}{mat[key]:>10.3f} s")
    ratio("study's SVD / factor_stats", mat["full"] / mat["factor"], "x", ">= 100x")
    ratio("  (forming G / factor_stats: the share the one GEMM takes)", mat["form_g"] / mat["factor"], "%", "")
    print(f"agreement, max relative difference: {mat['agreement']:.1e}")


def ratio(label: str, value: float, unit: str, target: str) -> None:
    shown = f"{value:>9.1%}" if unit == "%" else f"{value:>9.2f}x"
    print(f"{label:<60}{shown}{target:>12}")


def main(argv: list[str] | None = None) -> int:
    import torch

    args = parse_args(argv)
    if args.child:
        child(json.loads(args.child))
        return 0
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    print(f"bench_suite {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; torch threads {torch.get_num_threads()}; "
          f"cpu count {os.cpu_count()}; load average {os.getloadavg()[0]:.2f}")
    if "gemma" not in skip:
        gemma_case(args)
    if "detailed" not in skip:
        smollm_case(args, "detailed", {"number": "2", "beyond": "<= 1.25x", "speed": ">= 1.4x"})
    if "none" not in skip:
        smollm_case(args, "none", {"number": "3", "overhead": "<= 12%", "speed": ">= 5x"})
    if "matrix" not in skip:
        matrix_case()
    print(f"\nload average at the end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
