"""The engine's statistics consumer: both schedules give the per-matrix reference numbers, and keep what they say."""

from __future__ import annotations

import pytest
import torch

from lg_pipeline.errors import InputError
from lg_pipeline.gradients import statistics
from lg_pipeline.gradients.capture import Factors
from lg_pipeline.gradients.spectra import matrix_stats
from lg_pipeline.gradients.statistics import MatrixStatistics
from lg_pipeline.gradients.targets import Target

pytestmark = pytest.mark.usefixtures("single_thread")

LENGTHS = [9, 40, 25]  # rows 8, 39, 24 against min(out, in) = 16 and 32: both routes, padding in the hook


def factors() -> tuple[list[Target], list[Factors]]:
    """Three layers; q and k read one input (one source), o another; right-padded like a batch."""
    gen = torch.Generator().manual_seed(0)
    width = max(LENGTHS)
    targets, out = [], []
    for layer in range(3):
        shared = torch.randn(len(LENGTHS), width, 32, generator=gen)
        for module, n_out, x in (("q_proj", 32, shared), ("k_proj", 16, shared),
                                 ("o_proj", 32, torch.randn(len(LENGTHS), width, 32, generator=gen))):
            delta = torch.randn(len(LENGTHS), width, n_out, generator=gen) * 1e-2
            for b, n in enumerate(LENGTHS):
                delta[b, n - 1 :] = 0  # each last position and the padding carry Δ = 0
            path = f"model.layers.{layer}.self_attn.{module}"
            targets.append(Target(path + ".weight", path, layer, module))
            out.append(Factors(len(out), x, delta, (id(x), 0)))
    return targets, out


def reference(fs: list[Factors]) -> torch.Tensor:
    return torch.stack([torch.stack([matrix_stats(f.delta[b, : n - 1].T @ f.x[b, : n - 1]) for b, n in
                                     enumerate(LENGTHS)]) for f in fs])


@pytest.mark.parametrize(("schedule", "workers"), [("in-hook", 1), ("after-backward", 1), ("after-backward", 2)])
def test_both_schedules_give_the_full_svd_numbers(schedule, workers):
    targets, fs = factors()
    stats = MatrixStatistics(targets, LENGTHS, schedule, workers)
    for f in fs:
        stats.on_factors(f)
    stats.finish()
    got, want = stats.table(), reference(fs)
    assert got.shape == (len(targets), len(LENGTHS), statistics.N_STATS)
    columns = [0, 1, 3, 5, 6, 7, 8]  # nuclear, σ_max, Frobenius, max, min, effective and stable rank: relative
    assert torch.allclose(got[..., columns], want[..., columns], rtol=1e-4)
    assert torch.allclose(got[..., 4], want[..., 4], atol=1e-4 * float(want[..., 5].abs().max()))
    assert (got[:, torch.tensor(LENGTHS) - 1 < 16, 2] == 0).all()  # rank below min(out, in): σ_min exactly 0
    assert (got[:, torch.tensor(LENGTHS) - 1 > 32, 2] > 0).all()


def test_in_the_hook_nothing_is_kept_and_each_target_is_done_on_arrival():
    targets, fs = factors()
    stats = MatrixStatistics(targets, LENGTHS, "in-hook")
    stats.on_factors(fs[0])
    assert not stats._kept and set(stats._results) == {0}
    after = MatrixStatistics(targets, LENGTHS, "after-backward")
    after.on_factors(fs[0])
    assert set(after._kept) == {0} and not after._results


def test_jobs_cover_every_target_and_example_once_longest_first():
    targets, fs = factors()
    stats = MatrixStatistics(targets, LENGTHS, "after-backward", workers=2)
    jobs = stats.jobs({f.index: f for f in fs})
    covered = sorted((f.index, job.example) for job in jobs for f in job.factors)
    assert covered == sorted((i, b) for i in range(len(targets)) for b in range(len(LENGTHS)))
    costs = [job.rows * len(job.factors) for job in jobs]
    assert costs == sorted(costs, reverse=True) and len(jobs) > len(LENGTHS)
    for job in jobs:  # a layer's targets stay together, so q and k share one QR of their input
        assert len({targets[f.index].layer for f in job.factors}) * 3 == len(job.factors)


def test_a_target_without_a_gradient_is_an_error():
    targets, fs = factors()
    stats = MatrixStatistics(targets, LENGTHS, "in-hook")
    for f in fs[:-1]:
        stats.on_factors(f)
    stats.finish()
    with pytest.raises(RuntimeError, match=f"{len(fs) - 1} of {len(fs)} target layers"):
        stats.table()


def test_schedules_per_device_and_unknown_ones_refused():
    assert statistics.default_schedule(torch.device("cpu")) == "after-backward"
    assert statistics.default_schedule(torch.device("cuda", 0)) == "in-hook"
    assert statistics.default_workers("cuda:0") == 1 and statistics.default_workers("cpu") >= 1
    with pytest.raises(InputError, match="in-the-hook"):
        statistics.check_schedule("in-the-hook")
