"""Prompt formats and the response-only loss mask, on a real byte-level tokenizer (one token per byte)."""

from __future__ import annotations

import pytest
import torch

from lg_pipeline.example import Example
from lg_pipeline.gradients.encoding import IGNORE_INDEX, SYSTEM_PROMPT, _as_id_list, encode, prompt_ids
from lg_pipeline.gradients.engine import EngineConfig, compute_gradient_stats
from tests.helpers.builders import BOS, CHAT_TEMPLATE, NO_SYSTEM_TEMPLATE, VOCAB, make_tokenizer

pytestmark = pytest.mark.usefixtures("single_thread")

EXAMPLE = Example("e1", "What is 2+2?", "It is 4.")


def decode(tokenizer, ids: list[int]) -> str:
    return tokenizer.decode(ids, skip_special_tokens=False)


def test_labels_mask_exactly_the_prompt(tokenizer):
    enc = encode(tokenizer, EXAMPLE, chat=False, max_length=1024)
    response = tokenizer(EXAMPLE.response, add_special_tokens=False)["input_ids"]
    assert enc.n_prompt == len(tokenizer(EXAMPLE.instruction + "\n")["input_ids"]) == 1 + len("What is 2+2?\n")
    labels = enc.labels()
    assert labels[: enc.n_prompt] == [IGNORE_INDEX] * enc.n_prompt
    assert labels[enc.n_prompt :] == response == enc.input_ids[enc.n_prompt :]
    assert enc.n_response_tokens == len(EXAMPLE.response)


def test_base_prompt_is_instruction_newline_with_special_tokens(tokenizer):
    ids = prompt_ids(tokenizer, EXAMPLE.instruction, chat=False)
    assert ids[0] == VOCAB[BOS]
    assert decode(tokenizer, ids) == BOS + "What is 2+2?\n"


def test_chat_prompt_has_system_user_and_generation_prompt(tokenizer):
    ids = prompt_ids(tokenizer, EXAMPLE.instruction, chat=True)
    assert decode(tokenizer, ids) == f"<system>{SYSTEM_PROMPT}\n<user>What is 2+2?\n<assistant>"
    enc = encode(tokenizer, EXAMPLE, chat=True, max_length=1024)
    assert enc.input_ids[: enc.n_prompt] == ids and decode(tokenizer, enc.input_ids[enc.n_prompt :]) == "It is 4."


def test_template_rejecting_system_role_falls_back_to_user_only():
    tokenizer = make_tokenizer(NO_SYSTEM_TEMPLATE)
    with pytest.raises(Exception, match="System role not supported"):
        tokenizer.apply_chat_template([{"role": "system", "content": "x"}], tokenize=False)
    ids = prompt_ids(tokenizer, EXAMPLE.instruction, chat=True)
    assert decode(tokenizer, ids) == "<user>What is 2+2?\n<assistant>"


def test_template_errors_other_than_system_role_are_not_swallowed():
    broken = "{{ raise_exception('template is broken') }}" + CHAT_TEMPLATE
    with pytest.raises(Exception, match="template is broken"):
        prompt_ids(make_tokenizer(broken), EXAMPLE.instruction, chat=True)


def test_truncation_keeps_the_prompt_and_cuts_the_response(tokenizer):
    full = encode(tokenizer, EXAMPLE, chat=False, max_length=1024)
    cut = encode(tokenizer, EXAMPLE, chat=False, max_length=full.n_prompt + 3)
    assert cut.n_prompt == full.n_prompt and cut.n_tokens == full.n_prompt + 3 and cut.n_response_tokens == 3
    assert cut.input_ids == full.input_ids[: cut.n_tokens]
    assert encode(tokenizer, EXAMPLE, chat=False, max_length=full.n_prompt) is None
    assert encode(tokenizer, EXAMPLE, chat=False, max_length=full.n_prompt - 4) is None


def test_example_truncated_to_no_response_is_skipped_with_a_reason(llama, tokenizer):
    long_prompt = Example("long-prompt", "x" * 40, "an answer")
    examples = [EXAMPLE, long_prompt, Example("e2", "Hi", "Hello.")]
    results = list(compute_gradient_stats(llama, tokenizer, examples, EngineConfig(max_length=30)))
    by_id = {r.example_id: r for r in results}
    assert sorted(by_id) == sorted(e.example_id for e in examples) and len(results) == 3
    skipped = by_id["long-prompt"]
    assert skipped.status == "skipped" and skipped.rows == [] and "max_length=30" in skipped.reason
    assert by_id["e1"].status == by_id["e2"].status == "ok"


@pytest.mark.parametrize(
    "returned",
    [[5, 6, 7], [[5, 6, 7]], torch.tensor([[5, 6, 7]]), {"input_ids": [5, 6, 7], "attention_mask": [1, 1, 1]}],
    ids=["list", "nested", "tensor", "batch-encoding"],
)
def test_chat_template_return_types_become_a_flat_id_list(returned):
    assert _as_id_list(returned) == [5, 6, 7]
