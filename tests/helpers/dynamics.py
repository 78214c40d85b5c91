"""Shared by the dynamics tests: a tiny run recorded with the callback, materialised references, model loaders."""

from __future__ import annotations

import copy
from typing import Any

from lg_pipeline.dynamics.learning.callback import DynamicsCallback
from lg_pipeline.dynamics.learning.measure import response_logp_sum, to_batch
from lg_pipeline.dynamics.learning.probes import build_probes
from lg_pipeline.dynamics.training import LoadedModel, TrainSettings, fine_tune
from lg_pipeline.example import Example
from lg_pipeline.gradients.encoding import encode
from lg_pipeline.gradients.loss import per_example_loss


def rows(n: int = 8) -> list[Example]:
    return [Example(f"e{i}", f"What is {i} plus {i}?", f"It is {2 * i}, so the answer is {2 * i}.") for i in range(n)]


def wrong_rows(n: int = 8) -> list[Example]:
    return [
        Example(f"e{i}", f"What is {i} plus {i}?", f"It is {2 * i + 3}, the answer is {2 * i + 3}.") for i in range(n)
    ]


def one_step(model, tokenizer, lr=1e-2, trainable="attention", probe_batch_size=4, batch_size=2, optimizer="sgd"):
    """θ_0 (a copy), the callback after one measured SGD step, and the probes."""
    before = copy.deepcopy(model)
    probes = build_probes(rows(), 4, batch_size, seed=0, wrong=wrong_rows())
    callback = DynamicsCallback(
        tokenizer, probes, eval_every=1, probe_batch_size=probe_batch_size, train_examples=rows()
    )
    config = TrainSettings(steps=1, batch_size=batch_size, learning_rate=lr, trainable=trainable, optimizer=optimizer)
    fine_tune(model, tokenizer, rows(), config, callbacks=[callback])
    return before, callback, probes


def loader(model, tokenizer, chat: bool = False, name: str = "tiny"):
    """A run's model loader handing over a fresh copy of `model` each time (runs train the model in place)."""
    return lambda: LoadedModel(copy.deepcopy(model), tokenizer, chat, name, "test")


def logp_gradients(model, tokenizer, example: Example, names) -> tuple[float, dict[str, Any]]:
    """Materialised ∇_W logp_sum of one sequence for the named parameters (plain autograd)."""
    return _gradients(model, tokenizer, example, names, lambda logits, b: response_logp_sum(logits, b.labels))


def loss_gradients(model, tokenizer, example: Example, names) -> tuple[float, dict[str, Any]]:
    """Materialised ∇_W of the engine's loss (mean response-token CE) of one sequence."""
    return _gradients(model, tokenizer, example, names, lambda logits, b: per_example_loss(logits, b.labels))


def _gradients(model, tokenizer, example, names, objective):
    import torch

    batch = to_batch([encode(tokenizer, example, False, 1024)], tokenizer.pad_token_id, "cpu")
    params = dict(model.named_parameters())
    for p in model.parameters():
        p.requires_grad_(False)
    wanted = [params[n].requires_grad_(True) for n in names]
    value = objective(model(input_ids=batch.ids, attention_mask=batch.mask).logits, batch).sum()
    grads = torch.autograd.grad(value, wanted)
    for p in wanted:
        p.requires_grad_(False)
    return float(value), dict(zip(names, grads, strict=True))


def sequence_logp(model, tokenizer, example: Example) -> Any:
    """logp_sum of one (prompt, response) at `model`'s weights, as a graph to differentiate (plain forward)."""
    batch = to_batch([encode(tokenizer, example, False, 1024)], tokenizer.pad_token_id, "cpu")
    logits = model(input_ids=batch.ids, attention_mask=batch.mask).logits
    return response_logp_sum(logits, batch.labels)[0]
