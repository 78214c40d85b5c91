"""The study's release folder (curated JSON files published with the paper), read in place.

Files are read by path and never copied into the project: the curated tables carry the rows, the metadata
carries only relative file names.
"""

from __future__ import annotations

import functools
from pathlib import Path

from lg_pipeline.errors import InputError
from lg_pipeline.io.study_json import load_study_json


def release_root(release_dir: str | Path) -> Path:
    """The folder, checked once so a typo fails with the path named, not with a missing-file error later."""
    root = Path(release_dir).expanduser()
    if not root.is_dir():
        raise InputError(f"release folder not found: {root}")
    return root


@functools.cache
def _read(path: str, mtime_ns: int) -> tuple[tuple[str, str], ...]:
    """(instruction, response) pairs of one release file, cached while the file is unchanged."""
    return tuple((e.instruction, e.response) for e in load_study_json(path))


def read_release_file(release_dir: str | Path, relpath: str) -> list[tuple[str, str]]:
    """(instruction, response) pairs in file order; malformed rows raise InputError naming file and row."""
    path = release_root(release_dir) / relpath
    if not path.is_file():
        raise InputError(f"release file not found: {path}")
    return list(_read(str(path), path.stat().st_mtime_ns))
