"""Built-in demo samples written by this project (data_sources/builtin/*.json).

They fill gaps no installed pack covers (commonsense QA, long-tail Wikipedia) so the offline default shows every
comparison of the study. They are small and hand-written: every row they produce is labelled demo.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from data_sources.datasets.base import require_str
from lg_pipeline.curation.source import RawRecord
from lg_pipeline.errors import InputError
from lg_pipeline.io.study_json import read_json

BUILTIN_DIR = Path(__file__).with_name("demo_data")
_OPTIONAL = ("answer", "rationale", "detailed", "passage", "title")


@functools.cache
def _load(path: str) -> tuple[str, tuple[dict[str, Any], ...]]:
    file = Path(path)
    data = read_json(file, "built-in demo file")
    if not isinstance(data, dict) or not isinstance(data.get("records"), list):
        raise InputError(f"{file}: expected an object with a 'records' list")
    return str(data.get("description", "")), tuple(data["records"])


def _record(row: Any, where: str) -> RawRecord:
    if not isinstance(row, dict):
        raise InputError(f"{where}: expected an object")
    values = {}
    for key in _OPTIONAL:
        if key in row and not isinstance(row[key], str):
            raise InputError(f"{where}: field '{key}' is not a string")
        values[key] = row.get(key)
    return RawRecord(
        record_id=require_str(row, "id", where),
        question=require_str(row, "question", where) if "question" in row else (values["title"] or ""),
        answer=values["answer"] or "",
        rationale=values["rationale"],
        detailed=values["detailed"],
        passage=values["passage"],
        title=values["title"],
    )


class BuiltinSource:
    """Records from one built-in JSON file; ids must be unique (a duplicate is an authoring error)."""

    name = "builtin-demo"

    def __init__(self, file: str, directory: str | Path | None = None):
        self.path = Path(directory or BUILTIN_DIR) / file

    def describe(self) -> str:
        _, rows = _load(str(self.path))
        return f"built-in demo {self.path.name} ({len(rows)} records written by lg-pipeline, labelled demo)"

    def records(self, want: int, seed: int) -> Iterator[RawRecord]:
        _, rows = _load(str(self.path))
        seen: set[str] = set()
        for i, row in enumerate(rows):
            record = _record(row, f"{self.path} record {i}")
            if record.record_id in seen:
                raise InputError(f"{self.path} record {i}: duplicate id {record.record_id!r}")
            seen.add(record.record_id)
            yield record
