"""The study's release folder (curated JSON files published with the paper), read in place.

Files are read by path and never copied into the project: the curated tables carry the rows, the metadata
carries only relative file names.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

from data_sources.base import InputError
from lg_pipeline.examples import example_from_row


def release_root(release_dir: str | Path) -> Path:
    """The folder, checked once so a typo fails with the path named, not with a missing-file error later."""
    root = Path(release_dir).expanduser()
    if not root.is_dir():
        raise InputError(f"release folder not found: {root}")
    return root


@functools.cache
def _read(path: str, mtime_ns: int) -> tuple[tuple[str, str], ...]:
    file = Path(path)
    try:
        rows = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"{file}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(rows, list):
        raise InputError(f"{file}: expected a JSON list of objects, got {type(rows).__name__}")
    pairs = []
    for i, row in enumerate(rows):
        example = example_from_row(row, f"{file} row {i}")
        pairs.append((example.instruction, example.response))
    return tuple(pairs)


def read_release_file(release_dir: str | Path, relpath: str) -> list[tuple[str, str]]:
    """(instruction, response) pairs in file order; malformed rows raise InputError naming file and row."""
    path = release_root(release_dir) / relpath
    if not path.is_file():
        raise InputError(f"release file not found: {path}")
    return list(_read(str(path), path.stat().st_mtime_ns))
