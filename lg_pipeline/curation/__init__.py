"""Curation: the study's training variants as tables (no Dagster here; the asset layer calls build_variant).

A variant is "<dataset>__<level>__<correct|wrong>" (see data_sources.catalog.variant_keys). Each curated table
has the columns example_id, instruction, response, answer, dataset, level, correctness, source, demo:
- example_id: stable_id(dataset, instruction), identical across a dataset's levels and correct/wrong sets;
- instruction / response: the prompt and the SFT target the engine trains on;
- answer: the instruction's gold final answer ("" for Wikipedia), also in wrong sets;
- cut_token_count: tokens of a response we cut to a token budget (wiki length cuts), counted at build time with the
  cut's tokenizer; empty where we did not cut (reasoning levels, long-tail articles, the study's release files).
The data-quality checks on these tables (Great Expectations) are in lg_pipeline.curation.quality.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lg_pipeline.curation.build import COLUMNS, build_rows
from lg_pipeline.curation.settings import BUILDER_VERSION, CurationSettings

if TYPE_CHECKING:
    import pandas

__all__ = ["BUILDER_VERSION", "COLUMNS", "CurationSettings", "build_variant"]


def build_variant(key: str, settings: CurationSettings) -> tuple[pandas.DataFrame, dict]:
    """One curated table and its metadata (source, builder_version, seed, teacher, n_rows, drops by reason, ...).

    Raises InputError (one line naming the input) for unknown keys, missing files, malformed rows, a Detailed CoT
    that needs a teacher when none is set, or a hub dataset requested offline.
    """
    import pandas as pd

    rows, meta, source_tag = build_rows(key, settings)
    frame = pd.DataFrame(rows, columns=[*COLUMNS[:4], "cut_token_count"])
    frame["cut_token_count"] = frame["cut_token_count"].astype("Int64")
    frame["dataset"] = meta["dataset"]
    frame["level"] = meta["level"]
    frame["correctness"] = meta["correctness"]
    frame["source"] = source_tag
    frame["demo"] = bool(meta["demo"])
    return frame[COLUMNS], meta
