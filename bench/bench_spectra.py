"""The two choices inside `spectra.factor_stats`, timed side by side on one thread.

1. Where the float64 Gram and its eigenvalues are computed on a CPU: torch (its MKL build) or
   numpy (OpenBLAS), the same LAPACK routine (dsyevd) either way.
   Beside them, numpy in float32: its time, and how far its nuclear norm is from float64's.
2. Which route gives the spectrum of a rank-T out×in gradient: the T×T core (QR of X, then
   M = Δᵀ R_xᵀ) or G's own d×d Gram (G is formed anyway, for its max and min entries), with
   the route `spectra.core_is_cheaper` picks.

Shapes are those of SmolLM2-135M's attention at Detailed-CoT length (T ≈ 500 against 576),
a short None-CoT example (T = 100) and an 8B-shaped layer (4096 wide, T = 512). The factors
are random with a spectrum spread over four decades, like real gradients'. No target is asserted.

    .venv/bin/python bench/bench_spectra.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_engine import best  # noqa: E402  (one timing rule for every bench)

SHAPES = ((503, 576, 576), (503, 192, 576), (100, 576, 576), (512, 4096, 4096))


def factors(tokens: int, n_out: int, n_in: int) -> tuple[Any, Any]:
    import torch

    gen = torch.Generator().manual_seed(0)
    decay = torch.logspace(0, -4, tokens).unsqueeze(1)
    return torch.randn(tokens, n_in, generator=gen) * decay, torch.randn(tokens, n_out, generator=gen) * 1e-3


def backends(x: Any, delta: Any, repeats: int) -> tuple[float, float, float, float]:
    """(torch, numpy, numpy float32) seconds for G's Gram and its eigenvalues, and float32's nuclear-norm error."""
    from lg_pipeline.gradients.backends import gram_eigenvalues_numpy, gram_eigenvalues_torch

    g = (delta.T @ x).double()
    on_torch = best(lambda: gram_eigenvalues_torch(g), repeats)
    on_numpy = best(lambda: gram_eigenvalues_numpy(g), repeats)
    single = best(lambda: gram_eigenvalues_numpy(g.float()), repeats)

    def nuclear(eig: Any) -> float:
        return float(eig.double().clamp_min(0).sqrt().sum())

    exact = nuclear(gram_eigenvalues_numpy(g))
    return on_torch, on_numpy, single, abs(nuclear(gram_eigenvalues_numpy(g.float())) - exact) / exact


def routes(x: Any, delta: Any, repeats: int) -> tuple[float, float]:
    """(core, G's Gram) seconds for the spectrum, G formed in both (it is needed for max/min)."""
    from lg_pipeline.gradients.spectra import r_factor, singular_values

    def core() -> Any:
        delta.T @ x
        return singular_values(delta.T @ r_factor(x).T)

    return best(core, repeats), best(lambda: singular_values(delta.T @ x), repeats)


def main(argv: list[str] | None = None) -> int:
    import torch
    from threadpoolctl import threadpool_limits

    from lg_pipeline.gradients.spectra import core_is_cheaper

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3, help="best of this many")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    print(f"bench_spectra {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; one thread; best of {args.repeats}")
    print(f"{'T, out, in':<20}{'torch s':>9}{'numpy s':>9}{'torch/numpy':>12}{'fp32 s':>9}{'fp32 err':>10}"
          f"{'core s':>9}{'G Gram s':>10}{'picked':>8}{'best/picked':>12}")
    with threadpool_limits(1, user_api="blas"):
        for tokens, n_out, n_in in SHAPES:
            x, delta = factors(tokens, n_out, n_in)
            on_torch, on_numpy, single, single_error = backends(x, delta, args.repeats)
            tokens_ok = tokens < min(n_out, n_in)
            core, gram = routes(x, delta, args.repeats) if tokens_ok else (float("nan"), float("nan"))
            picked = "core" if tokens_ok and core_is_cheaper(tokens, n_out, n_in) else "G"
            chosen = core if picked == "core" else gram
            ratio = min(core, gram) / chosen if tokens_ok else 1.0
            print(f"{f'{tokens}, {n_out}, {n_in}':<20}{on_torch:>9.4f}{on_numpy:>9.4f}{on_torch / on_numpy:>11.2f}x"
                  f"{single:>9.4f}{single_error:>10.1e}{core:>9.4f}{gram:>10.4f}{picked:>8}{ratio:>11.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
