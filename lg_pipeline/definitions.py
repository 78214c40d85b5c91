"""The Dagster code location: `dagster dev -w workspace.yaml` or `dagster ... -m lg_pipeline.definitions`.

`LG_ENV` (local | gpu | k8s) selects the resources and the executor, once, here.
"""

from __future__ import annotations

import dagster as dg

from assets import automation, curation, figures, gradients, summaries
from assets.executors import executor_for
from assets.resources import resources_for


def definitions_for(env: str | None = None) -> dg.Definitions:
    """The code location for one environment (default: `$LG_ENV`, else local)."""
    return dg.Definitions(
        assets=automation.with_automation(dg.load_assets_from_modules([curation, gradients, summaries, figures])),
        asset_checks=dg.load_asset_checks_from_modules([curation, gradients]),
        sensors=[automation.model_catalog_sensor, automation.refresh_summaries],
        schedules=[automation.curate_missing_nightly, automation.fill_missing_nightly],
        jobs=[automation.curate_job, automation.gradients_job],
        resources=resources_for(env),
        executor=executor_for(env),
    )


defs = definitions_for()
