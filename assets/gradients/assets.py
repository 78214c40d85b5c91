"""Per-example gradient statistics for one model on one curated variant."""

from typing import Any

import dagster as dg

from assets import gates
from assets.curation.assets import curated_dataset
from assets.failures import clear_errors
from assets.metadata import file_version, md_table
from assets.partitions import (
    by_variant,
    curated_missing,
    model_variant_partitions,
    runnable_stats_key,
    stats_key,
    variant_label,
)
from assets.pools import GPU_POOL
from assets.resources import ComputeResource, OutputStore
from assets.skips import skipped
from lg_pipeline.gradients.engine import ENGINE_VERSION
from lg_pipeline.vocabulary import VariantKey


def _examples(store: OutputStore, variant: VariantKey) -> tuple[list[Any], bool]:
    """The curated examples of a variant, and whether they are built-in demo data."""
    import pandas as pd

    from lg_pipeline.errors import InputError
    from lg_pipeline.example import Example

    path = store.curated(variant)
    if not path.is_file():
        raise InputError(curated_missing(variant, path))
    blocked = gates.curated_gate(store, variant)  # a run launched after a failed blocking check (the sensor's, ...)
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
    output_required=False,  # a run with nothing to do materializes nothing: downstream assets do not refresh
)
def gradient_stats(context: dg.AssetExecutionContext, store: OutputStore, compute: ComputeResource):
    from data_sources.datasets.catalog import dataset_spec
    from data_sources.models.catalog import get_model_spec
    from lg_pipeline.gradients.runner import nothing_to_do, run_to_parquet
    from lg_pipeline.io.manifest import data_file_fields

    key = stats_key(context.partition_key)
    variant = key.variant
    with clear_errors():
        runnable_stats_key(context.partition_key)  # a model partition no catalog knows: the `models add` hint
        dataset_spec(variant)
        examples, demo = _examples(store, variant)
        spec = get_model_spec(key.model)
        config = compute.engine_config(spec.chat)
        path = store.gradients(key)
        extra = {
            "model": key.model,
            "dataset": variant.dataset,
            "level": variant.level,
            "correctness": variant.correctness,
            "demo": demo,
        }
        provenance = {"model": key.model, "model_source": spec.source, **data_file_fields(store.curated(variant)),
                      "weights_file": compute.weights_identity(key.model)}
        skip = nothing_to_do(path, examples, config, extra, dtype=compute.load_dtype(key.model),
                             device_type=compute.device_type, provenance=provenance)
        if skip:
            yield skipped(context, skip)
            return
        model, tokenizer, spec = compute.load(key.model)
        # The table holds exactly the curated examples (prune); another run of this partition is waited for.
        summary = run_to_parquet(
            model, tokenizer, examples, config, path, extra, report=context.log.info, prune=True, wait=True,
            provenance=provenance,
        )
    gates.forget_stats(store, key)  # new numbers: the old check verdict no longer holds
    yield dg.MaterializeResult(
        metadata={
            "variant": variant_label(variant),
            "examples": summary.n_examples,
            **{f"examples_{k}": v for k, v in summary.counts.items()},
            "resumed_examples": summary.resumed,
            "truncated_responses": summary.truncated,
            "run_key": summary.run_key,
            "seconds": round(summary.seconds, 1),
            "examples_per_second": round((summary.n_examples - summary.resumed) / max(summary.seconds, 1e-9), 3),
            "device": compute.leased_device,
            **compute.run_metadata(),  # peak memory (process RSS; CUDA peak on a GPU)
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
