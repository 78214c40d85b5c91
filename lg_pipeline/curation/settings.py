"""Settings of one curation run (what the Dagster layer passes in)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lg_pipeline.errors import InputError

if TYPE_CHECKING:
    from lg_pipeline.curation.source import OpenSource

BUILDER_VERSION = "curation-2"  # 2: cuts within ±5% of the budget, cut_token_count, row accounting


@dataclass(frozen=True)
class CurationSettings:
    """n_examples: rows per variant (first n in file order for the release; a seeded selection otherwise).
    release_dir: the study's release folder; datasets it holds are read from it.
    tokenizer: a HF tokenizer for the wiki cuts (None: the regex fallback, named in metadata).
    teacher: writes Detailed CoT for sources that carry none (see lg_pipeline.curation.teacher).
    keep_disagreeing: keep Detailed CoT rows whose final answer disagrees with the gold answer (flagged and counted
    in metadata either way); False drops them, counted as lost rows.
    open_source: (source group, cache_dir) -> its adapter; the dataset catalog's `make_adapter` in practice."""

    n_examples: int = 500
    seed: int = 0
    release_dir: str | None = None
    cache_dir: str = ".cache/curation"
    tokenizer: object | None = None
    teacher: object | None = None
    keep_disagreeing: bool = True
    open_source: OpenSource | None = None

    def check(self) -> None:
        """Reject bad settings with one line naming the setting."""
        if isinstance(self.n_examples, bool) or not isinstance(self.n_examples, int) or self.n_examples < 1:
            raise InputError(f"n_examples: must be a positive integer, got {self.n_examples!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise InputError(f"seed: must be an integer, got {self.seed!r}")
        if self.teacher is not None and not callable(getattr(self.teacher, "respond", None)):
            raise InputError("teacher: must have a respond(instruction) method (see lg_pipeline.curation.teacher)")
        if not isinstance(self.keep_disagreeing, bool):
            raise InputError(f"keep_disagreeing: must be true or false, got {self.keep_disagreeing!r}")


def derived_seed(seed: int, *parts: str) -> int:
    """A seed for one purpose (selection of a dataset, derangement of a level) that does not depend on
    PYTHONHASHSEED, so every process draws the same."""
    digest = hashlib.sha256("\x1f".join([str(seed), *parts]).encode("utf-8")).hexdigest()
    return int(digest[:16], 16)
