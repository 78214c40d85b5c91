"""The Dagster graph end to end on a tiny local model: curation -> gradients + check -> summary -> figures."""

from __future__ import annotations

import json

import dagster as dg
import pandas as pd
import pytest

from assets.partitions import variant_partition_key
from lg_pipeline.vocabulary import StatsKey
from tests.helpers.tiny_models import materialize, tiny_world

pytestmark = pytest.mark.slow  # materializes the graph through Dagster

VARIANTS = ["champ__none__correct", "champ__none__wrong", "commonsense_demo__detailed__correct"]
N_EXAMPLES = 2
N_LAYERS = 3


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    with tiny_world(tmp_path_factory.mktemp("pipeline"), N_LAYERS, N_EXAMPLES) as world:
        yield world


def run(world, assets, partition_key=None) -> dg.ExecuteInProcessResult:
    return materialize(world, assets, partition_key)


def failure_message(result: dg.ExecuteInProcessResult) -> str:
    return " ".join(e.step_failure_data.error.message for e in result.all_events if e.is_step_failure)


def test_definitions_load():
    from lg_pipeline.definitions import defs

    dg.Definitions.validate_loadable(defs)
    assert {k.to_user_string() for k in defs.resolve_all_asset_keys()} >= {
        "curated_dataset",
        "gradient_stats",
        "layer_summary",
        "figures",
    }


def test_graph_end_to_end(world):
    from assets.analysis.figures import figures
    from assets.analysis.summaries import layer_summary
    from assets.curation.assets import curated_dataset
    from assets.gradients.assets import gradient_stats
    from assets.partitions import multi_key

    store = world[1]["store"]
    for variant in VARIANTS:
        assert run(world, [curated_dataset], variant_partition_key(variant)).success
        result = run(world, [gradient_stats], multi_key("tiny", variant))
        assert result.success, failure_message(result)
        checks = result.get_asset_check_evaluations()
        assert [c.passed for c in checks] == [True]
        meta = result.asset_materializations_for_node("gradient_stats")[0].metadata
        assert meta["peak_rss_mib"].value > 0 and "examples_per_second" in meta
        logs = [e.user_message for e in world[0].all_logs(result.run_id)]
        progress = [m for m in logs if m.startswith("example ")]  # Detailed CoT included: a line per example
        assert [m.split()[1] for m in progress] == [f"{k}/{N_EXAMPLES}" for k in range(1, N_EXAMPLES + 1)]
        assert all("tokens" in m and "ex/s" in m and "ETA" in m for m in progress)
        assert any("loaded model tiny in " in m or "model tiny already loaded" in m for m in logs)
        stats = pd.read_parquet(store.gradients(StatsKey.of("tiny", variant)))
        assert len(stats) == N_EXAMPLES * N_LAYERS * 4
        assert set(stats.module) == {"q_proj", "k_proj", "v_proj", "o_proj"}
        assert (stats.model == "tiny").all() and (stats.nuclear_norm > 0).all()
    assert run(world, [layer_summary], "tiny").success
    curves = pd.read_parquet(store.summary("tiny") / "curves.parquet")
    assert set(curves.layer) == set(range(N_LAYERS))
    variants = pd.read_parquet(store.summary("tiny") / "variants.parquet").set_index("dataset")
    assert variants.demo["commonsense_demo"] and not variants.demo["champ"].any()
    from lg_pipeline.io.manifest import read_manifest

    for table in ("curves", "mad", "variants"):  # every table says where it came from
        manifest = read_manifest(store.summary_table("tiny", table))
        assert manifest["kind"] == f"summary.{table}" and len(manifest["inputs"]) == len(VARIANTS)
    assert read_manifest(store.gradients(StatsKey.of("tiny", VARIANTS[0])))["model"] == "tiny"
    assert read_manifest(store.curated(VARIANTS[0]))["kind"] == "curated"
    result = run(world, [figures])
    assert result.success, failure_message(result)
    meta = result.asset_materializations_for_node("figures")[0].metadata
    groups = [k for k in meta if k.startswith("figures: ")]
    inline = sum(meta[k].value.count("](data:image/png;base64,") for k in groups)
    pngs = sorted(store.figures().rglob("*.png"))
    assert inline == len(pngs) == meta["n_figures"].value  # every figure drawn is inline, none chosen by title
    assert any("correct_vs_wrong" in p.name for p in pngs) and any("heatmap" in p.name for p in pngs)
    assert {"figures: tiny · champ", "figures: tiny · commonsense_demo"} <= set(groups)
    tables = [k for k in meta if k.startswith("table: ")]
    assert tables and all(isinstance(meta[k], dg.TableMetadataValue) for k in tables)
    assert any("relative difference" in k for k in tables)
    assert meta["index"].value.endswith("index.html")
    assert (store.figures() / "tiny" / "champ_levels.png").stat().st_size > 10_000
    index = (store.figures() / "index.md").read_text()
    assert "champ_levels.png" in index
    assert "Commonsense" in index and "[demo data]" in index


