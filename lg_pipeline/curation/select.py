"""Choosing which source records a dataset uses: one selection per source group, shared by all its levels.

The selection must not depend on the level being built, or the None/Simplified/Detailed sets would have different
instructions. So a record is kept only if it is usable for every level of its group, and every record passed over
is counted with its reason.
"""

from __future__ import annotations

import random
import string
from collections import Counter
from dataclasses import dataclass, field

from lg_pipeline.curation.settings import CurationSettings, derived_seed
from lg_pipeline.curation.source import RawRecord
from lg_pipeline.curation.spec import DatasetSpec, SourceGroup
from lg_pipeline.curation.wiki import TokenCounter
from lg_pipeline.errors import InputError
from lg_pipeline.example import stable_id


@dataclass
class Selection:
    records: list[RawRecord]
    instructions: list[str]
    example_ids: list[str]
    source: str  # adapter.describe()
    source_tag: str  # adapter.name, the per-row `source` value
    examined: int = 0
    available: int = 0  # records the source offered; `examined < available` means it did not run out
    drops: Counter = field(default_factory=Counter)


def _fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def _drop_reason(spec: DatasetSpec, group: SourceGroup, record: RawRecord, counter: TokenCounter) -> str | None:
    values = record.fields()
    needed = _fields(spec.instruction)
    for level in group.levels:
        needed |= _fields(spec.responses[level]) - ({"detailed"} if level in group.teacher_levels else set())
    for name in sorted(needed):
        if not values[name].strip():
            return f"empty_{name}"
    budgets = [spec.cut_tokens[level] for level in group.levels if level in spec.cut_tokens]
    if budgets and counter.count(values["passage"]) < max(budgets):
        return f"shorter_than_{max(budgets)}_tokens"
    return None


def select_records(
    spec: DatasetSpec, group: SourceGroup, settings: CurationSettings, counter: TokenCounter
) -> Selection:
    """The first n usable records, in source order ('first') or in a seeded shuffle of the source ('sample')."""
    if settings.open_source is None:
        raise InputError(f"dataset {spec.name!r}: no dataset sources configured (CurationSettings.open_source)")
    adapter = settings.open_source(group, settings.cache_dir)
    group_index = spec.sources.index(group)
    records = list(adapter.records(settings.n_examples, settings.seed))
    if group.selection == "sample":
        random.Random(derived_seed(settings.seed, spec.name, f"group{group_index}")).shuffle(records)
    chosen = Selection([], [], [], adapter.describe(), adapter.name, available=len(records))
    seen: set[str] = set()
    for record in records:
        if len(chosen.records) >= settings.n_examples:
            break
        chosen.examined += 1
        reason = _drop_reason(spec, group, record, counter)
        instruction = spec.instruction.format_map(record.fields()).strip()
        example_id = stable_id(spec.name, instruction)
        if reason is None and example_id in seen:
            reason = "duplicate_question"
        if reason is not None:
            chosen.drops[reason] += 1
            continue
        seen.add(example_id)
        chosen.records.append(record)
        chosen.instructions.append(instruction)
        chosen.example_ids.append(example_id)
    if not chosen.records:
        raise InputError(f"dataset {spec.name!r}: no usable records in {chosen.source} (drops: {dict(chosen.drops)})")
    return chosen
