"""Partitions: gradient statistics are keyed by model (dynamic) x dataset-variant (static).

Variant keys are "<dataset>__<level>__<correct|wrong>", e.g. `gsm8k__detailed__wrong`; a
multi-partition key in the CLI is `model|variant`, e.g.
`dagster asset materialize --select gradient_stats --partition "smollm2-135m-instruct|champ__none__correct"`.
"""

from __future__ import annotations

import dagster as dg

from data_sources.catalog import variant_keys

MODEL = "model"
VARIANT = "variant"

model_partitions = dg.DynamicPartitionsDefinition(name=MODEL)
variant_partitions = dg.StaticPartitionsDefinition(variant_keys())
model_variant_partitions = dg.MultiPartitionsDefinition({MODEL: model_partitions, VARIANT: variant_partitions})

# A model's summary reads every variant of that model; a variant's statistics read its curated table.
by_model = dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name=MODEL)
by_variant = dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name=VARIANT)


def split_key(key: str | dg.MultiPartitionKey) -> tuple[str, str]:
    """(model, variant) of a gradient-statistics partition key."""
    keys = (
        key.keys_by_dimension
        if isinstance(key, dg.MultiPartitionKey)
        else dict(zip(sorted((MODEL, VARIANT)), str(key).split("|"), strict=True))
    )
    return keys[MODEL], keys[VARIANT]


def multi_key(model: str, variant: str) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({MODEL: model, VARIANT: variant})
