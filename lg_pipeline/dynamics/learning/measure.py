"""One forward/backward per batch that measures what an update does, reduced in the hooks.

- `train_pass`: a training batch at θ_s, with the engine's loss per example. The engine's
  own `FactorCapture` computes its per-example gradient statistics from the same backward;
  these hooks keep each example's X and Δ for the kernel.
- `probe_pass`: probes at θ_s, f = Σ_b logp_sum_b. As each layer's Δ arrives, the hook turns it
  into the probes' predicted changes ⟨Δᵀ X, U⟩ (and the NTK against the kept training
  factors), then drops it: at most one layer's Δ is alive.
- `logprobs`: log-probabilities only, no gradient.

No weight needs a gradient (the graph starts at the embeddings) and nothing touches `.grad`,
so a pass can run inside a training step without disturbing the trainer's gradients.
Parameters that are not studied linear layers (`rest`: embeddings, norms when everything
trains) get ⟨∇ logp_sum, ΔP⟩ from `autograd.grad`, one probe at a time.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from lg_pipeline.dynamics.learning.influence import predicted_delta
from lg_pipeline.dynamics.learning.kernel import ntk
from lg_pipeline.dynamics.training import evaluating
from lg_pipeline.gradients.capture import FactorCapture
from lg_pipeline.gradients.encoding import IGNORE_INDEX, Encoded
from lg_pipeline.gradients.engine import positions_with_loss, requires_grad_only
from lg_pipeline.gradients.loss import kept_labels, per_example_loss, response_ce_sums
from lg_pipeline.gradients.targets import Target


@dataclass
class Batch:
    """Right-padded token ids, attention mask and labels of some encoded sequences."""

    ids: Any
    mask: Any
    labels: Any
    lengths: list[int]

    @property
    def n_response_tokens(self) -> list[int]:
        return (self.labels != IGNORE_INDEX).sum(1).tolist()


def to_batch(encoded: Sequence[Encoded], pad_id: int, device: Any) -> Batch:
    import torch

    width = max(e.n_tokens for e in encoded)
    ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    labels = torch.full_like(ids, IGNORE_INDEX)
    for i, e in enumerate(encoded):
        ids[i, : e.n_tokens] = torch.tensor(e.input_ids)
        mask[i, : e.n_tokens] = 1
        labels[i, : e.n_tokens] = torch.tensor(e.labels())
    return Batch(ids.to(device), mask.to(device), labels.to(device), [e.n_tokens for e in encoded])


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


def weights_frozen(model: Any, except_names: Sequence[str] = ()) -> contextlib.AbstractContextManager[None]:
    """No parameter requires a gradient except `except_names`; flags restored, `.grad` left alone."""
    return requires_grad_only(model, except_names)


class LayerHooks:
    """Forward hooks on the studied layers; `on_grad(index, x, delta)` runs as each Δ arrives.

    x and delta are (batch, width, features) whatever the layer saw; the embeddings' output is
    made to require a gradient so the graph exists even when no weight does.
    """

    def __init__(self, model: Any, targets: Sequence[Target], n_rows: int, on_grad: Callable[[int, Any, Any], None]):
        self.n_rows, self.on_grad = n_rows, on_grad
        self.embedded: list[Any] = []
        modules = dict(model.named_modules())
        self._handles = [modules[t.module_path].register_forward_hook(self._hook(i)) for i, t in enumerate(targets)]
        self._handles.append(model.get_input_embeddings().register_forward_hook(self._start_graph))

    def _start_graph(self, module, args, out):
        if not out.requires_grad:
            out.requires_grad_(True)
        self.embedded.append(out)

    def _hook(self, index: int) -> Callable:
        def hook(module, args, output):
            x = args[0].detach().reshape(self.n_rows, -1, args[0].shape[-1])
            output.register_hook(lambda g: self.on_grad(index, x, g.reshape(self.n_rows, -1, g.shape[-1])))

        return hook

    def close(self) -> None:
        for h in self._handles:
            h.remove()
        self.embedded.clear()


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

    def keep(index, x, delta):
        out.x[index], out.delta[index] = x, delta.detach()

    n = len(batch.lengths)
    hooks = LayerHooks(model, targets, n, keep)
    stats = FactorCapture(model, list(targets), list(batch.lengths), workers=0)
    try:
        with evaluating(model), weights_frozen(model), torch.enable_grad():
            logits, labels = _logits(model, batch)
            losses = per_example_loss(logits, labels)
            del logits
            torch.autograd.grad(losses.sum(), hooks.embedded)
        stats.finish()
    finally:
        stats.close()
        hooks.close()
    out.losses = losses.detach().cpu().tolist()
    out.stats = {k: v.cpu().tolist() for k, v in stats.stats.items()}
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

    def reduce(index, x, delta):
        with torch.no_grad():
            predicted[:, index] = predicted_delta(x, delta, updates[index]).double().cpu()
            if kernel is not None:
                kernel[:, :, index] = ntk(x, delta, train.x[index], train.delta[index]).double().cpu()

    hooks = LayerHooks(model, targets, n, reduce)
    params = [p for p, _ in rest.values()]
    try:
        with evaluating(model), weights_frozen(model, list(rest)), torch.enable_grad():
            logits, labels = _logits(model, batch)
            logp = response_logp_sum(logits, labels)
            del logits
            grads = torch.autograd.grad(logp.sum(), hooks.embedded + params, allow_unused=True)
    finally:
        hooks.close()
    rest_effect = {}
    for (name, (_, update)), grad in zip(rest.items(), grads[len(grads) - len(params) :], strict=True):
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
