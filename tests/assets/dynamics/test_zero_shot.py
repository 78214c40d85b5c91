"""zero_shot_dynamics[model|ordering] on a tiny local model: runs per level, the completeness check, figures."""

from __future__ import annotations

import dagster as dg
import pandas as pd
import pytest

from tests.helpers.tiny_models import materialize, tiny_world

pytestmark = pytest.mark.slow  # trains and materializes through Dagster

SPLIT = {
    "train_tasks": ["commonsense_demo", "gcd", "lcm"],
    "test_tasks": ["chain_sum", "count_bits"],
    "per_task": 2,
    "per_test_task": 2,
    "eval_every": 1,
    "batch_size": 2,
    "learning_rate": 1e-3,
    "embedder": "model",
}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    with tiny_world(tmp_path_factory.mktemp("zero_shot"), layers=2, n_examples=2) as world:
        yield world


def run(world, assets, partition_key=None, config=None):
    run_config = {"ops": {assets[0].key.to_user_string(): {"config": config}}} if config else None
    return materialize(world, assets, partition_key, run_config)


def failure(result) -> str:
    return " ".join(e.step_failure_data.error.message for e in result.all_events if e.is_step_failure)


def test_runs_per_ordering_and_level_are_checked_and_drawn(world, single_thread):
    from assets.dynamics.figures import zero_shot_figures
    from assets.dynamics.zero_shot import ZERO_SHOT_ASSETS, zero_shot_dynamics

    store = world[1]["store"]
    for level in ("none", "detailed"):
        for ordering in ("rt", "nft"):
            key = dg.MultiPartitionKey({"model": "tiny", "ordering": ordering})
            result = run(world, [ZERO_SHOT_ASSETS[level]], key, SPLIT)
            assert result.success, failure(result)
            assert [c.passed for c in result.get_asset_check_evaluations()] == [True]
            meta = result.asset_materializations_for_node(ZERO_SHOT_ASSETS[level].key.to_user_string())[0].metadata
            assert (meta["level"].value, meta["learning_rate"].value, meta["optimizer"].value) == (level, 1e-3, "adamw")
            assert (meta["batch_size"].value, meta["trainable"].value, meta["seed"].value) == (2, "all", 0)
    for level, asset in (("none", zero_shot_dynamics), ("detailed", ZERO_SHOT_ASSETS["detailed"])):
        records = world[0].fetch_materializations(dg.AssetRecordsFilter(asset.key, ["tiny|rt"]), limit=1).records
        assert records[0].asset_materialization.metadata["level"].value == level  # neither hides the other
    tasks = {lvl: pd.read_parquet(store.zero_shot("tiny", lvl, "rt") / "tasks.parquet") for lvl in ("none", "detailed")}
    trained = {lvl: t[t.task == "commonsense_demo"].response.str.len().mean() for lvl, t in tasks.items()}
    assert trained["detailed"] > 2 * trained["none"]  # the level chose the training responses
    pd.testing.assert_frame_equal(
        tasks["none"][tasks["none"].split == "test"], tasks["detailed"][tasks["detailed"].split == "test"]
    )  # test items fixed
    key = dg.MultiPartitionKey({"model": "tiny", "ordering": "gradient"})
    result = run(world, [zero_shot_dynamics], key, SPLIT)
    assert result.success, failure(result)
    assert "figure: alignment per layer" in result.asset_materializations_for_node("zero_shot_dynamics")[0].metadata
    result = run(world, [zero_shot_figures])
    assert result.success, failure(result)
    meta = result.asset_materializations_for_node("zero_shot_figures")[0].metadata
    figures = [k for k in meta if k.startswith("figure:")]
    assert "figure: None vs Detailed CoT, tiny" in figures
    assert any("seen-data distance" in k for k in figures) and any("held-out loss" in k for k in figures)
    assert all("data:image/png;base64," in meta[k].value for k in figures)
    for k in figures:  # its file and the exact run partitions it was drawn from
        assert ".png`" in meta[k].value and "`zero_shot_dynamics" in meta[k].value, k
    assert "`zero_shot_dynamics_detailed[tiny|rt]` v" in meta["figure: None vs Detailed CoT, tiny"].value
    runs = meta["figures: runs of tiny, none CoT"].value  # each run's own figures, the alignment included
    assert "tiny__none__gradient.png" in runs and "tiny__none__alignment.png" in runs
    folder = store.zero_shot_figures()
    assert all(str(p) in meta["png_files"].value for p in folder.rglob("*.png"))
    assert "by path only" not in meta["png_files"].value.values()
    table = [r.data for r in meta["table: held-out loss by ordering"].value.records]
    losses = pd.read_parquet(store.zero_shot("tiny", "detailed", "nft") / "zero_shot.parquet")
    want = losses[(losses.task == "__all__") & (losses.step == 1)].loss.iloc[0]
    row = next(r for r in table if (r["level"], r["task"], r["step"]) == ("detailed", "__all__", 1))
    assert row["loss nft"] == pytest.approx(want, rel=1e-5) and row["loss rt"] is not None
    assert {r["task"] for r in table} == {"__all__", "chain_sum", "count_bits"}


