"""The `gpu` concurrency pool every gradient step runs in."""

from __future__ import annotations

import dagster as dg

GPU_POOL = "gpu"  # gradient steps; limit in the instance's dagster.yaml (`concurrency: pools: default_limit`)


def store_pool_limit(instance: dg.DagsterInstance, pool: str = GPU_POOL) -> None:
    """Store the instance's default limit for `pool` if none is stored yet.

    Dagster 1.13's run queue stores it on its first pass over a pool but treats the pool as
    unlimited during that pass: on a fresh instance every gradient run queued then would start.
    Called before runs are requested (sensor, schedules, demo).
    """
    storage = instance.event_log_storage
    if storage.supports_global_concurrency_limits and pool not in storage.get_concurrency_keys():
        storage.initialize_concurrency_limit_to_default(pool)
