"""The dataset catalog: datasets.yaml as typed specs, and the variant keys the Dagster layer partitions on.

A variant key is "<dataset>__<level>__<correct|wrong>". Sources and field mappings live in datasets.yaml so that
adding a dataset is a data change, not a code branch.
"""

from __future__ import annotations

import functools
import importlib
import string
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from lg_pipeline.curation.source import SourceAdapter
from lg_pipeline.curation.spec import DatasetSpec, SourceGroup
from lg_pipeline.errors import InputError
from lg_pipeline.vocabulary import CORRECTNESS, DATASET_CODE, FAMILIES, LEVEL_LABELS, VariantKey

CATALOG_PATH = Path(__file__).with_name("datasets.yaml")
RECORD_FIELDS = ("question", "answer", "rationale", "detailed", "passage", "title")


def _template_fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def _group(raw: Mapping[str, Any], where: str) -> SourceGroup:
    if raw.get("adapter") not in _ADAPTER_CLASSES:
        raise InputError(f"{where}: unknown adapter {raw.get('adapter')!r} (known: {', '.join(_ADAPTER_CLASSES)})")
    if raw.get("selection", "sample") not in ("first", "sample"):
        raise InputError(f"{where}: selection must be 'first' or 'sample'")
    return SourceGroup(
        levels=tuple(raw["levels"]),
        adapter=raw["adapter"],
        offline=bool(raw.get("offline", False)),
        demo=bool(raw.get("demo", False)),
        teacher_levels=tuple(raw.get("teacher_levels", ())),
        selection=raw.get("selection", "sample"),
        options=dict(raw.get("options") or {}),
    )


def _check_templates(name: str, raw: Mapping[str, Any], levels: tuple[str, ...]) -> None:
    """Catch typos in datasets.yaml at load time, not in the middle of a run."""
    responses = raw.get("responses") or {}
    for level in levels:
        if level not in LEVEL_LABELS:
            raise InputError(f"datasets.yaml {name}: unknown level {level!r}")
        if level not in responses:
            raise InputError(f"datasets.yaml {name}: no response template for level {level!r}")
    for template in [raw.get("instruction", "{question}"), *responses.values()]:
        unknown = _template_fields(template) - set(RECORD_FIELDS)
        if unknown:
            raise InputError(f"datasets.yaml {name}: unknown template fields {sorted(unknown)}")


def _spec(name: str, raw: Mapping[str, Any]) -> DatasetSpec:
    if "__" in name:
        raise InputError(f"datasets.yaml {name}: dataset names must not contain '__'")
    if raw.get("family") not in FAMILIES:
        raise InputError(f"datasets.yaml {name}: family must be one of {FAMILIES}")
    if not DATASET_CODE.match(str(raw.get("code") or "")):
        raise InputError(
            f"datasets.yaml {name}: code {raw.get('code')!r} must be 1 to 5 lowercase letters or digits (its part of "
            "the variant partition keys, e.g. champ-d-c)"
        )
    levels = tuple(raw["levels"])
    _check_templates(name, raw, levels)
    groups = tuple(_group(g, f"datasets.yaml {name} source {i}") for i, g in enumerate(raw.get("sources") or []))
    built = {lvl: next((g for g in groups if lvl in g.levels), None) for lvl in levels}
    offline_levels = tuple(
        lvl for lvl, g in built.items() if g is not None and g.offline and lvl not in g.teacher_levels
    )
    demo_levels = tuple(lvl for lvl, g in built.items() if g is not None and g.demo)
    return DatasetSpec(
        name=name,
        family=raw["family"],
        display_name=raw["display_name"],
        levels=levels,
        demo=len(demo_levels) == len(levels),
        offline=bool(offline_levels),
        offline_levels=offline_levels,
        demo_levels=demo_levels,
        answer_kind=raw.get("answer_kind", "text"),
        instruction=raw.get("instruction", "{question}"),
        responses=dict(raw["responses"]),
        cut_tokens={k: int(v) for k, v in (raw.get("cut_tokens") or {}).items()},
        release=raw.get("release"),
        sources=groups,
        code=str(raw["code"]),
    )


@functools.cache
def _load(path: str) -> dict[str, DatasetSpec]:
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise InputError(f"dataset catalog {path}: cannot read ({exc.__class__.__name__})") from None
    specs = {name: _spec(name, entry) for name, entry in raw["datasets"].items()}
    by_code: dict[str, list[str]] = {}
    for spec in specs.values():
        by_code.setdefault(spec.code, []).append(spec.name)
    if shared := {code: names for code, names in by_code.items() if len(names) > 1}:
        code, names = next(iter(shared.items()))
        raise InputError(f"datasets.yaml: code {code!r} is given to {' and '.join(names)}: each dataset needs its own")
    return specs


def dataset_catalog() -> dict[str, DatasetSpec]:
    """All datasets, in datasets.yaml order."""
    return dict(_load(str(CATALOG_PATH)))


def dataset_codes() -> dict[str, str]:
    """{dataset: its code}, the codes of the short variant keys (`VariantKey.code`, the variant partition keys)."""
    return {name: spec.code for name, spec in dataset_catalog().items()}


def variant_keys(offline_only: bool = False) -> list[VariantKey]:
    """Every variant in a stable order (catalog, then level, then correctness).

    offline_only keeps the variants buildable with no network, no release folder and no teacher.
    """
    keys = []
    for spec in dataset_catalog().values():
        levels = spec.offline_levels if offline_only else spec.levels
        keys.extend(VariantKey(spec.name, level, c) for level in levels for c in CORRECTNESS)
    return keys


def buildable_variant_keys(release_dir: str | None = None) -> list[VariantKey]:
    """Variants that can be built here: the offline ones, plus those the release folder holds when given."""
    offline = set(variant_keys(offline_only=True))
    keys = []
    for key in variant_keys():
        spec = dataset_spec(key)
        released = spec.release_file(key.level, key.correctness) if release_dir else None
        if key in offline or (released and Path(release_dir, released).is_file()):
            keys.append(key)
    return keys


def dataset_spec(key: str | VariantKey) -> DatasetSpec:
    """The dataset of a variant key, checked against the catalog; InputError names the key and what is wrong."""
    key = VariantKey.parse(key)
    catalog = dataset_catalog()
    if key.dataset not in catalog:
        raise InputError(f"variant key {str(key)!r}: unknown dataset {key.dataset!r} (known: {', '.join(catalog)})")
    spec = catalog[key.dataset]
    if key.level not in spec.levels:
        raise InputError(
            f"variant key {str(key)!r}: dataset {key.dataset!r} has no level {key.level!r} ({', '.join(spec.levels)})"
        )
    return spec


_ADAPTER_CLASSES = {
    "reasoning_gym": "data_sources.datasets.packs:ReasoningGymSource",
    "champ": "data_sources.datasets.packs:ChampSource",
    "ovos_wiki": "data_sources.datasets.packs:OvosWikiSource",
    "wiki_dump": "data_sources.datasets.packs:WikiDumpSource",
    "builtin": "data_sources.datasets.builtin:BuiltinSource",
    "hub": "data_sources.datasets.hub:HubSource",
}


def make_adapter(group: SourceGroup, cache_dir: str = ".cache/curation") -> SourceAdapter:
    """The adapter for a source group; imported lazily so a missing optional package only fails its own group."""
    module_name, class_name = _ADAPTER_CLASSES[group.adapter].split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    options = dict(group.options)
    if group.adapter == "hub":
        options["cache_dir"] = cache_dir
    return cls(**options)
