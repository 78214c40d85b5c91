"""A run with nothing to do: said in the run's log and as an observation, with no materialization."""

from __future__ import annotations

import dagster as dg


def skipped(context: dg.AssetExecutionContext, reason: str) -> dg.AssetObservation:
    """What an asset (`output_required=False`) yields instead of a materialization when its run would change
    nothing: the data version stays, and no automation condition downstream sees an update (Dagster's
    `newly_updated` counts a materialized asset's materializations, not its observations)."""
    context.log.info(f"skipped, nothing materialized: {reason}; assets downstream are not refreshed")
    return dg.AssetObservation(
        asset_key=context.asset_key, partition=context.partition_key, metadata={"skipped": reason}
    )
