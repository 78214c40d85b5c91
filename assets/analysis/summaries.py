"""Per-layer curves and MAD summaries of one model, over every variant computed for it.

Gate: a variant enters only when its gradient check passed on exactly the data now on
disk; any other state blocks the model's summary (and so its figures), naming why.
"""

import hashlib
from pathlib import Path
from typing import Any

import dagster as dg

from assets import gates
from assets.automation.conditions import refresh_when_upstream_settles
from assets.gradients.assets import gradient_stats
from assets.metadata import file_version, table_value
from assets.partitions import by_model, model_partitions
from assets.resources import OutputStore
from lg_pipeline.vocabulary import StatsKey

ANALYSIS_VERSION = "analysis-2"  # 2: norm intervals in log space


def _gate(store: OutputStore, model: str) -> tuple[list[Path], dict[str, str]]:
    """(statistics files that passed their check, {variant: why blocked})."""
    passed, blocked = [], {}
    for variant, path in store.gradient_files(model).items():
        why = gates.stats_gate(store, StatsKey.of(model, variant))
        if why:
            blocked[str(variant)] = why
        else:
            passed.append(path)
    return passed, blocked


@dg.asset(
    partitions_def=model_partitions,
    deps=[dg.AssetDep(gradient_stats, partition_mapping=by_model)],
    code_version=ANALYSIS_VERSION,
    group_name="analysis",
    kinds={"pandas"},
    automation_condition=refresh_when_upstream_settles(),
    description="Mean per layer with 95% intervals (t in log space for norms), MAD over all layers and each third.",
)
def layer_summary(context: dg.AssetExecutionContext, store: OutputStore):
    import pandas as pd

    from lg_pipeline.analysis.curves import layer_curves, mad_summary
    from lg_pipeline.io.atomic import write_parquet
    from lg_pipeline.io.locks import output_lock

    model = context.partition_key
    out = store.summary(model)
    passed, blocked = _gate(store, model)
    if blocked:
        gates.record_summary_blocked(store, model, blocked)
        lines = "; ".join(f"{v}: {why}" for v, why in blocked.items())
        raise dg.Failure(description=f"{model}: {len(blocked)} variant(s) blocked by checks — {lines}")
    if not passed:
        raise dg.Failure(description=f"{model}: no gradient statistics yet (materialize gradient_stats first)")
    stats = pd.concat([pd.read_parquet(p) for p in passed], ignore_index=True)
    curves = layer_curves(stats)
    mad = mad_summary(curves)
    tables = {"curves": curves, "mad": mad, "variants": _variants(stats)}
    with output_lock(out, wait=True, report=context.log.info):  # one writer per summary
        for name, frame in tables.items():
            write_parquet(frame, store.summary_table(model, name), _manifest(model, name, passed))
        gates.clear_summary_blocked(store, model)
    return dg.MaterializeResult(
        metadata={
            "variants": dg.MetadataValue.json([p.stem for p in passed]),
            "examples": int(stats.groupby(["dataset", "level", "correctness"]).example_id.nunique().sum()),
            "layers": int(stats.layer.max()) + 1,
            "mad_nuclear_norm": table_value(_mad_preview(mad), 60),
            "path": dg.MetadataValue.path(str(out)),
        },
        data_version=dg.DataVersion(_version(passed)),
    )


def _manifest(model: str, table: str, inputs: list[Path]) -> dict[str, Any]:
    """Where a summary table came from: the model and the statistics tables it was computed from."""
    return {
        "kind": f"summary.{table}",
        "model": model,
        "engine_version": ANALYSIS_VERSION,
        "inputs": {str(p): file_version(p) for p in inputs},
    }


def _variants(stats: Any) -> Any:
    """One row per variant: examples used and whether it is built-in demo data (labels in figures)."""
    keys = ["dataset", "level", "correctness"]
    demo = stats.demo if "demo" in stats else False
    return (
        stats.assign(demo=demo)
        .groupby(keys, as_index=False)
        .agg(demo=("demo", "any"), n_examples=("example_id", "nunique"))
    )


def _mad_preview(mad: Any) -> Any:
    cols = ["dataset", "level", "correctness", "module", "mad_all", "mad_early", "mad_middle", "mad_late"]
    return mad[mad.statistic == "nuclear_norm"][cols]


def _version(paths: list[Path]) -> str:
    """The summary's data version: changes whenever any statistics file it read changes."""
    return hashlib.sha1("".join(file_version(p) for p in paths).encode()).hexdigest()[:16]
