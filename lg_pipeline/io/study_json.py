"""The study's curated-data format: a JSON list of {instruction, input, output}."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lg_pipeline.errors import InputError
from lg_pipeline.example import Example, dedupe_ids, example_from_row


def read_json(path: str | Path, what: str = "data file") -> Any:
    """Parse a JSON file; a missing file or bad JSON is one line naming the file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None


def load_study_json(path: str | Path) -> list[Example]:
    """Read a study-format JSON file; every problem is reported with the file name."""
    path = Path(path)
    rows = read_json(path)
    if not isinstance(rows, list):
        raise InputError(f"{path}: expected a JSON list of objects, got {type(rows).__name__}")
    examples = [example_from_row(row, f"{path} row {i}") for i, row in enumerate(rows)]
    return dedupe_ids(examples)
