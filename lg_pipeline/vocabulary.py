"""The project's shared words: levels, correctness, families, studied modules (labels, colours, order), and the
partition keys.

Every module that needs one of these imports it from here; `VariantKey` and `StatsKey` are the only
places a key is formatted or split.
"""

from __future__ import annotations

import re

from lg_pipeline.errors import InputError

REASONING_LEVELS: tuple[str, ...] = ("none", "simplified", "detailed")
WIKI_LEVELS: tuple[str, ...] = ("len100", "len500", "len1000", "longtail")
LEVEL_LABELS: dict[str, str] = {
    "none": "None CoT",
    "simplified": "Simplified CoT",
    "detailed": "Detailed CoT",
    "len100": "Length 100",
    "len500": "Length 500",
    "len1000": "Length 1000",
    "longtail": "Unpopular",
}
CORRECTNESS: tuple[str, ...] = ("correct", "wrong")
CORRECTNESS_LABELS: dict[str, str] = {"correct": "Correct", "wrong": "Wrong"}
FAMILIES: tuple[str, ...] = ("math", "commonsense", "wiki")
MODEL_KINDS: tuple[str, ...] = ("base", "instruct")

# Studied weight matrices, by the suffix of their module name.
ATTENTION: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP: tuple[str, ...] = ("gate_proj", "up_proj", "down_proj")
MODULE_ALIASES: dict[str, str] = {
    "q": "q_proj",
    "k": "k_proj",
    "v": "v_proj",
    "o": "o_proj",
    "gate": "gate_proj",
    "up": "up_proj",
    "down": "down_proj",
}
MODULE_LABELS: dict[str, str] = {
    "q_proj": "Q",
    "k_proj": "K",
    "v_proj": "V",
    "o_proj": "O",
    "gate_proj": "Gate",
    "up_proj": "Up",
    "down_proj": "Down",
}
# One colour per module in every figure: the study's red/green/blue/gray for Q/K/V/O, so figures read side by side.
MODULE_COLORS: dict[str, str] = {
    "q_proj": "tab:red",
    "k_proj": "tab:green",
    "v_proj": "tab:blue",
    "o_proj": "tab:gray",
    "gate_proj": "tab:purple",
    "up_proj": "tab:orange",
    "down_proj": "tab:brown",
}
MODULE_ORDER: tuple[str, ...] = tuple(MODULE_LABELS)  # the order modules are listed in figures and tables
# The layer index inside a parameter or module name: `model.layers.3.self_attn.q_proj.weight` -> 3.
LAYER_INDEX = re.compile(r"\.(\d+)\.")


def layer_index(name: str) -> int | None:
    """The layer number in a module or parameter name, or None when it has none."""
    found = LAYER_INDEX.search("." + name + ".")
    return int(found.group(1)) if found else None


class VariantKey(str):
    """One curated training variant, `<dataset>__<level>__<correct|wrong>` (e.g. `champ__detailed__wrong`).

    A str, so it is a Dagster partition key, a file stem and a dict key as it is; its parts are attributes.
    The catalog (`data_sources.datasets.catalog.dataset_spec`) checks that dataset and level exist.
    """

    SEP = "__"
    dataset: str
    level: str
    correctness: str

    def __new__(cls, key_or_dataset: str, level: str | None = None, correctness: str | None = None) -> VariantKey:
        if isinstance(key_or_dataset, VariantKey) and level is None:
            return key_or_dataset
        if level is None:
            parts = key_or_dataset.split(cls.SEP) if isinstance(key_or_dataset, str) else []
        else:
            parts = [key_or_dataset, level, correctness or ""]
        key = cls.SEP.join(map(str, parts))
        if len(parts) != 3 or not all(parts) or any(cls.SEP in str(p) for p in parts):
            raise InputError(f"variant key {key_or_dataset!r}: expected '<dataset>__<level>__<correct|wrong>'")
        if parts[2] not in CORRECTNESS:
            raise InputError(f"variant key {key!r}: correctness must be 'correct' or 'wrong'")
        self = super().__new__(cls, key)
        self.dataset, self.level, self.correctness = parts
        return self

    @classmethod
    def parse(cls, key: str) -> VariantKey:
        """Split and check the form; InputError names the key."""
        return cls(key)

    def with_correctness(self, correctness: str) -> VariantKey:
        return VariantKey(self.dataset, self.level, correctness)

    def with_level(self, level: str) -> VariantKey:
        return VariantKey(self.dataset, level, self.correctness)


class StatsKey(str):
    """One gradient-statistics partition, `model|variant`.

    Dagster orders multi-partition dimensions by name (`model` before `variant`), so this is also the
    string form of its `MultiPartitionKey`.
    """

    SEP = "|"
    model: str
    variant: VariantKey

    def __new__(cls, key: str) -> StatsKey:
        if isinstance(key, StatsKey):
            return key
        model, sep, variant = str(key).partition(cls.SEP)
        if not sep or not model:
            raise InputError(f"partition key {key!r}: expected 'model|<dataset>__<level>__<correct|wrong>'")
        parsed = VariantKey(variant)
        self = super().__new__(cls, f"{model}{cls.SEP}{parsed}")
        self.model, self.variant = model, parsed
        return self

    @classmethod
    def parse(cls, key: str) -> StatsKey:
        return cls(key)

    @classmethod
    def of(cls, model: str, variant: str) -> StatsKey:
        return cls(f"{model}{cls.SEP}{variant}")
