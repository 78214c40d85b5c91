"""Building one curated variant (dataset x level x correct/wrong): from the study's release folder when it holds
the variant, else from the dataset's source (`from_source`).

Row accounting (metadata `row_accounting`, verified by the `curated_row_count` check): `selected` rows were chosen
from the source (fewer than `requested` only when the source ran out: `examined == source_rows`), and every row
lost after that is counted where it is lost (`lost`, by reason), so `rows == selected - sum(lost)`. A row that
disappears without being counted breaks that identity.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lg_pipeline.curation.from_release import from_release, release_has
from lg_pipeline.curation.from_source import correct_from_source, make_wrong
from lg_pipeline.curation.settings import BUILDER_VERSION, CurationSettings
from lg_pipeline.curation.spec import DatasetSpec
from lg_pipeline.curation.table import finish
from lg_pipeline.vocabulary import LEVEL_LABELS, VariantKey

if TYPE_CHECKING:
    import pandas

COLUMNS = [
    "example_id",
    "instruction",
    "response",
    "answer",
    "dataset",
    "level",
    "correctness",
    "source",
    "demo",
    "cut_token_count",
]


def base_metadata(key: VariantKey, spec: DatasetSpec, settings: CurationSettings) -> dict:
    return {
        "variant": str(key),
        "dataset": spec.name,
        "display_name": spec.display_name,
        "family": spec.family,
        "level": key.level,
        "level_label": LEVEL_LABELS[key.level],
        "correctness": key.correctness,
        "builder_version": BUILDER_VERSION,
        "seed": settings.seed,
        "n_requested": settings.n_examples,
        "demo": spec.is_demo(key.level),
    }


def build_rows(spec: DatasetSpec, key: str | VariantKey, settings: CurationSettings) -> tuple[list[dict], dict, str]:
    """Rows (without the constant columns), metadata and the per-row source tag of one variant."""
    settings.check()
    key = VariantKey.parse(key)
    level, correctness = key.level, key.correctness
    meta = base_metadata(key, spec, settings)
    if release_has(spec, level, settings):
        table = from_release(spec, level, correctness, settings)
        meta["demo"] = False  # the release's rows are the study's data, even where the offline stand-in is a demo
    else:
        table = correct_from_source(spec, level, settings, str(key))
        if correctness == "wrong":
            table = make_wrong(spec, level, table, settings)
    rows, meta = finish(table, meta)
    return rows, meta, table.source_tag


def build_variant(
    spec: DatasetSpec, key: str | VariantKey, settings: CurationSettings
) -> tuple[pandas.DataFrame, dict]:
    """One curated table and its metadata (source, builder_version, seed, teacher, n_rows, drops by reason, ...).

    Raises InputError (one line naming the input) for missing files, malformed rows, a Detailed CoT that needs a
    teacher when none is set, or a hub dataset requested offline.
    """
    import pandas as pd

    rows, meta, source_tag = build_rows(spec, key, settings)
    frame = pd.DataFrame(rows, columns=[*COLUMNS[:4], "cut_token_count"])
    frame["cut_token_count"] = frame["cut_token_count"].astype("Int64")
    frame["dataset"] = meta["dataset"]
    frame["level"] = meta["level"]
    frame["correctness"] = meta["correctness"]
    frame["source"] = source_tag
    frame["demo"] = bool(meta["demo"])
    return frame[COLUMNS], meta
