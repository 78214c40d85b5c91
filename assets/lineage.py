"""Which exact partitions, models and data versions each figure and table was drawn from.

A figure of model M on dataset D is drawn from `layer_summary[M]`, which read the checked statistics
`gradient_stats[M|D__level__correctness]` of every variant it used (its `variants.parquet`). The data versions
are the ones Dagster recorded: the summary's latest materialization, and for each statistics partition the
latest materialization *before* that summary's (what the summary actually read). Files written without a
Dagster record (another DAGSTER_HOME) fall back to the file's own version, marked as such.

Figures are matched to their sources by the report's file layout (`<model>/<dataset>_*`,
`base_vs_instruct/<base>__<instruct>__<dataset>`, `<model>/<family>_mad`, `cross_model_mad`); anything else is
attributed to every source, which is still true, only less precise.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg

SUMMARY, GRADIENTS = dg.AssetKey("layer_summary"), dg.AssetKey("gradient_stats")
FAMILIES = ("math", "commonsense", "wiki")


@dataclass(frozen=True)
class ModelSource:
    """One model's summary and the statistics partitions it was computed from, with data versions."""

    model: str
    summary_version: str | None
    summary_run: str | None
    gradients: dict[str, str | None] = field(default_factory=dict)  # "model|variant" -> data version

    def restricted(self, datasets: set[str] | None) -> dict[str, str | None]:
        if datasets is None:
            return dict(self.gradients)
        return {k: v for k, v in self.gradients.items() if k.split("|", 1)[1].split("__")[0] in datasets}


def _latest(instance: dg.DagsterInstance, key: dg.AssetKey, partition: str, before: int | None = None) -> Any:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition], before_storage_id=before), limit=1
    ).records
    return records[0] if records else None


def _version(record: Any) -> str | None:
    return record.asset_materialization.tags.get("dagster/data_version") if record else None


def model_sources(
    instance: dg.DagsterInstance, variants: dict[str, list[str]], files: dict[str, Path]
) -> dict[str, ModelSource]:
    """{model: its sources}; `variants` = the variant keys each summary used, `files` = stats files by key."""
    from assets.common import file_version

    sources = {}
    for model, keys in variants.items():
        summary = _latest(instance, SUMMARY, model)
        before = summary.storage_id if summary else None
        gradients = {}
        for variant in keys:
            key = f"{model}|{variant}"
            version = _version(_latest(instance, GRADIENTS, key, before))
            if version is None and key in files and files[key].is_file():
                version = f"file:{file_version(files[key])}"
            gradients[key] = version
        sources[model] = ModelSource(model, _version(summary), summary.run_id if summary else None, gradients)
    return sources


def drawn_from(path: Path, out_dir: Path, sources: dict[str, ModelSource], family_of: dict[str, str]) -> dict:
    """The lineage of one figure or table file (its models, summary partitions, statistics partitions)."""
    rel = path.relative_to(out_dir)
    models, datasets = list(sources), None
    if rel.parts[0] in sources:
        models, datasets = [rel.parts[0]], _datasets_of(rel.stem, family_of)
    elif rel.parts[0] == "base_vs_instruct" and rel.stem.count("__") >= 2:
        base, instruct, dataset = rel.stem.split("__", 2)
        models, datasets = [m for m in (base, instruct) if m in sources], {dataset}
    return {
        "models": models,
        "layer_summary": {m: sources[m].summary_version for m in models},
        "gradient_stats": {k: v for m in models for k, v in sources[m].restricted(datasets).items()},
    }


def _datasets_of(stem: str, family_of: dict[str, str]) -> set[str] | None:
    """`<family>_mad` -> that family's datasets; `<dataset>_<figure kind>` -> the dataset; else unknown (None)."""
    family = next((f for f in FAMILIES if stem == f"{f}_mad"), None)
    if family:
        return {d for d, f in family_of.items() if f == family}
    matches = [d for d in family_of if stem.startswith(f"{d}_")]
    return {max(matches, key=len)} if matches else None


def lineage(report: Any, out_dir: Path, sources: dict[str, ModelSource], family_of: dict[str, str]) -> dict[str, dict]:
    """{figure or table title: its lineage}."""
    items = {**report.figures, **getattr(report, "table_files", {})}
    return {title: drawn_from(files[0], out_dir, sources, family_of) for title, files in items.items() if files}


def describe(entry: dict) -> str:
    """One markdown line under a figure in the UI."""
    summaries = ", ".join(f"`layer_summary[{m}]` v{(v or '?')[:8]}" for m, v in entry["layer_summary"].items())
    return f"_Drawn from {summaries} over {len(entry['gradient_stats'])} `gradient_stats` partitions._"


def combined_version(sources: dict[str, ModelSource]) -> str:
    """The figures' data version: changes exactly when a summary they are drawn from changes."""
    text = "|".join(f"{m}={s.summary_version}" for m, s in sorted(sources.items()))
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def add_lineage(meta: dict[str, Any], entries: dict[str, dict], sources: dict[str, ModelSource]) -> None:
    """Add the lineage to the figures' metadata: a JSON entry, and a line under every inline figure."""
    meta["lineage"] = dg.MetadataValue.json(entries)
    meta["drawn_from"] = dg.MetadataValue.json(
        {
            m: {"layer_summary": s.summary_version, "run": s.summary_run, "gradient_stats": s.gradients}
            for m, s in sources.items()
        }
    )
    for title, entry in entries.items():
        key = f"figure: {title}"
        if key in meta:
            meta[key] = dg.MetadataValue.md(f"{meta[key].value}\n\n{describe(entry)}")


def _variants_used(folder: Path) -> list[str]:
    """The variant keys a summary folder was computed from (its variants table, else its curves)."""
    import pandas as pd

    table = folder / "variants.parquet"
    frame = pd.read_parquet(table if table.is_file() else folder / "curves.parquet")
    rows = frame[["dataset", "level", "correctness"]].drop_duplicates()
    return sorted(f"{r.dataset}__{r.level}__{r.correctness}" for r in rows.itertuples())


def record_lineage(
    meta: dict[str, Any], instance: dg.DagsterInstance, ready: list[Path], report: Any, store: Any
) -> str:
    """Add the lineage to the figures' `meta`, write `lineage.json` beside their index; the figures' data version."""
    import json

    from data_sources.catalog import dataset_catalog
    from lg_pipeline.storage import atomic_write_text

    used = {folder.name: _variants_used(folder) for folder in ready}
    files = {f"{m}|{v}": store.gradients(m, v) for m, keys in used.items() for v in keys}
    sources = model_sources(instance, used, files)
    family_of = {name: spec.family for name, spec in dataset_catalog().items()}
    entries = lineage(report, store.figures(), sources, family_of)
    add_lineage(meta, entries, sources)
    atomic_write_text(store.figures() / "lineage.json", json.dumps(entries, indent=1, sort_keys=True))
    return combined_version(sources)
