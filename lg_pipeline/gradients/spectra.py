"""Statistics of one per-example gradient matrix, two ways that give the same numbers.

`matrix_stats` is the study's method: the full SVD of the materialised gradient G.
`factor_stats` uses G = Δᵀ X (Δ: T×out output gradients, X: T×in inputs). With thin
QR factorisations Xᵀ = Q_x R_x and Δᵀ = Q_d R_d, G = Q_d (R_d R_xᵀ) Q_xᵀ and the
orthonormal Q's drop out: G's singular values are those of the small core
C = R_d R_xᵀ (at most T×T). G itself is formed only for its max and min entries.
Inputs are cast to fp32 whatever the model's dtype; eigenvalues are taken in fp64.
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
    import torch

    m = m.double()
    gram = m @ m.T if m.shape[0] <= m.shape[1] else m.T @ m
    return torch.linalg.eigvalsh(gram).clamp_min(0).flip(0).sqrt().float()


def factor_stats(
    x: torch.Tensor, delta: torch.Tensor, r_x: Callable[[], torch.Tensor] | None = None
) -> torch.Tensor:
    """Exact statistics of G = deltaᵀ x without an SVD of G.

    x: T×in layer inputs, delta: T×out output gradients (one row per token of one
    example whose Δ may be non-zero: the caller drops the last position, which
    predicts nothing and is attended by nothing, so its Δ is exactly 0).
    `r_x` may give a cached R factor of x when several layers share it.
    With T < min(out, in) the spectrum comes from the T×T core and the smallest
    singular value is exactly 0; otherwise G (formed for max/min anyway) is no larger
    than the core and its own Gram is used.
    """
    import torch

    x, delta = x.float(), delta.float()
    grad = delta.T @ x
    full_rank = min(grad.shape)
    if x.shape[0] < full_rank:
        svals = singular_values(r_factor(delta) @ (r_x() if r_x else r_factor(x)).T)
        sigma_min = svals.new_zeros(())
    else:
        svals = singular_values(grad)
        sigma_min = svals[-1]
    mean = torch.dot(delta.sum(1), x.sum(1)) / grad.numel()
    frobenius = torch.sqrt((svals * svals).sum())
    low, high = torch.aminmax(grad)  # one pass over G
    ranks = spectrum_ranks(svals, frobenius, max(grad.shape))
    return torch.stack([svals.sum(), svals[0], sigma_min, frobenius, mean, high, low, *ranks])
