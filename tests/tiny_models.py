"""Tiny real transformers models and a byte-level tokenizer, built offline for tests."""

from __future__ import annotations

from pathlib import Path

import yaml

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def byte_tokenizer(chat: bool = True):
    """A real fast tokenizer: one token per byte plus specials (no merges, so nothing to download)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>"]
    vocab = {tok: i for i, tok in enumerate(specials)}
    for char in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[char] = len(vocab)
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", bos_token="<s>", eos_token="</s>")
    if chat:
        tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def tiny_llama(layers: int = 3, seed: int = 0):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=259,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
    )
    return LlamaForCausalLM(config).eval()


def save_tiny_model(folder: Path, layers: int = 3, chat: bool = True) -> Path:
    """A local transformers folder (config.json, weights, tokenizer) holding a tiny random Llama."""
    tiny_llama(layers).save_pretrained(folder)
    byte_tokenizer(chat).save_pretrained(folder)
    return folder


def write_catalog(path: Path, models: dict[str, Path], kind: str = "instruct") -> Path:
    """A model catalog with only local tiny models (point LG_MODEL_CATALOG at it)."""
    entries = {
        name: {"display_name": f"Tiny {name}", "source": "local", "path": str(folder), "kind": kind, "family": "tiny"}
        for name, folder in models.items()
    }
    path.write_text(yaml.safe_dump({"models": entries}))
    return path
