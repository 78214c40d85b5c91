"""Training examples and the study's JSON format (a list of {instruction, input, output})."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class InputError(ValueError):
    """Bad user input; the message names the input and fits on one line."""


@dataclass(frozen=True)
class Example:
    """One SFT example: the prompt side and the response whose tokens carry the loss."""

    example_id: str
    instruction: str
    response: str


def stable_id(*parts: str) -> str:
    """A short id that depends on content only, so resumed runs find finished work."""
    digest = hashlib.sha1("\x1f".join(parts).encode("utf-8")).hexdigest()
    return digest[:16]


def example_from_row(row: Any, where: str) -> Example:
    """Validate one study-format row; `where` names it in errors (file and index)."""
    if not isinstance(row, dict):
        raise InputError(f"{where}: expected an object, got {type(row).__name__}")
    for key in ("instruction", "output"):
        if key not in row:
            raise InputError(f"{where}: missing field '{key}'")
        if not isinstance(row[key], str):
            raise InputError(f"{where}: field '{key}' is not a string")
    extra = row.get("input") or ""
    if not isinstance(extra, str):
        raise InputError(f"{where}: field 'input' is not a string")
    if not row["output"].strip():
        raise InputError(f"{where}: empty response ('output')")
    instruction = row["instruction"] + ("\n" + extra if extra else "")
    example_id = str(row["example_id"]) if "example_id" in row else stable_id(instruction, row["output"])
    return Example(example_id, instruction, row["output"])


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


def dedupe_ids(examples: Iterable[Example]) -> list[Example]:
    """Give repeated ids (identical rows) an ordinal suffix so every row stays its own."""
    seen: dict[str, int] = {}
    out = []
    for ex in examples:
        n = seen.get(ex.example_id, 0)
        seen[ex.example_id] = n + 1
        out.append(ex if n == 0 else Example(f"{ex.example_id}-{n}", ex.instruction, ex.response))
    return out
