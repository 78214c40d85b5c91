"""build_variant on the offline datasets: table contract, alignment across variants, wrong sets, drops."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from data_sources.datasets.catalog import dataset_catalog, variant_keys
from lg_pipeline.curation import BUILDER_VERSION, COLUMNS, CurationSettings
from lg_pipeline.curation.answers import normalize_answer, response_answer
from lg_pipeline.curation.teacher import PrecomputedTeacher
from lg_pipeline.curation.wiki import TokenCounter
from lg_pipeline.errors import InputError
from tests.helpers.curation import build_variant, parse_variant_key, wired

N = 6


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    return CurationSettings(n_examples=N, cache_dir=str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="module")
def built(settings):
    return {key: build_variant(key, settings) for key in variant_keys(offline_only=True)}


@pytest.mark.slow
def test_every_offline_variant_has_the_table_contract(built):
    for key, (frame, meta) in built.items():
        spec, level, correctness = parse_variant_key(key)
        assert list(frame.columns) == COLUMNS
        assert len(frame) == meta["n_rows"] == N - meta["shortfall"], key
        assert set(frame.dataset) == {spec.name} and set(frame.level) == {level}
        assert set(frame.correctness) == {correctness}
        assert set(frame.demo) == {spec.is_demo(level)}
        assert frame.example_id.is_unique and frame.response.str.strip().astype(bool).all()
        assert meta["builder_version"] == BUILDER_VERSION and meta["variant"] == key and meta["seed"] == 0
        json.dumps(meta)  # metadata must be serialisable for the asset layer


@pytest.mark.slow
def test_offline_variants_deliver_the_requested_rows(built):
    """With six rows the pools are large enough: any shortfall here would be a selection bug."""
    assert {key: meta["shortfall"] for key, (_, meta) in built.items() if meta["shortfall"]} == {}


@pytest.mark.parametrize("dataset", ["gsm_symbolic", "champ", "commonsense_demo"])
def test_levels_and_wrong_sets_share_instructions_in_order(built, dataset):
    frames = [frame for key, (frame, _) in built.items() if key.startswith(f"{dataset}__")]
    assert len(frames) >= 4
    for frame in frames[1:]:
        assert list(frame.example_id) == list(frames[0].example_id)
        assert list(frame.instruction) == list(frames[0].instruction)


def test_wiki_length_and_longtail_are_different_articles(built):
    popular = set(built["wiki__len100__correct"][0].instruction)
    longtail = set(built["wiki__longtail__correct"][0].instruction)
    assert not popular & longtail
    assert all(i.startswith("Tell me about ") and i.endswith(".") for i in popular | longtail)


def test_wrong_sets_never_give_own_response_or_gold_answer(built):
    for key in [k for k in built if k.endswith("__wrong")]:
        spec, level, _ = parse_variant_key(key)
        wrong = built[key][0]
        correct = built[key.replace("__wrong", "__correct")][0].set_index("example_id")
        assert Counter(wrong.response) <= Counter(correct.response), key  # responses of other instances
        for row in wrong.itertuples():
            assert row.response != correct.loc[row.example_id, "response"], key
            stated = response_answer(row.response, level, spec.answer_kind)
            if stated is not None and normalize_answer(row.answer):
                assert stated != normalize_answer(row.answer), key


def test_response_formats_per_level(built):
    none, _ = built["champ__none__correct"]
    assert list(none.response) == list(none.answer)
    simplified, _ = built["gsm_symbolic__simplified__correct"]
    for row in simplified.itertuples():
        assert row.response.endswith(f"\nThe final answer is {row.answer}")
        assert len(row.response) > len(row.answer) + 25
    detailed, meta = built["commonsense_demo__detailed__correct"]
    assert all(len(r.split()) > 40 for r in detailed.response)
    assert meta["teacher"] == "carried by the source"


def test_champ_detailed_is_checked_against_gold(built):
    _, meta = built["champ__detailed__correct"]
    check = meta["detailed_vs_gold"]
    assert check["agree"] + check["disagree"] + check["unchecked"] == meta["n_rows"]
    assert "GPT-4" in meta["teacher"]


def test_builds_are_deterministic_and_seeded(settings):
    first, _ = build_variant("champ__simplified__wrong", settings)
    again, _ = build_variant("champ__simplified__wrong", settings)
    assert first.equals(again)
    other, _ = build_variant("champ__simplified__wrong", CurationSettings(n_examples=N, seed=1))
    assert list(other.example_id) != list(first.example_id)


def test_wiki_cut_with_fallback_tokenizer(built):
    frame, meta = built["wiki__len100__correct"]
    counter = TokenCounter()
    assert all(95 <= counter.count(r) <= 100 for r in frame.response)  # within 5% of the budget, never above
    assert list(frame.cut_token_count) == [counter.count(r) for r in frame.response]  # recorded at build time
    assert meta["tokenizer"].startswith("fallback")
    assert sum(meta["cut"]["ends"].values()) == len(frame)
    assert set(meta["drops"]) <= {"shorter_than_100_tokens", "duplicate_question"}


def _tiny_hf_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["[UNK]"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(["The history of the world is long. Science and art are human works."] * 20, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, name_or_path="tiny-bpe-test")


def test_wiki_cut_uses_the_given_tokenizer(tmp_path):
    tokenizer = _tiny_hf_tokenizer()
    settings = CurationSettings(n_examples=4, cache_dir=str(tmp_path), tokenizer=tokenizer)
    frame, meta = build_variant("wiki__len100__correct", settings)
    assert meta["tokenizer"] == "tiny-bpe-test"
    counts = [len(tokenizer(r, add_special_tokens=False)["input_ids"]) for r in frame.response]
    assert all(95 <= c <= 101 for c in counts), counts  # an exact cut re-tokenized may count one more
    assert list(frame.cut_token_count) == counts
    fallback = TokenCounter()
    assert any(fallback.count(r) < 80 for r in frame.response)  # subword tokens, not words, set the length


def test_detailed_without_teacher_fails_clearly(settings):
    with pytest.raises(InputError, match="needs a teacher") as err:
        build_variant("gsm_symbolic__detailed__correct", settings)
    assert "gsm_symbolic__detailed__correct" in str(err.value)
    assert "resources.curation.config.teacher" in str(err.value) and "LG_TEACHER" in str(err.value)  # what to set


def test_detailed_from_a_precomputed_teacher(settings):
    simplified, _ = build_variant("gsm_symbolic__simplified__correct", settings)
    answers = dict(zip(simplified.instruction, simplified.answer, strict=True))
    written = {q: f"Step 1. Read the problem.\nStep 2. Compute.\nThe final answer is {a}" for q, a in answers.items()}
    first = next(iter(written))
    del written[first]  # one instruction the teacher has no response for
    teacher = PrecomputedTeacher(written, name="test-teacher")
    detailed, meta = build_variant(
        "gsm_symbolic__detailed__correct", CurationSettings(n_examples=N, cache_dir=settings.cache_dir, teacher=teacher)
    )
    assert meta["teacher"] == "test-teacher"
    assert meta["drops"] == {"teacher_no_response": 1} and meta["shortfall"] == 1
    assert first not in set(detailed.instruction)
    assert meta["detailed_vs_gold"]["agree"] == N - 1


@pytest.mark.parametrize(
    ("field", "value"), [("n_examples", 0), ("n_examples", "6"), ("seed", 1.5), ("teacher", "gpt-4o")]
)
def test_bad_settings_are_named(field, value):
    with pytest.raises(InputError, match=field):
        build_variant("champ__none__correct", CurationSettings(**{field: value}))


def test_study_datasets_without_release_folder_go_to_the_hub(settings, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.delenv("LG_HUB_MIRROR", raising=False)
    assert dataset_catalog()["math_algebra"].group_for("simplified").adapter == "hub"
    for key in ("math_algebra__simplified__correct", "strategyqa__none__wrong"):
        with pytest.raises(InputError, match="HF_DATASETS_OFFLINE"):
            build_variant(key, settings)


def test_unusable_records_are_dropped_and_counted(tmp_path):
    from dataclasses import replace

    from lg_pipeline.curation.from_source import correct_from_source
    from lg_pipeline.curation.spec import SourceGroup

    records = [
        {"id": "ok1", "question": "Q1?", "answer": "yes", "rationale": "R1.", "detailed": "D1."},
        {"id": "noans", "question": "Q2?", "answer": " ", "rationale": "R2.", "detailed": "D2."},
        {"id": "norat", "question": "Q3?", "answer": "no", "detailed": "D3."},
        {"id": "dup", "question": "Q1?", "answer": "yes", "rationale": "R1.", "detailed": "D1."},
        {"id": "ok2", "question": "Q4?", "answer": "no", "rationale": "R4.", "detailed": "D4."},
    ]
    (tmp_path / "mini.json").write_text(json.dumps({"records": records}), encoding="utf-8")
    base = dataset_catalog()["commonsense_demo"]
    group = SourceGroup(base.levels, "builtin", selection="first", options={"file": "mini.json", "directory": tmp_path})
    spec = replace(base, sources=(group,))
    table = correct_from_source(spec, "none", wired(CurationSettings(n_examples=10)), "mini__none__correct")
    assert table.responses == ["yes", "no"]
    assert dict(table.drops) == {"empty_answer": 1, "empty_rationale": 1, "duplicate_question": 1}


def test_domain_core_does_not_import_dagster():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    files = [*root.joinpath("data_sources").glob("*.py"), *root.joinpath("lg_pipeline", "curation").glob("*.py")]
    assert files
    offenders = [f.name for f in files if "import dagster" in f.read_text() or "from dagster" in f.read_text()]
    assert offenders == []
