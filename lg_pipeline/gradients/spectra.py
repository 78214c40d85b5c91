"""Statistics of one per-example gradient matrix, two ways that give the same numbers.

`matrix_stats` is the study's method: the full SVD of the materialised gradient G.
`factor_stats` uses G = Δᵀ X (Δ: T×out output gradients, X: T×in inputs). With the thin
QR factorisation Xᵀ = Q_x R_x, G = (Δᵀ R_xᵀ) Q_xᵀ and the orthonormal Q_x drops out: G's
singular values are those of M = Δᵀ R_xᵀ (out×T), whose Gram is only T×T. Where T is
close to the width, G's own Gram is cheaper (G is formed anyway, for its max and min
entries), and that route is taken instead. Inputs are cast to fp32 whatever the model's
dtype; Grams and eigenvalues are taken in fp64.
Effective rank (exp of the entropy of σ/Σσ) and stable rank (‖G‖_F²/σ_max²) come from
the same singular values: no tool computes them per example without an SVD of G.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

# Stat vectors are in the column order of lg_pipeline.schema.MATRIX_STATS.


def matrix_stats(grad: torch.Tensor, vectors: bool = True) -> torch.Tensor:
    """Reference: full SVD of the materialised gradient, the study's `torch.linalg.svd(grad)`.

    That call also computes the singular vectors, which the study discards; `vectors=False`
    gives the same values without them (`svdvals`), a stronger baseline for the benchmark.
    Frobenius norm from the entries, as the study computes it, but summed in float64: an
    fp32 reduction over a 4096×4096 gradient is off by ~6e-4 relative.
    """
    import torch

    g = grad.float()
    svals = torch.linalg.svd(g).S if vectors else torch.linalg.svdvals(g)
    frobenius = torch.linalg.vector_norm(g, dtype=torch.float64).float()
    ranks = spectrum_ranks(svals, frobenius, max(g.shape))
    return torch.stack([svals.sum(), svals.max(), svals.min(), frobenius, g.mean(), g.max(), g.min(), *ranks])


def spectrum_ranks(
    svals: torch.Tensor, frobenius: torch.Tensor, longest_side: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(effective rank, stable rank) of a matrix with singular values `svals`; both 0 for a zero matrix.

    Effective rank exp(-Σ p log p), p = σ/Σσ, in float64 (0 log 0 = 0); stable rank ‖G‖_F²/σ_max².
    Singular values at or below fp32 rounding of G (`longest_side`·ε·σ_max, numpy's `matrix_rank`
    tolerance) count as 0 in the effective rank: an SVD of a materialised rank-T gradient returns
    min(out, in) − T of them as noise, which would otherwise add to the entropy.
    """
    import torch

    s = svals.double()
    s = torch.where(s > longest_side * torch.finfo(torch.float32).eps * s.max(), s, 0.0)
    total, top = s.sum(), s.max()
    nonzero = total > 0
    p = s / torch.where(nonzero, total, torch.ones_like(total))
    effective = torch.where(nonzero, torch.exp(-torch.special.xlogy(p, p).sum()), torch.zeros_like(total))
    stable = torch.where(nonzero, frobenius.double().square() / torch.where(nonzero, top, 1.0).square(), 0.0)
    return effective.float(), stable.float()


def r_factor(m: torch.Tensor) -> torch.Tensor:
    """R of the thin QR of mᵀ (m: T×d) -> min(d,T)×T; Q is never formed."""
    import torch

    return torch.linalg.qr(m.float().T, mode="r").R


def singular_values(m: torch.Tensor) -> torch.Tensor:
    """Singular values (descending) from the float64 Gram matrix on m's smaller side.

    A symmetric eigensolver is several times faster than an SVD on the ill-conditioned
    spectra of real gradients; float64 keeps every value within ~1e-8·σ_max.
    """
    m = m.detach().double()
    eig = gram_eigenvalues_numpy(m) if m.device.type == "cpu" else gram_eigenvalues_torch(m)
    return eig.clamp_min(0).flip(0).sqrt().float()


