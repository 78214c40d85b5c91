"""gradient_stats in Dagster on a tiny local model: a rerun with nothing to do loads nothing and refreshes nothing."""

from __future__ import annotations

import dagster as dg
import pytest

from assets.partitions import multi_key, variant_partition_key
from assets.resources import ComputeResource
from lg_pipeline.vocabulary import StatsKey
from tests.helpers.tiny_models import materialize, tiny_world

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("single_thread")]  # Dagster runs, a model
VARIANT = "champ__none__correct"


def _summary_requests(instance, cursor):
    from lg_pipeline.definitions import defs

    result = dg.evaluate_automation_conditions(
        defs=defs, instance=instance, asset_selection=dg.AssetSelection.assets("layer_summary"), cursor=cursor
    )
    return result.get_requested_partitions(dg.AssetKey("layer_summary")), result.cursor


def _messages(instance, result) -> list[str]:
    return [e.user_message for e in instance.all_logs(result.run_id) if not e.is_dagster_event]


def test_a_rerun_with_nothing_to_do_loads_no_model_materializes_nothing_and_refreshes_nothing(tmp_path, monkeypatch):
    from assets.curation.assets import curated_dataset
    from assets.gradients.assets import gradient_stats

    key = multi_key("tiny", VARIANT)
    with tiny_world(tmp_path, 1, 3) as world:
        instance, store = world[0], world[1]["store"]
        assert materialize(world, [curated_dataset], variant_partition_key(VARIANT)).success
        first = materialize(world, [gradient_stats], key)
        assert first.success and first.asset_materializations_for_node("gradient_stats")
        requested, cursor = _summary_requests(instance, None)  # the first tick only starts the clock
        table = store.gradients(StatsKey.of("tiny", VARIANT))
        written = table.stat().st_mtime_ns

        real_load = ComputeResource.load
        monkeypatch.setattr(ComputeResource, "load", lambda self, name: pytest.fail("loaded a model"))
        again = materialize(world, [gradient_stats], key)
        assert again.success and not again.asset_materializations_for_node("gradient_stats")
        (observation,) = again.asset_observations_for_node("gradient_stats")
        assert "all 3 examples already done" in observation.metadata["skipped"].value
        assert any(m.startswith("skipped, nothing materialized: all 3 examples already done") and
                   "not refreshed" in m for m in _messages(instance, again))
        assert table.stat().st_mtime_ns == written
        requested, cursor = _summary_requests(instance, cursor)
        assert requested == set()  # no new materialization upstream: the summary does not refresh

        # Something to do (an outcome table gone): the model loads, the table is materialized, the summary refreshes.
        monkeypatch.setattr(ComputeResource, "load", real_load)
        (table.parent / f"{table.stem}.status.parquet").unlink()
        third = materialize(world, [gradient_stats], key)
        assert third.success and third.asset_materializations_for_node("gradient_stats")
        requested, _ = _summary_requests(instance, cursor)
        assert requested == {"tiny"}


def test_a_rerun_after_the_weights_file_changed_computes_again(tmp_path):
    from assets.curation.assets import curated_dataset
    from assets.gradients.assets import gradient_stats
    from data_sources.models.catalog import get_model_spec

    key = multi_key("tiny", VARIANT)
    with tiny_world(tmp_path, 1, 2) as world:
        assert materialize(world, [curated_dataset], variant_partition_key(VARIANT)).success
        assert materialize(world, [gradient_stats], key).success
        weights = next(p for p in tmp_path.joinpath("tiny").iterdir() if p.suffix == ".safetensors")
        assert get_model_spec("tiny").path == str(tmp_path / "tiny")
        weights.touch()  # another file in the same place: its identity (mtime) changed
        result = materialize(world, [gradient_stats], key)
        assert result.success and result.asset_materializations_for_node("gradient_stats")
        assert not result.asset_observations_for_node("gradient_stats")
