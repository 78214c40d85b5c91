"""Right-padded batches: the one builder of token ids, attention mask and labels for every pass.

The engine, the dynamics measurements, the held-out losses and the training collator all batch this
way, so a training example's gradient is the one the engine measures. Right padding matters to the
capture: with causal attention no real position attends to a pad, so pad positions carry Δ = 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lg_pipeline.gradients.encoding import IGNORE_INDEX, Encoded


@dataclass
class Batch:
    """Right-padded token ids, attention mask and labels (-100 on prompt and padding) of some sequences."""

    ids: Any
    mask: Any
    labels: Any
    lengths: list[int]

    @property
    def n_response_tokens(self) -> list[int]:
        return (self.labels != IGNORE_INDEX).sum(1).tolist()


def right_padded(rows: Sequence[tuple[Sequence[int], Sequence[int]]], pad_id: int, device: Any = None) -> Batch:
    """(token ids, labels) per sequence -> one right-padded batch, on `device` when given."""
    import torch

    width = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    labels = torch.full_like(ids, IGNORE_INDEX)
    for i, (tokens, targets) in enumerate(rows):
        n = len(tokens)
        ids[i, :n] = torch.tensor(list(tokens), dtype=torch.long)
        mask[i, :n] = 1
        labels[i, :n] = torch.tensor(list(targets), dtype=torch.long)
    if device is not None:
        ids, mask, labels = ids.to(device), mask.to(device), labels.to(device)
    return Batch(ids, mask, labels, [len(tokens) for tokens, _ in rows])


def encoded_batch(encoded: Sequence[Encoded], pad_id: int, device: Any = None) -> Batch:
    """The engine's encodings as one right-padded batch."""
    return right_padded([(e.input_ids, e.labels()) for e in encoded], pad_id, device)
