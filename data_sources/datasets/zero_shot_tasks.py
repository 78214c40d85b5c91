"""Offline tasks for zero-shot dynamics: the project's datasets (with their CoT levels) and reasoning-gym's generators.

The core's `TaskProvider` (`lg_pipeline.dynamics.zero_shot.tasks`). A name in the dataset catalog is built by
curation at the asked level (its correct set); any other registered reasoning-gym generator gives (question, answer)
items, which have no CoT levels. Names in the catalog shadow a generator of the same name (`gsm_symbolic`).
"""

from __future__ import annotations

import functools
from pathlib import Path

from data_sources.datasets.catalog import dataset_catalog, make_adapter
from lg_pipeline.curation import CurationSettings
from lg_pipeline.curation.build import build_rows
from lg_pipeline.errors import InputError
from lg_pipeline.example import Example
from lg_pipeline.vocabulary import REASONING_LEVELS, VariantKey


@functools.cache
def reasoning_gym_names() -> tuple[str, ...]:
    try:
        from reasoning_gym.factory import DATASETS
    except ImportError:
        return ()
    return tuple(sorted(DATASETS))


class OfflineTasks:
    """Tasks from the dataset catalog (offline levels, plus those the release folder holds) and reasoning-gym."""

    def __init__(self, release_dir: str | None = None, cache_dir: str | Path = ".cache"):
        self.release_dir = release_dir
        self.cache_dir = str(Path(cache_dir, "curation"))

    def _levels(self, name: str) -> tuple[str, ...]:
        spec = dataset_catalog().get(name)
        if spec is None:
            return ()
        released = [
            lvl for lvl in spec.levels
            if self.release_dir and (f := spec.release_file(lvl, "correct")) and Path(self.release_dir, f).is_file()
        ]
        return tuple(lvl for lvl in spec.levels if lvl in spec.offline_levels or lvl in released)

    def catalog_tasks(self) -> dict[str, tuple[str, ...]]:
        """Catalog datasets buildable here, with their levels."""
        return {name: levels for name in dataset_catalog() if (levels := self._levels(name))}

    def names(self) -> list[str]:
        catalog = self.catalog_tasks()
        return [*catalog, *(n for n in reasoning_gym_names() if n not in catalog)]

    def describe(self, name: str) -> str:
        levels = self._levels(name)
        return f"dataset catalog, levels {', '.join(levels)}" if levels else "reasoning-gym generator, answer only"

    def has(self, name: str) -> bool:
        return bool(self._levels(name)) or name in reasoning_gym_names()

    def draw(self, name: str, level: str | None, n: int, seed: int) -> list[Example]:
        levels = self._levels(name)
        if levels:
            return self._from_catalog(name, self._level(name, levels, level), n, seed)
        return self._from_generator(name, n, seed)

    @staticmethod
    def _level(name: str, levels: tuple[str, ...], level: str | None) -> str:
        """The asked CoT level; tasks without CoT levels (wiki) use their first; None: the first level."""
        if level is None or not any(lvl in REASONING_LEVELS for lvl in levels):
            return levels[0]
        if level not in levels:
            raise InputError(f"task {name!r} has no offline level {level!r} (it has {', '.join(levels)})")
        return level

    def _from_catalog(self, name: str, level: str, n: int, seed: int) -> list[Example]:
        settings = CurationSettings(
            n_examples=n, seed=seed, release_dir=self.release_dir, cache_dir=self.cache_dir, open_source=make_adapter
        )
        rows, _, _ = build_rows(dataset_catalog()[name], VariantKey(name, level, "correct"), settings)
        return [Example(r["example_id"], r["instruction"], r["response"]) for r in rows]

    @staticmethod
    def _from_generator(name: str, n: int, seed: int) -> list[Example]:
        """The first n items with a non-empty question and answer (a margin is generated for those without)."""
        import reasoning_gym

        try:
            data = reasoning_gym.create_dataset(name, size=n + n // 4 + 2, seed=seed)
            items = [data[i] for i in range(len(data))]
        except Exception as exc:  # a generator that needs data or packages this machine lacks
            raise InputError(f"task {name!r}: reasoning-gym cannot generate it here ({type(exc).__name__})") from None
        examples = [
            Example(f"{name}-{seed}-{i}", str(it.get("question") or ""), str(it.get("answer") or ""))
            for i, it in enumerate(items)
        ]
        return [e for e in examples if e.instruction.strip() and e.response.strip()][:n]
