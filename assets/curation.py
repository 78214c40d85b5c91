"""Curated datasets: one table per dataset x level x correctness (the variant partition), and the checks on them."""

import json
from typing import Any

import dagster as dg

from assets.common import clear_errors, file_version, md_table
from assets.partitions import variant_partitions
from assets.resources import CurationResource, OutputStore
from lg_pipeline.curation import BUILDER_VERSION


@dg.asset(
    partitions_def=variant_partitions,
    code_version=BUILDER_VERSION,
    group_name="curation",
    kinds={"pandas", "parquet"},
    description="The study's training variants (None/Simplified/Detailed CoT, wrong-answer sets, wiki cuts).",
)
def curated_dataset(context: dg.AssetExecutionContext, store: OutputStore, curation: CurationResource):
    from data_sources.catalog import parse_variant_key
    from lg_pipeline.curation import build_variant
    from lg_pipeline.storage import atomic_write_text, write_parquet

    variant = context.partition_key
    with clear_errors():
        spec, _, _ = parse_variant_key(variant)
        tokenizer = curation.tokenizer() if spec.family == "wiki" else None
        frame, meta = build_variant(variant, curation.settings(spec.offline, tokenizer))
    build = json.loads(json.dumps(meta, default=str))
    store.curated_verdict(variant).unlink(missing_ok=True)  # a new table: the old check verdict no longer holds
    atomic_write_text(store.curated_build(variant), json.dumps(build, indent=1))
    path = write_parquet(frame, store.curated(variant))
    context.log.info(f"{variant}: {len(frame)} rows -> {path}")
    return dg.MaterializeResult(
        metadata={
            "rows": len(frame),
            "path": dg.MetadataValue.path(str(path)),
            "build": dg.MetadataValue.json(build),
            "demo_data": bool(frame.demo.any()) if len(frame) else False,
            "preview": md_table(frame[["example_id", "instruction", "response"]], 5),
        },
        data_version=dg.DataVersion(file_version(path)),
    )


# ------------------------------------------------------------------------------------------------ checks
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
    from lg_pipeline.curation.quality import check_curated, sibling_variants
    from lg_pipeline.storage import atomic_write_text

    variant = context.partition_key
    table = _stored(store, variant)
    if table is None:
        raise dg.Failure(description=f"curated table for '{variant}' not found: materialize curated_dataset first")
    reports = check_curated(table, {key: _stored(store, key) for key in sibling_variants(variant)})
    results = [_result(name, reports[name]) for name in CURATED_CHECKS]
    blocked = [r.check_name for r in results if _blocks(r)]
    verdict = {"passed": not blocked, "failures": blocked, "data_version": file_version(store.curated(variant))}
    atomic_write_text(store.curated_verdict(variant), json.dumps(verdict))  # before the results: a block raises
    yield from results


def _stored(store: OutputStore, variant: str) -> Any:
    """A materialized curated table with its build record, or None."""
    import pandas as pd

    from lg_pipeline.curation.quality import Curated

    path = store.curated(variant)
    if not path.is_file():
        return None
    build = store.curated_build(variant)
    return Curated(variant, pd.read_parquet(path), json.loads(build.read_text()) if build.is_file() else None)


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


def curated_gate(store: OutputStore, variant: str) -> list[str]:
    """Blocking curated checks that failed on the variant's current table (empty: none, or no verdict yet)."""
    path = store.curated_verdict(variant)
    if not path.is_file() or not store.curated(variant).is_file():
        return []
    verdict = json.loads(path.read_text())
    if verdict.get("passed") or verdict.get("data_version") != file_version(store.curated(variant)):
        return []  # passed, or a failure of an older table (hashed only then: the sensor asks every 30 s)
    return list(verdict.get("failures") or ["unknown"])
