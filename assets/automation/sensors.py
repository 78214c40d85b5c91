"""The catalog sensor (new models fill themselves in) and the sensor that evaluates the refresh conditions."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from typing import Any

import dagster as dg

from assets import gates
from assets.automation.jobs import curate_job, gradients_job
from assets.backlog import FAILED, IN_PROGRESS, MATERIALIZED, Backlog, buildable_variants, plan
from assets.curation.assets import curated_dataset
from assets.gradients.assets import gradient_stats
from assets.partitions import (
    MODEL,
    availability_note,
    model_partitions,
    model_variant_partitions,
    multi_key,
    unbuildable_partitions,
    variant_partition_key,
)
from assets.pools import store_pool_limit
from assets.resources import OutputStore
from lg_pipeline.errors import InputError
from lg_pipeline.vocabulary import StatsKey

SENSOR_INTERVAL_S = int(os.environ.get("LG_SENSOR_INTERVAL_S", "30"))
_STATES = {"MATERIALIZED": MATERIALIZED, "FAILED": FAILED, "IN_PROGRESS": IN_PROGRESS}
REFRESH_SENSOR = "refresh_results"


def refresh_sensor(assets: Iterable[dg.AssetsDefinition]) -> dg.AutomationConditionSensorDefinition:
    """The one sensor, RUNNING by default, that evaluates every automation condition of `assets` (the summaries and
    every figures asset).

    Derived from the code location's assets, so an asset given a condition later is covered too: Dagster hands a
    conditioned asset that no sensor targets to its own `default_automation_condition_sensor`, which starts Stopped,
    and the asset would then never refresh.
    """
    keys = sorted({key for a in assets for key, c in a.automation_conditions_by_key.items() if c is not None}, key=str)
    asset_keys = [k for k in keys if isinstance(k, dg.AssetKey)]
    target = dg.AssetSelection.assets(*asset_keys)
    if checks := [k for k in keys if isinstance(k, dg.AssetCheckKey)]:
        target = target | dg.AssetSelection.checks(*checks)
    names = ", ".join(k.to_user_string() for k in asset_keys)
    return dg.AutomationConditionSensorDefinition(
        REFRESH_SENSOR,
        target=target,
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=SENSOR_INTERVAL_S,
        description=f"Refreshes {names} once what they are drawn from has settled and passed its checks.",
    )


def current_backlog(instance: dg.DagsterInstance, store: OutputStore | None, retry_failed: bool) -> Backlog:
    """Plan against the instance's partition statuses and the check verdicts on disk (given a store)."""
    from data_sources.models.catalog import model_catalog

    catalog = model_catalog()
    registered = set(instance.get_dynamic_partitions(MODEL))
    variants = buildable_variants()  # the planner works on variants and (model, variant) pairs, not partition keys
    curated = _statuses(
        instance, curated_dataset.key, {v: variant_partition_key(v) for v in variants}, curated_dataset.partitions_def
    )
    pairs = [(m, v) for m in sorted(registered & set(catalog)) for v in variants]
    gradients = _statuses(instance, gradient_stats.key, {pair: multi_key(*pair) for pair in pairs})
    failed_checks = _failed_checks(store, gradients) if retry_failed and store is not None else ()
    blocked = [v for v in variants if store is not None and gates.curated_gate(store, v)]
    return plan(catalog, registered, variants, curated, gradients, retry_failed, failed_checks, blocked)


def _statuses(
    instance: dg.DagsterInstance, key: dg.AssetKey, partitions: dict[Any, Any], partitions_def: Any = None
) -> dict[Any, str | None]:
    """{what the planner calls a partition: its state}, given {that: its partition key}."""
    if not partitions:
        return {}
    keys = [str(p) for p in partitions.values()]
    found = instance.get_status_by_partition(key, keys, partitions_def or model_variant_partitions) or {}
    return {k: _STATES.get(getattr(found.get(str(p)), "name", ""), None) for k, p in partitions.items()}


def _failed_checks(store: OutputStore, gradients: dict[tuple[str, str], str | None]) -> list[tuple[str, str]]:
    return [
        pair
        for pair, state in gradients.items()
        if state == MATERIALIZED and gates.stats_check_failed(store, StatsKey.of(*pair))
    ]


def run_requests(backlog: Backlog, source: str, keyed: bool, curate: bool = True) -> Iterator[dg.RunRequest]:
    """Curated tables first (their gradient runs follow on a later tick), then one run per gradient partition.

    keyed: run keys make the sensor request each partition once, ever; the schedules retry without them.
    """
    tags = {"lg/source": source}
    for variant in backlog.curate if curate else ():
        key = f"curated:{variant}" if keyed else None  # run keys name the variant in full, as they always have
        partition = variant_partition_key(variant)
        yield dg.RunRequest(run_key=key, job_name=curate_job.name, partition_key=partition, tags=tags)
    for model, variant in backlog.compute:
        key = f"gradients:{model}|{variant}" if keyed else None
        partition = multi_key(model, variant)
        yield dg.RunRequest(run_key=key, job_name=gradients_job.name, partition_key=partition, tags=tags)


