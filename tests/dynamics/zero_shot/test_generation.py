"""Generation metrics: greedy answers equal a plain argmax loop, the scores are ROUGE and normalised exact match as
defined, the per-task means are the items', and a reward model scores as its own forward pass does."""

from __future__ import annotations

import math

import pytest

from lg_pipeline.dynamics.zero_shot import generation as gen
from lg_pipeline.dynamics.zero_shot.held_out import ALL_TASKS
from lg_pipeline.example import Example
from lg_pipeline.gradients.encoding import encode
from tests.helpers.builders import EOS, VOCAB, make_model, text


@pytest.mark.parametrize(
    "answer,reference,same",
    [("42", "42", True), ("  The  Answer\tis 7 ", "the answer is 7", True), ("ANSWER", "answer", True),
     ("42.", "42", False), ("4 2", "42", False), ("", "42", False)],
)
def test_exact_match_normalises_whitespace_and_case_only(answer, reference, same):
    assert gen.exact_match(answer, reference) == float(same)


def test_rouge_is_the_unigram_and_the_longest_common_subsequence_f_measure():
    # unigrams: both words match (P = R = 1); LCS of "cat the" and "the cat" is one word (P = R = 1/2)
    assert gen.rouge("cat the", "the cat") == pytest.approx((1.0, 0.5))
    # "the cat sat" vs "the cat on the mat": 2 of 3 and 2 of 5 unigrams; F = 2·(2/3)(2/5) / (2/3 + 2/5) = 1/2
    assert gen.rouge("the cat sat", "the cat on the mat") == pytest.approx((0.5, 0.5))
    assert gen.rouge("", "42") == (0.0, 0.0)
    assert gen.rouge("The CAT!", "the cat") == pytest.approx((1.0, 1.0))  # its tokenizer lower-cases, drops "!"


def reference_greedy(model, prompt: list[int], n: int, eos: int) -> list[int]:
    """A plain greedy loop: the whole sequence through the model each step, the argmax appended."""
    import torch

    ids = list(prompt)
    with torch.no_grad():
        for _ in range(n):
            token = int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax())
            ids.append(token)
            if token == eos:
                break
    return ids[len(prompt):]


@pytest.fixture
def absl_on_a_host_stream():
    """absl's handler as if absl was imported while the host had swapped sys.stderr for a stream of its own; left
    on `sys.__stderr__` afterwards (not restored: its first stream may be this test's capture, which closes)."""
    import io
    import sys

    from absl import logging as absl_logging

    handler = absl_logging.get_absl_handler().python_handler
    handler.stream = io.StringIO()
    yield handler, handler.stream
    handler.stream = sys.__stderr__


def test_scoring_leaves_the_host_stderr_open_when_handlers_are_shut_down(absl_on_a_host_stream):
    handler, host_stream = absl_on_a_host_stream
    gen._rouge_scorer.cache_clear()  # a scorer built before would not rebind
    gen.rouge("1 2", "1 2")
    handler.close()  # what logging.config.dictConfig (Dagster, python_logs set) does to every handler
    assert not host_stream.closed


def test_absl_closes_a_swapped_stderr_it_was_bound_to(absl_on_a_host_stream):
    """Control: without the rebinding absl's handler does close the host stream it was bound to."""
    handler, host_stream = absl_on_a_host_stream
    handler.close()
    assert host_stream.closed


def test_greedy_answers_equal_a_plain_argmax_loop_whatever_the_padding(tokenizer, single_thread):
    model = make_model("llama-gqa", seed=11)
    items = [Example(f"e{i}", text(5 + 6 * i, i), "x") for i in range(4)]  # prompts of 4 lengths: left padding
    prompts = [encode(tokenizer, e, False, 512).input_ids[:-1] for e in items]
    want = [reference_greedy(model, p, 12, VOCAB[EOS]) for p in prompts]
    assert gen.greedy_answers(model, tokenizer, prompts, 12, batch_size=3) == want
    assert gen.greedy_answers(model, tokenizer, prompts, 12, batch_size=1) == want
    assert all(1 <= len(w) <= 12 for w in want)


def test_task_rows_are_the_means_of_their_items():
    items = [
        {"ordering": "rt", "step": 2, "task": t, "rouge1": r1, "rougeL": rl, "exact_match": em, "reward": rw}
        for t, r1, rl, em, rw in [("a", 1.0, 0.5, 1.0, 2.0), ("a", 0.0, 0.0, 0.0, 0.0), ("b", 0.5, 0.25, 0.0, 1.0)]
    ]
    rows = {r["task"]: r for r in gen.metric_rows(items)}
    assert list(rows) == ["a", "b", ALL_TASKS]
    assert rows["a"]["rouge1"] == 0.5 and rows["a"]["rougeL"] == 0.25 and rows["a"]["n_examples"] == 2
    assert rows[ALL_TASKS]["rouge1"] == pytest.approx(0.5) and rows[ALL_TASKS]["reward"] == pytest.approx(1.0)
    assert rows[ALL_TASKS]["exact_match"] == pytest.approx(1 / 3) and rows[ALL_TASKS]["n_examples"] == 3


def test_without_a_reward_model_the_reward_is_nan():
    rows = gen.score_rows("rt", 0, [Example("e", "q", "42")], ["a"], ["42"], [2], None)
    assert rows[0]["exact_match"] == 1.0 and rows[0]["rouge1"] == 1.0 and math.isnan(rows[0]["reward"])


def tiny_reward_model(folder, tokenizer):
    """A random one-label LlamaForSequenceClassification saved with its tokenizer (no hub)."""
    import torch
    from transformers import AutoModelForSequenceClassification, LlamaConfig

    config = LlamaConfig(vocab_size=len(VOCAB), hidden_size=32, intermediate_size=48, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, num_labels=1, pad_token_id=VOCAB["<pad>"])
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(config).float().eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model


def test_a_reward_model_scores_the_prompt_and_answer_as_its_forward_pass_does(tokenizer, tmp_path):
    import torch

    model = tiny_reward_model(tmp_path, tokenizer)
    scorer = gen.RewardScorer(str(tmp_path))
    text_ = "<user>what is 6·7?\n<assistant>42\n"  # the tokenizer's chat template, rendered by hand
    assert scorer.text("what is 6·7?", "42") == text_
    with torch.no_grad():
        want = float(model(input_ids=tokenizer(text_, return_tensors="pt").input_ids).logits[0, 0])
    assert scorer("what is 6·7?", "42") == pytest.approx(want, rel=1e-6)
    assert scorer("what is 6·7?", "41") != pytest.approx(want)
    rows = gen.score_rows("rt", 0, [Example("e", "what is 6·7?", "42")], ["a"], ["42"], [2], scorer)
    assert rows[0]["reward"] == pytest.approx(want, rel=1e-6)


def test_a_classifier_with_two_labels_is_refused(tokenizer, tmp_path):
    from transformers import AutoModelForSequenceClassification, LlamaConfig

    from lg_pipeline.errors import InputError

    config = LlamaConfig(vocab_size=len(VOCAB), hidden_size=32, intermediate_size=48, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, num_labels=2)
    AutoModelForSequenceClassification.from_config(config).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    with pytest.raises(InputError, match="2 labels; a reward model has one"):
        gen.RewardScorer(str(tmp_path))