def gram_eigenvalues_torch(m: torch.Tensor) -> torch.Tensor:
    """Ascending eigenvalues of m's Gram on its smaller side, by torch (cuSOLVER on CUDA)."""
    import torch

    return torch.linalg.eigvalsh(m @ m.T if m.shape[0] <= m.shape[1] else m.T @ m)


def gram_eigenvalues_numpy(m: torch.Tensor) -> torch.Tensor:
    """The same through numpy (OpenBLAS) on a CPU tensor, rather than torch's CPU build (MKL).

    Why: on this project's AMD EPYC machines MKL's float64 GEMM and dsyevd (the same LAPACK
    routine) took 1.2-1.9× OpenBLAS's on the 192-576-wide Grams of a Detailed-CoT example, and
    numpy's eigensolver releases the GIL, so the statistics' worker threads still run side by
    side (`bench/bench_spectra.py` times both). `a @ a.T` on one buffer is a symmetric rank-k update.
    """
    import numpy as np
    import torch

    a = m.numpy()
    return torch.from_numpy(np.linalg.eigvalsh(a @ a.T if a.shape[0] <= a.shape[1] else a.T @ a))


def core_is_cheaper(tokens: int, n_out: int, n_in: int) -> bool:
    """Whether the spectrum of a rank-`tokens` out×in gradient costs less from the core than from G's Gram.

    Core: QR of X (in×T), M = Δᵀ R_xᵀ (out×T, fp32), its T×T Gram and eigensolve. Gram of G:
    a d×d Gram (d = min(out, in)) and eigensolve. Counted in float64 multiply-adds, an
    eigensolve as 2n³ (roughly dsyevd against a same-size GEMM on a CPU); close to the width
    (T ≈ 500 against SmolLM2's 576) G's Gram wins, far below it the core does
    (`bench/bench_spectra.py` times both routes beside the pick).
    """
    small, large = sorted((n_out, n_in))
    core = n_in * tokens**2 + 0.5 * n_out * tokens**2 + n_out * tokens**2 + 2 * tokens**3
    gram = small**2 * large + 2 * small**3
    return core < gram


def factor_stats(
    x: torch.Tensor, delta: torch.Tensor, r_x: Callable[[], torch.Tensor] | None = None
) -> torch.Tensor:
    """Exact statistics of G = deltaᵀ x without an SVD of G.

    x: T×in layer inputs, delta: T×out output gradients (one row per token of one
    example whose Δ may be non-zero: the caller drops the last position, which
    predicts nothing and is attended by nothing, so its Δ is exactly 0).
    `r_x` may give a cached R factor of x when several layers share it.
    With T < min(out, in) the smallest singular value is exactly 0 and the spectrum comes
    from the T×T core or from G's own Gram (G is formed for max/min anyway), whichever
    costs less (`core_is_cheaper`).
    """
    import torch

    x, delta = x.float(), delta.float()
    grad = delta.T @ x
    rows, full_rank = x.shape[0], min(grad.shape)
    if rows < full_rank and core_is_cheaper(rows, *grad.shape):
        # G = Δᵀ R_xᵀ Q_xᵀ with Q_x orthonormal: G's singular values are those of M = Δᵀ R_xᵀ (out×T).
        svals = singular_values(delta.T @ (r_x() if r_x else r_factor(x)).T)
    else:
        # Beyond rank `rows`, G's Gram has only rounding noise: kept out of every sum.
        svals = singular_values(grad)[: min(rows, full_rank)]
    sigma_min = svals[-1] if rows >= full_rank else svals.new_zeros(())
    mean = torch.dot(delta.sum(1), x.sum(1)) / grad.numel()
    frobenius = torch.sqrt((svals * svals).sum())
    low, high = torch.aminmax(grad)  # one pass over G
    ranks = spectrum_ranks(svals, frobenius, max(grad.shape))
    return torch.stack([svals.sum(), svals[0], sigma_min, frobenius, mean, high, low, *ranks])
