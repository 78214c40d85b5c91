"""Catalog, built-in demo data, offline packs and the hub adapter (against a local mirror, no network)."""

from __future__ import annotations

import json
import time

import pandas as pd
import pytest

from data_sources.datasets.builtin import BuiltinSource
from data_sources.datasets.catalog import dataset_catalog, make_adapter, variant_keys
from data_sources.datasets.hub import HubSource
from data_sources.datasets.packs import ChampSource, OvosWikiSource, ReasoningGymSource
from lg_pipeline.curation import CurationSettings
from lg_pipeline.errors import InputError
from lg_pipeline.vocabulary import LEVEL_LABELS
from tests.helpers.curation import build_variant, parse_variant_key

OFFLINE_KEYS = [
    f"{d}__{lvl}__{c}"
    for d, levels in [
        ("gsm_symbolic", ["none", "simplified"]),
        ("champ", ["none", "simplified", "detailed"]),
        ("commonsense_demo", ["none", "simplified", "detailed"]),
        ("wiki", ["len100", "len500", "len1000", "longtail"]),
    ]
    for lvl in levels
    for c in ("correct", "wrong")
]


# ------------------------------------------------------------------------------------------------ catalog
def test_offline_variant_keys_are_exactly_the_buildable_ones():
    assert variant_keys(offline_only=True) == OFFLINE_KEYS
    assert "gsm_symbolic__detailed__correct" in variant_keys()
    assert "gsm_symbolic__detailed__correct" not in variant_keys(offline_only=True)


def test_variant_keys_cover_every_level_and_are_unique():
    keys = variant_keys()
    assert len(keys) == len(set(keys))
    expected = sum(2 * len(spec.levels) for spec in dataset_catalog().values())
    assert len(keys) == expected
    for name in ("gsm8k", "aqua", "strategyqa", "ecqa", "creak", "sensemaking", "math_algebra", "wiki"):
        assert f"{name}__{dataset_catalog()[name].levels[0]}__wrong" in keys


def test_specs_have_labels_and_families():
    for spec in dataset_catalog().values():
        assert spec.family in ("math", "commonsense", "wiki")
        assert spec.display_name
        assert all(level in LEVEL_LABELS for level in spec.levels)
    assert LEVEL_LABELS["longtail"] == "Unpopular"
    wiki = dataset_catalog()["wiki"]
    assert wiki.levels == ("len100", "len500", "len1000", "longtail")
    assert wiki.is_demo("longtail") and not wiki.is_demo("len100") and not wiki.demo
    assert wiki.offline_levels == ("len100", "len500", "len1000", "longtail")
    assert not any(wiki.is_demo(level) for level in ("len500", "len1000"))
    assert dataset_catalog()["commonsense_demo"].demo
    assert not dataset_catalog()["gsm8k"].offline


def test_parse_variant_key_round_trips():
    spec, level, correctness = parse_variant_key("champ__detailed__wrong")
    assert (spec.name, level, correctness) == ("champ", "detailed", "wrong")


@pytest.mark.parametrize(
    "key", ["nope__none__correct", "champ__len100__correct", "champ__none__right", "champ_none_correct", ""]
)
def test_parse_variant_key_rejects_bad_keys_naming_them(key):
    with pytest.raises(InputError) as err:
        parse_variant_key(key)
    assert repr(key) in str(err.value)
    assert "\n" not in str(err.value)


def test_release_file_names():
    spec = dataset_catalog()["gsm8k"]
    assert spec.release_file("detailed", "correct") == "cot_500/gsm8k_train_with_cot_gpt4o.json"
    assert spec.release_file("none", "wrong") == "cot_500_wrong_answer_shuffle/gsm8k_train_no_cot.json"
    assert dataset_catalog()["math_geometry"].release_file("none", "correct") is None


def test_every_dataset_has_its_own_short_code_so_every_variant_has_its_own_partition_key():
    from data_sources.datasets.catalog import dataset_codes
    from lg_pipeline.vocabulary import DATASET_CODE, UI_KEEP

    codes = dataset_codes()
    assert set(codes) == set(dataset_catalog()) and len(set(codes.values())) == len(codes)
    assert all(DATASET_CODE.match(c) for c in codes.values())
    short = [k.code(codes) for k in variant_keys()]
    assert len(set(short)) == len(short) and max(map(len, short)) <= UI_KEEP
    assert [str(type(k).from_code(s, codes)) for k, s in zip(variant_keys(), short, strict=True)] == variant_keys()


