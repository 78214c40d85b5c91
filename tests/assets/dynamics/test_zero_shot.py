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
    run_config = {"ops": {"zero_shot_dynamics": {"config": config}}} if config else None
    return materialize(world, assets, partition_key, run_config)


def failure(result) -> str:
    return " ".join(e.step_failure_data.error.message for e in result.all_events if e.is_step_failure)


def test_runs_per_ordering_and_level_are_checked_and_drawn(world, single_thread):
    from assets.dynamics.figures import zero_shot_figures
    from assets.dynamics.zero_shot import zero_shot_dynamics

    store = world[1]["store"]
    for level in ("none", "detailed"):
        for ordering in ("rt", "nft"):
            key = dg.MultiPartitionKey({"model": "tiny", "ordering": ordering})
            result = run(world, [zero_shot_dynamics], key, {**SPLIT, "level": level})
            assert result.success, failure(result)
            assert [c.passed for c in result.get_asset_check_evaluations()] == [True]
    tasks = {lvl: pd.read_parquet(store.zero_shot("tiny", lvl, "rt") / "tasks.parquet") for lvl in ("none", "detailed")}
    trained = {lvl: t[t.task == "commonsense_demo"].response.str.len().mean() for lvl, t in tasks.items()}
    assert trained["detailed"] > 2 * trained["none"]  # the level chose the training responses
    pd.testing.assert_frame_equal(
        tasks["none"][tasks["none"].split == "test"], tasks["detailed"][tasks["detailed"].split == "test"]
    )  # test items fixed
    key = dg.MultiPartitionKey({"model": "tiny", "ordering": "gradient"})
    result = run(world, [zero_shot_dynamics], key, {**SPLIT, "level": "none"})
    assert result.success, failure(result)
    assert "figure: alignment per layer" in result.asset_materializations_for_node("zero_shot_dynamics")[0].metadata
    result = run(world, [zero_shot_figures])
    assert result.success, failure(result)
    meta = result.asset_materializations_for_node("zero_shot_figures")[0].metadata
    figures = [k for k in meta if k.startswith("figure:")]
    assert "figure: None vs Detailed CoT, tiny" in figures
    assert any("seen-data distance" in k for k in figures) and any("held-out loss" in k for k in figures)
    assert all("data:image/png;base64," in meta[k].value for k in figures)


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
    split = {**SPLIT, "level": "none", "train_tasks": ["gcd", "lcm"]}
    assert run(world, [zero_shot_dynamics], key, split).success
    args = ["zero-shot", "--model", "tiny", "--train-tasks", "gcd,lcm", "--test-tasks", "chain_sum,count_bits",
            "--per-task", "2", "--per-test-task", "2", "--eval-every", "1", "--batch-size", "2", "--lr", "1e-3",
            "--embedder", "model", "--orderings", "nft", "--level", "none", "--max-length",
            str(world[1]["compute"].max_length), "--cache-dir", world[1]["compute"].cache_dir,
            "--out", str(tmp_path / "cli")]
    assert main(args) == 0
    assert_same_tables(tables(tmp_path / "cli"), tables(store.zero_shot("tiny", "none", "nft")), rtol=0)


def test_seeds_run_apart_from_the_single_seed_folder_and_are_drawn_with_a_band(world, single_thread):
    from assets.dynamics.figures import zero_shot_figures
    from assets.dynamics.zero_shot import zero_shot_dynamics

    store = world[1]["store"]
    key = dg.MultiPartitionKey({"model": "tiny", "ordering": "rt"})
    result = run(world, [zero_shot_dynamics], key, {**SPLIT, "level": "simplified", "seeds": [0, 1], "epochs": 0.5})
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
