"""Per-example gradient statistics for one model on one curated variant, and the check that gates them."""

import json
from typing import Any

import dagster as dg

from assets.common import GPU_POOL, clear_errors, file_version, md_table
from assets.curation import curated_dataset, curated_gate
from assets.partitions import by_variant, model_variant_partitions, split_key
from assets.resources import ComputeResource, OutputStore
from lg_pipeline.engine import ENGINE_VERSION


def _examples(store: OutputStore, variant: str) -> tuple[list[Any], bool]:
    """The curated examples of a variant, and whether they are built-in demo data."""
    import pandas as pd

    from lg_pipeline.examples import Example, InputError

    path = store.curated(variant)
    if not path.is_file():
        raise InputError(f"curated table for '{variant}' not found at {path}: materialize curated_dataset first")
    blocked = curated_gate(store, variant)  # a run launched after a failed blocking check (the sensor's, ...)
    if blocked:
        raise InputError(
            f"curated table for '{variant}' failed its blocking check(s) {', '.join(blocked)}: "
            "see the checks of curated_dataset, fix the data and rematerialize it"
        )
    frame = pd.read_parquet(path)
    examples = [Example(r.example_id, r.instruction, r.response) for r in frame.itertuples()]
    return examples, bool(frame.demo.any())


@dg.asset(
    partitions_def=model_variant_partitions,
    deps=[dg.AssetDep(curated_dataset, partition_mapping=by_variant)],
    code_version=ENGINE_VERSION,
    group_name="gradients",
    kinds={"pytorch", "parquet"},
    pool=GPU_POOL,
    description="Loss, mean/max/min, Frobenius and nuclear norms, σ_max/σ_min of every studied matrix, per example.",
)
def gradient_stats(context: dg.AssetExecutionContext, store: OutputStore, compute: ComputeResource):
    from data_sources.catalog import parse_variant_key
    from lg_pipeline.gradient_run import run_to_parquet

    model_name, variant = split_key(context.partition_key)
    with clear_errors():
        spec_ds, level, correctness = parse_variant_key(variant)
        examples, demo = _examples(store, variant)
        model, tokenizer, spec = compute.load(model_name)
        config = compute.engine_config(spec.chat)
        path = store.gradients(model_name, variant)
        extra = {"model": model_name, "dataset": spec_ds.name, "level": level, "correctness": correctness, "demo": demo}
        summary = run_to_parquet(model, tokenizer, examples, config, path, extra, report=context.log.info)
    store.verdict(model_name, variant).unlink(missing_ok=True)  # new numbers: the old check verdict no longer holds
    return dg.MaterializeResult(
        metadata={
            "examples": summary.n_examples,
            **{f"examples_{k}": v for k, v in summary.counts.items()},
            "resumed_examples": summary.resumed,
            "seconds": round(summary.seconds, 1),
            "examples_per_second": round((summary.n_examples - summary.resumed) / max(summary.seconds, 1e-9), 3),
            "device": compute.leased_device,
            "method": config.method,
            "path": dg.MetadataValue.path(str(path)),
            "problems": md_table(_problems(summary.problems)),
            "mean_nuclear_norm": md_table(_module_means(path)),
        },
        data_version=dg.DataVersion(file_version(path)),
    )


def _problems(problems: list[dict[str, str]]) -> Any:
    import pandas as pd

    return pd.DataFrame(problems, columns=["example_id", "status", "reason"])


def _module_means(path) -> Any:
    import pandas as pd

    frame = pd.read_parquet(path)
    return frame.groupby("module", as_index=False)[["loss", "nuclear_norm", "sigma_max", "frobenius_norm"]].mean()


@dg.asset_check(
    asset=gradient_stats,
    partitions_def=model_variant_partitions,
    blocking=True,
    description="GX: complete, finite, norms ≥ 0, spectral bounds.",
)
def gradient_stats_valid(context: dg.AssetCheckExecutionContext, store: OutputStore) -> dg.AssetCheckResult:
    import pandas as pd

    from lg_pipeline.gradient_run import status_path
    from lg_pipeline.storage import atomic_write_text
    from lg_pipeline.validation import validate_gradient_stats

    model_name, variant = split_key(context.partition_key)
    path = store.gradients(model_name, variant)
    status = pd.read_parquet(status_path(path))
    report = validate_gradient_stats(pd.read_parquet(path), status)
    failures = [f"{o.expectation}({o.column})" for o in report.failures()]
    verdict = {"passed": report.passed, "failures": failures, "data_version": file_version(path)}
    atomic_write_text(store.verdict(model_name, variant), json.dumps(verdict))
    return dg.AssetCheckResult(
        passed=report.passed,
        metadata={
            "failed_expectations": dg.MetadataValue.json(failures),
            "failing_rows": md_table(report.failing_rows),
            "failed_examples": md_table(status[status.status == "failed"]),
            "expectations_run": len(report.outcomes),
        },
    )