def test_failing_check_blocks_summary_and_figures(world, monkeypatch):
    """An engine bug (σ_max above the nuclear norm) is caught by the check and stops the model's summary."""
    import lg_pipeline.gradients.spectra as spectra
    from assets.analysis.summaries import layer_summary
    from assets.curation.assets import curated_dataset
    from assets.gradients.assets import gradient_stats
    from assets.partitions import multi_key

    real = spectra.stacked_factor_stats

    def broken(*args, **kwargs):
        stats = real(*args, **kwargs).clone()
        stats[:, 1] = stats[:, 0] * 2
        return stats

    monkeypatch.setattr(spectra, "stacked_factor_stats", broken)
    store, variant = world[1]["store"], "commonsense_demo__none__wrong"
    assert run(world, [curated_dataset], variant_partition_key(variant)).success
    result = run(world, [gradient_stats], multi_key("tiny", variant))
    evaluation = result.get_asset_check_evaluations()[0]
    assert not evaluation.passed
    failed = evaluation.metadata["failed_expectations"].value
    assert any(f.startswith("sigma_max_le_frobenius") for f in failed), failed
    assert "failing_rows" in evaluation.metadata
    summary = run(world, [layer_summary], "tiny")
    assert not summary.success
    assert variant in failure_message(summary)
    assert variant in json.loads((store.summary("tiny") / "blocked.json").read_text())


def test_unknown_model_partition_fails_clearly(world):
    from assets.curation.assets import curated_dataset
    from assets.gradients.assets import gradient_stats
    from assets.partitions import multi_key

    instance, _ = world
    assert run(world, [curated_dataset], variant_partition_key(VARIANTS[0])).success
    instance.add_dynamic_partitions("model", ["no-such-model"])
    result = run(world, [gradient_stats], multi_key("no-such-model", VARIANTS[0]))
    assert not result.success
    message = failure_message(result)
    assert "model partition 'no-such-model' is in no model catalog" in message
    assert "lg-pipeline models add no-such-model" in message


def test_a_variant_that_cannot_be_built_here_is_refused_before_any_run(world):
    """No run, so no planned check that would turn red: the UI stays green when the data is good."""
    from assets.curation.assets import curated_dataset
    from assets.gradients.assets import gradient_stats
    from assets.partitions import AVAILABILITY, multi_key

    instance, _ = world
    hub_only = next(v for v, why in AVAILABILITY.reasons.items() if "hub" in why)
    runs_before = len(instance.get_runs())
    with pytest.raises(dg.DagsterUnknownPartitionError):
        run(world, [curated_dataset], variant_partition_key(hub_only))
    with pytest.raises(dg.DagsterUnknownPartitionError):
        run(world, [gradient_stats], multi_key("tiny", hub_only))
    assert len(instance.get_runs()) == runs_before
    check = dg.AssetCheckKey(dg.AssetKey("gradient_stats"), "gradient_stats_valid")
    history = instance.event_log_storage.get_asset_check_execution_history(check, limit=100)
    assert not [r for r in history if hub_only in (r.partition or "")]