@dg.sensor(
    name="model_catalog_sensor",
    minimum_interval_seconds=SENSOR_INTERVAL_S,
    default_status=dg.DefaultSensorStatus.RUNNING,
    jobs=[curate_job, gradients_job],
    description="Registers new catalog models as `model` partitions and computes their missing statistics.",
)
def model_catalog_sensor(context: dg.SensorEvaluationContext, store: OutputStore) -> dg.SensorResult:
    store_pool_limit(context.instance)
    backlog = current_backlog(context.instance, store, retry_failed=False)
    said = _said(context.cursor)
    now = {
        "skipped": _skipped_fingerprint(backlog),
        "backlog": backlog.describe(skipped=False),
        "unbuildable": unbuildable_partitions(),
        "models": sorted(context.instance.get_dynamic_partitions(MODEL)),
    }
    if now["skipped"] != said.get("skipped"):  # the first tick, or what cannot run here changed: say it once, in full
        for line in _skipped_lines(backlog):
            context.log.info(line)
    still = {**said, "models": [m for m in said.get("models", []) if m in now["models"]]}  # a deleted one has none
    events = _unbuildable_observations(_partition_notes(still), _partition_notes(now))
    cursor = json.dumps(now, sort_keys=True)
    requests = list(run_requests(backlog, "catalog_sensor", keyed=True))
    new = [model_partitions.build_add_request(list(backlog.register))] if backlog.register else []
    if not requests and not new:  # the daemon logs the skip reason (once per change: `daemon_log`)
        return dg.SensorResult(skip_reason=now["backlog"], cursor=cursor, asset_events=events)
    if now["backlog"] != said.get("backlog"):
        context.log.info(now["backlog"])
    return dg.SensorResult(run_requests=requests, dynamic_partitions_requests=new, cursor=cursor, asset_events=events)


def _said(cursor: str | None) -> dict[str, Any]:
    """What the sensor said on its last tick (its cursor); an unreadable or older cursor counts as a first tick."""
    try:
        said = json.loads(cursor or "{}")
    except ValueError:
        return {}
    return said if isinstance(said, dict) else {}


def _partition_notes(said: dict[str, Any]) -> dict[tuple[str, str], str]:
    """{(asset, partition key): why it cannot build} of the unbuildable variants: their curated tables and, for each
    registered model, their statistics and dynamics partitions."""
    # by name: the dynamics import automation
    per_model = (gradient_stats.key.to_user_string(), "training_dynamics", "training_dynamics_dpo")
    notes = {}
    for variant, why in said.get("unbuildable", {}).items():  # the cursor names variants in full
        try:
            notes[(curated_dataset.key.to_user_string(), variant_partition_key(variant))] = why
        except InputError:  # an older cursor's variant of a dataset the catalog no longer has: nothing to say
            continue
        for model in said.get("models", []):
            notes |= {(asset, str(multi_key(model, variant))): why for asset in per_model}
    return notes


def _unbuildable_observations(
    before: dict[tuple[str, str], str], now: dict[tuple[str, str], str]
) -> list[dg.AssetObservation]:
    """One observation per partition whose buildability changed, naming why it cannot build (or that it can now):
    it shows in that partition's event history, as the partition panel shows no metadata before a materialization.

    Observations are no updates of a materializable asset for the refresh conditions (they count materializations),
    so they trigger no summary or figures run.
    """
    changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
    return [
        dg.AssetObservation(
            asset,
            partition=partition,
            description=f"cannot build here: {now[(asset, partition)]}" if (asset, partition) in now else None,
            metadata={"cannot build here": now.get((asset, partition), "(buildable now)")},
        )
        for asset, partition in changed
    ]


def _skipped_lines(backlog: Backlog) -> list[str]:
    """What cannot run here and why: the catalog models left out, the variants that are no partitions and the
    partitions that cannot build as configured."""
    models = [f"model {m} is not registered: {why}" for m, why in sorted(backlog.unavailable.items())]
    return models + ([note] if (note := availability_note()) else [])


def _skipped_fingerprint(backlog: Backlog) -> str:
    """Changes exactly when the skipped models, the variants left out or the unbuildable partitions change."""
    text = json.dumps([sorted(backlog.unavailable.items()), availability_note()])
    return hashlib.sha1(text.encode()).hexdigest()[:16]
