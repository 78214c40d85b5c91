"""The one place keys are formatted and split: VariantKey and StatsKey."""

from __future__ import annotations

import pickle

import pytest

from lg_pipeline.errors import InputError
from lg_pipeline.vocabulary import StatsKey, VariantKey, layer_index


def test_a_variant_key_is_its_string_with_named_parts():
    key = VariantKey("champ__detailed__wrong")
    assert key == "champ__detailed__wrong" and {key: 1}["champ__detailed__wrong"] == 1
    assert (key.dataset, key.level, key.correctness) == ("champ", "detailed", "wrong")
    assert VariantKey("champ", "detailed", "wrong") == key
    assert key.with_correctness("correct") == "champ__detailed__correct"
    assert key.with_level("none").level == "none"
    assert pickle.loads(pickle.dumps(key)).level == "detailed"


@pytest.mark.parametrize("bad", ["champ__detailed", "champ__detailed__right", "a__b__c__wrong", "__none__correct", ""])
def test_malformed_variant_keys_are_refused_naming_the_key(bad):
    with pytest.raises(InputError, match="variant key"):
        VariantKey(bad)


def test_a_model_named_with_double_underscores_keeps_its_name():
    key = StatsKey.of("a__b", "wiki__len100__correct")
    assert key == "a__b|wiki__len100__correct"
    assert key.model == "a__b" and key.variant.dataset == "wiki"
    assert StatsKey(str(key)) == key and StatsKey.parse(key) is key


def test_stats_keys_without_a_model_are_refused():
    with pytest.raises(InputError, match="partition key"):
        StatsKey("champ__none__correct")


def test_layer_index_reads_the_number_between_dots():
    assert layer_index("model.layers.12.self_attn.q_proj.weight") == 12
    assert layer_index("lm_head.weight") is None


# ------------------------------------------------------------------------------------------------ short keys
CODES = {"champ": "champ", "wiki": "wiki", "commonsense_demo": "csdem"}


@pytest.mark.parametrize(
    ("long", "short"),
    [
        ("champ__detailed__correct", "champ-d-c"),
        ("commonsense_demo__simplified__wrong", "csdem-s-w"),
        ("wiki__len1000__wrong", "wiki-1k-w"),
        ("wiki__len100__correct", "wiki-100-c"),
        ("wiki__longtail__wrong", "wiki-lt-w"),
    ],
)
def test_a_variant_has_a_short_form_that_reads_back(long, short):
    assert VariantKey(long).code(CODES) == short
    assert VariantKey.from_code(short, CODES) == long and isinstance(VariantKey.from_code(short, CODES), VariantKey)
    assert StatsKey.of("m", long).code(CODES) == f"m|{short}"
    assert StatsKey.from_code(f"m|{short}", CODES) == f"m|{long}"


def test_every_short_form_fits_the_end_the_ui_keeps():
    from lg_pipeline.vocabulary import CORRECTNESS_CODES, LEVEL_CODES, UI_KEEP

    longest = 5 + len(VariantKey.CODE_SEP) * 2 + max(map(len, LEVEL_CODES.values())) + 1
    assert longest <= UI_KEEP and all(len(c) == 1 for c in CORRECTNESS_CODES.values())
    assert len(set(LEVEL_CODES.values())) == len(LEVEL_CODES)


@pytest.mark.parametrize("bad", ["champ-x-c", "nope-d-c", "champ-d", "champ-d-c-w", "champ__d__c", ""])
def test_a_malformed_short_form_is_refused_naming_it(bad):
    with pytest.raises(InputError, match=f"variant partition key {bad!r}"):
        VariantKey.from_code(bad, CODES)


def test_a_variant_of_a_dataset_without_a_code_is_refused():
    with pytest.raises(InputError, match="dataset 'gsm8k' has no code"):
        VariantKey("gsm8k__none__correct").code(CODES)


def test_the_ui_cut_keeps_the_first_and_last_11_characters_of_a_key_over_24():
    from lg_pipeline.vocabulary import look_alikes, ui_cut

    assert ui_cut("x" * 24) == "x" * 24
    assert ui_cut("commonsense_demo__simplified__correct") == "commonsense…ed__correct"
    assert look_alikes(["commonsense_demo__simplified__correct", "commonsense_demo__detailed__correct", "a"]) == [
        ("commonsense_demo__detailed__correct", "commonsense_demo__simplified__correct")
    ]
    assert look_alikes(["csdem-s-c", "csdem-d-c", "smollm2-135m-instruct|csdem-s-c"]) == []


def test_orderings_over_11_characters_have_a_short_key():
    from lg_pipeline.vocabulary import ORDERING_CODES, UI_KEEP, ordering_code, ordering_from_code

    assert ordering_code("rt") == "rt" and ordering_from_code("rt") == "rt"
    assert ordering_code("cluster_shuffled") == "cl_shuffled"
    assert ordering_from_code("cl_shuffled") == "cluster_shuffled"
    assert all(len(c) <= UI_KEEP for c in ORDERING_CODES.values())
