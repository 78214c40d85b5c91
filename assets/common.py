"""Small helpers shared by the asset modules: clear failures, data versions, markdown, the `gpu` pool."""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path
from typing import Any

import dagster as dg

from lg_pipeline.examples import InputError

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


@contextlib.contextmanager
def clear_errors():
    """Bad input shows in the UI as one line naming it, not as a stack trace."""
    try:
        yield
    except InputError as exc:
        raise dg.Failure(description=str(exc)) from None


def file_version(path: Path) -> str:
    """A data version from a file's bytes: the UI marks downstream stale when it changes."""
    return hashlib.sha1(path.read_bytes()).hexdigest()[:16]


def md_table(frame: Any, max_rows: int = 20) -> dg.MetadataValue:
    """A DataFrame as markdown metadata (first rows only)."""
    head = frame.head(max_rows)
    header = "| " + " | ".join(map(str, head.columns)) + " |"
    rule = "|" + "---|" * len(head.columns)
    rows = ["| " + " | ".join(_cell(v) for v in row) + " |" for row in head.itertuples(index=False)]
    more = [f"\n_{len(frame) - max_rows} more rows_"] if len(frame) > max_rows else []
    return dg.MetadataValue.md("\n".join([header, rule, *rows, *more]))


def _cell(value: Any) -> str:
    text = f"{value:.4g}" if isinstance(value, float) else str(value)
    return text.replace("|", "\\|").replace("\n", " ")[:80]
