"""What curation knows about a dataset: its levels, templates, and the source groups that build them.

The specs are plain data; the dataset catalog (`data_sources/datasets/datasets.yaml`) is where they are read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class SourceGroup:
    """One adapter that builds some levels of a dataset from one shared selection of records."""

    levels: tuple[str, ...]
    adapter: str
    offline: bool = False
    demo: bool = False
    teacher_levels: tuple[str, ...] = ()
    selection: str = "sample"
    options: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset of the study (or an offline stand-in) and how each of its levels is built."""

    name: str
    family: str
    display_name: str
    levels: tuple[str, ...]
    demo: bool  # every level is built-in demo data
    offline: bool  # at least one level is buildable with no network, release folder or teacher
    offline_levels: tuple[str, ...] = ()
    demo_levels: tuple[str, ...] = ()
    answer_kind: str = "text"
    instruction: str = "{question}"
    responses: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False)
    cut_tokens: Mapping[str, int] = field(default_factory=dict, compare=False, hash=False)
    release: Mapping[str, Any] | None = field(default=None, compare=False, hash=False)
    sources: tuple[SourceGroup, ...] = field(default=(), compare=False, hash=False)
    code: str = ""  # its part of the short variant keys (`VariantKey.code`), unique in its catalog

    def group_for(self, level: str) -> SourceGroup | None:
        """The first source group that builds `level` (None: only the release folder has it)."""
        return next((g for g in self.sources if level in g.levels), None)

    def is_demo(self, level: str) -> bool:
        """Whether rows of this level are built-in demo data (used for labels in figures and tables)."""
        return level in self.demo_levels

    def release_file(self, level: str, correctness: str) -> str | None:
        """The level's file inside the release folder, relative to it (None when the release lacks it)."""
        if not self.release or level not in self.release["files"]:
            return None
        shuffle = "" if correctness == "correct" else "_wrong_answer_shuffle"
        return self.release["path"].format(shuffle=shuffle, file=self.release["files"][level])
