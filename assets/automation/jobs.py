"""The jobs the sensor and the schedules launch: one per partitioning."""

from __future__ import annotations

import dagster as dg

from assets.curation.assets import curated_dataset
from assets.gradients.assets import gradient_stats

curate_job = dg.define_asset_job("curate", selection=[curated_dataset], description="One curated table.")
gradients_job = dg.define_asset_job(
    "gradients",
    selection=dg.AssetSelection.assets(gradient_stats),  # with its blocking check
    description="Gradient statistics of one (model, variant) partition, and their check.",
)
