"""One forward/backward per batch that measures what an update does, reduced in the hooks.

- `train_pass`: a training batch at θ_s, with the engine's loss per example. One capture
  (`gradients/capture`) feeds two consumers from the same backward: the engine's statistics
  (`gradients/statistics`) and one that keeps each example's X and Δ for the kernel.
- `probe_pass`: probes at θ_s, f = Σ_b logp_sum_b. As each layer's Δ arrives, a consumer turns it
  into the probes' predicted changes ⟨Δᵀ X, U⟩ (and the NTK against the kept training
  factors), then drops it: at most one layer's Δ is alive.
- `logprobs`: log-probabilities only, no gradient.

No weight needs a gradient (the graph starts at the embeddings) and nothing touches `.grad`,
so a pass can run inside a training step without disturbing the trainer's gradients.
Parameters that are not studied linear layers (`rest`: embeddings, norms when everything
trains) get ⟨∇ logp_sum, ΔP⟩ from `autograd.grad`, one probe at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from lg_pipeline.dynamics.learning.influence import predicted_delta
from lg_pipeline.dynamics.learning.kernel import ntk
from lg_pipeline.dynamics.training import evaluating
from lg_pipeline.gradients.capture import Capture, Factors, KeptFactors, consumer
from lg_pipeline.gradients.engine import model_device, positions_with_loss
from lg_pipeline.gradients.loss import kept_labels, per_example_loss, response_ce_sums
from lg_pipeline.gradients.padding import Batch, encoded_batch
from lg_pipeline.gradients.statistics import (
    MatrixStatistics,
    default_schedule,
    default_workers,
    single_threaded_blas,
)
from lg_pipeline.gradients.targets import Target

to_batch = encoded_batch  # encoded sequences -> one right-padded `Batch` (the engine's one builder)


def batch_from_inputs(inputs: dict[str, Any]) -> Batch | None:
    """A training batch as the trainer fed it (`input_ids`, `attention_mask`, `labels`); None without labels."""
    labels = inputs.get("labels")
    if labels is None or inputs.get("input_ids") is None:
        return None
    ids = inputs["input_ids"]
    mask = inputs.get("attention_mask")
    if mask is None:
        import torch

        mask = torch.ones_like(ids)
    if not bool((mask.cumsum(1) == mask.sum(1, keepdim=True)).logical_or(mask == 1).all()):
        return None  # left padding: the per-example slices below assume right padding
    return Batch(ids, mask, labels, mask.sum(1).tolist())


def response_logp_sum(logits: Any, labels: Any) -> Any:
    """Σ over response tokens of log p(y_t | x, y_<t) per sequence, on (tokens, vocab) rows like the engine."""
    return -response_ce_sums(logits, labels)


def _logits(model: Any, batch: Batch) -> tuple[Any, Any]:
    """Logits and the labels aligned with them (trimmed when only the last positions are kept)."""
    keep = positions_with_loss(model, batch.labels)
    logits = model(input_ids=batch.ids, attention_mask=batch.mask, use_cache=False, **keep).logits
    return logits, kept_labels(logits, batch.labels)


def logprobs(model: Any, batch: Batch) -> list[float]:
    """logp_sum per sequence at the current weights."""
    import torch

    with torch.no_grad(), evaluating(model):
        logits, labels = _logits(model, batch)
        return response_logp_sum(logits, labels).cpu().tolist()


@dataclass
class TrainFactors:
    """A training batch at θ_s: per-target X and Δ (of each example's engine loss), losses, engine statistics."""

    x: dict[int, Any] = field(default_factory=dict)
    delta: dict[int, Any] = field(default_factory=dict)
    losses: list[float] = field(default_factory=list)
    stats: dict[tuple[int, int], list[float]] = field(default_factory=dict)  # (target, example) -> MATRIX_STATS
    lengths: list[int] = field(default_factory=list)
    n_response_tokens: list[int] = field(default_factory=list)


def train_pass(model: Any, targets: Sequence[Target], batch: Batch) -> TrainFactors:
    """Engine loss per example, its gradient's factors per target, and the engine's statistics of each."""
    import torch

    out = TrainFactors(lengths=list(batch.lengths), n_response_tokens=batch.n_response_tokens)
    device = model_device(model)
    kept = KeptFactors()
    stats = MatrixStatistics(targets, batch.lengths, default_schedule(device), default_workers(device))
    with evaluating(model), torch.enable_grad(), single_threaded_blas(device):
        with Capture(model, targets, len(batch.lengths), [kept, stats]) as capture:
            logits, labels = _logits(model, batch)
            losses = per_example_loss(logits, labels)
            del logits
            capture.backward(losses.sum())
    out.x, out.delta = kept.x, kept.delta
    out.losses = losses.detach().cpu().tolist()
    table = stats.table().cpu().tolist()
    out.stats = {(i, b): table[i][b] for i in range(len(targets)) for b in range(len(batch.lengths))}
    return out


@dataclass
class ProbeEffects:
    """Probes at θ_s: logp_sum, predicted change per target (P, n_targets), NTK (P, U, n_targets), rest (P,)."""

    logp_sum: list[float]
    predicted: Any
    kernel: Any | None
    rest: dict[str, list[float]]


def probe_pass(
    model: Any,
    targets: Sequence[Target],
    batch: Batch,
    updates: Sequence[Any],
    train: TrainFactors | None = None,
    rest: dict[str, tuple[Any, Any]] | None = None,
) -> ProbeEffects:
    """Predicted changes of each probe's logp_sum under `updates` (one per target, W_{s+1} − W_s).

    `rest`: name -> (parameter, its update) for trained parameters outside `targets`; the
    probes then go one at a time (autograd sums a batch's gradients of a shared weight).
    """
    import torch

    rest = rest or {}
    if rest and len(batch.lengths) > 1:
        parts = [probe_pass(model, targets, _row(batch, b), updates, train, rest) for b in range(len(batch.lengths))]
        return _concat(parts)
    n = len(batch.lengths)
    predicted = torch.zeros(n, len(targets), dtype=torch.float64)
    kernel = None if train is None else torch.zeros(n, len(train.losses), len(targets), dtype=torch.float64)

    def reduce(f: Factors) -> None:
        i = f.index
        predicted[:, i] = predicted_delta(f.x, f.delta, updates[i]).double().cpu()
        if kernel is not None:
            kernel[:, :, i] = ntk(f.x, f.delta, train.x[i], train.delta[i]).double().cpu()

    params = [p for p, _ in rest.values()]
    with evaluating(model), torch.enable_grad():
        with Capture(model, targets, n, [consumer(reduce)], trainable=rest) as capture:
            logits, labels = _logits(model, batch)
            logp = response_logp_sum(logits, labels)
            del logits
            grads = capture.backward(logp.sum(), also=params)
    rest_effect = {}
    for (name, (_, update)), grad in zip(rest.items(), grads, strict=True):
        value = 0.0 if grad is None else float((grad.double() * update.double()).sum())
        rest_effect[name] = [value]
    return ProbeEffects(logp.detach().cpu().tolist(), predicted, kernel, rest_effect)


def _row(batch: Batch, b: int) -> Batch:
    n = batch.lengths[b]
    return Batch(batch.ids[b : b + 1, :n], batch.mask[b : b + 1, :n], batch.labels[b : b + 1, :n], [n])


def _concat(parts: list[ProbeEffects]) -> ProbeEffects:
    import torch

    kernel = None if parts[0].kernel is None else torch.cat([p.kernel for p in parts])
    rest = {name: [v for p in parts for v in p.rest[name]] for name in parts[0].rest}
    logp = [v for p in parts for v in p.logp_sum]
    return ProbeEffects(logp, torch.cat([p.predicted for p in parts]), kernel, rest)
