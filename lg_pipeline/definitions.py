"""The Dagster code location: `dagster dev -w workspace.yaml` or `dagster ... -m lg_pipeline.definitions`.

A composition root: it only loads definitions. `LG_ENV` (local | gpu | k8s) selects the resources and the
executor, once, here.
"""

from __future__ import annotations

from collections.abc import Callable

import dagster as dg

from assets.analysis import figures, summaries
from assets.automation import jobs, schedules, sensors
from assets.curation import assets as curation_assets
from assets.curation import checks as curation_checks
from assets.dynamics import figures as dynamics_figures
from assets.dynamics import learning, zero_shot
from assets.executors import executor_for
from assets.gradients import assets as gradient_assets
from assets.gradients import checks as gradient_checks
from assets.partitions import partition_note
from assets.resources import resources_for

ASSET_MODULES = [curation_assets, gradient_assets, summaries, figures, learning, zero_shot, dynamics_figures]
CHECK_MODULES = [curation_checks, gradient_checks, learning, zero_shot]


def _with_partition_note() -> Callable[[dg.AssetSpec], dg.AssetSpec]:
    """Each partitioned asset's description says how to read its keys and, with a variant dimension, what cannot
    build (`assets.partitions.partition_note`)."""

    def add(spec: dg.AssetSpec) -> dg.AssetSpec:
        note = partition_note(spec.partitions_def)
        return spec.replace_attributes(description=f"{spec.description or ''}\n\n{note}") if note else spec

    return add


def definitions_for(env: str | None = None) -> dg.Definitions:
    """The code location for one environment (default: `$LG_ENV`, else local)."""
    assets = dg.map_asset_specs(_with_partition_note(), dg.load_assets_from_modules(ASSET_MODULES))
    return dg.Definitions(
        assets=assets,
        asset_checks=dg.load_asset_checks_from_modules(CHECK_MODULES),
        sensors=[sensors.model_catalog_sensor, sensors.refresh_sensor(assets)],
        schedules=[schedules.curate_missing_nightly, schedules.fill_missing_nightly],
        jobs=[jobs.curate_job, jobs.gradients_job],
        resources=resources_for(env),
        executor=executor_for(env),
    )


defs = definitions_for()
