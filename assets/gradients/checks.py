"""The blocking check of a statistics partition, beside its asset: a failure keeps it out of summaries.

The core check `lg-pipeline validate` runs too (`gradients.checks.check_table`: the table, its outcome log and its
run manifest). What the table must hold comes from outside it, over what the manifest says: the curated examples of
the variant, the model's studied matrices (from its config, for the targets the run was asked for) and the model's
prompt format (`chat`).
"""

import dagster as dg

from assets import gates
from assets.gradients.assets import gradient_stats
from assets.metadata import md_table
from assets.partitions import model_variant_partitions, stats_key
from assets.resources import PROJECT_ROOT, OutputStore


@dg.asset_check(
    asset=gradient_stats,
    partitions_def=model_variant_partitions,
    blocking=True,
    description="Every curated example, every studied matrix of the model, finite, spectral and rank bounds, "
    "min ≤ mean ≤ max, one loss per example, token counts, no duplicates, one provenance (as `lg-pipeline validate`).",
)
def gradient_stats_valid(context: dg.AssetCheckExecutionContext, store: OutputStore) -> dg.AssetCheckResult:
    from lg_pipeline.gradients.checks import check_table

    key = stats_key(context.partition_key)
    path = store.gradients(key)
    report = check_table(path, _expected(store, key, path))
    failures = report.explain()
    gates.record_stats(store, key, report.passed, failures)
    return dg.AssetCheckResult(
        passed=report.passed,
        metadata={
            "failed_expectations": dg.MetadataValue.json(failures),
            "failing_rows": md_table(report.failing_rows),
            "failed_examples": md_table(_failed_examples(path)),
            "expectations_run": len(report.outcomes),
        },
    )


def _failed_examples(path):
    """The outcome log's failed examples (none when the log is missing or torn: the check has said so)."""
    import pandas as pd

    from lg_pipeline.gradients.runner import status_path

    try:
        status = pd.read_parquet(status_path(path))
        return status[status.status == "failed"]
    except Exception:  # missing, torn, or without a status column: a failed rule of the check already
        return pd.DataFrame(columns=["example_id", "status", "reason"])


def _expected(store: OutputStore, key, path):
    """Curated ids, the model's matrices for the run's targets, and its prompt format."""
    import json
    import os

    import pandas as pd

    from data_sources.models.catalog import get_model_spec, studied_matrices
    from lg_pipeline.gradients.checks import Expected
    from lg_pipeline.gradients.runner import key_path
    from lg_pipeline.vocabulary import ATTENTION

    ids = frozenset(pd.read_parquet(store.curated(key.variant), columns=["example_id"]).example_id)
    try:
        targets = tuple(json.loads(key_path(path).read_text(encoding="utf-8"))["targets"])
    except (OSError, ValueError, KeyError):
        targets = ATTENTION
    cache_dir = os.environ.get("LG_CACHE_DIR", str(PROJECT_ROOT / ".cache"))  # as ComputeResource's default
    matrices = Expected.of_targets(studied_matrices(key.model, targets, cache_dir))
    return Expected(ids, matrices, {"chat": get_model_spec(key.model).chat})
