"""Automation: new catalog models fill themselves in, failures are retried nightly, summaries refresh.

- `model_catalog_sensor` (RUNNING by default): watches the model catalog (`$LG_MODEL_CATALOG` or
  `data_sources/models.yaml`), registers new models as `model` partitions and requests one run per missing
  (model, variant) gradient partition — after the variant's curated table, which it requests first. Each
  partition is requested once (run key); what fails is left to the schedule. Removing a model from the
  catalog never deletes a partition or its statistics.
- `curate_missing_nightly` (03:00, `LG_CURATE_CRON`) then `fill_missing_nightly` (03:30, `LG_FILL_CRON`), both
  RUNNING: whatever is still missing or failed (two schedules because a Dagster job holds assets of one
  partitioning only: curated tables are keyed by variant, statistics by model x variant).
- `layer_summary` and `figures` refresh through declarative automation (`refresh_summaries` sensor).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import dagster as dg

from assets.backlog import FAILED, IN_PROGRESS, MATERIALIZED, Backlog, buildable_variants, plan
from assets.common import store_pool_limit
from assets.curation import curated_dataset, curated_gate
from assets.figures import figures
from assets.gradients import gradient_stats
from assets.partitions import (
    MODEL,
    model_partitions,
    model_variant_partitions,
    multi_key,
    split_key,
)
from assets.resources import OutputStore
from assets.summaries import layer_summary

SENSOR_INTERVAL_S = int(os.environ.get("LG_SENSOR_INTERVAL_S", "30"))
CURATE_CRON = os.environ.get("LG_CURATE_CRON", "0 3 * * *")
FILL_CRON = os.environ.get("LG_FILL_CRON", "30 3 * * *")
_STATES = {"MATERIALIZED": MATERIALIZED, "FAILED": FAILED, "IN_PROGRESS": IN_PROGRESS}


def refresh_when_upstream_settles() -> dg.AutomationCondition:
    """Run when an upstream partition was updated since this asset was last requested, and no upstream
    partition (nor this one) is in progress.

    Not `AutomationCondition.eager()`: eager also waits until *no* upstream partition is missing, and the
    hub-only variants of an offline machine stay missing for ever, so it would never fire. Missing upstream
    partitions are fine here: a summary covers the variants that exist and passed their check.

    The reset is "requested on the last tick, and nothing new upstream since", not `since_last_handled`:
    that one also resets when this asset's own run finishes, or when it was requested one tick ago, and
    so drops an upstream update that lands while the run is going (seen with two models finishing within
    seconds: the second never reached the figures). An update racing a request costs one extra refresh.
    """
    updated = dg.AutomationCondition.any_deps_updated()
    handled = (dg.AutomationCondition.newly_requested() & ~updated) | dg.AutomationCondition.initial_evaluation()
    return (
        updated.since(handled.with_label("requested, nothing new since"))
        & ~dg.AutomationCondition.any_deps_in_progress()
        & ~dg.AutomationCondition.in_progress()
    ).with_label("upstream updated, none in progress")


AUTOMATED = (layer_summary, figures)


def with_automation(assets: list[Any]) -> list[Any]:
    """The assets with the refresh condition on `layer_summary` and `figures` (their modules stay Dagster-thin)."""
    keys = {a.key for a in AUTOMATED}
    condition = refresh_when_upstream_settles()
    return [
        a.map_asset_specs(lambda s: s.replace_attributes(automation_condition=condition) if s.key in keys else s)
        if isinstance(a, dg.AssetsDefinition) and keys & set(a.keys)
        else a
        for a in assets
    ]


curate_job = dg.define_asset_job("curate", selection=[curated_dataset], description="One curated table.")
gradients_job = dg.define_asset_job(
    "gradients",
    selection=dg.AssetSelection.assets(gradient_stats),  # with its blocking check
    description="Gradient statistics of one (model, variant) partition, and their check.",
)

refresh_summaries = dg.AutomationConditionSensorDefinition(
    "refresh_summaries",
    target=dg.AssetSelection.assets(*AUTOMATED),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=SENSOR_INTERVAL_S,
    description="Recomputes a model's layer_summary, then the figures, once its gradient runs have settled.",
)


def current_backlog(instance: dg.DagsterInstance, store: OutputStore | None, retry_failed: bool) -> Backlog:
    """Plan against the instance's partition statuses and the check verdicts on disk (given a store)."""
    from data_sources.model_catalog import model_catalog

    catalog = model_catalog()
    registered = set(instance.get_dynamic_partitions(MODEL))
    variants = buildable_variants()
    curated = _statuses(instance, curated_dataset.key, variants, curated_dataset.partitions_def)
    keys = [multi_key(m, v) for m in sorted(registered & set(catalog)) for v in variants]
    gradients = {split_key(k): s for k, s in _statuses(instance, gradient_stats.key, keys).items()}
    failed_checks = _failed_checks(store, gradients) if retry_failed and store is not None else ()
    blocked = [v for v in variants if store is not None and curated_gate(store, v)]
    return plan(catalog, registered, variants, curated, gradients, retry_failed, failed_checks, blocked)


def _statuses(
    instance: dg.DagsterInstance, key: dg.AssetKey, partition_keys: list[Any], partitions_def: Any = None
) -> dict[Any, str | None]:
    if not partition_keys:
        return {}
    found = instance.get_status_by_partition(key, partition_keys, partitions_def or model_variant_partitions) or {}
    return {k: _STATES.get(getattr(found.get(str(k)), "name", ""), None) for k in partition_keys}


def _failed_checks(store: OutputStore, gradients: dict[tuple[str, str], str | None]) -> list[tuple[str, str]]:
    import json

    failed = []
    for (model, variant), state in gradients.items():
        verdict = store.verdict(model, variant)
        if state == MATERIALIZED and verdict.is_file() and not json.loads(verdict.read_text()).get("passed", True):
            failed.append((model, variant))
    return failed


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
        yield dg.RunRequest(
            run_key=key, job_name=gradients_job.name, partition_key=multi_key(model, variant), tags=tags
        )


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
    context.log.info(backlog.describe())
    requests = list(run_requests(backlog, "catalog_sensor", keyed=True))
    new = [model_partitions.build_add_request(list(backlog.register))] if backlog.register else []
    if not requests and not new:
        return dg.SensorResult(skip_reason=backlog.describe())
    return dg.SensorResult(run_requests=requests, dynamic_partitions_requests=new)


@dg.schedule(
    name="curate_missing_nightly",
    cron_schedule=CURATE_CRON,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    job=curate_job,
    description="Builds every curated table still missing or failed that a gradient partition needs.",
)
def curate_missing_nightly(context: dg.ScheduleEvaluationContext) -> Any:
    backlog = current_backlog(context.instance, None, retry_failed=True)
    requests = [r for r in run_requests(backlog, "nightly", keyed=False) if r.job_name == curate_job.name]
    return requests or dg.SkipReason(backlog.describe())


@dg.schedule(
    name="fill_missing_nightly",
    cron_schedule=FILL_CRON,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    job=gradients_job,
    description="Requests every buildable gradient partition still missing, failed, or whose check failed.",
)
def fill_missing_nightly(context: dg.ScheduleEvaluationContext, store: OutputStore) -> Any:
    store_pool_limit(context.instance)
    backlog = current_backlog(context.instance, store, retry_failed=True)
    context.log.info(backlog.describe())
    requests = list(run_requests(backlog, "nightly", keyed=False, curate=False))
    return requests or dg.SkipReason(backlog.describe())
