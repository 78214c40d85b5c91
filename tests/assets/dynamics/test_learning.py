"""Learning dynamics in Dagster on a tiny local model: curated variants -> training_dynamics + checks -> figures."""

from __future__ import annotations

import pandas as pd
import pytest

from assets.partitions import variant_partition_key
from lg_pipeline.vocabulary import StatsKey
from tests.helpers.tiny_models import materialize, tiny_world

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("single_thread")]
VARIANTS = ["champ__none__correct", "champ__detailed__correct", "champ__none__wrong"]
# CHAMP's Detailed responses are longer than 192 tiny-tokenizer tokens: their probes are cut, knowingly.
RUN = {"steps": 2, "eval_every": 1, "n_probes": 2, "max_length": 192, "learning_rate": 1e-4,
       "allow_probe_truncation": True}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    with tiny_world(tmp_path_factory.mktemp("dynamics"), 2, 6) as world:
        yield world


def _materialize(world, selection, partition_key=None, config=None):
    run_config = {"ops": {selection[0].key.to_user_string(): {"config": config}}} if config else None
    return materialize(world, selection, partition_key, run_config)


def _latest(world, key, partition):
    import dagster as dg

    records = world[0].fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), limit=1
    ).records
    return records[0].asset_materialization


def _png_files_listed(meta) -> bool:
    """Every PNG in the figure folder is named in the `png_files` entry."""
    from pathlib import Path

    folder = Path(meta["folder"].value)
    return all(str(p) in meta["png_files"].value for p in folder.rglob("*.png"))


def test_training_dynamics_runs_is_checked_and_drawn(world, monkeypatch):
    import lg_pipeline.dynamics.learning.figures as learning_figures
    from assets.curation.assets import curated_dataset
    from assets.dynamics.figures import dynamics_figures
    from assets.dynamics.learning import DYNAMICS_ASSETS
    from assets.partitions import multi_key

    store = world[1]["store"]
    for variant in VARIANTS:
        assert _materialize(world, [curated_dataset], variant_partition_key(variant)).success
    for variant, objective in (
        ("champ__none__correct", "sft"),
        ("champ__none__correct", "dpo"),
        ("champ__detailed__correct", "sft"),
    ):
        asset = DYNAMICS_ASSETS[objective]
        name = asset.key.to_user_string()
        result = _materialize(world, [asset], multi_key("tiny", variant), {**RUN, "learning_rate": 2e-4})
        assert result.success, [e.step_failure_data.error.message for e in result.all_events if e.is_step_failure]
        checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
        assert checks[f"{name}_complete"].passed, checks[f"{name}_complete"].metadata
        assert "scatter" in checks[f"{name}_agreement"].metadata
        meta = result.asset_materializations_for_node(name)[0].metadata
        settings = {k: meta[k].value for k in ("objective", "learning_rate", "optimizer", "batch_size", "trainable",
                                               "steps", "seed")}
        assert settings == {"objective": objective, "learning_rate": 2e-4, "optimizer": "sgd", "batch_size": 1,
                            "trainable": "attention", "steps": 2, "seed": 0}
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
    partition = str(multi_key("tiny", "champ__none__correct"))  # tiny|champ-n-c
    named = "tiny|champ__none__correct"  # how lineage names it: in full, as its files
    for objective, asset in DYNAMICS_ASSETS.items():  # the DPO run hides no SFT run: one latest of each
        assert _latest(world, asset.key, partition).metadata["objective"].value == objective
    drawn, draw = [], learning_figures.draw_figures
    monkeypatch.setattr(learning_figures, "draw_figures", lambda tables, *a: drawn.append(tables) or draw(tables, *a))
    figures = _materialize(world, [dynamics_figures])
    assert figures.success
    greedy_now = drawn[0]["greedy_now"]  # the squeezing figure's dashed "greedy now" line has its rows
    assert len(greedy_now) and set(greedy_now.objective) == {"sft", "dpo"}
    meta = figures.asset_materializations_for_node("dynamics_figures")[0].metadata
    titles = [k for k in meta if k.startswith("figure:")]
    assert any("log-probabilities" in t for t in titles) and any("layer shares" in t for t in titles)
    for title in titles:  # inline, its file, and the exact run partitions it was drawn from
        text = meta[title].value
        assert "data:image/png;base64," in text and ".png`" in text, title
        assert f"`training_dynamics[{named}]` v" in text and f"`training_dynamics_dpo[{named}]` v" in text
    drawn = meta["drawn_from"].value
    version = _latest(world, DYNAMICS_ASSETS["dpo"].key, partition).tags["dagster/data_version"]
    assert drawn["training_dynamics_dpo"][named] == version
    by_type = meta["table: Δ log p by probe type, SFT vs DPO (last eval step)"].value
    row = next(r.data for r in by_type.records if r.data["variant"] == "champ__none__correct")
    assert row["Δ log p SFT"] is not None and row["Δ log p DPO"] is not None
    summary = pd.read_parquet(store.dynamics(StatsKey.parse(named), "dpo") / "influence_summary.parquet")
    last = summary[(summary.step == summary.step.max()) & (summary.probe_type == row["probe_type"])]
    assert row["Δ log p DPO"] == pytest.approx(last.measured_delta.mean(), rel=1e-5)
    runs = {(r.data["asset"], r.data["partition"]): r.data for r in meta["table: runs"].value.records}
    assert runs["training_dynamics_dpo", named]["objective"] == "dpo"
    assert runs["training_dynamics_dpo", named]["learning_rate"] == 2e-4
    assert _png_files_listed(meta)


