"""The study's figures and tables for every model whose summary passed its gates, shown in the UI."""

from typing import Any

import dagster as dg

from assets import gates
from assets.analysis.summaries import ANALYSIS_VERSION, layer_summary
from assets.automation.conditions import refresh_when_upstream_settles
from assets.lineage import describe, record_lineage
from assets.metadata import escape_md, inline_png, table_value
from assets.resources import OutputStore

FIGURES_VERSION = "figures-3"
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
    description=(
        "Per model and dataset: nuclear norm and ratio per layer by level (and a log-y variant where levels differ "
        "tenfold), correct vs wrong with the per-layer relative difference, heat maps; every model on one depth "
        "axis; base vs instruct where siblings exist; MAD and relative-difference tables. Every figure is inline "
        "in the metadata (one entry per model and dataset), every table as table metadata; `index` is the HTML page."
    ),
)
def figures(context: dg.AssetExecutionContext, store: OutputStore) -> dg.MaterializeResult:
    import pandas as pd

    from lg_pipeline.analysis.report import ModelInfo, build_report
    from lg_pipeline.io.locks import output_lock

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
    with output_lock(store.figures(), wait=True, report=context.log.info):  # one writer of the figures folder
        report = build_report(curves, mad, models, datasets, store.figures())
        context.log.info(f"{len(report.figures)} figures, {len(report.tables)} tables, index at {report.index}")
        overview = _overview(report, ready, skipped)
        # Lineage: the exact summary and statistics partitions (and their data versions) behind every figure/table.
        version = record_lineage(overview, context.instance, ready, report, store)
    index = {"index": overview.pop("index")}
    meta = {**index, **_artifacts(report, overview["lineage"].value), **overview}  # the UI lists them in this order
    return dg.MaterializeResult(metadata=meta, data_version=dg.DataVersion(version))


def _overview(report: Any, ready: list[Any], skipped: dict[str, str]) -> dict[str, Any]:
    return {
        "index": dg.MetadataValue.path(str(report.index)),
        "n_figures": len(report.figures),
        "n_tables": len(report.tables),
        "models": dg.MetadataValue.json([f.name for f in ready]),
        "skipped_models": dg.MetadataValue.json(skipped),
    }


def _artifacts(report: Any, lineage: dict[str, dict]) -> dict[str, Any]:
    """Every figure inline (one Markdown entry per model and dataset, with its files and lineage) and every table
    as table metadata, all chosen from the report's records (`Report.artifacts`), none by title.

    Dagster 1.13 draws Markdown metadata over 1,000 characters behind a "[Show Markdown]" button (a figure is
    ~50 kB of base64), so grouping keeps that to one click per model and dataset.
    """
    from lg_pipeline.analysis.report import grouped

    meta: dict[str, Any] = {}
    for group, items in grouped(report.artifacts).items():
        figures = [i for i in items if i.is_figure]
        if figures:
            meta[f"figures: {group}"] = dg.MetadataValue.md("\n\n".join(_figure_md(i, lineage) for i in figures))
        for item in items:
            if item.table is not None:
                meta[f"table: {item.title}"] = table_value(item.table.reset_index())
    return meta


def _figure_md(item: Any, lineage: dict[str, dict]) -> str:
    files = " · ".join(f"{p.suffix[1:].upper()} `{p}`" for p in item.files)
    drawn = describe(lineage[item.title]) if item.title in lineage else ""
    return f"### {escape_md(item.title)}\n\n{inline_png(item.png, item.title)}\n\n{files}\n\n{drawn}"
