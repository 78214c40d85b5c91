"""The study's figures and tables for every model whose summary passed its gates, shown in the UI."""

from typing import Any

import dagster as dg

from assets import gates
from assets.analysis.summaries import ANALYSIS_VERSION, layer_summary
from assets.automation.conditions import refresh_when_upstream_settles
from assets.lineage import record_lineage
from assets.metadata import inline_png, md_table
from assets.resources import OutputStore

FIGURES_VERSION = "figures-1"
SUMMARY_TABLES = ("curves", "mad", "variants")  # what layer_summary writes per model


def _infos(variants: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Display information from the catalogs; demo labels from what the summaries actually used."""
    from data_sources.datasets.catalog import dataset_catalog
    from data_sources.models.catalog import model_catalog
    from lg_pipeline.analysis.report import DatasetInfo, ModelInfo

    models = {n: ModelInfo(n, s.display_name, s.kind, s.family) for n, s in model_catalog().items()}
    demo = variants[variants.demo]
    datasets = {
        n: DatasetInfo(n, s.display_name, s.family, frozenset(demo[demo.dataset == n].level))
        for n, s in dataset_catalog().items()
    }
    return models, datasets


@dg.asset(
    deps=[layer_summary],
    code_version=f"{FIGURES_VERSION}+{ANALYSIS_VERSION}",
    group_name="figures",
    kinds={"matplotlib"},
    automation_condition=refresh_when_upstream_settles(),
    description="Per-layer curves per CoT level, correct vs wrong, heat maps, base vs instruct; MAD tables.",
)
def figures(context: dg.AssetExecutionContext, store: OutputStore) -> dg.MaterializeResult:
    import pandas as pd

    from lg_pipeline.analysis.report import ModelInfo, build_report

    ready, skipped = [], {}
    for model in store.summary_models():
        folder = store.summary(model)
        if gates.summary_blocked(store, model):
            skipped[folder.name] = "blocked by failing checks (see layer_summary)"
        elif all((folder / f"{name}.parquet").is_file() for name in SUMMARY_TABLES):
            ready.append(folder)
        elif any(folder.glob("*.parquet")):
            skipped[folder.name] = "summary incomplete or from an older version: rematerialize layer_summary"
    if not ready:
        raise dg.Failure(description="no model has a layer summary yet: materialize layer_summary first")
    curves = pd.concat([pd.read_parquet(f / "curves.parquet") for f in ready], ignore_index=True)
    mad = pd.concat([pd.read_parquet(f / "mad.parquet") for f in ready], ignore_index=True)
    variants = pd.concat([pd.read_parquet(f / "variants.parquet") for f in ready], ignore_index=True)
    models, datasets = _infos(variants)
    for name in curves.model.unique():  # a model removed from the catalog keeps its results
        models.setdefault(name, ModelInfo(name, name, "base", name))
    report = build_report(curves, mad, models, datasets, store.figures())
    context.log.info(f"{len(report.figures)} figures, {len(report.tables)} tables, index at {report.index}")
    meta = _metadata(report, ready, skipped)
    # Lineage: the exact summary and statistics partitions (and their data versions) behind every figure/table.
    version = record_lineage(meta, context.instance, ready, report, store)
    return dg.MaterializeResult(metadata=meta, data_version=dg.DataVersion(version))


def _metadata(report: Any, ready: list[Any], skipped: dict[str, str]) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "index": dg.MetadataValue.path(str(report.index)),
        "models": dg.MetadataValue.json([f.name for f in ready]),
        "skipped_models": dg.MetadataValue.json(skipped),
    }
    for item in report.figures:
        meta[f"figure: {item.title}"] = dg.MetadataValue.md(f"**{item.title}**\n\n{inline_png(item.png)}")
    for item in report.tables:
        flat = item.table.copy()
        flat.columns = [" ".join(map(str, c)) if isinstance(c, tuple) else str(c) for c in flat.columns]
        meta[f"table: {item.title}"] = md_table(flat.reset_index(), 40)
    return meta
