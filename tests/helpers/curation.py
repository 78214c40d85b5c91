"""Curation as the Dagster layer wires it (catalog specs and adapters), for tests that build variants by key."""

from __future__ import annotations

import dataclasses
from typing import Any

from data_sources.datasets.catalog import dataset_spec, make_adapter
from lg_pipeline.curation import CurationSettings
from lg_pipeline.curation import build_variant as build_from_spec
from lg_pipeline.curation.checks import Curated
from lg_pipeline.vocabulary import VariantKey


def wired(settings: CurationSettings) -> CurationSettings:
    """The settings with the catalog's adapters, as `CurationResource.settings` gives them."""
    return settings if settings.open_source else dataclasses.replace(settings, open_source=make_adapter)


def build_variant(key: str, settings: CurationSettings) -> tuple[Any, dict]:
    return build_from_spec(dataset_spec(key), key, wired(settings))


def parse_variant_key(key: str) -> tuple[Any, str, str]:
    """(spec, level, correctness) of a catalog variant key."""
    variant = VariantKey.parse(key)
    return dataset_spec(variant), variant.level, variant.correctness


def curated(key: str, frame: Any, build: dict | None = None) -> Curated:
    return Curated(key, frame, build, spec=dataset_spec(key))
