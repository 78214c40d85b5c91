"""Nightly fill-in: curated tables, then statistics partitions, still missing or failed."""

from __future__ import annotations

import os
from typing import Any

import dagster as dg

from assets.automation.jobs import curate_job, gradients_job
from assets.automation.sensors import current_backlog, run_requests
from assets.pools import store_pool_limit
from assets.resources import OutputStore

CURATE_CRON = os.environ.get("LG_CURATE_CRON", "0 3 * * *")
FILL_CRON = os.environ.get("LG_FILL_CRON", "30 3 * * *")


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
    context.log.info(backlog.describe(skipped=False))  # the catalog sensor says once what is skipped, and why
    requests = list(run_requests(backlog, "nightly", keyed=False, curate=False))
    return requests or dg.SkipReason(backlog.describe())
