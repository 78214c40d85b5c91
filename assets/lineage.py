"""Which exact partitions, models and data versions each figure and table was drawn from.

A figure of model M on dataset D is drawn from `layer_summary[M]`, which read the checked statistics
`gradient_stats[M|D__level__correctness]` of every variant it used (its `variants.parquet`). The data versions
are the ones Dagster recorded: the summary's latest materialization, and for each statistics partition the
latest materialization *before* that summary's (what the summary actually read). Files written without a
Dagster record (another DAGSTER_HOME) fall back to the file's own version, marked as such.

Partitions are named in full (`M|champ__detailed__correct`, as the files are), so a lineage reads the same whatever
the partition keys; the records are looked up under the partition keys (`M|champ-d-c`, `assets.partitions`).

Each figure and table is matched to its sources by the report's record of it (its models and datasets).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg

from assets.partitions import multi_key
from lg_pipeline.vocabulary import StatsKey, VariantKey

SUMMARY, GRADIENTS = dg.AssetKey("layer_summary"), dg.AssetKey("gradient_stats")


@dataclass(frozen=True)
class ModelSource:
    """One model's summary and the statistics partitions it was computed from, with data versions."""

    model: str
    summary_version: str | None
    summary_run: str | None
    gradients: dict[str, str | None] = field(default_factory=dict)  # "model|variant" -> data version

    def restricted(self, datasets: Iterable[str] | None) -> dict[str, str | None]:
        if datasets is None:
            return dict(self.gradients)
        wanted = set(datasets)
        return {k: v for k, v in self.gradients.items() if StatsKey.parse(k).variant.dataset in wanted}


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
    from assets.metadata import file_version

    sources = {}
    for model, keys in variants.items():
        summary = _latest(instance, SUMMARY, model)
        before = summary.storage_id if summary else None
        gradients = {}
        for variant in keys:
            key = str(StatsKey.of(model, variant))
            version = _version(_latest(instance, GRADIENTS, str(multi_key(model, variant)), before))
            if version is None and key in files and files[key].is_file():
                version = f"file:{file_version(files[key])}"
            gradients[key] = version
        sources[model] = ModelSource(model, _version(summary), summary.run_id if summary else None, gradients)
    return sources


def drawn_from(item: Any, sources: dict[str, ModelSource]) -> dict:
    """The lineage of one figure or table (a report record): its models, summary and statistics partitions."""
    models = [m for m in item.models if m in sources]
    return {
        "models": models,
        "layer_summary": {m: sources[m].summary_version for m in models},
        "gradient_stats": {k: v for m in models for k, v in sources[m].restricted(item.datasets).items()},
    }


def lineage(report: Any, sources: dict[str, ModelSource]) -> dict[str, dict]:
    """{figure or table title: its lineage}."""
    return {item.title: drawn_from(item, sources) for item in report.artifacts}


def describe(entry: dict) -> str:
    """One markdown line under a figure in the UI."""
    summaries = ", ".join(f"`layer_summary[{m}]` v{(v or '?')[:8]}" for m, v in entry["layer_summary"].items())
    return f"_Drawn from {summaries} over {len(entry['gradient_stats'])} `gradient_stats` partitions._"


def combined_version(sources: dict[str, ModelSource]) -> str:
    """The figures' data version: changes exactly when a summary they are drawn from changes."""
    text = "|".join(f"{m}={s.summary_version}" for m, s in sorted(sources.items()))
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def add_lineage(meta: dict[str, Any], entries: dict[str, dict], sources: dict[str, ModelSource]) -> None:
    """Add the lineage to the figures' metadata as JSON (the figures write `describe` under each inline figure)."""
    meta["lineage"] = dg.MetadataValue.json(entries)
    meta["drawn_from"] = dg.MetadataValue.json(
        {
            m: {"layer_summary": s.summary_version, "run": s.summary_run, "gradient_stats": s.gradients}
            for m, s in sources.items()
        }
    )


def _variants_used(folder: Path) -> list[str]:
    """The variant keys a summary folder was computed from (its variants table, else its curves)."""
    import pandas as pd

    table = folder / "variants.parquet"
    frame = pd.read_parquet(table if table.is_file() else folder / "curves.parquet")
    rows = frame[["dataset", "level", "correctness"]].drop_duplicates()
    return sorted(str(VariantKey(r.dataset, r.level, r.correctness)) for r in rows.itertuples())


def record_lineage(
    meta: dict[str, Any], instance: dg.DagsterInstance, ready: list[Path], report: Any, store: Any
) -> str:
    """Add the lineage to the figures' `meta`, write `lineage.json` beside their index; the figures' data version."""
    import json

    from lg_pipeline.io.atomic import atomic_write_text

    used = {folder.name: _variants_used(folder) for folder in ready}
    keys = [StatsKey.of(m, v) for m, variants in used.items() for v in variants]
    sources = model_sources(instance, used, {str(k): store.gradients(k) for k in keys})
    entries = lineage(report, sources)
    add_lineage(meta, entries, sources)
    atomic_write_text(store.figures() / "lineage.json", json.dumps(entries, indent=1, sort_keys=True))
    return combined_version(sources)


# The dynamics figures' lineage: the exact partitions of the run assets each figure was drawn from.
PartitionVersions = dict[str, dict[str, str | None]]  # asset name -> partition key -> data version


def partition_versions(
    instance: dg.DagsterInstance, asset: str, files: dict[str, Path], partition_of: Callable[[str], str] = str
) -> dict[str, str | None]:
    """{partition, named in full: the data version of its latest materialization}; a partition without a Dagster
    record falls back to `file:<version>` of the file its data version is computed from (`files`, by partition
    named in full; `partition_of` gives its partition key)."""
    from assets.metadata import file_version

    versions = {}
    for partition, path in sorted(files.items()):
        version = _version(_latest(instance, dg.AssetKey(asset), partition_of(partition)))
        if version is None and path.is_file():
            version = f"file:{file_version(path)}"
        versions[partition] = version
    return versions


def describe_partitions(sources: PartitionVersions) -> str:
    """One markdown line under a dynamics figure: every partition it was drawn from, with its data version."""
    items = [f"`{asset}[{key}]` v{(v or '?')[:13]}" for asset, keys in sorted(sources.items())
             for key, v in keys.items()]
    return f"_Drawn from {', '.join(items)}._"


def merged(parts: Iterable[PartitionVersions]) -> PartitionVersions:
    """The union of several figures' sources (a figure drawn from all of them)."""
    out: PartitionVersions = {}
    for part in parts:
        for asset, keys in part.items():
            out.setdefault(asset, {}).update(keys)
    return out


def sources_version(sources: PartitionVersions) -> str:
    """A data version that changes exactly when a partition the figures were drawn from changes."""
    import json

    return hashlib.sha1(json.dumps(sources, sort_keys=True).encode()).hexdigest()[:16]
