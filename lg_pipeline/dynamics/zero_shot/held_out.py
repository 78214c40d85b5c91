"""Held-out loss during training: the engine's SFT loss on each test item, at step 0 and every K steps.

The loss of an item is its mean response-token cross-entropy under the engine's encoding (`per_example_loss`
on the engine's right-padded batches), so at step 0 it is exactly the `loss` column the gradient engine writes.
`HeldOutLossCallback` is a plain `TrainerCallback`: it works in any transformers `Trainer` / TRL run. A held-out loss
that is not finite stops the run (`RunStopped`, naming the ordering, the step and the learning rate).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from transformers import TrainerCallback

from lg_pipeline.dynamics.training import evaluating
from lg_pipeline.errors import RunStopped
from lg_pipeline.gradients.encoding import Encoded

# The engine's batch layout, so these losses are the engine's.
from lg_pipeline.gradients.engine import (
    batch_tensors,
    model_device,
    pad_token_id,
    positions_with_loss,
)
from lg_pipeline.gradients.loss import per_example_loss
from lg_pipeline.progress import StepProgress

ALL_TASKS = "__all__"
LOSS_COLUMNS = ("ordering", "step", "task", "loss", "n_examples")


def held_out_losses(model: Any, tokenizer: Any, items: Sequence[Encoded], batch_size: int = 8) -> list[float]:
    """Each item's loss at the current weights (eval mode, no gradient); the model's mode is restored."""
    import torch

    pad_id = pad_token_id(tokenizer)
    out: list[float] = []
    with torch.no_grad(), evaluating(model):
        for start in range(0, len(items), batch_size):
            batch = list(items[start : start + batch_size])
            ids, mask, labels = batch_tensors(batch, pad_id, model_device(model))
            keep = positions_with_loss(model, labels)
            logits = model(input_ids=ids, attention_mask=mask, use_cache=False, **keep).logits
            out.extend(per_example_loss(logits, labels).float().cpu().tolist())
    return out


def loss_rows(ordering: str, step: int, tasks: Sequence[str], losses: Sequence[float]) -> list[dict]:
    """Mean loss per test task and over all test items (`task = "__all__"`)."""
    rows = []
    for task in dict.fromkeys(tasks):
        values = [v for t, v in zip(tasks, losses, strict=True) if t == task]
        rows.append({"ordering": ordering, "step": step, "task": task, "loss": sum(values) / len(values),
                     "n_examples": len(values)})
    rows.append({"ordering": ordering, "step": step, "task": ALL_TASKS, "loss": sum(losses) / len(losses),
                 "n_examples": len(losses)})
    return rows


def eval_steps(total_steps: int, every: int) -> list[int]:
    """0, K, 2K, ... and the last step."""
    steps = list(range(0, total_steps + 1, every))
    return steps if steps[-1] == total_steps else [*steps, total_steps]


class HeldOutLossCallback(TrainerCallback):
    """Records the held-out loss before the first step and after every `every`-th step (and the last)."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        items: Sequence[Encoded],
        tasks: Sequence[str],
        every: int,
        ordering: str = "",
        batch_size: int = 8,
        report: Callable[[str], None] | None = None,
    ):
        self.model, self.tokenizer, self.items, self.tasks = model, tokenizer, list(items), list(tasks)
        self.every, self.ordering, self.batch_size, self.report = every, ordering, batch_size, report
        self.rows: list[dict] = []
        self._steps = StepProgress(report, prefix=f"{ordering} ") if report else None
        self._max_steps = 0

    def _measure(self, step: int, learning_rate: float) -> None:
        losses = held_out_losses(self.model, self.tokenizer, self.items, self.batch_size)
        bad = [v for v in losses if not math.isfinite(v)]
        if bad:
            raise RunStopped([
                f"ordering {self.ordering}, step {step}: the held-out loss is {bad[0]} (not finite) for {len(bad)} "
                f"of {len(losses)} items; the run stopped: lower {{learning_rate}} (it is {learning_rate:g})"
            ])
        rows = loss_rows(self.ordering, step, self.tasks, losses)
        self.rows.extend(rows)
        if self.report:
            self.report(f"{self.ordering} eval at step {step}/{self._max_steps}: held-out loss {rows[-1]['loss']:.4f}")

    def on_train_begin(self, args, state, control, **kwargs):
        self._max_steps = state.max_steps
        if self._steps:
            self._steps(0, state.max_steps)
        self._measure(0, args.learning_rate)

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.every == 0 or state.global_step == state.max_steps:
            self._measure(state.global_step, args.learning_rate)
        if self._steps:
            self._steps(state.global_step, state.max_steps)
