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
