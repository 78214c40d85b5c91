"""The Dagster layer, by asset group.

Known Dagster 1.13 warnings about features this layer relies on are silenced here, when the package is first
imported (by the code location in every Dagster process, and by `lg-pipeline demo`), before any asset module emits
them:
- BetaWarning "Class `MultiToSingleDimensionPartitionMapping` is currently in beta" (assets/partitions.py: a model's
  summary reads every variant; a variant's statistics read its curated table);
- PreviewWarning "Specifying a partitions_def on an AssetCheckSpec is currently in preview" (per-partition checks of
  curated_dataset and gradient_stats).
Any other Beta/Preview warning still shows.
"""

import warnings

import dagster as dg

warnings.filterwarnings("ignore", r"Class `MultiToSingleDimensionPartitionMapping` is currently", dg.BetaWarning)
warnings.filterwarnings("ignore", r"Specifying a partitions_def on an AssetCheckSpec", dg.PreviewWarning)
