"""Partitions: gradient statistics are keyed by model (dynamic) x dataset-variant (static), the zero-shot runs by
model x ordering (static), the summaries by model.

Only what can run here is a partition: the variants this environment can build (`backlog.variant_availability`: offline
sources, the study's release files when `LG_RELEASE_DIR` is set, hub sources when the hub is enabled, and teacher
levels, buildable once a teacher is configured in the launchpad or `LG_TEACHER`) and the catalog models that can
be loaded here (registered by the catalog sensor, `assets.backlog.plan`). The rest is listed once, with the reason,
in the sensor's first tick and in the assets' descriptions (`availability_note`), instead of hundreds of
"missing" cells that can never fill. A partition that cannot build with this environment's settings (a teacher level
while no teacher is set) says why in the same note, in its event history (the catalog sensor's observation) and in
the first line of a run that needs it (`backlog.why_unbuildable` answers all of them).
The variant partitions are fixed when the code location loads: after changing those variables, reload it.

**Partition keys are short, so the UI's cut keeps them apart.** The UI shows a key longer than 24 characters as its
first 11 characters + "…" + its last 11 (`vocabulary.ui_cut`), which made `commonsense_demo__simplified__correct` and
`…__detailed__correct` one "commonsense…ed__correct". A variant's partition key is
`<dataset code>-<level code>-<c|w>`, at most 11 characters, so `model|variant` shows the model's first 11 characters
and the whole variant:

- dataset codes (`code` in datasets.yaml): `gsmsy` GSM-Symbolic, `champ` CHAMP, `csdem` Commonsense QA (demo),
  `wiki` Wikipedia, `gsm8k` GSM8K, `aqua` AQuA, `stqa` StrategyQA, `ecqa` ECQA, `creak` CREAK, `sense` Sen-Making,
  `malg` / `mcnt` / `mgeo` MATH algebra / counting & probability / geometry;
- level codes (`vocabulary.LEVEL_CODES`): `n` None CoT, `s` Simplified CoT, `d` Detailed CoT, `100` / `500` / `1k`
  the wiki cuts to 100 / 500 / 1000 tokens, `lt` long-tail (unpopular) articles;
- `c` correct, `w` wrong (shuffled answers).

So `champ-d-c` is CHAMP, Detailed CoT, correct (`champ__detailed__correct`), `wiki-1k-w` the 1000-token wiki cut with
wrong answers, and a statistics partition reads `smollm2-135m-instruct|champ-d-c` (on the command line:
`dagster asset materialize --select gradient_stats --partition "smollm2-135m-instruct|champ-d-c"`). The zero-shot
orderings are keys as they are named, but `cluster_shuffled`: `cl_shuffled` (`vocabulary.ORDERING_CODES`).

Only the keys are short: files, run keys, table columns, manifests and metadata keep the long `VariantKey`
(`champ__detailed__correct`), and this module is the one translation between the two (`variant_partition_key`,
`variant_of`, `stats_key`, `multi_key`, `ordering_partition_key`, `zero_shot_key`, `zero_shot_dims`); the core never
sees a partition key. Records an older version wrote under the long keys are moved over once by
`lg-pipeline migrate-partitions` (`current_partition_key`).
"""

from __future__ import annotations

import dagster as dg

from assets.backlog import by_reason, teacher_set, variant_availability, why_unbuildable
from lg_pipeline.dynamics.zero_shot.orderings import ORDERINGS
from lg_pipeline.errors import InputError
from lg_pipeline.vocabulary import (
    CORRECTNESS_LABELS,
    LEVEL_CODES,
    LEVEL_LABELS,
    ORDERING_CODES,
    StatsKey,
    VariantKey,
    ordering_code,
    ordering_from_code,
)

MODEL = "model"
VARIANT = "variant"
ORDERING = "ordering"


def _codes() -> dict[str, str]:
    from data_sources.datasets.catalog import dataset_codes

    return dataset_codes()


def variant_of(key: str | VariantKey) -> VariantKey:
    """The variant of a variant partition key (`champ-d-c`); the long form (`champ__detailed__correct`: file stems,
    run keys, the CLI, the keys recorded before the short ones) is taken as it is."""
    if isinstance(key, VariantKey) or VariantKey.SEP in str(key):
        return VariantKey.parse(key)
    return VariantKey.from_code(str(key), _codes())


def variant_partition_key(variant: str | VariantKey) -> str:
    """The partition key of a variant (`champ__detailed__correct` -> `champ-d-c`); a partition key stays as it is."""
    return variant_of(variant).code(_codes())


