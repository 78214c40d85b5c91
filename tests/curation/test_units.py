"""Unit tests of the curation building blocks: answers, derangement, token cuts."""

from __future__ import annotations

import pytest

from data_sources.datasets.packs import gsm8k_rationale
from lg_pipeline.curation.answers import (
    agrees_with_gold,
    final_answer,
    last_boxed,
    normalize_answer,
    response_answer,
)
from lg_pipeline.curation.derange import derange
from lg_pipeline.curation.wiki import CUT_TOLERANCE, TokenCounter, cut_to_tokens, sentence_ends


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Step one.\nThe final answer is 102", "102"),
        ("x\nThe final answer is (D)\nmore\nThe final answer is (E)", "(E)"),
        ("So $a+b=\\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}"),
        ("Natalia sold 48.\n#### 72", "72"),
        ("Let's think.\nSo the answer is no.", "no."),
        ("no stated answer here", None),
    ],
)
def test_final_answer(text, expected):
    assert final_answer(text) == expected


def test_last_boxed_balances_nested_braces():
    assert last_boxed("\\boxed{1} then \\boxed{\\sqrt{x^{2}}}") == "\\sqrt{x^{2}}"
    assert last_boxed("\\boxed{unclosed") is None


@pytest.mark.parametrize(
    ("a", "b"),
    [("$1,200.00", "1200"), ("(D)", "d"), ("Yes.", "yes"), ("\\text{Sentence B}", "sentence b"), ("0.50", "0.5")],
)
def test_normalize_answer_equates_forms(a, b):
    assert normalize_answer(a) == normalize_answer(b)


def test_normalize_answer_keeps_different_answers_apart():
    assert normalize_answer("12") != normalize_answer("21")
    assert normalize_answer("(A)") != normalize_answer("(B)")
    assert normalize_answer("") == ""


def test_response_answer_by_level():
    assert response_answer("Some steps.\nThe final answer is 1,000", "simplified", "number") == "1000"
    assert response_answer("(C)", "none", "choice") == "c"
    assert response_answer("He has 5 apples, so 7 in total.", "detailed", "number") == "7"
    assert response_answer("It is plausible.", "detailed", "yesno") is None
    assert response_answer("anything", "len100", "none") is None


def test_agrees_with_gold():
    assert agrees_with_gold("so the total is 771.", ["239"], "text") is False
    assert agrees_with_gold("Thus there are 239 strings.", ["C(10, 5)", "239"], "text") is True
    assert agrees_with_gold("The remainder is -x - 1.", ["x^3-1"], "text") is None
    assert agrees_with_gold("anything", [""], "text") is None


def test_gsm8k_rationale_joins_lines_and_drops_calculator():
    rationale, final = gsm8k_rationale("He pays 2*3=<<2*3=6>>6.\nThen 6+1=<<6+1=7>>7.\n#### 7")
    assert rationale == "He pays 2*3=6. Then 6+1=7."
    assert final == "7"
    assert gsm8k_rationale("So 12 days/month\nThen 3 more\n#### 15") == ("So 12 days/month. Then 3 more.", "15")
    assert gsm8k_rationale("no marker") == ("no marker", "")


# ------------------------------------------------------------------------------------------------ derangement
def _valid(result, gold, donor_answer, texts):
    for i, j in result.donor.items():
        assert i != j and texts[i] != texts[j]
        assert gold[i] is None or donor_answer[j] is None or gold[i] != donor_answer[j]
    assert len(set(result.donor.values())) == len(result.donor)


def test_derangement_never_pairs_self_or_same_answer():
    gold = ["1", "2", "1", "3", "2", "1", None, "4"]
    texts = [f"response {i}" for i in range(len(gold))]
    result = derange(gold, gold, texts, seed=3)
    _valid(result, gold, gold, texts)
    assert result.unpaired == ()
    assert sorted(result.donor) == list(range(len(gold)))


def test_derangement_is_seeded():
    texts = [f"r{i}" for i in range(30)]
    none = [None] * 30
    assert derange(none, none, texts, seed=1) == derange(none, none, texts, seed=1)
    assert derange(none, none, texts, seed=1).donor != derange(none, none, texts, seed=2).donor


def test_derangement_reports_impossible_pairs_instead_of_breaking_the_rule():
    gold = ["yes"] * 5 + ["no"]
    texts = [f"r{i}" for i in range(6)]
    result = derange(gold, gold, texts, seed=0)
    _valid(result, gold, gold, texts)
    assert len(result.unpaired) == 4  # only one "no" donor exists for five "yes" questions


def test_derangement_of_one_item_is_unpaired():
    assert derange(["1"], ["1"], ["r"], seed=0).unpaired == (0,)


def test_derangement_avoids_identical_text():
    texts = ["same", "same", "other", "third"]
    result = derange([None] * 4, [None] * 4, texts, seed=5)
    _valid(result, [None] * 4, [None] * 4, texts)


# ------------------------------------------------------------------------------------------------ token cuts
ARTICLE = " ".join(f"Sentence number {i} has exactly seven tokens." for i in range(40))


def test_cut_stops_at_a_sentence_end_within_budget():
    counter = TokenCounter()
    cut = cut_to_tokens(ARTICLE, 100, counter)
    assert cut.how == "sentence"
    assert cut.text.endswith(".")
    assert 95 <= counter.count(cut.text) == cut.tokens <= 100


def test_cut_keeps_whole_sentences_only_within_95_percent_of_the_budget():
    text = " ".join(f"Sentence {i} has nine tokens in all here." for i in range(40))  # ends every 9 tokens
    counter = TokenCounter()
    for budget, how, tokens in [
        (99, "sentence", 99),  # a sentence ends at the budget
        (92, "sentence", 90),  # last end at 97.8%
        (104, "sentence", 99),  # last end at 95.2%
        (107, "exact", 107),  # last end at 92.5%: the old 80% rule kept 99 tokens, now cut at the budget
        (116, "exact", 116),  # last end at 108 = 93.1%
    ]:
        cut = cut_to_tokens(text, budget, counter)
        assert (cut.how, cut.tokens, counter.count(cut.text)) == (how, tokens, tokens), budget
        assert abs(cut.tokens / budget - 1) <= CUT_TOLERANCE


def test_cut_is_exact_when_no_sentence_end_fits():
    text = " ".join(["word"] * 300) + "."
    counter = TokenCounter()
    cut = cut_to_tokens(text, 100, counter)
    assert cut.how == "exact"
    assert counter.count(cut.text) == 100


def test_cut_drops_short_articles_and_keeps_exact_ones():
    counter = TokenCounter()
    assert cut_to_tokens("Too short.", 100, counter) is None
    text = " ".join(["w"] * 99) + "."
    assert cut_to_tokens(text, 100, counter).how == "whole"


def test_sentence_ends_handles_quotes_and_newlines():
    text = 'He said "Go." Then left!\nNew line'
    ends = sentence_ends(text)
    assert text[: ends[0]] == 'He said "Go."'
    assert ends[-1] == len(text)
