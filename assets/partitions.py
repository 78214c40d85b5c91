"""Partitions: gradient statistics are keyed by model (dynamic) x dataset-variant (static).

Only what can run here is a partition: the variants this environment can build (`backlog.variant_availability`: offline
sources, the study's release files when `LG_RELEASE_DIR` is set, hub sources when the hub is enabled, and teacher
levels, buildable once a teacher is configured in the launchpad or `LG_TEACHER`) and the catalog models that can
be loaded here (registered by the catalog sensor, `assets.backlog.plan`). The rest is listed once, with the reason,
in the sensor's first tick and in the assets' descriptions (`availability_note`), instead of hundreds of
"missing" cells that can never fill. A partition that cannot build with this environment's settings (a teacher level
while no teacher is set) says why in the same note, in its event history (the catalog sensor's observation) and in
the first line of a run that needs it (`backlog.why_unbuildable` answers all of them).
The variant partitions are fixed when the code location loads: after changing those variables, reload it.

Variant keys are `VariantKey`s (`<dataset>__<level>__<correct|wrong>`, e.g. `gsm8k__detailed__wrong`); a
multi-partition key is a `StatsKey`, `model|variant` on the command line, e.g.
`dagster asset materialize --select gradient_stats --partition "smollm2-135m-instruct|champ__none__correct"`.
"""

from __future__ import annotations

import dagster as dg

from assets.backlog import by_reason, teacher_set, variant_availability, why_unbuildable
from lg_pipeline.errors import InputError
from lg_pipeline.vocabulary import StatsKey, VariantKey

MODEL = "model"
VARIANT = "variant"


AVAILABILITY = variant_availability(teacher=True)  # a teacher may come with the launchpad's config
model_partitions = dg.DynamicPartitionsDefinition(name=MODEL)
variant_partitions = dg.StaticPartitionsDefinition(list(AVAILABILITY.buildable))
model_variant_partitions = dg.MultiPartitionsDefinition({MODEL: model_partitions, VARIANT: variant_partitions})

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
        f"- {', '.join(f'`{v}`' for v in variants)} — {why}"
        for why, variants in by_reason(unbuildable_partitions()).items()
    ]
    cannot = f"Partitions that cannot build here as configured:\n{chr(10).join(blocked)}" if blocked else ""
    return "\n\n".join(note for note in (AVAILABILITY.note(), cannot) if note)


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
    """The `StatsKey` of a gradient-statistics partition key."""
    if isinstance(key, dg.MultiPartitionKey):
        dims = key.keys_by_dimension
        return StatsKey.of(dims[MODEL], dims[VARIANT])
    return StatsKey.parse(str(key))


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
    """The Dagster key of the statistics partition (model, variant)."""
    return dg.MultiPartitionKey({MODEL: model, VARIANT: str(VariantKey.parse(variant))})
