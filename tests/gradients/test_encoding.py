"""Prompt formats and the response-only loss mask, on a real byte-level tokenizer (one token per byte)."""

from __future__ import annotations

import functools

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


# --------------------------------------------------------------------------- the study's encoding

# A Gemma-style template (the base Gemma 3 tokenizer has none): it writes BOS itself, as Gemma's and Llama 3's do.
GEMMA_STYLE_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<start_of_turn>{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n"
    "{{ m['content'] }}<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)
STUDY_EXAMPLES = [
    Example("plain", "What is 2+2?", "It is 4."),
    # The response also occurs inside the prompt: the study's rfind takes the last occurrence.
    Example("repeated", "Say 'The answer is 7.' then explain.\nThe answer is 7.", "The answer is 7."),
    Example("spaces", "Add 12 and 30.", " 12 + 30 = 42.\nThe answer is 42."),
]


def study_reference(tokenizer, instruction: str, output: str, chat: bool, gemma: bool, max_length: int):
    """The study's `get_gradient_values.py`, step by step: (input ids, number of masked tokens)."""
    if chat:
        messages = [{"role": "user", "content": instruction}]
        if not gemma:
            messages.insert(0, {"role": "system", "content": SYSTEM_PROMPT})
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) + output
    else:
        text = instruction + "\n" + output
    ids = tokenizer.encode(text, truncation=True, max_length=max_length)
    return list(ids), len(tokenizer.encode(text[: text.rfind(output)]))


def _release_examples(n: int = 3) -> list[Example]:
    import json
    from pathlib import Path

    from lg_pipeline.example import example_from_row

    path = Path(__file__).resolve().parents[3] / "shared/layer_gradient_release/cot_500/aqua_train_with_cot_gpt4o.json"
    if not path.is_file():
        return []
    return [example_from_row(r, f"aqua row {i}") for i, r in enumerate(json.loads(path.read_text())[:n])]


@functools.cache
def _load_tokenizer(name: str):
    import os

    from data_sources.models.catalog import model_catalog, resolve
    from data_sources.models.loading import load_tokenizer

    cache = os.environ.get("LG_CACHE_DIR", ".cache")
    return load_tokenizer(resolve(model_catalog()[name], cache), cache)


def real_tokenizer(name: str):
    """A catalog model's tokenizer, loaded once per session (Gemma 3's 262k vocabulary takes seconds)."""
    try:
        return _load_tokenizer(name)
    except Exception as exc:  # not converted in this cache, or the model's package is absent
        pytest.skip(f"{name}: {exc}")


def sentencepiece_tokenizer():
    """A SentencePiece-style tokenizer (Unigram model, ▁ metaspace) trained here on a few sentences, with BOS added."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = [e.instruction + "\n" + e.response for e in STUDY_EXAMPLES] * 20 + ["the answer is 42 so then 7 plus"]
    spm = Tokenizer(models.Unigram())
    spm.pre_tokenizer = pre_tokenizers.Metaspace()
    spm.decoder = decoders.Metaspace()
    specials = ["<pad>", "<bos>", "<eos>", "<unk>"]
    spm.train_from_iterator(corpus, trainers.UnigramTrainer(vocab_size=120, special_tokens=specials, unk_token="<unk>"))
    spm.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=spm, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                                   unk_token="<unk>", chat_template=GEMMA_STYLE_TEMPLATE)


def _tokenizers() -> dict:
    return {
        "smollm2": lambda: (real_tokenizer("smollm2-135m-instruct"), [True, False], False),
        "gemma3": lambda: (_with_template(real_tokenizer("gemma-3-270m")), [False, True], True),
        "sentencepiece": lambda: (sentencepiece_tokenizer(), [False, True], False),
    }


def _with_template(tokenizer):
    tokenizer.chat_template = tokenizer.chat_template or GEMMA_STYLE_TEMPLATE
    return tokenizer


@pytest.mark.slow
@pytest.mark.parametrize("name", ["smollm2", "gemma3", "sentencepiece"])
def test_study_encoding_restates_the_studys_rules_on_real_tokenizers(name):
    tokenizer, chats, gemma = _tokenizers()[name]()
    examples = STUDY_EXAMPLES + _release_examples()
    for chat in chats:
        for ex in examples:
            for max_length in (1024, 40):
                ids, n_masked = study_reference(tokenizer, ex.instruction, ex.response, chat, gemma, max_length)
                got = encode(tokenizer, ex, chat, max_length, encoding="study", drop_system=gemma)
                if len(ids) <= n_masked:
                    assert got is None, (name, chat, ex.example_id, max_length)
                    continue
                assert got is not None and got.input_ids == ids and got.n_prompt == n_masked, (name, chat, ex)


@pytest.mark.slow
def test_study_chat_path_has_a_second_bos_and_gemma_has_no_system_prompt():
    tokenizer = _with_template(real_tokenizer("gemma-3-270m"))
    study = encode(tokenizer, STUDY_EXAMPLES[0], chat=True, max_length=1024, encoding="study", drop_system=True)
    pair = encode(tokenizer, STUDY_EXAMPLES[0], chat=True, max_length=1024)
    bos = tokenizer.bos_token_id
    assert study.input_ids[:2] == [bos, bos] and pair.input_ids[:2] != [bos, bos]
    assert SYSTEM_PROMPT not in tokenizer.decode(study.input_ids) and SYSTEM_PROMPT in tokenizer.decode(pair.input_ids)
    assert tokenizer.decode(study.labels()[study.n_prompt :]) == STUDY_EXAMPLES[0].response


def test_on_a_tokenizer_without_merges_the_base_path_encodes_alike_both_ways(tokenizer):
    """On the byte-level test tokenizer (no merges) the base path tokenizes identically both ways."""
    for ex in STUDY_EXAMPLES:
        assert encode(tokenizer, ex, False, 1024, "study") == encode(tokenizer, ex, False, 1024, "pair")


def test_unknown_encoding_is_an_input_error(llama, tokenizer):
    from lg_pipeline.errors import InputError

    with pytest.raises(InputError, match="encoding 'studdy'"):
        list(compute_gradient_stats(llama, tokenizer, STUDY_EXAMPLES, EngineConfig(encoding="studdy")))


def test_float16_is_refused_for_statistics(tokenizer):
    from lg_pipeline.errors import InputError
    from tests.helpers.builders import make_model

    model = make_model("llama-gqa").half()
    with pytest.raises(InputError, match="float16.*bfloat16 or float32"):
        list(compute_gradient_stats(model, tokenizer, STUDY_EXAMPLES, EngineConfig()))
