"""Partitions: gradient statistics are keyed by model (dynamic) x dataset-variant (static).

Variant keys are `VariantKey`s (`<dataset>__<level>__<correct|wrong>`, e.g. `gsm8k__detailed__wrong`); a
multi-partition key is a `StatsKey`, `model|variant` on the command line, e.g.
`dagster asset materialize --select gradient_stats --partition "smollm2-135m-instruct|champ__none__correct"`.
"""

from __future__ import annotations

import dagster as dg

from data_sources.datasets.catalog import variant_keys
from lg_pipeline.vocabulary import StatsKey, VariantKey

MODEL = "model"
VARIANT = "variant"

model_partitions = dg.DynamicPartitionsDefinition(name=MODEL)
variant_partitions = dg.StaticPartitionsDefinition([str(k) for k in variant_keys()])
model_variant_partitions = dg.MultiPartitionsDefinition({MODEL: model_partitions, VARIANT: variant_partitions})

# A model's summary reads every variant of that model; a variant's statistics read its curated table.
by_model = dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name=MODEL)
by_variant = dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name=VARIANT)


def stats_key(key: str | dg.MultiPartitionKey) -> StatsKey:
    """The `StatsKey` of a gradient-statistics partition key."""
    if isinstance(key, dg.MultiPartitionKey):
        dims = key.keys_by_dimension
        return StatsKey.of(dims[MODEL], dims[VARIANT])
    return StatsKey.parse(str(key))


def multi_key(model: str, variant: str | VariantKey) -> dg.MultiPartitionKey:
    """The Dagster key of the statistics partition (model, variant)."""
    return dg.MultiPartitionKey({MODEL: model, VARIANT: str(VariantKey.parse(variant))})