@pytest.mark.parametrize(
    ("codes", "message"),
    [
        (("champ", "champ"), "code 'champ' is given to a and b"),
        (("toolong", "b"), "code 'toolong' must be 1 to 5 lowercase letters or digits"),
        (("a-b", "b"), "code 'a-b' must be"),
        ((None, "b"), "code None must be"),
    ],
)
def test_a_catalog_with_a_missing_bad_or_shared_code_is_refused(tmp_path, codes, message):
    import yaml

    from data_sources.datasets.catalog import _load

    entry = {"family": "math", "display_name": "X", "levels": ["none"], "responses": {"none": "{answer}"}}
    datasets = {name: {**entry, **({"code": code} if code else {})} for name, code in zip("ab", codes, strict=True)}
    path = tmp_path / "datasets.yaml"
    path.write_text(yaml.safe_dump({"datasets": datasets}))
    with pytest.raises(InputError, match=message.replace("(", r"\(")):
        _load(str(path))


# ------------------------------------------------------------------------------------------------ built-in demo
def test_builtin_demo_files_are_well_formed():
    records = list(BuiltinSource("commonsense_demo.json").records(0, 0))
    assert 16 <= len(records) <= 24
    assert all(r.answer and r.rationale and r.detailed and len(r.detailed) > 2 * len(r.rationale) for r in records)
    longtail = list(BuiltinSource("wiki_longtail_demo.json").records(0, 0))
    assert longtail and all(r.title and r.passage for r in longtail)


def _write(path, payload):
    path.write_text(json.dumps(payload), encoding="utf-8")
    return path


def test_builtin_rejects_duplicate_ids(tmp_path):
    _write(tmp_path / "d.json", {"records": [{"id": "a", "question": "q1"}, {"id": "a", "question": "q2"}]})
    with pytest.raises(InputError, match="duplicate id 'a'"):
        list(BuiltinSource("d.json", directory=tmp_path).records(0, 0))


