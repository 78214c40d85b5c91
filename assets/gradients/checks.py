"""The blocking check of a statistics partition, beside its asset: a failure keeps it out of summaries."""

import dagster as dg

from assets import gates
from assets.gradients.assets import gradient_stats
from assets.metadata import md_table
from assets.partitions import model_variant_partitions, stats_key
from assets.resources import OutputStore


@dg.asset_check(
    asset=gradient_stats,
    partitions_def=model_variant_partitions,
    blocking=True,
    description="GX: complete, finite, norms ≥ 0, spectral bounds.",
)
def gradient_stats_valid(context: dg.AssetCheckExecutionContext, store: OutputStore) -> dg.AssetCheckResult:
    import pandas as pd

    from lg_pipeline.gradients.checks import validate_gradient_stats
    from lg_pipeline.gradients.runner import status_path

    key = stats_key(context.partition_key)
    path = store.gradients(key)
    status = pd.read_parquet(status_path(path))
    report = validate_gradient_stats(pd.read_parquet(path), status)
    failures = [f"{o.expectation}({o.column})" for o in report.failures()]
    gates.record_stats(store, key, report.passed, failures)
    return dg.AssetCheckResult(
        passed=report.passed,
        metadata={
            "failed_expectations": dg.MetadataValue.json(failures),
            "failing_rows": md_table(report.failing_rows),
            "failed_examples": md_table(status[status.status == "failed"]),
            "expectations_run": len(report.outcomes),
        },
    )
