"""One's own probes, from a JSON file: a list of `{"prompt_id": ..., "type": ..., "response": ...}` rows.

`prompt_id` names a row of the training data (its `example_id`, as the run's `probes` table lists them); the probe
is that row's instruction with `response`, followed like the run's own probes (a trained row's prompt, or a held-out
one). `type` is the probe type the tables and figures group by (any name; the run's own types may be reused).
Every problem is one line naming the file and the row.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from lg_pipeline.dynamics.learning.probes import Probe, probe_of
from lg_pipeline.errors import InputError
from lg_pipeline.example import Example
from lg_pipeline.io.study_json import read_json

PROBE_FILE_FIELDS = ("prompt_id", "type", "response")


def load_probe_file(path: str | Path, rows: Sequence[Example], label: str | None = None) -> list[Probe]:
    """The probes of the file at `path` on the prompts of `rows`; `label` names the file in messages."""
    where = label or str(path)
    found = read_json(path, "probe file")
    if not isinstance(found, list):
        raise InputError(f"{where}: expected a JSON list of {{prompt_id, type, response}} objects, got "
                         f"{type(found).__name__}")
    if not found:
        raise InputError(f"{where}: no probes (an empty list)")
    by_id = {row.example_id: row for row in rows}
    probes, seen = [], {}
    for i, item in enumerate(found):
        probe = _probe(item, f"{where} row {i}", by_id)
        if probe.probe_id in seen:
            raise InputError(f"{where} row {i}: the same probe as row {seen[probe.probe_id]}")
        seen[probe.probe_id] = i
        probes.append(probe)
    return probes


def _probe(item: object, where: str, by_id: dict[str, Example]) -> Probe:
    if not isinstance(item, dict):
        raise InputError(f"{where}: expected an object with {', '.join(PROBE_FILE_FIELDS)}, got {type(item).__name__}")
    for name in PROBE_FILE_FIELDS:
        if name not in item:
            raise InputError(f"{where}: missing field '{name}'")
        if not isinstance(item[name], str) or not item[name].strip():
            raise InputError(f"{where}: '{name}' must be a non-empty string")
    extra = sorted(set(item) - set(PROBE_FILE_FIELDS))
    if extra:
        raise InputError(f"{where}: unknown field '{extra[0]}' (a row has {', '.join(PROBE_FILE_FIELDS)})")
    row = by_id.get(item["prompt_id"])
    if row is None:
        raise InputError(f"{where}: prompt_id {item['prompt_id']!r} is not an example_id of the training data")
    return probe_of(row, item["type"].strip(), item["response"])


def merged(probes: Sequence[Probe], own: Sequence[Probe]) -> list[Probe]:
    """The run's probes, then one's own that are not already among them (the same prompt, type and response)."""
    ids = {p.probe_id for p in probes}
    return [*probes, *(p for p in own if p.probe_id not in ids)]
