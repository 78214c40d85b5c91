"""Runs across seeds: the folder rule, the aggregate against a hand computation, and the band figures."""

from __future__ import annotations

import pandas as pd
import pytest

from lg_pipeline.dynamics.learning.run import LearningDynamicsSettings
from lg_pipeline.dynamics.seeds import (
    across_seeds,
    across_seeds_base,
    check_seeds_target,
    for_each_seed,
    learning_across_seeds,
    ordering_curves,
    parse_seeds,
    probe_type_curves,
    seed_folder,
    seed_folders,
    zero_shot_across_seeds,
)
from lg_pipeline.errors import InputError
from lg_pipeline.io.atomic import write_parquet
from lg_pipeline.io.manifest import read_manifest


def test_seeds_parse_in_order_and_bad_lists_name_the_flag():
    assert parse_seeds("2, 0,1") == (2, 0, 1)
    for bad in ("", "0,x", "-1", "0,0"):
        with pytest.raises(InputError, match="--seeds: "):
            parse_seeds(bad)


def test_each_seed_has_its_own_folder_and_a_single_run_folder_is_not_reused(tmp_path):
    assert seed_folder(tmp_path, 3) == tmp_path / "seed-3"
    for seed in (1, 0, 10):
        seed_folder(tmp_path, seed).mkdir()
    (tmp_path / "seed-x").mkdir()
    assert list(seed_folders(tmp_path)) == [0, 1, 10]
    check_seeds_target(tmp_path / "new")
    (tmp_path / "run.json").write_text("{}")
    with pytest.raises(InputError, match="holds 'run.json', which is not a seed folder"):
        check_seeds_target(tmp_path)


def test_the_loop_runs_each_seed_into_its_folder_with_its_seed(tmp_path):
    calls = []
    run = lambda settings, data, out, report: calls.append((settings.train.seed, data, out)) or out  # noqa: E731
    results = for_each_seed(run, LearningDynamicsSettings(), [4, 7], tmp_path, "rows", report=lambda m: None)
    assert calls == [(4, "rows", tmp_path / "seed-4"), (7, "rows", tmp_path / "seed-7")]
    assert results == {4: tmp_path / "seed-4", 7: tmp_path / "seed-7"}


def test_the_aggregate_is_mean_sample_std_min_and_max_over_seeds():
    frame = pd.DataFrame({"seed": [0, 1, 2, 0, 1, 2], "step": [4, 4, 4, 8, 8, 8], "loss": [3.0, 2.0, 4.0, 1, 1, 1]})
    stats = across_seeds(frame, ["step"], "loss").set_index("step")
    assert stats.loc[4, "mean"] == pytest.approx(3.0)
    assert stats.loc[4, "std"] == pytest.approx(((0 + 1 + 1) / 2) ** 0.5)  # ddof 1
    assert (stats.loc[4, "min"], stats.loc[4, "max"], stats.loc[4, "n_seeds"]) == (2.0, 4.0, 3)
    assert stats.loc[8, "std"] == 0.0


def _logprobs(folder, shift):
    """Two probes of type `trained` (one `held_out`) at steps 0 and 2; the trained ones rise by 1 + shift, 3 + shift."""
    rows = []
    for probe, kind, rise, tokens in (("a", "trained", 1.0, 2), ("b", "trained", 3.0, 4), ("c", "held_out", -1, 1)):
        rows += [
            {"step": 0, "probe_id": probe, "probe_type": kind, "logp_sum": -10.0, "n_response_tokens": tokens},
            {"step": 2, "probe_id": probe, "probe_type": kind, "logp_sum": -10.0 + rise + shift,
             "n_response_tokens": tokens},
        ]
    write_parquet(pd.DataFrame(rows), folder / "logprobs.parquet", {"kind": "dynamics.logprobs", "run_key": "k"})


def test_learning_curves_average_probes_within_a_seed_then_across_seeds(tmp_path):
    for seed, shift in ((0, 0.0), (1, 2.0)):
        seed_folder(tmp_path, seed).mkdir()
        _logprobs(seed_folder(tmp_path, seed), shift)
    curves = probe_type_curves(list(seed_folders(tmp_path).items())).set_index(["seed", "probe_type", "step"])
    assert curves.loc[(1, "trained", 2), "change"] == pytest.approx((3.0 + 5.0) / 2)
    assert curves.loc[(1, "trained", 2), "change_per_token"] == pytest.approx((3.0 / 2 + 5.0 / 4) / 2)
    runs = list(seed_folders(tmp_path).items())
    table, figure, frame = learning_across_seeds(runs, across_seeds_base(tmp_path), "tiny: Δ log p across seeds")
    row = frame[(frame.quantity == "change") & (frame.probe_type == "trained") & (frame.step == 2)].iloc[0]
    # seed 0: (1 + 3) / 2 = 2; seed 1: (3 + 5) / 2 = 4
    assert (row["mean"], row["min"], row["max"], row["n_seeds"]) == (3.0, 2.0, 4.0, 2)
    assert row["std"] == pytest.approx(2 ** 0.5)
    manifest = read_manifest(table)
    assert manifest["kind"] == "dynamics.across_seeds" and manifest["seeds"] == [0, 1]
    assert set(manifest["inputs"].values()) == {"k"}
    assert figure.name == "across_seeds.png" and figure.stat().st_size > 10_000


def test_zero_shot_curves_are_the_all_tasks_loss_per_ordering_with_a_band(tmp_path):
    for seed, losses in ((0, (3.0, 2.5)), (1, (3.0, 2.9))):
        folder = seed_folder(tmp_path, seed)
        folder.mkdir()
        rows = [{"ordering": o, "step": s, "task": t, "loss": v + (0.1 if o == "nft" else 0), "n_examples": 2}
                for o in ("rt", "nft") for s, v in zip((0, 4), losses, strict=True) for t in ("__all__", "gcd")]
        write_parquet(pd.DataFrame(rows), folder / "zero_shot.parquet", {"kind": "zero_shot.zero_shot"})
    runs = list(seed_folders(tmp_path).items())
    curves = ordering_curves(runs)
    assert len(curves) == 2 * 2 * 2 and set(curves.columns) == {"seed", "ordering", "step", "loss"}
    table, figure, frame = zero_shot_across_seeds(runs, across_seeds_base(tmp_path), "tiny: loss across seeds")
    rt = frame[(frame.ordering == "rt") & (frame.step == 4)].iloc[0]
    assert rt["mean"] == pytest.approx(2.7) and (rt["min"], rt["max"]) == (2.5, 2.9)
    assert pd.read_parquet(table).shape == (4, 7)
    assert figure.stat().st_size > 10_000 and figure.with_suffix(".pdf").is_file()


def test_no_finished_seed_is_an_input_error(tmp_path):
    seed_folder(tmp_path, 0).mkdir()
    with pytest.raises(InputError, match="no finished seed run"):
        ordering_curves(list(seed_folders(tmp_path).items()))
