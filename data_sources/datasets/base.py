"""Helpers every dataset adapter shares (the interface itself is `lg_pipeline.curation.source`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lg_pipeline.errors import InputError


def require_str(row: Mapping[str, Any], key: str, where: str) -> str:
    """A required string field, or InputError naming the row; used by adapters to reject malformed input."""
    value = row.get(key)
    if not isinstance(value, str):
        raise InputError(f"{where}: field '{key}' missing or not a string")
    return value
