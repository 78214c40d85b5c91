"""The project's shared words: levels, correctness, families, studied modules (labels, colours, order), and the
keys.

Every module that needs one of these imports it from here; `VariantKey` and `StatsKey` are the only
places a key is formatted or split, in its long form (`champ__detailed__wrong`: file stems, run keys, table columns,
manifests) and its short form, the Dagster partition key (`champ-d-w`, `VariantKey.code`), which only the Dagster
layer uses (`assets/partitions.py`, the one translation) and `models add` checks for look-alikes. The short form
exists because the UI cuts a key longer than 24 characters to its first and last 11 (`ui_cut`): a variant of at most
11 characters stays whole at the end of `model|variant`.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping

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
# The short (partition) form of a variant, `<dataset code>-<level code>-<c|w>`: at most 5 + 1 + 3 + 1 + 1 = 11
# characters. Dataset codes are the dataset catalog's (`code` in datasets.yaml), passed in: the vocabulary reads
# no catalog.
LEVEL_CODES: dict[str, str] = {
    "none": "n",
    "simplified": "s",
    "detailed": "d",
    "len100": "100",
    "len500": "500",
    "len1000": "1k",
    "longtail": "lt",
}
CORRECTNESS_CODES: dict[str, str] = {"correct": "c", "wrong": "w"}
DATASET_CODE = re.compile(r"^[a-z0-9]{1,5}$")
# Zero-shot orderings are partition keys as they are named, but the one over 11 characters.
ORDERING_CODES: dict[str, str] = {"cluster_shuffled": "cl_shuffled"}
# The Dagster UI shows a key longer than UI_WIDTH characters as its first UI_KEEP + "…" + its last UI_KEEP.
UI_WIDTH, UI_KEEP = 24, 11
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

    A str, so it is a file stem, a run key and a dict key as it is; its parts are attributes. Its Dagster
    partition key is its short form, `code` (`champ-d-w`). The catalog (`data_sources.datasets.catalog.dataset_spec`)
    checks that dataset and level exist.
    """

    SEP = "__"
    CODE_SEP = "-"
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

    def code(self, dataset_codes: Mapping[str, str]) -> str:
        """The short form, `<dataset code>-<level code>-<c|w>` (`champ__detailed__wrong` -> `champ-d-w`), at most 11
        characters; `dataset_codes`: {dataset: code}, the catalog's."""
        code = dataset_codes.get(self.dataset)
        if not code or self.level not in LEVEL_CODES:
            what = f"dataset {self.dataset!r} has no code" if not code else f"level {self.level!r} has no code"
            raise InputError(f"variant key {str(self)!r}: {what}")
        return self.CODE_SEP.join((code, LEVEL_CODES[self.level], CORRECTNESS_CODES[self.correctness]))

    @classmethod
    def from_code(cls, code: str, dataset_codes: Mapping[str, str]) -> VariantKey:
        """The variant of a short form (`champ-d-w` -> `champ__detailed__wrong`); InputError names it."""
        parts = str(code).split(cls.CODE_SEP)
        datasets = {c: d for d, c in dataset_codes.items()}
        levels = {c: lvl for lvl, c in LEVEL_CODES.items()}
        correctness = {c: k for k, c in CORRECTNESS_CODES.items()}
        if len(parts) != 3 or parts[0] not in datasets or parts[1] not in levels or parts[2] not in correctness:
            raise InputError(
                f"variant partition key {str(code)!r}: expected '<dataset code>-<level code>-<c|w>' (e.g. 'champ-d-c'; "
                f"datasets {', '.join(sorted(datasets))}; levels {', '.join(levels)})"
            )
        return cls(datasets[parts[0]], levels[parts[1]], correctness[parts[2]])


class StatsKey(str):
    """One gradient-statistics partition, `model|variant` (the variant in its long form).

    Dagster orders multi-partition dimensions by name (`model` before `variant`), so `code` (the variant in its
    short form) is the string form of its `MultiPartitionKey`.
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
        return cls(pair_key(model, variant))

    def code(self, dataset_codes: Mapping[str, str]) -> str:
        """The short form, `model|<variant code>` (`smollm2-135m-instruct|champ-d-w`): the string form of the
        statistics partition's `MultiPartitionKey`."""
        return pair_key(self.model, self.variant.code(dataset_codes))

    @classmethod
    def from_code(cls, key: str, dataset_codes: Mapping[str, str]) -> StatsKey:
        """The `StatsKey` of a short form `model|<variant code>`; InputError names it."""
        model, sep, variant = str(key).partition(cls.SEP)
        if not sep or not model:
            raise InputError(f"partition key {key!r}: expected 'model|<dataset code>-<level code>-<c|w>'")
        return cls.of(model, VariantKey.from_code(variant, dataset_codes))


def pair_key(first: str, second: str) -> str:
    """The string form of a two-dimension partition key, dimensions in name order (`model|rt`): Dagster's
    `MultiPartitionKey`, for the keys built outside Dagster (`StatsKey`, the look-alike check of `models add`)."""
    return f"{first}{StatsKey.SEP}{second}"


def ordering_code(ordering: str) -> str:
    """A zero-shot ordering's partition key: its name, or its short form where the name is over 11 characters."""
    return ORDERING_CODES.get(ordering, ordering)


def ordering_from_code(code: str) -> str:
    """The ordering of a partition key (its long name is taken as it is)."""
    return {c: o for o, c in ORDERING_CODES.items()}.get(code, code)


def ui_cut(key: str) -> str:
    """A key as the Dagster UI shows it: whole up to 24 characters, else its first 11 + "…" + its last 11."""
    key = str(key)
    return key if len(key) <= UI_WIDTH else f"{key[:UI_KEEP]}…{key[-UI_KEEP:]}"


def look_alikes(keys: Iterable[str]) -> list[tuple[str, ...]]:
    """The groups of distinct keys that read the same once cut the UI's way (`ui_cut`), each sorted; [] when none."""
    by_cut: dict[str, set[str]] = defaultdict(set)
    for key in keys:
        by_cut[ui_cut(key)].add(str(key))
    return sorted(tuple(sorted(group)) for group in by_cut.values() if len(group) > 1)