def test_bad_input_fails_with_one_line_naming_it(world):
    from assets.dynamics.zero_shot import zero_shot_dynamics

    key = dg.MultiPartitionKey({"model": "tiny", "ordering": "rt"})
    result = run(world, [zero_shot_dynamics], key, {**SPLIT, "test_tasks": ["gcd"]})
    assert not result.success
    assert "'gcd' is in both train_tasks and test_tasks" in failure(result)


def test_the_asset_and_the_cli_give_identical_tables(world, tmp_path, single_thread):
    """Both translate into `run_zero_shot`: the same split, ordering and settings, the same run."""
    from assets.dynamics.zero_shot import zero_shot_dynamics
    from lg_pipeline.cli import main
    from tests.helpers.faults import assert_same_tables, tables

    store = world[1]["store"]
    key = dg.MultiPartitionKey({"model": "tiny", "ordering": "nft"})
    split = {**SPLIT, "train_tasks": ["gcd", "lcm"]}
    assert run(world, [zero_shot_dynamics], key, split).success
    args = ["zero-shot", "--model", "tiny", "--train-tasks", "gcd,lcm", "--test-tasks", "chain_sum,count_bits",
            "--per-task", "2", "--per-test-task", "2", "--eval-every", "1", "--batch-size", "2", "--lr", "1e-3",
            "--embedder", "model", "--orderings", "nft", "--level", "none", "--max-length",
            str(world[1]["compute"].max_length), "--cache-dir", world[1]["compute"].cache_dir,
            "--out", str(tmp_path / "cli")]
    assert main(args) == 0
    assert_same_tables(tables(tmp_path / "cli"), tables(store.zero_shot("tiny", "none", "nft")), rtol=0)


def test_a_partition_key_given_as_a_string_is_split():
    """A run launched with only the `dagster/partition` tag (as `launchPipelineExecution` does) has a str key."""
    from types import SimpleNamespace

    from assets.dynamics.zero_shot import _keys

    assert _keys(SimpleNamespace(partition_key="tiny|rt")) == ("tiny", "rt")
    assert _keys(SimpleNamespace(partition_key=dg.MultiPartitionKey({"model": "m", "ordering": "nft"}))) == ("m", "nft")


def test_a_rerun_of_a_finished_run_loads_no_model_and_materializes_nothing(world, single_thread, monkeypatch):
    from assets.dynamics.zero_shot import zero_shot_dynamics_simplified as asset
    from assets.resources import ComputeResource

    key = dg.MultiPartitionKey({"model": "tiny", "ordering": "nft"})  # rt: the seeds test's
    config = dict(SPLIT)
    assert run(world, [asset], key, config).success
    monkeypatch.setattr(ComputeResource, "load", lambda self, name: pytest.fail("loaded a model"))
    again = run(world, [asset], key, config)
    assert again.success and not again.asset_materializations_for_node("zero_shot_dynamics_simplified")
    (observation,) = again.asset_observations_for_node("zero_shot_dynamics_simplified")
    assert "ordering(s) nft finished under run key" in observation.metadata["skipped"].value
    other = run(world, [asset], key, {**config, "seed": 1})  # another split: it has work, and loads
    assert not other.success and "loaded a model" in failure(other)


def test_seeds_run_apart_from_the_single_seed_folder_and_are_drawn_with_a_band(world, single_thread):
    from assets.dynamics.figures import zero_shot_figures
    from assets.dynamics.zero_shot import zero_shot_dynamics_simplified

    store = world[1]["store"]
    key = dg.MultiPartitionKey({"model": "tiny", "ordering": "rt"})
    result = run(world, [zero_shot_dynamics_simplified], key, {**SPLIT, "seeds": [0, 1], "epochs": 0.5})
    assert result.success, failure(result)
    assert [c.passed for c in result.get_asset_check_evaluations()] == [True]
    base = store.zero_shot_seeds("tiny", "simplified", "rt")
    assert sorted(p.name for p in base.iterdir()) == ["seed-0", "seed-1"]
    assert not store.zero_shot("tiny", "simplified", "rt").exists()  # the single-seed folder is another
    assert sorted(pd.read_parquet(base / "seed-1" / "zero_shot.parquet").step.unique()) == [0, 1, 2]  # 3 batches / 2
    figures = materialize(world, [zero_shot_figures])
    assert figures.success, failure(figures)
    meta = figures.asset_materializations_for_node("zero_shot_figures")[0].metadata
    assert "figure: held-out loss across seeds, tiny, simplified CoT" in meta
    table = pd.read_parquet(store.zero_shot_across_seeds("tiny", "simplified").with_suffix(".parquet"))
    assert set(table.ordering) == {"rt"} and set(table.n_seeds) == {2}
