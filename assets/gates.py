"""Check outcomes ("verdicts"): what a check decided about the data now on disk, and what that blocks.

Dagster records every check evaluation, but a run launched later (by the sensor, a schedule, the UI) must know the
last outcome on *this* data before it loads a model, and a summary must know it for every statistics partition it
reads. So each verdict is also a small JSON file beside its data (paths from `OutputStore`), holding the data
version it judged: a verdict about older data decides nothing. This module is the only reader and writer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from assets.metadata import file_version
from assets.resources import OutputStore
from lg_pipeline.io.atomic import atomic_write_text
from lg_pipeline.vocabulary import StatsKey, VariantKey

MISSING = "missing"  # the data version of a verdict on a table that is not there


@dataclass(frozen=True)
class Verdict:
    passed: bool
    failures: tuple[str, ...]
    data_version: str

    def about(self, data: Path) -> bool:
        """Whether this verdict judged the data now in `data` (hashed only when asked)."""
        return data.is_file() and self.data_version == file_version(data)


def _write(path: Path, data: Path, failures: list[str], passed: bool | None = None) -> Verdict:
    # A check may judge a run whose table is gone (it fails saying so): that verdict is about no data.
    version = file_version(data) if data.is_file() else MISSING
    verdict = Verdict(not failures if passed is None else passed, tuple(failures), version)
    payload = {"passed": verdict.passed, "failures": list(verdict.failures), "data_version": verdict.data_version}
    atomic_write_text(path, json.dumps(payload))
    return verdict


def _read(path: Path) -> Verdict | None:
    if not path.is_file():
        return None
    raw = json.loads(path.read_text())
    return Verdict(bool(raw.get("passed")), tuple(raw.get("failures") or ()), str(raw.get("data_version")))


# ------------------------------------------------------------------------------------------------ curated tables
def record_curated(store: OutputStore, variant: str | VariantKey, blocking_failures: list[str]) -> Verdict:
    """The curated checks' outcome: the blocking checks that failed on the current table."""
    return _write(store.curated_verdict(variant), store.curated(variant), blocking_failures)


def forget_curated(store: OutputStore, variant: str | VariantKey) -> None:
    """A new table was written: the old verdict no longer holds."""
    store.curated_verdict(variant).unlink(missing_ok=True)


def curated_gate(store: OutputStore, variant: str | VariantKey) -> list[str]:
    """Blocking curated checks that failed on the variant's current table (empty: none, or no verdict yet)."""
    verdict = _read(store.curated_verdict(variant))
    if verdict is None or verdict.passed or not store.curated(variant).is_file():
        return []
    # hashed only for a failed verdict: the sensor asks for every variant every 30 s
    return list(verdict.failures or ["unknown"]) if verdict.about(store.curated(variant)) else []


# ------------------------------------------------------------------------------------------------ statistics
def record_stats(store: OutputStore, key: StatsKey, passed: bool, failures: list[str]) -> Verdict:
    return _write(store.stats_verdict(key), store.gradients(key), failures, passed)


def forget_stats(store: OutputStore, key: StatsKey) -> None:
    store.stats_verdict(key).unlink(missing_ok=True)


def stats_check_failed(store: OutputStore, key: StatsKey) -> bool:
    """The last check of this partition failed (whatever data it judged): the nightly fill retries it."""
    verdict = _read(store.stats_verdict(key))
    return verdict is not None and not verdict.passed


def stats_gate(store: OutputStore, key: StatsKey) -> str | None:
    """Why this partition may not enter a summary (None: its check passed on exactly the data on disk)."""
    verdict = _read(store.stats_verdict(key))
    if verdict is None:
        return "not validated yet (run the gradient_stats_valid check)"
    if not verdict.passed:
        return "check failed: " + ", ".join(verdict.failures)
    if not verdict.about(store.gradients(key)):
        return "statistics changed since the check ran"
    return None


# ------------------------------------------------------------------------------------------------ summaries
def record_summary_blocked(store: OutputStore, model: str, blocked: dict[str, str]) -> None:
    """Which variants blocked the model's summary, and why (the figures skip a blocked model)."""
    atomic_write_text(store.summary_verdict(model), json.dumps(blocked, indent=1))


def clear_summary_blocked(store: OutputStore, model: str) -> None:
    store.summary_verdict(model).unlink(missing_ok=True)


def summary_blocked(store: OutputStore, model: str) -> dict[str, str]:
    path = store.summary_verdict(model)
    return json.loads(path.read_text()) if path.is_file() else {}


# ------------------------------------------------------------------------------------------------ learning dynamics
def _dynamics_data(store: OutputStore, key: StatsKey, objective: str) -> Path:
    return store.dynamics(key, objective) / "influence_summary.parquet"


def record_dynamics(store: OutputStore, key: StatsKey, objective: str, failures: list[str]) -> Verdict:
    """The completeness check's outcome on a learning-dynamics run (the figures leave failed runs out)."""
    return _write(store.dynamics_verdict(key, objective), _dynamics_data(store, key, objective), failures)


def forget_dynamics(store: OutputStore, key: StatsKey, objective: str) -> None:
    store.dynamics_verdict(key, objective).unlink(missing_ok=True)


def dynamics_gate(store: OutputStore, key: StatsKey, objective: str) -> str | None:
    """Why a run may not enter the figures (None: its completeness check passed on exactly these tables)."""
    verdict = _read(store.dynamics_verdict(key, objective))
    if verdict is None:
        return "not validated yet (run the training_dynamics_complete check)"
    if not verdict.passed:
        return "check failed: " + "; ".join(verdict.failures)
    if not verdict.about(_dynamics_data(store, key, objective)):
        return "tables changed since the check ran"
    return None


# ------------------------------------------------------------------------------------------------ zero-shot dynamics
def _zero_shot_data(store: OutputStore, model: str, level: str, ordering: str) -> Path:
    from lg_pipeline.dynamics.zero_shot.checks import LOSSES

    return store.zero_shot(model, level, ordering) / f"{LOSSES}.parquet"


def record_zero_shot(store: OutputStore, model: str, level: str, ordering: str, failures: list[str]) -> Verdict:
    """The zero-shot check's outcome on one run folder (the figures draw only runs it passed)."""
    data = _zero_shot_data(store, model, level, ordering)
    return _write(store.zero_shot_verdict(model, level, ordering), data, failures)


def zero_shot_gate(store: OutputStore, model: str, level: str, ordering: str) -> str | None:
    """Why a zero-shot run may not enter the figures (None: its check passed on exactly these tables)."""
    verdict = _read(store.zero_shot_verdict(model, level, ordering))
    if verdict is None:
        return "not validated yet (run the zero_shot_complete check)"
    if not verdict.passed:
        return "check failed: " + "; ".join(verdict.failures)
    if not verdict.about(_zero_shot_data(store, model, level, ordering)):
        return "tables changed since the check ran"
    return None
