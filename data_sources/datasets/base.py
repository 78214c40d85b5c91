"""Helpers every dataset adapter shares (the interface itself is `lg_pipeline.curation.source`)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from lg_pipeline.errors import InputError

# GSM8K's calculator annotations (`<<48/2=24>>`): the study's Simplified CoT drops them.
CALCULATOR_ANNOTATION = re.compile(r"<<[^>]*>>")


def require_str(row: Mapping[str, Any], key: str, where: str) -> str:
    """A required string field, or InputError naming the row; used by adapters to reject malformed input."""
    value = row.get(key)
    if not isinstance(value, str):
        raise InputError(f"{where}: field '{key}' missing or not a string")
    return value
