"""Shared by the dynamics tests: a tiny run recorded with the callback, materialised references, model loaders."""

from __future__ import annotations

import copy
from pathlib import Path
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


def assert_a_complete_dpo_folder(out: Path, steps: int) -> None:
    """A DPO run folder passes every rule and holds what squeezing needs: `greedy` probes decoded now, the
    concentration columns, the kernel's chosen and rejected parts, and shares that add up to the prediction."""
    import numpy as np
    import pandas as pd

    from lg_pipeline.dynamics.learning.checks import check_run_folder
    from lg_pipeline.dynamics.learning.measure import CONCENTRATION

    report = check_run_folder(out)
    assert report.passed and not report.unchecked, report.explain()
    assert {"shares_sum", "kernel_terms_sum", "greedy_known", "residuals_complete"} <= {
        o.column for o in report.outcomes}
    probes = pd.read_parquet(out / "probes.parquet")
    assert (probes.probe_type == "greedy").any()
    greedy_now = pd.read_parquet(out / "greedy_now.parquet")
    assert set(greedy_now.probe_id) <= set(probes.probe_id[probes.probe_type == "greedy"]) and len(greedy_now)
    assert sorted(greedy_now.step.unique()) == list(range(steps))
    logprobs = pd.read_parquet(out / "logprobs.parquet")
    assert set(CONCENTRATION) <= set(logprobs.columns) and logprobs[list(CONCENTRATION)].notna().all().all()
    kernel = pd.read_parquet(out / "kernel.parquet")
    assert len(kernel) and (kernel.grad_inner_rejected != 0).any()  # DPO's negative-gradient term is there
    residuals = pd.read_parquet(out / "train_residuals.parquet")
    assert set(residuals.term) == {"chosen", "rejected"}
    summary = pd.read_parquet(out / "influence_summary.parquet")
    assert summary[["chosen_share", "rejected_share"]].notna().all().all()  # plain SGD on q/k/v/o: defined
    assert (summary.rejected_share != 0).any() and (summary.chosen_share != 0).any()
    total = summary.chosen_share + summary.rejected_share
    assert np.allclose(total, summary.predicted_delta, rtol=0, atol=1e-4), (total - summary.predicted_delta).abs().max()
