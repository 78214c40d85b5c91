"""Variants from the study's release folder (real one when present; small hand-made folders for error cases)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from data_sources.datasets.catalog import dataset_catalog
from lg_pipeline.curation import CurationSettings
from lg_pipeline.errors import InputError
from tests.helpers.curation import build_variant

RELEASE = Path(
    os.environ.get("LG_RELEASE_DIR", Path(__file__).resolve().parents[3] / "shared" / "layer_gradient_release")
)
needs_release = pytest.mark.skipif(not RELEASE.is_dir(), reason=f"release folder not present at {RELEASE}")


def _released(relpath: str) -> list[dict]:
    return json.loads((RELEASE / relpath).read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def release_settings():
    return CurationSettings(n_examples=500, release_dir=str(RELEASE))


@pytest.mark.release
@needs_release
def test_gsm8k_detailed_reproduces_the_released_instruction_set(release_settings):
    frame, meta = build_variant("gsm8k__detailed__correct", release_settings)
    rows = _released("cot_500/gsm8k_train_with_cot_gpt4o.json")
    assert list(frame.instruction) == [r["instruction"] for r in rows]
    assert list(frame.response) == [r["output"] for r in rows]
    assert meta["source"].endswith("cot_500/gsm8k_train_with_cot_gpt4o.json") and "GPT-4o" in meta["teacher"]
    gold = _released("cot_500/gsm8k_train_no_cot.json")
    assert list(frame.answer) == [r["output"] for r in gold]


@pytest.mark.release
@needs_release
def test_first_n_rows_in_file_order():
    frame, meta = build_variant("aqua__simplified__correct", CurationSettings(n_examples=7, release_dir=str(RELEASE)))
    rows = _released("cot_500/aqua_train_with_cot.json")[:7]
    assert list(frame.instruction) == [r["instruction"] for r in rows]
    assert meta["n_rows"] == 7 and meta["shortfall"] == 0


@pytest.mark.release
@needs_release
@pytest.mark.parametrize("dataset", ["gsm8k", "strategyqa", "math_geometry", "wiki"])
def test_release_variants_share_ids_across_levels_and_wrong_sets(release_settings, dataset):
    spec = dataset_catalog()[dataset]
    digests = set()
    for level in spec.levels[:3]:
        for correctness in ("correct", "wrong"):
            frame, meta = build_variant(f"{dataset}__{level}__{correctness}", release_settings)
            assert frame.example_id.is_unique
            digests.add(meta["ids_digest"])
    assert len(digests) == 1


@pytest.mark.release
@needs_release
def test_release_wrong_set_is_the_released_shuffle(release_settings):
    frame, meta = build_variant("creak__none__wrong", release_settings)
    assert list(frame.response) == [
        r["output"] for r in _released("cot_500_wrong_answer_shuffle/creak_train_no_cot.json")
    ]
    audit = meta["release_wrong_audit"]
    assert set(audit) == {"own_response", "same_final_answer_as_gold"}
    assert 0 < audit["same_final_answer_as_gold"] < len(frame)  # yes/no shuffles often repeat the gold answer


@pytest.mark.release
@needs_release
def test_release_duplicates_and_math_answers(release_settings):
    _, meta = build_variant("strategyqa__none__correct", release_settings)
    assert meta["duplicate_instructions"] == 1 and meta["n_rows"] == 500
    frame, _ = build_variant("math_algebra__detailed__correct", release_settings)
    assert (frame.answer != "").mean() > 0.95
    assert frame.answer.iloc[0] == "0"


@pytest.mark.release
@needs_release
def test_datasets_outside_the_release_still_come_from_their_packs(release_settings):
    _, meta = build_variant("champ__none__correct", CurationSettings(n_examples=3, release_dir=str(RELEASE)))
    assert meta["source"].startswith("champ-dataset")


@pytest.mark.release
@needs_release
def test_released_longtail_is_not_labelled_demo():
    frame, meta = build_variant("wiki__longtail__correct", CurationSettings(n_examples=3, release_dir=str(RELEASE)))
    assert meta["demo"] is False and not frame.demo.any()
    frame, meta = build_variant("wiki__longtail__correct", CurationSettings(n_examples=3))
    assert meta["demo"] is True and frame.demo.all()


# ------------------------------------------------------------------------------------------------ error cases
def _folder(root: Path, files: dict[str, list]) -> Path:
    for rel, rows in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(rows), encoding="utf-8")
    return root


def _rows(*pairs):
    return [{"instruction": i, "input": "", "output": o} for i, o in pairs]


def test_missing_release_folder_and_file_are_named(tmp_path):
    with pytest.raises(InputError, match="release folder not found"):
        build_variant("gsm8k__none__correct", CurationSettings(release_dir=str(tmp_path / "absent")))
    with pytest.raises(InputError, match="gsm8k_train_no_cot.json"):
        build_variant("gsm8k__none__correct", CurationSettings(release_dir=str(tmp_path)))


def test_misaligned_wrong_file_is_rejected(tmp_path):
    root = _folder(
        tmp_path,
        {
            "cot_500/gsm8k_train_no_cot.json": _rows(("q1", "1"), ("q2", "2")),
            "cot_500_wrong_answer_shuffle/gsm8k_train_no_cot.json": _rows(("q2", "1"), ("q1", "2")),
        },
    )
    with pytest.raises(InputError, match="row 0: instruction differs"):
        build_variant("gsm8k__none__wrong", CurationSettings(release_dir=str(root)))


def test_malformed_release_row_is_named(tmp_path):
    root = _folder(tmp_path, {"cot_500/gsm8k_train_no_cot.json": [{"instruction": "q1", "input": "", "output": ""}]})
    with pytest.raises(InputError, match=r"gsm8k_train_no_cot.json row 0: empty response"):
        build_variant("gsm8k__none__correct", CurationSettings(release_dir=str(root)))


def test_small_release_folder_builds(tmp_path):
    root = _folder(
        tmp_path,
        {
            "cot_500/gsm8k_train_no_cot.json": _rows(("q1", "1"), ("q2", "2"), ("q3", "3")),
            "cot_500/gsm8k_train_with_cot.json": _rows(("q1", "a\nThe final answer is 1"), ("q2", "b"), ("q3", "c")),
        },
    )
    frame, meta = build_variant("gsm8k__simplified__correct", CurationSettings(n_examples=2, release_dir=str(root)))
    assert list(frame.answer) == ["1", "2"] and list(frame.source) == ["release", "release"]
    assert meta["selection"] == "first 2 rows in file order"