def test_dpo_without_a_wrong_set_is_one_line(world):
    from assets.curation.assets import curated_dataset
    from assets.dynamics.learning import training_dynamics_dpo
    from assets.partitions import multi_key

    assert _materialize(world, [curated_dataset], variant_partition_key("champ__simplified__correct")).success
    result = _materialize(world, [training_dynamics_dpo], multi_key("tiny", "champ__simplified__correct"),
                         {**RUN, "rejected": "shuffled"})
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
            assert _materialize(world, [curated_dataset], variant_partition_key(name)).success
    result = _materialize(world, [training_dynamics], multi_key("tiny", str(variant)), {**RUN, "rejected": "shuffled"})
    assert result.success
    args = ["dynamics", "--model", "tiny", "--data", _study_json(tmp_path / "train.json", store, variant),
            "--out", str(tmp_path / "cli"), "--steps", "2", "--eval-every", "1", "--n-probes", "2",
            "--max-length", "192", "--allow-probe-truncation", "--rejected", "shuffled",
            "--lr", "1e-4", "--batch-size", "1", "--cache-dir", world[1]["compute"].cache_dir]
    for level in REASONING_LEVELS:
        other = variant.with_level(level)
        if level != variant.level and store.curated(other).is_file():
            args += ["--also", f"{level}={_study_json(tmp_path / f'{level}.json', store, other)}"]
    args += ["--wrong", _study_json(tmp_path / "wrong.json", store, variant.with_correctness("wrong"))]
    assert main(args) == 0
    asset_tables = tables(store.dynamics(StatsKey.of("tiny", str(variant)), "sft"))
    assert_same_tables(tables(tmp_path / "cli"), asset_tables, rtol=0)
    assert "other_level:detailed" in set(asset_tables["probes.parquet"].probe_type)


def test_a_rerun_of_a_finished_run_loads_no_model_and_materializes_nothing(world, monkeypatch):
    from assets.curation.assets import curated_dataset
    from assets.dynamics.learning import training_dynamics
    from assets.partitions import multi_key
    from assets.resources import ComputeResource

    assert _materialize(world, [curated_dataset], variant_partition_key("champ__none__correct")).success
    key, config = multi_key("tiny", "champ__none__correct"), {**RUN, "seed": 3}
    assert _materialize(world, [training_dynamics], key, config).success
    monkeypatch.setattr(ComputeResource, "load", lambda self, name: pytest.fail("loaded a model"))
    again = _materialize(world, [training_dynamics], key, config)
    assert again.success and not again.asset_materializations_for_node("training_dynamics")
    (observation,) = again.asset_observations_for_node("training_dynamics")
    assert "finished under run key" in observation.metadata["skipped"].value
    other = _materialize(world, [training_dynamics], key, {**config, "learning_rate": 2e-4})  # has work: loads
    assert not other.success
    messages = [e.step_failure_data.error.message for e in other.all_events if e.is_step_failure]
    assert any("loaded a model" in m for m in messages)


def test_seeds_run_apart_checked_and_drawn_with_a_band(world):
    from assets.curation.assets import curated_dataset
    from assets.dynamics.learning import training_dynamics
    from assets.partitions import multi_key

    store = world[1]["store"]
    for variant in ("champ__simplified__correct",):
        assert _materialize(world, [curated_dataset], variant_partition_key(variant)).success
    key = multi_key("tiny", "champ__simplified__correct")
    # room for every probe: one cut away fails the completeness check, with one seed as with two
    result = _materialize(world, [training_dynamics], key, {**RUN, "seeds": [0, 1], "max_length": 1024})
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert checks["training_dynamics_complete"].passed, checks["training_dynamics_complete"].metadata
    assert result.success, [e.step_failure_data.error.message for e in result.all_events if e.is_step_failure]
    stats_key = StatsKey.of("tiny", "champ__simplified__correct")
    assert [(o, s) for o, s, _ in store.dynamics_seed_runs(stats_key)] == [("sft", 0), ("sft", 1)]
    assert not store.dynamics(stats_key, "sft").exists()  # the single-seed folder is another
    meta = result.asset_materializations_for_node("training_dynamics")[0].metadata
    assert "figure: across seeds" in meta
    table = pd.read_parquet(store.dynamics_seeds(stats_key, "sft") / "across_seeds.parquet")
    assert set(table.n_seeds) == {2}
