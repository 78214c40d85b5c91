"""The study's figures and tables for every model whose summary passed its gates, shown in the UI."""

import base64
from typing import Any

import dagster as dg

from assets.common import md_table
from assets.lineage import record_lineage
from assets.resources import OutputStore
from assets.summaries import ANALYSIS_VERSION, layer_summary

FIGURES_VERSION = "figures-1"
SUMMARY_TABLES = ("curves", "mad", "variants")  # what layer_summary writes per model


def _infos(variants: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Display information from the catalogs; demo labels from what the summaries actually used."""
    from data_sources.catalog import dataset_catalog
    from data_sources.model_catalog import model_catalog
    from lg_pipeline.report import DatasetInfo, ModelInfo

    models = {n: ModelInfo(n, s.display_name, s.kind, s.family) for n, s in model_catalog().items()}
    demo = variants[variants.demo]
    datasets = {
        n: DatasetInfo(n, s.display_name, s.family, frozenset(demo[demo.dataset == n].level))
        for n, s in dataset_catalog().items()
    }
    return models, datasets


def _inline_png(path) -> str:
    """Markdown with the PNG inlined, so the UI shows the figure without opening files."""
    data = base64.b64encode(path.read_bytes()).decode()
    return f"![{path.stem}](data:image/png;base64,{data})"


@dg.asset(
    deps=[layer_summary],
    code_version=f"{FIGURES_VERSION}+{ANALYSIS_VERSION}",
    group_name="figures",
    kinds={"matplotlib"},
    description="Per-layer curves per CoT level, correct vs wrong, heat maps, base vs instruct; MAD tables.",
)
def figures(context: dg.AssetExecutionContext, store: OutputStore) -> dg.MaterializeResult:
    import pandas as pd

    from lg_pipeline.report import ModelInfo, build_report

    root, ready, skipped = store.path("summaries"), [], {}
    for folder in sorted(p for p in root.glob("*") if p.is_dir()) if root.is_dir() else []:
        if (folder / "blocked.json").is_file():
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
    context.log.info(f"{sum(len(f) for f in report.figures.values())} figure files, index at {report.index}")
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
    for title, files in report.figures.items():
        if title.endswith("nuclear norm per layer") or " vs " in title.split(" · ")[0]:
            png = next(p for p in files if p.suffix == ".png")
            meta[f"figure: {title}"] = dg.MetadataValue.md(f"**{title}**\n\n{_inline_png(png)}")
    for title, table in report.tables.items():
        flat = table.copy()
        flat.columns = [" ".join(map(str, c)) if isinstance(c, tuple) else str(c) for c in flat.columns]
        meta[f"table: {title}"] = md_table(flat.reset_index(), 40)
    return meta
