"""The `gpu` concurrency pool every gradient step runs in, and how a run waiting for it reads."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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


def describe_pool_wait(blocked: Mapping[str, Mapping[str, Any]]) -> str:
    """A queued run held back by pool limits, in words.

    `blocked` is what Dagster's run queue logs as raw JSON, `{pool: {slot_count, in_progress_count, launched_count,
    pending_step_count, ...}}` (`GlobalOpConcurrencyLimitsCounter.get_blocked_run_debug_info`).
    """
    parts = []
    for pool, counts in sorted(blocked.items()):
        running, launched = int(counts.get("in_progress_count", 0)), int(counts.get("launched_count", 0))
        part = f"pool '{pool}': {running + launched} of {counts.get('slot_count', '?')} slot(s) taken"
        part += f" ({running} run(s) in progress, {launched} just launched"
        pending = int(counts.get("pending_step_count", 0))
        parts.append(part + (f", {pending} step(s) waiting for a slot)" if pending else ")"))
    where = "; ".join(parts) or "a concurrency pool"
    return f"waits in the queue for {where}; it starts when a slot frees"
