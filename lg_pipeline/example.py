"""One SFT training example, and the content ids that let resumed runs find finished work."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from lg_pipeline.errors import InputError


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


def number_repeats(ids: Iterable[str]) -> list[str]:
    """Repeated ids get an ordinal suffix (`x`, `x-1`, `x-2`), so every row stays its own.

    A suffix never lands on an id the input already has (`x, x, x-1` -> `x, x-2, x-1`).
    """
    ids = list(ids)
    taken = set(ids)
    seen: dict[str, int] = {}
    out = []
    for base in ids:
        if base not in seen:
            seen[base] = 0
            out.append(base)
            continue
        n = seen[base] + 1
        while f"{base}-{n}" in taken:
            n += 1
        seen[base] = n
        taken.add(f"{base}-{n}")
        out.append(f"{base}-{n}")
    return out


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


def dedupe_ids(examples: Iterable[Example]) -> list[Example]:
    """Give repeated ids (identical rows) an ordinal suffix so every row stays its own."""
    examples = list(examples)
    ids = number_repeats(e.example_id for e in examples)
    pairs = zip(examples, ids, strict=True)
    return [e if i == e.example_id else Example(i, e.instruction, e.response) for e, i in pairs]
