"""The rows of one curated variant while it is being built, with the accounting of every row it lost."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from lg_pipeline.example import stable_id

MAX_LISTED_IDS = 50


@dataclass
class Table:
    """Rows of one variant before they become a DataFrame, plus what is known about how they were made.

    `drops`: source records passed over during selection (replaced by later records while the source lasts);
    `lost`: selected rows lost afterwards (teacher gave nothing, no wrong partner, ...), by reason.
    `cut_tokens`: per row, the token count of a response we cut to a budget (None: not cut by us).
    """

    example_ids: list[str]
    instructions: list[str]
    responses: list[str]
    answers: list[str]
    source_tag: str
    meta: dict[str, Any] = field(default_factory=dict)
    drops: Counter = field(default_factory=Counter)
    lost: Counter = field(default_factory=Counter)
    cut_tokens: list[int | None] = field(default_factory=list)
    accounting: dict[str, Any] = field(default_factory=dict)

    def keep(self, indices: list[int]) -> None:
        for name in ("example_ids", "instructions", "responses", "answers", "cut_tokens"):
            values = getattr(self, name)
            setattr(self, name, [values[i] for i in indices])


def ids_digest(example_ids: list[str]) -> str:
    """One hash of the ordered ids: equal digests mean identical instruction sets in the same order."""
    return stable_id(*example_ids) if example_ids else ""


def finish(table: Table, meta: dict) -> tuple[list[dict], dict]:
    columns = (table.example_ids, table.instructions, table.responses, table.answers, table.cut_tokens)
    rows = [
        {"example_id": e, "instruction": i, "response": r, "answer": a, "cut_token_count": c}
        for e, i, r, a, c in zip(*columns, strict=True)
    ]
    meta = {**meta, **table.meta}
    meta.update(
        n_rows=len(rows),
        shortfall=max(meta["n_requested"] - len(rows), 0),
        drops=dict(sorted((table.drops + table.lost).items())),
        row_accounting={
            "requested": meta["n_requested"],
            **table.accounting,
            "lost": dict(sorted(table.lost.items())),
        },
        ids_digest=ids_digest(table.example_ids),
    )
    return rows, meta