def test_builtin_rejects_malformed_files(tmp_path):
    (tmp_path / "bad.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(InputError, match="bad.json"):
        list(BuiltinSource("bad.json", directory=tmp_path).records(0, 0))
    _write(tmp_path / "types.json", {"records": [{"id": "a", "question": "q", "answer": 3}]})
    with pytest.raises(InputError, match="field 'answer' is not a string"):
        list(BuiltinSource("types.json", directory=tmp_path).records(0, 0))
    with pytest.raises(InputError, match="not found"):
        list(BuiltinSource("missing.json", directory=tmp_path).records(0, 0))


# ------------------------------------------------------------------------------------------------ offline packs
def test_reasoning_gym_records_are_gsm8k_format():
    source = ReasoningGymSource("gsm_symbolic", [" Give the result as your final answer. Do not include units."])
    records = list(source.records(5, seed=1))
    assert len(records) >= 5
    for r in records:
        assert "Give the result" not in r.question
        assert "####" not in r.rationale and "<<" not in r.rationale and "\n" not in r.rationale
        assert r.answer.lstrip("-").replace(".", "", 1).isdigit()
    assert [r.question for r in records] == [r.question for r in source.records(5, seed=1)]
    assert [r.question for r in records] != [r.question for r in source.records(5, seed=2)]


def test_champ_records_carry_solutions_and_stored_responses():
    records = list(ChampSource().records(0, 0))
    assert len(records) == 270
    assert all("@@" not in r.answer + r.question for r in records)
    assert sum(r.detailed is not None for r in records) >= 260
    assert all(r.rationale for r in records)


def test_wiki_pack_reads_lead_paragraphs_without_importing_the_skill():
    records = list(OvosWikiSource().records(0, 0))
    assert len(records) > 9000
    assert all(r.title and r.passage for r in records[:100])


# ------------------------------------------------------------------------------------------------ hub adapter
def _gsm8k_group():
    return dataset_catalog()["gsm8k"].group_for("simplified")


def test_hub_fails_at_once_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("LG_HUB_MIRROR", raising=False)
    start = time.monotonic()
    with pytest.raises(InputError) as err:
        build_variant("gsm8k__none__correct", CurationSettings(n_examples=2, cache_dir=str(tmp_path)))
    assert time.monotonic() - start < 5
    message = str(err.value)
    assert "openai/gsm8k" in message and "HF_DATASETS_OFFLINE" in message and "\n" not in message
    assert "HF_HUB_OFFLINE=1" in message  # names the setting that is on, and what to change


def _mirror_gsm8k(root):
    folder = root / "openai" / "gsm8k" / "main"
    folder.mkdir(parents=True)
    frame = pd.DataFrame(
        {
            "question": ["Ann has 2 bags of 3 apples. How many apples?", "Bo had 10 and gave 4 away. How many left?"],
            "answer": ["2 bags * 3 = <<2*3=6>>6 apples.\n#### 6", "10 - 4 = <<10-4=6>>6.\nHe has 6 left.\n#### 6"],
        }
    )
    frame.to_parquet(folder / "train-00000-of-00001.parquet")
    return root


def test_hub_adapter_maps_a_local_mirror_with_the_hub_schema(tmp_path):
    mirror = _mirror_gsm8k(tmp_path / "mirror")
    options = dict(_gsm8k_group().options)
    source = HubSource(mirror=str(mirror), cache_dir=str(tmp_path / "cache"), **options)
    records = list(source.records(2, 0))
    assert [r.answer for r in records] == ["6", "6"]
    assert records[1].rationale == "10 - 4 = 6. He has 6 left."
    assert "local mirror" in source.describe()


def test_hub_variant_builds_end_to_end_from_a_mirror(tmp_path, monkeypatch):
    monkeypatch.setenv("LG_HUB_MIRROR", str(_mirror_gsm8k(tmp_path / "mirror")))
    settings = CurationSettings(n_examples=2, cache_dir=str(tmp_path / "cache"))
    frame, meta = build_variant("gsm8k__simplified__correct", settings)
    assert len(frame) == 2 and meta["source"].startswith("hf-hub openai/gsm8k")
    assert all(r.endswith("\nThe final answer is 6") for r in frame.response)
    wrong, meta = build_variant("gsm8k__none__wrong", settings)
    # Both questions share the answer 6, so no wrong pairing exists: counted, not silently shrunk.
    assert len(wrong) == 0 and meta["drops"]["no_wrong_response_available"] == 2 and meta["shortfall"] == 2


def test_hub_mapping_errors_name_the_row(tmp_path):
    folder = tmp_path / "m" / "openai" / "gsm8k" / "main"
    folder.mkdir(parents=True)
    pd.DataFrame({"question": ["q"], "solution": ["s"]}).to_parquet(folder / "train.parquet")
    source = make_adapter(_gsm8k_group(), str(tmp_path / "cache"))
    source.mirror = str(tmp_path / "m")
    with pytest.raises(InputError, match="row 0: field mapping failed"):
        list(source.records(1, 0))


def test_hub_aqua_options_follow_the_study_format(tmp_path):
    folder = tmp_path / "m" / "deepmind" / "aqua_rat" / "raw"
    folder.mkdir(parents=True)
    pd.DataFrame(
        {"question": ["2+2?"], "options": [["A)3", "B)4"]], "rationale": ["Add them."], "correct": ["B"]}
    ).to_parquet(folder / "train.parquet")
    group = dataset_catalog()["aqua"].group_for("none")
    source = HubSource(mirror=str(tmp_path / "m"), cache_dir=str(tmp_path / "c"), **dict(group.options))
    (record,) = source.records(1, 0)
    assert record.question == "2+2?\nOptions:\n(A) 3\n(B) 4"
    assert record.answer == "(B)"


# Rows in each hub copy's own schema (checked against the copies' cards and the original files: ECQA's card,
# CREAK's and Sen-Making's original JSON-lines files, StrategyQA's card), written to a local mirror.
def _mirror_source(tmp_path, dataset, filename, rows):
    group = dataset_catalog()[dataset].group_for("none")
    folder = tmp_path / "m" / group.options["path"]
    folder.mkdir(parents=True)
    if filename.endswith(".parquet"):
        pd.DataFrame(rows).to_parquet(folder / filename)
    else:
        (folder / filename).write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return HubSource(mirror=str(tmp_path / "m"), cache_dir=str(tmp_path / "c"), **dict(group.options))


def test_hub_ecqa_mapping(tmp_path):
    row = {"q_no": "e1", "q_concept": "knit", "q_text": "Knitting for long can lead to what?", "q_ans": "sore hands"}
    row |= {f"q_op{i}": o for i, o in enumerate(["bleeding", "fun", "relaxation", "boredom", "sore hands"], 1)}
    row |= {"taskA_pos": "p", "taskA_neg": "n", "taskB": "Long knitting strains the hands."}
    (record,) = _mirror_source(tmp_path, "ecqa", "train.parquet", [row]).records(1, 0)
    assert record.question == (
        "Knitting for long can lead to what?\nOptions:\n- bleeding\n- fun\n- relaxation\n- boredom\n- sore hands"
    )
    assert (record.record_id, record.answer, record.rationale) == ("e1", "sore hands", row["taskB"])


def test_hub_creak_mapping(tmp_path):
    rows = [
        {"ex_id": "train_0", "sentence": "Only people named Floyd attend Pink Floyd concerts.", "label": "false",
         "explanation": "Anyone can buy a ticket.", "entity": "Pink Floyd", "en_wiki_pageid": "5079506",
         "entity_mention_loc": [[31, 41]]},
        {"ex_id": "train_1", "sentence": "Marlboro used iconic imagery.", "label": "true",
         "explanation": "It used cowboys in its advertising.", "entity": "Marlboro", "en_wiki_pageid": "404590",
         "entity_mention_loc": [[0, 8]]},
    ]  # fmt: skip
    records = list(_mirror_source(tmp_path, "creak", "train.json", rows).records(2, 0))
    assert [(r.record_id, r.answer) for r in records] == [("train_0", "no"), ("train_1", "yes")]
    assert records[0].question.startswith('Is the following claim true?\n"Only people named Floyd')
    assert records[1].rationale == "It used cowboys in its advertising."


def test_hub_sensemaking_mapping(tmp_path):
    rows = [
        {"id": "1", "sentence0": "he put an elephant into the fridge", "sentence1": "he put a turkey into the fridge",
         "false": 0, "A": "an elephant is much bigger than a fridge", "B": "elephants are gray", "C": "it eats",
         "reason": "A"},
        {"id": "2", "sentence0": "my sister eats an apple", "sentence1": "my sister eats a stone", "false": 1,
         "A": "stones are round", "B": "no one eats stones", "C": "stones are large", "reason": "B"},
    ]  # fmt: skip
    records = list(_mirror_source(tmp_path, "sensemaking", "dataset.jsonl", rows).records(2, 0))
    assert [(r.record_id, r.answer) for r in records] == [("1", "Sentence A"), ("2", "Sentence B")]
    assert [r.rationale for r in records] == ["an elephant is much bigger than a fridge", "no one eats stones"]
    assert records[1].question == (
        "Which of the following two sentences does not make sense?\nOptions:\n"
        '- Sentence A: "my sister eats an apple"\n- Sentence B: "my sister eats a stone"'
    )


def test_hub_strategyqa_mapping(tmp_path):
    row = {"qid": "q1", "term": "Polar bear", "description": "bear", "question": "Did polar bears roam Greece?",
           "answer": False, "facts": ["Polar bears live in the Arctic.", "Greece is warm."],
           "decomposition": ["Where do polar bears live?", "Is Greece there?"]}  # fmt: skip
    (record,) = _mirror_source(tmp_path, "strategyqa", "train.parquet", [row]).records(1, 0)
    assert (record.record_id, record.question, record.answer) == ("q1", "Did polar bears roam Greece?", "no")
    assert record.rationale == "Polar bears live in the Arctic. Greece is warm."
