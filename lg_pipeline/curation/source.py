"""The one small interface every dataset source implements, defined here so the core never imports an adapter.

An adapter (`data_sources/datasets/`) turns some upstream format (an installed package, a hub dataset, a built-in
JSON file) into `RawRecord`s. Everything study-specific (response formats, levels, wrong answers) happens later,
in curation, so a new source only has to fill these fields.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from lg_pipeline.curation.spec import SourceGroup


@dataclass(frozen=True)
class RawRecord:
    """One upstream item before any study formatting.

    `record_id` is the source's own id (kept for provenance); the curated `example_id` is derived from content
    instead, so it survives re-ordering of the source.
    """

    record_id: str
    question: str
    answer: str = ""
    rationale: str | None = None  # short human-written rationale (Simplified CoT)
    detailed: str | None = None  # long step-by-step response carried by the source (precomputed teacher)
    passage: str | None = None  # knowledge text (Wikipedia article)
    title: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def fields(self) -> dict[str, str]:
        """Template fields (None becomes empty) for the level templates in datasets.yaml."""
        return {
            "question": self.question,
            "answer": self.answer,
            "rationale": self.rationale or "",
            "detailed": self.detailed or "",
            "passage": self.passage or "",
            "title": self.title or "",
        }


class SourceAdapter(Protocol):
    """What curation needs from a source: provenance strings and an iterator of records."""

    name: str  # short provenance tag written into every curated row's `source` column

    def describe(self) -> str:
        """One line for metadata: package/version or path, options that change the records."""
        ...

    def records(self, want: int, seed: int) -> Iterator[RawRecord]:
        """Yield records in the source's own order. `want` is a hint for generative sources (they may yield
        more); `seed` only matters to sources that generate their items."""
        ...


# How curation gets the adapter of a source group: (group, cache_dir) -> adapter. The dataset catalog provides it.
OpenSource = Callable[["SourceGroup", str], SourceAdapter]
