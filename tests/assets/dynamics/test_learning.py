"""Learning dynamics in Dagster on a tiny local model: curated variants -> training_dynamics + checks -> figures."""

from __future__ import annotations

import pandas as pd
import pytest

from lg_pipeline.vocabulary import StatsKey
from tests.helpers.tiny_models import materialize, tiny_world

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("single_thread")]
VARIANTS = ["champ__none__correct", "champ__detailed__correct", "champ__none__wrong"]
RUN = {"steps": 2, "eval_every": 1, "n_probes": 2, "max_length": 192, "learning_rate": 1e-4}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    with tiny_world(tmp_path_factory.mktemp("dynamics"), 2, 6) as world:
        yield world


def _materialize(world, selection, partition_key=None, config=None):
    run_config = {"ops": {"training_dynamics": {"config": config}}} if config else None
    return materialize(world, selection, partition_key, run_config)


def test_training_dynamics_runs_is_checked_and_drawn(world, monkeypatch):
    import lg_pipeline.dynamics.learning.figures as learning_figures
    from assets.curation.assets import curated_dataset
    from assets.dynamics.figures import dynamics_figures
    from assets.dynamics.learning import training_dynamics
    from assets.partitions import multi_key

    store = world[1]["store"]
    for variant in VARIANTS:
        assert _materialize(world, [curated_dataset], variant).success
    for variant, objective in (
        ("champ__none__correct", "sft"),
        ("champ__none__correct", "dpo"),
        ("champ__detailed__correct", "sft"),
    ):
        result = _materialize(world, [training_dynamics], multi_key("tiny", variant), {**RUN, "objective": objective})
        assert result.success, [e.step_failure_data.error.message for e in result.all_events if e.is_step_failure]
        checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
        assert checks["training_dynamics_complete"].passed, checks["training_dynamics_complete"].metadata
        assert "scatter" in checks["training_dynamics_agreement"].metadata
        out = store.dynamics(StatsKey.of("tiny", variant), objective)
        summary = pd.read_parquet(out / "influence_summary.parquet")
        assert sorted(summary.step.unique()) == [0, 1]
    from lg_pipeline.io.manifest import read_manifest

    curated = read_manifest(store.curated("champ__none__wrong"))
    assert (curated["kind"], curated["dataset"], curated["level"], curated["correctness"]) == (
        "curated", "champ", "none", "wrong"
    )
    assert curated["example_ids"] == list(pd.read_parquet(store.curated("champ__none__wrong")).example_id)
    manifest = read_manifest(out / "influence_summary.parquet")
    assert (manifest["model"], manifest["dataset"], manifest["level"]) == ("tiny", "champ", "detailed")
    assert manifest["data_file"] == "champ__detailed__correct.parquet" and manifest["model_source"] == "local"
    probe_types = set(pd.read_parquet(out / "probes.parquet").probe_type)
    assert "other_level:none" in probe_types  # the aligned None-CoT table gave the same prompts' short answers
    drawn, draw = [], learning_figures.draw_figures
    monkeypatch.setattr(learning_figures, "draw_figures", lambda tables, *a: drawn.append(tables) or draw(tables, *a))
    figures = _materialize(world, [dynamics_figures])
    assert figures.success
    greedy_now = drawn[0]["greedy_now"]  # the squeezing figure's dashed "greedy now" line has its rows
    assert len(greedy_now) and set(greedy_now.objective) == {"sft", "dpo"}
    meta = figures.asset_materializations_for_node("dynamics_figures")[0].metadata
    titles = [k for k in meta if k.startswith("figure:")]
    assert any("log-probabilities" in t for t in titles) and any("layer shares" in t for t in titles)
    assert "data:image/png;base64," in meta[titles[0]].value


def test_dpo_without_a_wrong_set_is_one_line(world):
    from assets.curation.assets import curated_dataset
    from assets.dynamics.learning import training_dynamics
    from assets.partitions import multi_key

    assert _materialize(world, [curated_dataset], "champ__simplified__correct").success
    result = _materialize(
        world, [training_dynamics], multi_key("tiny", "champ__simplified__correct"), {**RUN, "objective": "dpo"}
    )
    assert not result.success
    messages = [e.step_failure_data.error.message for e in result.all_events if e.is_step_failure]
    assert any("objective dpo needs the aligned wrong set of 'champ__simplified__correct'" in m for m in messages)


def _study_json(path, store, variant):
    import json

    frame = pd.read_parquet(store.curated(variant))
    rows = [{"example_id": r.example_id, "instruction": r.instruction, "output": r.response}
            for r in frame.itertuples()]
    path.write_text(json.dumps(rows))
    return str(path)


def test_the_asset_and_the_cli_give_identical_tables(world, tmp_path):
    """Both translate into `run_learning_dynamics`: the same curated rows, companions and settings, the same run."""
    from assets.curation.assets import curated_dataset
    from assets.dynamics.learning import training_dynamics
    from assets.partitions import multi_key
    from lg_pipeline.cli import main
    from lg_pipeline.vocabulary import REASONING_LEVELS, VariantKey
    from tests.helpers.faults import assert_same_tables, tables

    store = world[1]["store"]
    variant = VariantKey.parse("champ__none__correct")
    for name in VARIANTS:
        if not store.curated(name).is_file():
            assert _materialize(world, [curated_dataset], name).success
    result = _materialize(world, [training_dynamics], multi_key("tiny", str(variant)), {**RUN, "objective": "sft"})
    assert result.success
    args = ["dynamics", "--model", "tiny", "--data", _study_json(tmp_path / "train.json", store, variant),
            "--out", str(tmp_path / "cli"), "--steps", "2", "--eval-every", "1", "--n-probes", "2",
            "--max-length", "192", "--lr", "1e-4", "--batch-size", "1", "--cache-dir", world[1]["compute"].cache_dir]
    for level in REASONING_LEVELS:
        other = variant.with_level(level)
        if level != variant.level and store.curated(other).is_file():
            args += ["--also", f"{level}={_study_json(tmp_path / f'{level}.json', store, other)}"]
    args += ["--wrong", _study_json(tmp_path / "wrong.json", store, variant.with_correctness("wrong"))]
    assert main(args) == 0
    asset_tables = tables(store.dynamics(StatsKey.of("tiny", str(variant)), "sft"))
    assert_same_tables(tables(tmp_path / "cli"), asset_tables, rtol=0)
    assert "other_level:detailed" in set(asset_tables["probes.parquet"].probe_type)
