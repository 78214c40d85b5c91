"""The one right-padding builder, and the training collator that uses it."""

from __future__ import annotations

import torch

from lg_pipeline.dynamics.training import RightPadCollator
from lg_pipeline.gradients.encoding import IGNORE_INDEX, encode
from lg_pipeline.gradients.padding import encoded_batch, right_padded
from tests.helpers.builders import example


def test_sequences_are_padded_on_the_right_with_masked_labels():
    batch = right_padded([([5, 6, 7], [-100, 6, 7]), ([8], [8])], pad_id=0)
    assert batch.ids.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch.mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch.labels.tolist() == [[IGNORE_INDEX, 6, 7], [8, IGNORE_INDEX, IGNORE_INDEX]]
    assert batch.lengths == [3, 1] and batch.n_response_tokens == [2, 1]


def test_the_collator_batches_exactly_as_the_engine(tokenizer):
    encoded = [encode(tokenizer, e, False, 1024) for e in (example("a", 5, 9), example("b", 7, 20))]
    engine = encoded_batch(encoded, tokenizer.pad_token_id, "cpu")
    rows = [{"input_ids": e.input_ids, "labels": e.labels(), "example_id": e.example_id} for e in encoded]
    collated = RightPadCollator(tokenizer.pad_token_id)(rows)
    assert set(collated) == {"input_ids", "attention_mask", "labels"}
    for key, tensor in (("input_ids", engine.ids), ("attention_mask", engine.mask), ("labels", engine.labels)):
        assert torch.equal(collated[key], tensor), key