def variant_label(variant: str | VariantKey) -> str:
    """What a variant partition key stands for, in words: `champ-d-c = champ__detailed__correct (CHAMP (competition
    math), Detailed CoT, correct)`."""
    from data_sources.datasets.catalog import dataset_catalog

    key = variant_of(variant)
    spec = dataset_catalog().get(key.dataset)
    dataset = spec.display_name if spec else key.dataset
    words = ", ".join((dataset, LEVEL_LABELS[key.level], CORRECTNESS_LABELS[key.correctness].lower()))
    return f"{variant_partition_key(key)} = {key} ({words})"


def ordering_partition_key(ordering: str) -> str:
    """The partition key of a zero-shot ordering (its name, `cl_shuffled` for `cluster_shuffled`)."""
    return ordering_code(ordering_from_code(ordering))


AVAILABILITY = variant_availability(teacher=True)  # a teacher may come with the launchpad's config
model_partitions = dg.DynamicPartitionsDefinition(name=MODEL)
variant_partitions = dg.StaticPartitionsDefinition([variant_partition_key(v) for v in AVAILABILITY.buildable])
model_variant_partitions = dg.MultiPartitionsDefinition({MODEL: model_partitions, VARIANT: variant_partitions})
ordering_partitions = dg.StaticPartitionsDefinition([ordering_partition_key(o) for o in ORDERINGS])
model_ordering_partitions = dg.MultiPartitionsDefinition({MODEL: model_partitions, ORDERING: ordering_partitions})

# A model's summary reads every variant of that model; a variant's statistics read its curated table.
by_model = dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name=MODEL)
by_variant = dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name=VARIANT)


def unbuildable_partitions() -> dict[str, str]:
    """Variant partitions this environment cannot build as configured, and why (a teacher level with no teacher
    set: still a partition, a teacher may come with the launchpad's config)."""
    return {v: why for v in AVAILABILITY.buildable if (why := why_unbuildable(v))}


def availability_note() -> str:
    """What the descriptions and the catalog sensor say about the variants left out here and the partitions that
    cannot build yet (Markdown)."""
    blocked = [
        f"- {', '.join(f'`{variant_partition_key(v)}` = `{v}`' for v in variants)} — {why}"
        for why, variants in by_reason(unbuildable_partitions()).items()
    ]
    cannot = f"Partitions that cannot build here as configured:\n{chr(10).join(blocked)}" if blocked else ""
    return "\n\n".join(note for note in (AVAILABILITY.note(), cannot) if note)


def dimensions(partitions_def: dg.PartitionsDefinition | None) -> list[str]:
    """The dimensions (MODEL, VARIANT, ORDERING) of one of the partition definitions above, in name order (the order
    of a key's parts); [] for none."""
    if isinstance(partitions_def, dg.MultiPartitionsDefinition):
        return [d.name for d in partitions_def.partitions_defs]
    known = {VARIANT: variant_partitions, ORDERING: ordering_partitions, MODEL: model_partitions}
    return [name for name, known_def in known.items() if partitions_def is not None and partitions_def == known_def]


def partition_legend() -> str:
    """How to read a variant partition key (Markdown): the dataset and level codes, with an example."""
    from data_sources.datasets.catalog import dataset_catalog

    datasets = ", ".join(f"`{spec.code}` {spec.display_name}" for spec in dataset_catalog().values())
    levels = ", ".join(f"`{code}` {LEVEL_LABELS[level]}" for level, code in LEVEL_CODES.items())
    example = next((k for k in map(VariantKey.parse, AVAILABILITY.buildable) if k.level == "detailed"), None)
    shown = f" (e.g. `{variant_partition_key(example)}` = `{example}`)" if example else ""
    return (
        f"Variant partition keys are `<dataset>-<level>-<c|w>`{shown}: datasets {datasets}; levels {levels}; "
        "`c` correct, `w` wrong (shuffled answers). Files and metadata name the variant in full."
    )


ORDERING_LEGEND = "Ordering partition keys are the orderings' names, but " + ", ".join(
    f"`{code}` = `{ordering}`" for ordering, code in ORDERING_CODES.items()
) + "."


def partition_note(partitions_def: dg.PartitionsDefinition | None) -> str:
    """What the description of an asset partitioned by `partitions_def` says about its keys (Markdown): how to read
    them, and, with a variant dimension, the variants left out here and the partitions that cannot build."""
    dims = dimensions(partitions_def)
    notes = [partition_legend(), availability_note()] if VARIANT in dims else []
    return "\n\n".join(note for note in [*notes, ORDERING_LEGEND if ORDERING in dims else ""] if note)


