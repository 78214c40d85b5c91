"""The data-quality checks of a curated table (Great Expectations, in one step), beside their asset."""

import json
from typing import Any

import dagster as dg

from assets import gates
from assets.metadata import md_table
from assets.partitions import variant_of, variant_partitions
from assets.resources import OutputStore

# Blocking (a failure stops this variant's gradient_stats in the same run, and the verdict file stops gradient runs
# launched later): bad rows there would waste GPU time. Comparisons across variants that only warn are not blocking.
CURATED_CHECKS = {
    "curated_not_empty": (True, "GX: every instruction and response has a non-blank character."),
    "curated_ids_unique": (True, "GX: example ids present and unique."),
    "curated_row_count": (
        True,
        "GX: rows as requested; fewer only by losses the build counted and a source that ran out (no silent shrink).",
    ),
    "curated_instructions_aligned": (
        True,
        "GX: same instructions in the same order as the variants built from the same selection (other levels of "
        "its source group, correct and wrong), up to counted losses. Missing siblings are skipped.",
    ),
    "curated_no_fixed_point": (
        True,
        "GX: a wrong set never gives the correct set's response for the same instruction (warning only for the "
        "study's release files, kept as released). Skipped while the correct set is not materialized.",
    ),
    "curated_wiki_cut_length": (
        True,
        "GX: every wiki response we cut is within ±5% of its token budget (uncut long-tail and release rows exempt).",
    ),
    "curated_length_order": (
        False,
        "GX: median response tokens None < Simplified < Detailed within the dataset (warning, not blocking).",
    ),
}


@dg.multi_asset_check(
    name="curated_dataset_checks",
    specs=[
        dg.AssetCheckSpec(
            name, asset="curated_dataset", partitions_def=variant_partitions, blocking=blocking, description=text
        )
        for name, (blocking, text) in CURATED_CHECKS.items()
    ],
    description="Data-quality checks of one curated table (Great Expectations), read once with its siblings.",
)
def curated_dataset_checks(context: dg.AssetCheckExecutionContext, store: OutputStore):
    """Every curated check in one step: the table and its siblings are read once, one GX context serves them all."""
    from data_sources.datasets.catalog import dataset_spec
    from lg_pipeline.curation.checks import check_curated, sibling_variants

    variant = variant_of(context.partition_key)
    spec = dataset_spec(variant)
    table = _stored(store, variant, spec)
    if table is None:
        raise dg.Failure(description=f"curated table for '{variant}' not found: materialize curated_dataset first")
    reports = check_curated(table, {key: _stored(store, key, spec) for key in sibling_variants(spec, variant)})
    results = [_result(name, reports[name]) for name in CURATED_CHECKS]
    gates.record_curated(store, variant, [r.check_name for r in results if _blocks(r)])  # before: a block raises
    yield from results


def _stored(store: OutputStore, variant: str, spec: Any) -> Any:
    """A materialized curated table with its build record, or None."""
    import pandas as pd

    from lg_pipeline.curation.checks import Curated

    path = store.curated(variant)
    if not path.is_file():
        return None
    build = store.curated_build(variant)
    build_record = json.loads(build.read_text()) if build.is_file() else None
    return Curated(variant, pd.read_parquet(path), build_record, spec=spec)


def _blocks(result: dg.AssetCheckResult) -> bool:
    return not result.passed and result.severity == dg.AssetCheckSeverity.ERROR and CURATED_CHECKS[result.check_name][0]


def _result(name: str, report: Any) -> dg.AssetCheckResult:
    import pandas as pd

    blocking = CURATED_CHECKS[name][0]
    severity = dg.AssetCheckSeverity.ERROR if blocking and not report.warn_only else dg.AssetCheckSeverity.WARN
    metadata: dict[str, Any] = {
        "failed_expectations": dg.MetadataValue.json(report.failures),
        "failing_rows": md_table(report.failing_rows if report.failing_rows is not None else pd.DataFrame()),
        "skipped_comparisons": dg.MetadataValue.json(report.skipped),
        "details": dg.MetadataValue.json(json.loads(json.dumps(report.notes, default=str))),
    }
    metadata.update({title: md_table(frame) for title, frame in report.tables.items()})
    return dg.AssetCheckResult(
        asset_key="curated_dataset", check_name=name, passed=report.passed, severity=severity, metadata=metadata
    )


