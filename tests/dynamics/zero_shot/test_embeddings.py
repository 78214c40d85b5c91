"""Item embeddings: MiniLM from the packaged weights (unpacked once), and mean-pooled hidden states of a model."""

from __future__ import annotations

import numpy as np
import pytest

from lg_pipeline.dynamics.zero_shot.embeddings import item_text, make_embedder, minilm_folder, model_embedder
from lg_pipeline.errors import InputError
from lg_pipeline.example import Example
from tests.helpers.builders import make_model

ITEMS = [
    Example("a", "What is 2 + 3?", "5"),
    Example("b", "Add 4 and 7.", "11"),
    Example("c", "Spell 'cat' backward.", "tac"),
]


@pytest.mark.slow
def test_minilm_embeds_like_sentence_transformers_and_is_semantic(tmp_path, single_thread):
    from sentence_transformers import SentenceTransformer

    folder = minilm_folder(tmp_path)
    assert (folder / "modules.json").is_file() and minilm_folder(tmp_path) == folder  # unpacked once
    embed = make_embedder("minilm", tmp_path)
    vectors = embed(ITEMS)
    assert vectors.shape == (3, 384)
    direct = SentenceTransformer(str(folder), device="cpu").encode([item_text(e) for e in ITEMS])
    assert np.allclose(vectors, direct, atol=1e-5)
    cos = vectors @ vectors.T / np.outer(np.linalg.norm(vectors, axis=1), np.linalg.norm(vectors, axis=1))
    assert cos[0, 1] > cos[0, 2]  # two additions are closer than an addition and a spelling task


def test_model_embedder_is_the_masked_mean_of_last_hidden_states(tokenizer, single_thread):
    import torch

    model = make_model("llama-gqa", seed=6)
    batched = model_embedder(model, tokenizer, batch_size=3)(ITEMS)
    for row, e in zip(batched, ITEMS, strict=True):
        ids = torch.tensor([tokenizer(item_text(e))["input_ids"]])
        with torch.no_grad():
            hidden = model(input_ids=ids, output_hidden_states=True).hidden_states[-1][0]
        assert np.allclose(row, hidden.mean(0).double().numpy(), atol=1e-5)


@pytest.mark.slow
def test_an_unknown_embedder_is_named(tmp_path):
    with pytest.raises(InputError, match="--embedder: must be one of minilm, model, got 'bert'"):
        make_embedder("bert", tmp_path)
