"""The catalog sensor (new models fill themselves in) and the sensor that evaluates the refresh conditions."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from typing import Any

import dagster as dg

from assets import gates
from assets.automation.jobs import curate_job, gradients_job
from assets.backlog import FAILED, IN_PROGRESS, MATERIALIZED, Backlog, buildable_variants, plan
from assets.curation.assets import curated_dataset
from assets.gradients.assets import gradient_stats
from assets.partitions import (
    MODEL,
    model_partitions,
    model_variant_partitions,
    multi_key,
    not_partitioned_note,
    stats_key,
)
from assets.pools import store_pool_limit
from assets.resources import OutputStore
from lg_pipeline.vocabulary import StatsKey

SENSOR_INTERVAL_S = int(os.environ.get("LG_SENSOR_INTERVAL_S", "30"))
_STATES = {"MATERIALIZED": MATERIALIZED, "FAILED": FAILED, "IN_PROGRESS": IN_PROGRESS}


refresh_summaries = dg.AutomationConditionSensorDefinition(
    "refresh_summaries",
    target=dg.AssetSelection.assets("layer_summary", "figures"),  # by key: the analysis assets import automation
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=SENSOR_INTERVAL_S,
    description="Recomputes a model's layer_summary, then the figures, once its gradient runs have settled.",
)


def current_backlog(instance: dg.DagsterInstance, store: OutputStore | None, retry_failed: bool) -> Backlog:
    """Plan against the instance's partition statuses and the check verdicts on disk (given a store)."""
    from data_sources.models.catalog import model_catalog

    catalog = model_catalog()
    registered = set(instance.get_dynamic_partitions(MODEL))
    variants = buildable_variants()
    curated = _statuses(instance, curated_dataset.key, variants, curated_dataset.partitions_def)
    keys = [multi_key(m, v) for m in sorted(registered & set(catalog)) for v in variants]
    gradients = {_pair(stats_key(k)): s for k, s in _statuses(instance, gradient_stats.key, keys).items()}
    failed_checks = _failed_checks(store, gradients) if retry_failed and store is not None else ()
    blocked = [v for v in variants if store is not None and gates.curated_gate(store, v)]
    return plan(catalog, registered, variants, curated, gradients, retry_failed, failed_checks, blocked)


def _statuses(
    instance: dg.DagsterInstance, key: dg.AssetKey, partition_keys: list[Any], partitions_def: Any = None
) -> dict[Any, str | None]:
    if not partition_keys:
        return {}
    found = instance.get_status_by_partition(key, partition_keys, partitions_def or model_variant_partitions) or {}
    return {k: _STATES.get(getattr(found.get(str(k)), "name", ""), None) for k in partition_keys}


def _pair(key: StatsKey) -> tuple[str, str]:
    """The planner's (model, variant) pair of a statistics partition."""
    return key.model, str(key.variant)


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
        key = f"curated:{variant}" if keyed else None
        yield dg.RunRequest(run_key=key, job_name=curate_job.name, partition_key=variant, tags=tags)
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
    cursor = _skipped_fingerprint(backlog)
    if cursor != context.cursor:  # the first tick, or what cannot run here changed: say it once, in full
        for line in _skipped_lines(backlog):
            context.log.info(line)
    context.log.info(backlog.describe(skipped=False))
    requests = list(run_requests(backlog, "catalog_sensor", keyed=True))
    new = [model_partitions.build_add_request(list(backlog.register))] if backlog.register else []
    if not requests and not new:
        return dg.SensorResult(skip_reason=backlog.describe(skipped=False), cursor=cursor)
    return dg.SensorResult(run_requests=requests, dynamic_partitions_requests=new, cursor=cursor)


def _skipped_lines(backlog: Backlog) -> list[str]:
    """What cannot run here and why: the catalog models left out, and the variants that are no partitions."""
    models = [f"model {m} is not registered: {why}" for m, why in sorted(backlog.unavailable.items())]
    return models + ([note] if (note := not_partitioned_note()) else [])


def _skipped_fingerprint(backlog: Backlog) -> str:
    """The sensor's cursor: changes exactly when the skipped models or the unbuildable variants change."""
    text = json.dumps([sorted(backlog.unavailable.items()), not_partitioned_note()])
    return hashlib.sha1(text.encode()).hexdigest()[:16]
