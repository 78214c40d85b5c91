"""The study's curated-data format: a JSON list of {instruction, input, output}."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lg_pipeline.errors import InputError
from lg_pipeline.example import Example, dedupe_ids, example_from_row


def read_json(path: str | Path, what: str = "data file") -> Any:
    """Parse a JSON file; a missing file, a folder, non-UTF-8 text, bad or too deeply nested JSON is one line."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{what} {path}: is a directory, not a JSON file")
    if not path.exists():
        raise InputError(f"{what} not found: {path}")
    if not path.is_file():
        raise InputError(f"{what} {path}: not a regular file")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except RecursionError:
        raise InputError(f"{path}: JSON nested too deeply") from None


def load_study_json(path: str | Path) -> list[Example]:
    """Read a study-format JSON file; every problem is reported with the file name."""
    path = Path(path)
    rows = read_json(path)
    if not isinstance(rows, list):
        raise InputError(f"{path}: expected a JSON list of objects, got {type(rows).__name__}")
    if not rows:
        raise InputError(f"{path}: no examples (an empty list)")
    examples = [example_from_row(row, f"{path} row {i}") for i, row in enumerate(rows)]
    return dedupe_ids(examples)
