"""The Dagster code location: `dagster dev -w workspace.yaml` or `dagster ... -m lg_pipeline.definitions`.

A composition root: it only loads definitions. `LG_ENV` (local | gpu | k8s) selects the resources and the
executor, once, here.
"""

from __future__ import annotations

import dagster as dg

from assets.analysis import figures, summaries
from assets.automation import jobs, schedules, sensors
from assets.curation import assets as curation_assets
from assets.curation import checks as curation_checks
from assets.dynamics import assets as dynamics_assets
from assets.dynamics import checks as dynamics_checks
from assets.dynamics import figures as dynamics_figures
from assets.dynamics import zero_shot
from assets.executors import executor_for
from assets.gradients import assets as gradient_assets
from assets.gradients import checks as gradient_checks
from assets.resources import resources_for

ASSET_MODULES = [curation_assets, gradient_assets, summaries, figures, dynamics_assets, dynamics_figures, zero_shot]
CHECK_MODULES = [curation_checks, gradient_checks, dynamics_checks, zero_shot]


def definitions_for(env: str | None = None) -> dg.Definitions:
    """The code location for one environment (default: `$LG_ENV`, else local)."""
    return dg.Definitions(
        assets=dg.load_assets_from_modules(ASSET_MODULES),
        asset_checks=dg.load_asset_checks_from_modules(CHECK_MODULES),
        sensors=[sensors.model_catalog_sensor, sensors.refresh_summaries],
        schedules=[schedules.curate_missing_nightly, schedules.fill_missing_nightly],
        jobs=[jobs.curate_job, jobs.gradients_job],
        resources=resources_for(env),
        executor=executor_for(env),
    )


defs = definitions_for()
