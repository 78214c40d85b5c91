"""The Dagster code location: `dagster dev -w workspace.yaml` or `dagster ... -m lg_pipeline.definitions`."""

from __future__ import annotations

import dagster as dg

from assets import curation, figures, gradients, summaries
from assets.resources import resources_for

defs = dg.Definitions(
    assets=dg.load_assets_from_modules([curation, gradients, summaries, figures]),
    asset_checks=dg.load_asset_checks_from_modules([gradients]),
    resources=resources_for(),
)
