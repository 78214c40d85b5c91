"""Curated datasets: one table per dataset x level x correctness (the variant partition)."""

import json
from typing import Any

import dagster as dg

from assets import gates
from assets.failures import clear_errors
from assets.metadata import file_version, md_table
from assets.partitions import refuse_unbuildable, variant_label, variant_of, variant_partitions
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
    from data_sources.datasets.catalog import dataset_spec
    from lg_pipeline.curation import build_variant
    from lg_pipeline.io.atomic import atomic_write_text, write_parquet
    from lg_pipeline.io.locks import output_lock

    variant = variant_of(context.partition_key)  # the long form: file names, manifests, logs
    with clear_errors():
        refuse_unbuildable(variant, curation.teacher, curation.release_dir)  # before any source is read
        spec = dataset_spec(variant)
        tokenizer = curation.tokenizer() if spec.family == "wiki" else None
        frame, meta = build_variant(spec, variant, curation.settings(spec.offline, tokenizer))
    build = json.loads(json.dumps(meta, default=str))
    with output_lock(store.curated(variant), wait=True, report=context.log.info):  # one writer per table
        gates.forget_curated(store, variant)
        atomic_write_text(store.curated_build(variant), json.dumps(build, indent=1))
        path = write_parquet(frame, store.curated(variant), _manifest(variant, frame, build))
    context.log.info(f"{variant}: {len(frame)} rows -> {path}")
    return dg.MaterializeResult(
        metadata={
            "variant": variant_label(variant),
            "rows": len(frame),
            "path": dg.MetadataValue.path(str(path)),
            "build": dg.MetadataValue.json(build),
            "demo_data": bool(frame.demo.any()) if len(frame) else False,
            "preview": md_table(frame[["example_id", "instruction", "response"]], 5),
        },
        data_version=dg.DataVersion(file_version(path)),
    )


def _manifest(variant: str, frame: Any, build: dict[str, Any]) -> dict[str, Any]:
    """Where a curated table came from: its variant, the builder's version and settings, the rows it holds."""
    from lg_pipeline.vocabulary import VariantKey

    key = VariantKey.parse(variant)
    return {
        "kind": "curated",
        "dataset": key.dataset,
        "level": key.level,
        "correctness": key.correctness,
        "engine_version": BUILDER_VERSION,
        "n_examples": len(frame),
        "example_ids": [str(i) for i in frame.example_id] if "example_id" in frame else [],
        "settings": build,
    }