def refuse_unbuildable(variant: str, teacher: str, release_dir: str | None) -> None:
    """Fail a curation run at once, before any source is read, when the variant cannot be built with its resource's
    settings (`teacher`, `release_dir`)."""
    why = why_unbuildable(variant, release_dir or "", teacher_set(teacher))
    if why:
        raise InputError(f"'{variant}' {why}")


def curated_missing(variant: str | VariantKey, path: object) -> str:
    """The first line of a run that needs a variant's curated table and finds none: why the table cannot be built
    here, or that it is still to be materialized."""
    why = why_unbuildable(variant)
    if why:
        return f"'{variant}' {why} (no curated table at {path})"
    return f"curated table for '{variant}' not found at {path}: materialize curated_dataset first"


def stats_key(key: str | dg.MultiPartitionKey) -> StatsKey:
    """The `StatsKey` (`model|champ__detailed__correct`) of a statistics partition key (`model|champ-d-c`; a run
    launched with only the `dagster/partition` tag has it as a string). A `StatsKey` string is taken as it is."""
    if isinstance(key, dg.MultiPartitionKey):
        dims = key.keys_by_dimension
        return StatsKey.of(dims[MODEL], variant_of(dims[VARIANT]))
    if isinstance(key, StatsKey) or VariantKey.SEP in str(key):
        return StatsKey.parse(str(key))
    return StatsKey.from_code(str(key), _codes())


def runnable_stats_key(key: str | dg.MultiPartitionKey) -> StatsKey:
    """`stats_key`, refusing a model partition that no catalog knows (one added by hand in the launch dialog)."""
    from data_sources.models.catalog import model_catalog

    parsed = stats_key(key)
    catalog = model_catalog()
    if parsed.model not in catalog:
        raise InputError(
            f"model partition '{parsed.model}' is in no model catalog (known: {', '.join(sorted(catalog))}); "
            f"add the model with `lg-pipeline models add {parsed.model} --source ...` and the catalog sensor "
            "registers it — partitions added by hand in the launch dialog are not models"
        )
    return parsed


def multi_key(model: str, variant: str | VariantKey) -> dg.MultiPartitionKey:
    """The Dagster key of the statistics partition (model, variant): `model|champ-d-c`."""
    return dg.MultiPartitionKey({MODEL: model, VARIANT: variant_partition_key(variant)})


def zero_shot_key(model: str, ordering: str) -> dg.MultiPartitionKey:
    """The Dagster key of the zero-shot partition (model, ordering): `model|cl_shuffled`."""
    return dg.MultiPartitionKey({MODEL: model, ORDERING: ordering_partition_key(ordering)})


def zero_shot_dims(key: str | dg.MultiPartitionKey) -> tuple[str, str]:
    """(model, ordering name) of a zero-shot partition key (a string too: a run launched with only the
    `dagster/partition` tag has the key as one)."""
    if not isinstance(key, dg.MultiPartitionKey):
        key = model_ordering_partitions.get_partition_key_from_str(str(key))
    dims = key.keys_by_dimension
    return dims[MODEL], ordering_from_code(dims[ORDERING])


_DIMENSION_KEYS = {VARIANT: variant_partition_key, ORDERING: ordering_partition_key}


def current_partition_key(key: str, partitions_def: dg.PartitionsDefinition | None) -> str:
    """The key of today's form for a key recorded under `partitions_def` (the same key when it already is one):
    `champ__detailed__correct` -> `champ-d-c`, `model|champ__detailed__correct` -> `model|champ-d-c`,
    `model|cluster_shuffled` -> `model|cl_shuffled`. InputError when a part cannot be read (a dataset no catalog
    has any more). What `lg-pipeline migrate-partitions` moves records over with."""
    names = dimensions(partitions_def)
    if not isinstance(partitions_def, dg.MultiPartitionsDefinition):
        return _DIMENSION_KEYS.get(names[0], str)(key) if names else str(key)
    parts = str(key).split(StatsKey.SEP)  # Dagster's separator of a multi-partition key's parts, in name order
    if len(parts) != len(names):
        raise InputError(f"partition key {key!r}: expected {len(names)} parts ({'|'.join(names)})")
    return str(dg.MultiPartitionKey({n: _DIMENSION_KEYS.get(n, str)(p) for n, p in zip(names, parts, strict=True)}))
