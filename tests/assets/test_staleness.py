"""Dagster's own stale-status bookkeeping on the real graph when the engine's code version changes.

Bumping `ENGINE_VERSION` makes Dagster's stale-status resolver report the statistics STALE (cause: code
version). Dagster 1.13 does not push that downstream by itself: the summary and then the figures turn STALE
once the statistics are rematerialized with new numbers (new data version), and everything is FRESH again
after rematerializing down the graph.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
import torch

from lg_pipeline.schema import MATRIX_STATS
from tests.helpers.tiny_models import save_tiny_model, write_catalog

pytestmark = pytest.mark.slow  # materializes the graph through Dagster

ROOT = Path(__file__).resolve().parents[2]
MODEL = "tiny"
VARIANT = "champ__none__correct"
POOL_VARIANTS = ["commonsense_demo__none__correct", "commonsense_demo__none__wrong"]
N_EXAMPLES = 2
STEP_SLEEP_S = 2.0


@pytest.fixture(scope="module")
def catalog(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("models")
    return write_catalog(tmp / "models.yaml", {MODEL: save_tiny_model(tmp / MODEL, 3)})


def make_resources(tmp: Path) -> dict:
    from assets.resources import ComputeResource, CurationResource, OutputStore

    return {
        "store": OutputStore(root=str(tmp / "out")),
        "curation": CurationResource(n_offline_examples=N_EXAMPLES, cache_dir=str(tmp / "cache")),
        "compute": ComputeResource(
            device="cpu", devices="", lock_dir=str(tmp / "locks"), cache_dir=str(tmp / "cache"), batch_size=2
        ),
    }


def materialize(assets, checks, instance, resources, selection, partition_key=None) -> dg.ExecuteInProcessResult:
    result = dg.materialize(
        [*assets, *checks],
        selection=selection,
        partition_key=partition_key,
        instance=instance,
        resources=resources,
        raise_on_error=False,
    )
    failures = [e.step_failure_data.error.message for e in result.all_events if e.is_step_failure]
    assert result.success, failures
    return result


def stale_resolver(instance: dg.DagsterInstance, assets, checks):
    """Dagster's own resolver (the one behind the UI's "Unsynced" badges), on this set of definitions."""
    from dagster._core.asset_graph_view.asset_graph_view import AssetGraphView, TemporalContext
    from dagster._core.definitions.assets.graph.asset_graph import AssetGraph
    from dagster._core.definitions.data_version import CachingStaleStatusResolver
    from dagster._time import get_current_datetime

    asset_graph = AssetGraph.from_assets([*assets, *checks])
    view = AssetGraphView(
        temporal_context=TemporalContext(effective_dt=get_current_datetime(), last_event_id=None),
        instance=instance,
        asset_graph=asset_graph,
    )
    return CachingStaleStatusResolver(instance=instance, asset_graph=asset_graph, loading_context=view)


def with_engine_version(assets, version: str) -> list:
    """The definitions as they would load after bumping ENGINE_VERSION: gradient_stats gets a new code version."""
    key = dg.AssetKey("gradient_stats")
    return [
        a.map_asset_specs(lambda spec: spec.replace_attributes(code_version=version)) if key in a.keys else a
        for a in assets
    ]


def test_engine_version_bump_marks_statistics_stale_and_new_numbers_flow_down(catalog, tmp_path, monkeypatch):
    """Dagster 1.13 does not propagate a code-version change downstream by itself: the statistics turn STALE;
    the summary, then the figures, turn STALE only once rematerialized statistics carry a new data version."""
    from dagster._core.definitions.data_version import StaleStatus

    import lg_pipeline.gradients.engine as engine
    import lg_pipeline.gradients.runner as gradient_run
    import lg_pipeline.gradients.spectra as spectra
    from assets.partitions import multi_key, variant_partition_key
    from lg_pipeline.definitions import defs

    monkeypatch.setenv("LG_MODEL_CATALOG", str(catalog))
    assets, checks = list(defs.assets), list(defs.asset_checks)
    resources = make_resources(tmp_path)
    key = multi_key(MODEL, VARIANT)
    grad, summary, figs = dg.AssetKey("gradient_stats"), dg.AssetKey("layer_summary"), dg.AssetKey("figures")
    fresh, stale = StaleStatus.FRESH, StaleStatus.STALE

    def run(assets_now, asset: str, partition=None) -> dg.ExecuteInProcessResult:
        return materialize(assets_now, checks, instance, resources, [asset], partition)

    def statuses(assets_now) -> list[StaleStatus]:
        resolver = stale_resolver(instance, assets_now, checks)
        return [resolver.get_status(grad, str(key)), resolver.get_status(summary, MODEL), resolver.get_status(figs)]

    def root_causes(assets_now, asset_key, partition=None) -> list:
        return list(stale_resolver(instance, assets_now, checks).get_stale_root_causes(asset_key, partition))

    (tmp_path / "home").mkdir()
    with dg.DagsterInstance.local_temp(str(tmp_path / "home")) as instance:
        instance.add_dynamic_partitions("model", [MODEL])
        run(assets, "curated_dataset", variant_partition_key(VARIANT))
        assert [c.passed for c in run(assets, "gradient_stats", key).get_asset_check_evaluations()] == [True]
        run(assets, "layer_summary", MODEL)
        run(assets, "figures")
        assert statuses(assets) == [fresh, fresh, fresh]

        # A new engine version: the statistics are stale because of their code version, nothing else is yet.
        new_version = f"{engine.ENGINE_VERSION}-bumped"
        bumped = with_engine_version(assets, new_version)
        assert statuses(bumped) == [stale, fresh, fresh]
        causes = root_causes(bumped, grad, str(key))
        assert [(c.asset_key, c.category.value) for c in causes] == [(grad, "CODE")], causes
        assert "code version" in causes[0].reason

        # The new engine gives (slightly) different numbers; rematerializing clears the statistics and the
        # new data version makes the summary stale, naming the statistics as the root cause.
        # (The engine's resume key holds ENGINE_VERSION too, so earlier numbers are not reused.)
        monkeypatch.setattr(engine, "ENGINE_VERSION", new_version)
        monkeypatch.setattr(gradient_run, "ENGINE_VERSION", new_version)
        real = spectra.stacked_factor_stats
        # G scaled by 1.001: every norm and entry statistic scales, the ranks do not (the check holds them to that).
        scale = torch.tensor([1.0 if s in ("effective_rank", "stable_rank") else 1.001 for s in MATRIX_STATS])
        monkeypatch.setattr(spectra, "stacked_factor_stats", lambda *a, **k: real(*a, **k) * scale)
        assert [c.passed for c in run(bumped, "gradient_stats", key).get_asset_check_evaluations()] == [True]
        assert statuses(bumped) == [fresh, stale, fresh]
        assert [c.asset_key for c in root_causes(bumped, summary, MODEL)] == [grad]
        run(bumped, "layer_summary", MODEL)
        assert statuses(bumped) == [fresh, fresh, stale]
        assert [c.asset_key for c in root_causes(bumped, figs)] == [summary]
        run(bumped, "figures")
        assert statuses(bumped) == [fresh, fresh, fresh]
        # The old definitions (old code version) now see the statistics as stale.
        assert statuses(assets)[0] == stale
