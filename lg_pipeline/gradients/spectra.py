"""Statistics of one per-example gradient matrix, two ways that give the same numbers.

`matrix_stats` is the study's method: the full SVD of the materialised gradient G.
`factor_stats` uses G = Δᵀ X (Δ: T×out output gradients, X: T×in inputs). With the thin
QR factorisation Xᵀ = Q_x R_x, G = (Δᵀ R_xᵀ) Q_xᵀ and the orthonormal Q_x drops out: G's
singular values are those of M = Δᵀ R_xᵀ (out×T), whose Gram is only T×T. Where T is
close to the width, G's own Gram is cheaper (G is formed anyway, for its max and min
entries), and that route is taken instead. `stacked_factor_stats` does it for a stack of same-shape
matrices at once. Inputs are cast to fp32 whatever the model's dtype; Grams and eigenvalues are
taken in fp64.
Effective rank (exp of the entropy of σ/Σσ) and stable rank (‖G‖_F²/σ_max²) come from
the same singular values: no tool computes them per example without an SVD of G.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from lg_pipeline.gradients.backends import gram_eigenvalues

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
    """(effective rank, stable rank) of matrices with singular values `svals` (last dim); 0 for a zero matrix.

    Effective rank exp(-Σ p log p), p = σ/Σσ, in float64 (0 log 0 = 0); stable rank ‖G‖_F²/σ_max².
    Singular values at or below fp32 rounding of G (`longest_side`·ε·σ_max, numpy's `matrix_rank`
    tolerance) count as 0 in the effective rank: an SVD of a materialised rank-T gradient returns
    min(out, in) − T of them as noise, which would otherwise add to the entropy.
    """
    import torch

    s = svals.double()
    s = torch.where(s > longest_side * torch.finfo(torch.float32).eps * s.amax(-1, keepdim=True), s, 0.0)
    total, top = s.sum(-1), s.amax(-1)
    nonzero = total > 0
    p = s / torch.where(nonzero, total, torch.ones_like(total)).unsqueeze(-1)
    effective = torch.where(nonzero, torch.exp(-torch.special.xlogy(p, p).sum(-1)), torch.zeros_like(total))
    stable = torch.where(nonzero, frobenius.double().square() / torch.where(nonzero, top, 1.0).square(), 0.0)
    return effective.float(), stable.float()


def r_factor(m: torch.Tensor) -> torch.Tensor:
    """R of the thin QR of mᵀ (m: (..., T, d)) -> (..., min(d, T), T); Q is never formed."""
    import torch

    return torch.linalg.qr(m.float().mT, mode="r").R


def singular_values(m: torch.Tensor) -> torch.Tensor:
    """Singular values (descending, last dim) of each matrix, from its float64 Gram on the smaller side.

    A symmetric eigensolver is several times faster than an SVD on the ill-conditioned
    spectra of real gradients; float64 keeps every value within ~1e-8·σ_max.
    """
    eig = gram_eigenvalues(m.detach().double())
    return eig.clamp_min(0).flip(-1).sqrt().float()


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


def takes_core(rows: int, n_out: int, n_in: int) -> bool:
    """The route of one matrix: the core when its rank `rows` is below full rank and that costs less."""
    return rows < min(n_out, n_in) and core_is_cheaper(rows, n_out, n_in)


def factor_stats(
    x: torch.Tensor, delta: torch.Tensor, r_x: Callable[[], torch.Tensor] | None = None
) -> torch.Tensor:
    """Exact statistics of G = deltaᵀ x without an SVD of G (one matrix of `stacked_factor_stats`).

    x: T×in layer inputs, delta: T×out output gradients (one row per token of one
    example whose Δ may be non-zero). `r_x` may give a cached R factor of x.
    """
    r_of = None if r_x is None else (lambda picked, width: r_x()[None])
    return stacked_factor_stats(x[None], delta[None], [x.shape[0]], r_of)[0]


# Elements of G (fp32) formed at once by `stacked_factor_stats`: 128 MiB, about 100 of SmolLM2's 576×576 gradients
# or two 4096×4096 ones; the stack is cut into pieces below it (on CUDA memory is what runs out).
STACK_ELEMENTS = 2**25
RFactors = Callable[[list[int], int], "torch.Tensor"]


def stacked_factor_stats(
    x: torch.Tensor, delta: torch.Tensor, rows: Sequence[int], r_of: RFactors | None = None
) -> torch.Tensor:
    """Exact statistics of every G_n = delta_nᵀ x_n of a stack, in a few batched calls: (N, len(MATRIX_STATS)).

    x: (N, W, in), delta: (N, W, out), one shape for the whole stack; only the first `rows[n]`
    rows of matrix n count (the caller drops each example's last position, which predicts
    nothing and is attended by nothing, so its Δ is exactly 0; padding beyond is ignored).
    With rows < min(out, in) σ_min is exactly 0 and the spectrum comes from the T×T core or
    from G's own Gram (G is formed for max/min anyway), whichever costs less (`core_is_cheaper`),
    decided per matrix; matrices of one route share every call. `r_of(picked, width)` may give
    the R factors of `x[picked, :width]` (shared by layers fed the same input).
    Why one stack: at short lengths (T ≈ 100) each matrix's own dozen small calls, not its linear
    algebra, dominated; the stack pays them once. Inputs are cast to fp32 whatever the model's
    dtype; Grams and eigenvalues are taken in fp64.
    """
    import torch

    out = torch.empty(x.shape[0], 9, dtype=torch.float32, device=x.device)
    for picked, xs, ds, counts, core, r in _route_stacks(x, delta, rows, r_of):
        stats = _route_stats(xs, ds, counts, core, r)
        if len(picked) == x.shape[0]:
            return stats
        out[torch.tensor(picked, device=x.device)] = stats
    return out


def stacked_singular_values(
    x: torch.Tensor, delta: torch.Tensor, rows: Sequence[int], r_of: RFactors | None = None
) -> list[torch.Tensor]:
    """Only the exact spectra of `stacked_factor_stats` (one (n, K) tensor per route and piece, unmasked).

    What no exact method escapes; the benchmark times it alone on the same factors and workers.
    """
    return [_spectrum(xs, ds, core, r) for _, xs, ds, _, core, r in _route_stacks(x, delta, rows, r_of)]


def _route_stacks(x: torch.Tensor, delta: torch.Tensor, rows: Sequence[int], r_of: RFactors | None):
    """(picked, x, delta, rows, route, R or None) per piece: matrices of one route, at most STACK_ELEMENTS of G.

    Each piece is cut to its longest matrix's rows; Δ rows past a matrix's own count are zeroed.
    """
    import torch

    n, width, n_in = x.shape
    n_out = delta.shape[-1]
    by_route: dict[bool, list[int]] = {}
    for i, r in enumerate(rows):
        by_route.setdefault(takes_core(int(r), n_out, n_in), []).append(i)
    step = max(1, STACK_ELEMENTS // max(1, n_out * n_in))
    for core, members in by_route.items():
        for start in range(0, len(members), step):
            picked = members[start : start + step]
            counts = [int(rows[i]) for i in picked]
            used = max(counts)
            if len(picked) == n:
                xs, ds = x[:, :used], delta[:, :used]
            else:
                index = torch.tensor(picked, device=x.device)
                xs, ds = x[index, :used], delta[index, :used]
            xs, ds = xs.float(), ds.float()
            if min(counts) < used:  # rows past a matrix's own count add nothing to its G
                valid = torch.arange(used, device=x.device) < torch.tensor(counts, device=x.device)[:, None]
                ds = ds.masked_fill(~valid[:, :, None], 0.0)
            r = r_of(picked, used) if core and r_of is not None and used else None
            yield picked, xs, ds, counts, core, r


def _spectrum(x: torch.Tensor, delta: torch.Tensor, core: bool, r: torch.Tensor | None, grad=None) -> torch.Tensor:
    """Singular values (descending) of each G = Δᵀ X of one route's stack."""
    if core:
        # G = Δᵀ R_xᵀ Q_xᵀ with Q_x orthonormal: G's singular values are those of M = Δᵀ R_xᵀ (out×T).
        return singular_values(delta.mT @ (r if r is not None else r_factor(x)).mT)
    return singular_values(delta.mT @ x if grad is None else grad)


