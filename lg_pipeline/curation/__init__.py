"""Curation: the study's training variants as tables (no Dagster, no adapter: sources come in through settings).

A variant is a `VariantKey` (`<dataset>__<level>__<correct|wrong>`). Each curated table has the columns
example_id, instruction, response, answer, dataset, level, correctness, source, demo, cut_token_count:
- example_id: stable_id(dataset, instruction), identical across a dataset's levels and correct/wrong sets;
- instruction / response: the prompt and the SFT target the engine trains on;
- answer: the instruction's gold final answer ("" for Wikipedia), also in wrong sets;
- cut_token_count: tokens of a response we cut to a token budget (wiki length cuts), counted at build time with the
  cut's tokenizer; empty where we did not cut (reasoning levels, long-tail articles, the study's release files).
The data-quality checks on these tables (Great Expectations) are in lg_pipeline.curation.checks.
"""

from __future__ import annotations

from lg_pipeline.curation.build import COLUMNS, build_variant
from lg_pipeline.curation.settings import BUILDER_VERSION, CurationSettings

__all__ = ["BUILDER_VERSION", "COLUMNS", "CurationSettings", "build_variant"]
