"""The Dagster code location: `dagster dev -w workspace.yaml` or `dagster ... -m lg_pipeline.definitions`.

A composition root: it only loads definitions. `LG_ENV` (local | gpu | k8s) selects the resources and the
executor, once, here.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import dagster as dg

# Known Dagster 1.13 warnings about features this project relies on, silenced once here (the code location
# is imported by every process: webserver, daemon, code server, each run), before the asset modules emit them:
# - BetaWarning "Class `MultiToSingleDimensionPartitionMapping` is currently in beta" (assets/partitions.py:
#   a model's summary reads every variant; a variant's statistics read its curated table);
# - PreviewWarning "Specifying a partitions_def on an AssetCheckSpec is currently in preview" (per-partition
#   checks of curated_dataset and gradient_stats).
# Any other Beta/Preview warning still shows.
warnings.filterwarnings("ignore", r"Class `MultiToSingleDimensionPartitionMapping` is currently", dg.BetaWarning)
warnings.filterwarnings("ignore", r"Specifying a partitions_def on an AssetCheckSpec", dg.PreviewWarning)

from assets.analysis import figures, summaries  # noqa: E402  (after the filters above)
from assets.automation import jobs, schedules, sensors  # noqa: E402
from assets.curation import assets as curation_assets  # noqa: E402
from assets.curation import checks as curation_checks  # noqa: E402
from assets.dynamics import figures as dynamics_figures  # noqa: E402
from assets.dynamics import learning, zero_shot  # noqa: E402
from assets.executors import executor_for  # noqa: E402
from assets.gradients import assets as gradient_assets  # noqa: E402
from assets.gradients import checks as gradient_checks  # noqa: E402
from assets.partitions import partition_note  # noqa: E402
from assets.resources import resources_for  # noqa: E402

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
