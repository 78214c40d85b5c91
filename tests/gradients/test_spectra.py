"""`factor_stats` (statistics from the factors of G = Δᵀ X) against `matrix_stats` (full SVD of G) directly."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from lg_pipeline.gradients import spectra
from lg_pipeline.gradients.spectra import factor_stats, matrix_stats, r_factor
from lg_pipeline.schema import MATRIX_STATS
from tests.helpers.builders import stats_mismatches

pytestmark = pytest.mark.usefixtures("single_thread")


def _factors(tokens: int, n_in: int, n_out: int, rank: int | None = None, seed: int = 0):
    """X (T×in) and Δ (T×out); with `rank`, X has exactly that rank (so G does too)."""
    gen = torch.Generator().manual_seed(seed)
    if rank is None:
        x = torch.randn(tokens, n_in, generator=gen)
    else:
        x = torch.randn(tokens, rank, generator=gen) @ torch.randn(rank, n_in, generator=gen)
    delta = torch.randn(tokens, n_out, generator=gen) * 1e-3  # gradient-sized entries
    return x, delta


def _compare(x: torch.Tensor, delta: torch.Tensor, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    got, want = factor_stats(x, delta, **kwargs), matrix_stats(delta.T @ x)
    frames = [pd.DataFrame([s.tolist()], columns=list(MATRIX_STATS)) for s in (got, want)]
    index = pd.MultiIndex.from_tuples([("x", "G")], names=["example_id", "parameter"])
    extra = {"loss": 1.0, "n_tokens": x.shape[0]}
    assert stats_mismatches(*(f.set_index(index).assign(**extra) for f in frames)) == []
    return got, want


@pytest.mark.parametrize(
    ("tokens", "n_in", "n_out"),
    [(7, 48, 32), (20, 32, 48), (31, 32, 48), (32, 32, 48), (33, 48, 32), (200, 48, 32), (300, 64, 64)],
)

def test_full_rank_matrices_match_the_full_svd(tokens, n_in, n_out):
    got, want = _compare(*_factors(tokens, n_in, n_out))
    sigma_min = got[MATRIX_STATS.index("sigma_min")]
    if tokens < min(n_in, n_out):
        assert sigma_min == 0  # rank T < min(out, in): exactly zero, not rounding noise
    else:
        assert sigma_min > 0 and sigma_min == pytest.approx(float(want[2]), rel=1e-4)


@pytest.mark.parametrize(("tokens", "rank"), [(10, 3), (100, 3), (100, 40)])
def test_low_rank_matrices_match_the_full_svd(tokens, rank):
    """G of rank 3 or 40 < min(out, in) = 48, with T above and below 48: σ_min ≈ 0 either way."""
    got, want = _compare(*_factors(tokens, 64, 48, rank=rank))
    assert float(got[2]) <= 1e-4 * float(got[1]) and float(want[2]) <= 1e-4 * float(want[1])


def test_ill_conditioned_spectrum_keeps_its_small_singular_values():
    """Singular values spread over six decades: the nuclear norm must not lose the tail."""
    gen = torch.Generator().manual_seed(1)
    u, _ = torch.linalg.qr(torch.randn(100, 40, generator=gen))
    v, _ = torch.linalg.qr(torch.randn(64, 40, generator=gen))
    x = (u * torch.logspace(0, -6, 40)) @ v.T
    _compare(x, torch.randn(100, 48, generator=gen))


def test_a_cached_r_factor_gives_the_same_numbers():
    x, delta = _factors(10, 64, 48)
    cached = r_factor(x)
    assert torch.equal(factor_stats(x, delta, lambda: cached), factor_stats(x, delta))


def test_half_precision_inputs_are_computed_in_fp32():
    x, delta = _factors(12, 64, 48)
    got = factor_stats(x.bfloat16(), delta.bfloat16())
    want = matrix_stats(delta.bfloat16().float().T @ x.bfloat16().float())
    assert got.dtype == torch.float32
    assert torch.allclose(got[:2], want[:2], rtol=1e-4)


def test_zero_gradient_gives_zeros_not_nans():
    for tokens in (10, 80):
        x, _ = _factors(tokens, 64, 48)
        stats = factor_stats(x, torch.zeros(tokens, 48))
        assert torch.equal(stats, torch.zeros(len(MATRIX_STATS)))


@pytest.mark.parametrize(("tokens", "n_in", "n_out"), [(20, 32, 48), (31, 32, 48), (7, 48, 32), (60, 64, 64)])
def test_both_routes_below_full_rank_give_the_reference_numbers(tokens, n_in, n_out, monkeypatch):
    """T < min(out, in): the core and G's own Gram are two exact routes; each matches the full SVD."""
    x, delta = _factors(tokens, n_in, n_out)
    for core in (True, False):
        monkeypatch.setattr(spectra, "core_is_cheaper", lambda *shape, core=core: core)
        got, _ = _compare(x, delta)
        assert got[MATRIX_STATS.index("sigma_min")] == 0


def test_the_cheaper_route_is_the_core_far_below_the_width_and_g_close_to_it():
    assert spectra.core_is_cheaper(100, 576, 576) and not spectra.core_is_cheaper(503, 576, 576)
    assert spectra.core_is_cheaper(512, 4096, 4096)


def test_a_stack_with_rows_of_its_own_per_matrix_matches_each_full_svd():
    """One stack, both routes (3 and 10 rows through the core, 31 through G's Gram, 32 and 40 at full rank);
    whatever lies past a matrix's own rows, in X or Δ, is ignored."""
    gen = torch.Generator().manual_seed(4)
    rows = [3, 10, 31, 32, 40]
    x, delta = torch.randn(5, 40, 48, generator=gen), torch.randn(5, 40, 32, generator=gen) * 1e-3
    assert [spectra.takes_core(r, 32, 48) for r in rows] == [True, True, False, False, False]
    stacked = spectra.stacked_factor_stats(x, delta, rows)
    for n, r in enumerate(rows):
        got, want = stacked[n], matrix_stats(delta[n, :r].T @ x[n, :r])
        frames = [pd.DataFrame([s.tolist()], columns=list(MATRIX_STATS)) for s in (got, want)]
        index = pd.MultiIndex.from_tuples([(str(r), "G")], names=["example_id", "parameter"])
        assert stats_mismatches(*(f.set_index(index).assign(loss=1.0, n_tokens=r) for f in frames)) == [], r
        assert (got[MATRIX_STATS.index("sigma_min")] == 0) == (r < 32)
    assert torch.equal(stacked[1], spectra.factor_stats(x[1, :10], delta[1, :10]))


def test_a_large_stack_is_cut_into_pieces_without_changing_a_number(monkeypatch):
    x, delta = _factors(12, 64, 48)
    stack_x, stack_d = x.expand(7, -1, -1).contiguous(), delta.expand(7, -1, -1).contiguous()
    whole = spectra.stacked_factor_stats(stack_x, stack_d, [12] * 7)
    monkeypatch.setattr(spectra, "STACK_ELEMENTS", 2 * 64 * 48)  # two matrices per piece
    assert torch.allclose(spectra.stacked_factor_stats(stack_x, stack_d, [12] * 7), whole, rtol=1e-6)


def test_the_spectra_alone_are_the_statistics_singular_values():
    x, delta = _factors(20, 64, 48)
    (svals,) = spectra.stacked_singular_values(x[None], delta[None], [20])
    stats = spectra.factor_stats(x, delta)
    assert float(svals[0, :20].sum()) == pytest.approx(float(stats[0]), rel=1e-6)
