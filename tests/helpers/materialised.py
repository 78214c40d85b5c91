"""Materialised references: one plain backward per example, the weights' own `.grad`, apart from the engine."""

from __future__ import annotations

from typing import Any

from lg_pipeline.example import Example
from lg_pipeline.gradients.encoding import encode


def example_gradients(model: Any, tokenizer: Any, example: Example, chat: bool = False) -> tuple[float, dict[str, Any]]:
    """The model's own loss of one example and the `.grad` of every parameter that requires one."""
    import torch

    enc = encode(tokenizer, example, chat, 1024)
    model.zero_grad(set_to_none=True)
    loss = model(input_ids=torch.tensor([enc.input_ids]), labels=torch.tensor([enc.labels()])).loss
    loss.backward()
    return float(loss), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
