"""Builders shared by the tests: a real byte-level tokenizer and tiny random models built from configs.

No hub access here, so every model is made from a config (seeded, fp32) and the
tokenizer is a real `tokenizers` BPE with no merges: one token per byte. That
makes token counts easy to steer (an example of N ASCII characters is N tokens),
which the tests need to exercise both code paths of `spectra.factor_stats`.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from lg_pipeline.example import Example
from lg_pipeline.gradients.engine import ExampleResult
from lg_pipeline.schema import MATRIX_STATS

PAD, BOS, EOS = "<pad>", "<bos>", "<eos>"
CHAT_TEMPLATE = (
    "{% for m in messages %}<{{ m.role }}>{{ m.content }}\n{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)
# Like Gemma-2's: a system message is an error, not ignored.
NO_SYSTEM_TEMPLATE = (
    "{% if messages[0].role == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
    + CHAT_TEMPLATE
)

# Hidden size 64, 4 heads of 16, GQA with 2 KV heads: min(out, in) is 32 for k/v and 64 elsewhere.
HIDDEN, INTERMEDIATE, KV_HEADS = 64, 96, 2
ALL_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _byte_vocab() -> dict[str, int]:
    from tokenizers.pre_tokenizers import ByteLevel

    vocab = {c: i for i, c in enumerate(sorted(ByteLevel.alphabet()))}
    for special in (PAD, BOS, EOS):
        vocab[special] = len(vocab)
    return vocab


VOCAB = _byte_vocab()


def make_tokenizer(chat_template: str | None = CHAT_TEMPLATE) -> Any:
    """A real fast tokenizer: byte-level, `<bos>` prepended when special tokens are asked for."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(vocab=dict(VOCAB), merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", special_tokens=[(BOS, VOCAB[BOS])])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD, chat_template=chat_template
    )


def _config(kind: str, layers: int) -> tuple[Any, type]:
    import transformers as tf

    common = dict(
        vocab_size=len(VOCAB),
        hidden_size=HIDDEN,
        intermediate_size=INTERMEDIATE,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=KV_HEADS,
        max_position_embeddings=512,
        pad_token_id=VOCAB[PAD],
        bos_token_id=VOCAB[BOS],
        eos_token_id=VOCAB[EOS],
    )
    table = {
        "llama-mha": (tf.LlamaConfig, tf.LlamaForCausalLM, {"num_key_value_heads": 4}),
        "llama-gqa": (tf.LlamaConfig, tf.LlamaForCausalLM, {}),
        "qwen2": (tf.Qwen2Config, tf.Qwen2ForCausalLM, {}),
        "gemma2": (tf.Gemma2Config, tf.Gemma2ForCausalLM, {"head_dim": 16}),
        "gemma3": (tf.Gemma3TextConfig, tf.Gemma3ForCausalLM, {"head_dim": 16}),
    }
    config_cls, model_cls, extra = table[kind]
    return config_cls(**{**common, **extra}), model_cls


MODEL_KINDS = ("llama-mha", "llama-gqa", "qwen2", "gemma2", "gemma3")


def make_model(kind: str = "llama-gqa", seed: int = 0, layers: int = 2) -> Any:
    """A seeded random fp32 model in eval mode."""
    import torch

    config, model_cls = _config(kind, layers)
    torch.manual_seed(seed)
    return model_cls(config).float().eval()


def text(n: int, seed: int = 0) -> str:
    """n ASCII characters (so n tokens) of varied text: different examples give different gradients."""
    words = ["alpha", "beta", "seven", "plus", "equals", "so", "then", "the", "answer", "is", "42"]
    out, i = [], seed
    while sum(len(w) + 1 for w in out) < n:
        out.append(words[(i * 7 + 3) % len(words)])
        i += 1
    return " ".join(out)[:n]


def example(example_id: str, n_prompt: int, n_response: int) -> Example:
    """A base-format example of n_prompt + n_response tokens (<bos> and the newline included in the prompt)."""
    seed = sum(map(ord, example_id))
    return Example(example_id, text(n_prompt - 2, seed), text(n_response, seed + 1))


def results_frame(results: list[ExampleResult]) -> pd.DataFrame:
    """All `ok` rows indexed by (example_id, parameter), for side-by-side comparison."""
    rows = [row for res in results for row in res.rows]
    return pd.DataFrame(rows).set_index(["example_id", "parameter"]).sort_index()


def stats_mismatches(actual: pd.DataFrame, reference: pd.DataFrame, rel: float = 1e-4) -> list[str]:
    """Rows that differ beyond `rel`; empty when they agree.

    Norms, max and min: relative error. The mean can be ~0, so its error is scaled by
    max|G|; σ_min too (it is 0 or tiny next to σ_max), scaled by σ_max.
    """
    assert list(actual.index) == list(reference.index), "different (example, parameter) rows"
    assert (reference.nuclear_norm > 0).all(), "reference has all-zero gradients: the comparison would be vacuous"
    scale = reference[["grad_max", "grad_min"]].abs().max(axis=1)
    relative = ("nuclear_norm", "sigma_max", "frobenius_norm", "grad_max", "grad_min", "effective_rank", "stable_rank")
    bounds = {c: rel * reference[c].abs() for c in relative}
    bounds["grad_mean"] = rel * scale
    bounds["sigma_min"] = rel * reference.sigma_max
    problems = []
    for column in MATRIX_STATS:
        err = (actual[column] - reference[column]).abs()
        bad = err > bounds[column]
        if bad.any():
            worst = (err / bounds[column]).idxmax()
            problems.append(f"{column}: {int(bad.sum())} rows off, worst {worst}: {actual.at[worst, column]!r} "
                            f"vs {reference.at[worst, column]!r}")
    for column in ("loss",):
        if not ((actual[column] - reference[column]).abs() <= rel * reference[column].abs()).all():
            problems.append(f"{column} differs")
    if not (actual.n_tokens == reference.n_tokens).all():
        problems.append("n_tokens differs")
    return problems


POISON = VOCAB["~"]


def poison_forward(model: Any, monkeypatch: Any) -> None:
    """Make the model raise on any batch that contains the token `~` (at its embedding: every path passes there)."""
    embeddings = model.get_input_embeddings()
    original = embeddings.forward

    def forward(input_ids: Any, *args: Any, **kwargs: Any) -> Any:
        if (input_ids == POISON).any():
            raise ValueError("poisoned example")
        return original(input_ids, *args, **kwargs)

    monkeypatch.setattr(embeddings, "forward", forward)