def _route_stats(x: torch.Tensor, delta: torch.Tensor, counts: list[int], core: bool, r: torch.Tensor | None):
    """`stacked_factor_stats` of one piece of `_route_stacks` (fp32, Δ zero past each matrix's rows)."""
    import torch

    n, width, n_in = x.shape
    n_out = delta.shape[-1]
    full_rank = min(n_out, n_in)
    if width == 0:  # a one-token example: its only position predicts nothing, G = 0
        return torch.zeros(n, 9, dtype=torch.float32, device=x.device)
    rows = torch.tensor(counts, device=x.device)
    grad = delta.mT @ x
    # One pass over each G. Per matrix: torch's CPU `aminmax(dim=1)` over the stack took 5x as long (not vectorised).
    low, high = (torch.stack(v) for v in zip(*(torch.aminmax(g) for g in grad), strict=True))
    mean = (delta.sum(2) * x.sum(2)).sum(1) / (n_out * n_in)
    svals = _spectrum(x, delta, core, r, grad)
    # Beyond each matrix's rank (its rows), a Gram has only rounding noise: kept out of every sum.
    kept = torch.clamp(rows, max=full_rank)
    svals = torch.where(torch.arange(svals.shape[-1], device=x.device) < kept[:, None], svals, 0.0)
    last = svals.gather(1, (kept - 1).clamp_min(0)[:, None])[:, 0]
    sigma_min = torch.where(rows >= full_rank, last, 0.0)
    frobenius = torch.sqrt((svals * svals).sum(-1))
    ranks = spectrum_ranks(svals, frobenius, max(n_out, n_in))
    return torch.stack([svals.sum(-1), svals[:, 0], sigma_min, frobenius, mean, high, low, *ranks], dim=-1)
