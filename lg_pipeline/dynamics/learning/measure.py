"""One forward/backward per batch that measures what an update does, reduced in the hooks.

- `train_pass`: a training batch at θ_s, with the engine's loss per example. One capture
  (`gradients/capture`) feeds two consumers from the same backward: the engine's statistics
  (`gradients/statistics`) and one that keeps each example's X and Δ for the kernel.
- `probe_pass`: probes at θ_s, f = Σ_b logp_sum_b. As each layer's Δ arrives, a consumer turns it
  into the probes' predicted changes ⟨Δᵀ X, U⟩ (and `grad_inner` against the kept training
  factors), then drops it: at most one layer's Δ is alive.
- `logprobs`: log-probabilities (and the probes' probability concentration), no gradient.
- `greedy_responses`: the model's own greedy continuation of prompts (the `greedy` probes).

Under DPO the training batch holds B chosen rows then B rejected rows (TRL's concatenated batch); the train pass
weights each row's Σ log p by the DPO loss's derivative, so each row's factors are its term's gradient (the chosen
term pushes its response up, the rejected term down) and the kernel splits into the two terms.

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
from lg_pipeline.dynamics.learning.kernel import grad_inner
from lg_pipeline.dynamics.training import evaluating
from lg_pipeline.gradients.capture import Capture, Consumer, Factors, KeptFactors, consumer
from lg_pipeline.gradients.encoding import prompt_ids
from lg_pipeline.gradients.engine import model_device, positions_with_loss
from lg_pipeline.gradients.loss import IGNORE_INDEX, kept_labels, per_example_loss, response_ce_sums
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
    return measured_logprobs(model, batch)[0]


def measured_logprobs(model: Any, batch: Batch) -> tuple[list[float], dict[str, list[float]]]:
    """logp_sum per sequence and its probability concentration (`CONCENTRATION` columns), no gradient."""
    import torch

    with torch.no_grad(), evaluating(model):
        logits, labels = _logits(model, batch)
        return response_logp_sum(logits, labels).cpu().tolist(), concentration(logits, labels)


# Per sequence, means over its response positions (those predicting a response token).
CONCENTRATION = ("max_prob_mean", "entropy_mean", "a_norm_mean", "residual_norm_mean")


def _response_positions(logits: Any, labels: Any) -> tuple[Any, Any]:
    """(batch, T) mask of positions whose next token is a response token, and that token (0 elsewhere)."""
    import torch.nn.functional as F

    labels = kept_labels(logits, labels)
    shifted = F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)
    mask = shifted != IGNORE_INDEX
    return mask, shifted.clamp(min=0)


def concentration(logits: Any, labels: Any) -> dict[str, list[float]]:
    """How peaked π_t = softmax(z_t) is over each sequence's response positions, means per sequence:

    - `max_prob_mean`: max_v π_t(v) (the argmax token's probability, the paper's `argmax_prob`);
    - `entropy_mean`: −Σ_v π_t(v) log π_t(v) (nats);
    - `a_norm_mean`: ‖A_t‖_F of the softmax Jacobian of log π, A_t = I − 1π_tᵀ (Ren & Sutherland's A_o), in
      closed form √(V − 2 + V‖π_t‖²): it rises from √(V−1) (uniform) to √(2V−2) (one-hot);
    - `residual_norm_mean`: ‖π_t − e_{y_t}‖₂, the cross-entropy residual of the sequence's own token (‖G‖).
    Row by row over the vocabulary, in fp32 (a (tokens, vocab) softmax at a time, like the loss).
    """
    import torch

    mask, tokens = _response_positions(logits, labels)
    n = mask.sum(1).clamp(min=1).double()
    vocab = logits.shape[-1]
    out: dict[str, list[float]] = {c: [] for c in CONCENTRATION}
    for b in range(logits.shape[0]):
        rows = logits[b][mask[b]].float()
        logp = torch.log_softmax(rows, dim=-1)
        p = logp.exp()
        top = p.max(-1).values
        entropy = -(p * logp).sum(-1)
        square = (p * p).sum(-1)
        a_norm = torch.sqrt(vocab - 2 + vocab * square)
        own = p.gather(1, tokens[b][mask[b]].unsqueeze(1)).squeeze(1)
        residual = torch.sqrt((square - 2 * own + 1).clamp(min=0))  # ‖π − e_y‖² = ‖π‖² − 2π_y + 1
        for name, value in zip(CONCENTRATION, (top, entropy, a_norm, residual), strict=True):
            out[name].append(float(value.double().sum() / n[b]))
    return out


def greedy_responses(
    model: Any, tokenizer: Any, instructions: Sequence[str], chat: bool, max_new_tokens: int
) -> list[str]:
    """The model's greedy continuation of each prompt (`do_sample=False`), decoded without special tokens.

    One prompt at a time: no padding, so nothing depends on the tokenizer's padding side.
    """
    import torch

    device = model_device(model)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    out = []
    with torch.no_grad(), evaluating(model):
        for instruction in instructions:
            ids = torch.tensor([prompt_ids(tokenizer, instruction, chat)], device=device)
            generated = model.generate(
                input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=max_new_tokens,
                pad_token_id=pad, temperature=None, top_p=None, top_k=None,
            )
            out.append(tokenizer.decode(generated[0, ids.shape[1] :], skip_special_tokens=True))
    return out


@dataclass(frozen=True)
class PreferenceTerms:
    """What the train pass needs of a DPO batch (B chosen rows, then their B rejected rows): β and the reference
    model's logp_sum of each of the 2B rows."""

    beta: float
    reference_logp: Sequence[float]


@dataclass
class TrainFactors:
    """A training batch at θ_s. Per batch row (SFT: an example; DPO: a chosen or rejected row): X and Δ per target
    of that row's term of the loss, `weights` w of the term −w·logp_sum (SFT: 1/response tokens; DPO: chosen
    β·σ(−βh), rejected −β·σ(−βh)) and the rows' `residual_norm`. Per example (DPO: per pair): losses, engine
    statistics, token counts. `pairs`: rows are B chosen then B rejected."""

    x: dict[int, Any] = field(default_factory=dict)
    delta: dict[int, Any] = field(default_factory=dict)
    losses: list[float] = field(default_factory=list)
    stats: dict[tuple[int, int], list[float]] = field(default_factory=dict)  # (target, example) -> MATRIX_STATS
    lengths: list[int] = field(default_factory=list)
    n_response_tokens: list[int] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    residual_norm: list[float] = field(default_factory=list)
    row_response_tokens: list[int] = field(default_factory=list)
    pairs: bool = False


def train_pass(
    model: Any, targets: Sequence[Target], batch: Batch, preference: PreferenceTerms | None = None
) -> TrainFactors:
    """Loss per example, its gradient's factors per target and row, and the engine's statistics of each example.

    SFT: the engine's loss (mean response-token CE). DPO (`preference`): TRL's sigmoid loss −log σ(β h) with
    h = (logp⁺ − ref⁺) − (logp⁻ − ref⁻); each row's backward value is its term −w·logp_sum with w = ∂L/∂(−logp)
    held fixed, so the rows' factors add up to each pair's gradient and the statistics are those of the pair.
    """
    import torch

    device = model_device(model)
    kept = KeptFactors()
    rows = list(batch.lengths)
    n_examples = len(rows) // 2 if preference is not None else len(rows)
    if preference is None:
        lengths, n_resp = rows, batch.n_response_tokens
        stats = MatrixStatistics(targets, rows, default_schedule(device), default_workers(device))
        consumers: list[Consumer] = [kept, stats]
    else:
        lengths = [rows[u] + rows[u + n_examples] for u in range(n_examples)]
        n_resp = [batch.n_response_tokens[u] + batch.n_response_tokens[u + n_examples] for u in range(n_examples)]
        stats = MatrixStatistics(targets, [n - 1 for n in lengths], default_schedule(device), default_workers(device))
        consumers = [kept, PairedRows(stats, rows)]
    out = TrainFactors(lengths=list(lengths), n_response_tokens=list(n_resp), pairs=preference is not None,
                       row_response_tokens=list(batch.n_response_tokens))
    with evaluating(model), torch.enable_grad(), single_threaded_blas(device):
        with Capture(model, targets, len(rows), consumers) as capture:
            logits, labels = _logits(model, batch)
            out.residual_norm = concentration(logits.detach(), labels)["residual_norm_mean"]
            if preference is None:
                losses = per_example_loss(logits, labels)
                del logits
                value = losses.sum()
                out.weights = [1.0 / max(1, n) for n in batch.n_response_tokens]
            else:
                logp = response_logp_sum(logits, labels)
                del logits
                losses, weights = _dpo_terms(logp, preference)
                value = -(weights * logp).sum()
                out.weights = weights.cpu().tolist()
            capture.backward(value)
    out.x, out.delta = kept.x, kept.delta
    out.losses = losses.detach().cpu().tolist()
    table = stats.table().cpu().tolist()
    out.stats = {(i, b): table[i][b] for i in range(len(targets)) for b in range(n_examples)}
    return out


def _dpo_terms(logp: Any, preference: PreferenceTerms) -> tuple[Any, Any]:
    """TRL's sigmoid DPO loss per pair, and each row's weight w (−∂L/∂logp_sum of that row, no gradient)."""
    import torch
    import torch.nn.functional as F

    n = logp.shape[0] // 2
    ref = torch.tensor(list(preference.reference_logp), dtype=logp.dtype, device=logp.device)
    ratio = logp - ref
    h = ratio[:n] - ratio[n:]
    losses = -F.logsigmoid(preference.beta * h)
    pull = (preference.beta * torch.sigmoid(-preference.beta * h)).detach()  # −∂L/∂h
    return losses, torch.cat([pull, -pull])


class PairedRows:
    """Hands `inner` each pair's factors (its chosen row's positions, then its rejected row's, end to end), so that
    Δᵀ X over them is the pair's gradient: the engine's statistics then measure the DPO loss's per-pair gradient.
    Positions that predict nothing (each row's last) are left out; `inner` must take lengths of `a + b + 1` tokens
    for rows of `a + 1` and `b + 1` (its last position is padding)."""

    def __init__(self, inner: Consumer, lengths: Sequence[int]):
        n = len(lengths) // 2
        self.inner, self.n = inner, n
        self.rows = [(lengths[u] - 1, lengths[u + n] - 1) for u in range(n)]

    def on_factors(self, factors: Factors) -> None:
        width = max(a + b for a, b in self.rows) + 1
        parts = []
        for tensor in (factors.x, factors.delta):
            paired = tensor.new_zeros((self.n, width, tensor.shape[-1]))
            for u, (a, b) in enumerate(self.rows):
                paired[u, :a] = tensor[u, :a]
                paired[u, a : a + b] = tensor[u + self.n, :b]
            parts.append(paired)
        self.inner.on_factors(Factors(factors.index, parts[0], parts[1], factors.source))

    def finish(self) -> None:
        self.inner.finish()


@dataclass
class ProbeEffects:
    """Probes at θ_s: logp_sum, predicted change per target (P, n_targets), `grad_inner` against every training
    row (P, rows, n_targets), rest (P,), and the probes' `CONCENTRATION` columns."""

    logp_sum: list[float]
    predicted: Any
    kernel: Any | None
    rest: dict[str, list[float]]
    concentration: dict[str, list[float]] = field(default_factory=dict)


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
    kernel = None if train is None else torch.zeros(n, len(train.weights), len(targets), dtype=torch.float64)

    def reduce(f: Factors) -> None:
        i = f.index
        predicted[:, i] = predicted_delta(f.x, f.delta, updates[i]).double().cpu()
        if kernel is not None:
            kernel[:, :, i] = grad_inner(f.x, f.delta, train.x[i], train.delta[i]).double().cpu()

    params = [p for p, _ in rest.values()]
    with evaluating(model), torch.enable_grad():
        with Capture(model, targets, n, [consumer(reduce)], trainable=rest) as capture:
            logits, labels = _logits(model, batch)
            logp = response_logp_sum(logits, labels)
            peaked = concentration(logits.detach(), labels)
            del logits
            grads = capture.backward(logp.sum(), also=params)
    rest_effect = {}
    for (name, (_, update)), grad in zip(rest.items(), grads, strict=True):
        value = 0.0 if grad is None else float((grad.double() * update.double()).sum())
        rest_effect[name] = [value]
    return ProbeEffects(logp.detach().cpu().tolist(), predicted, kernel, rest_effect, peaked)


def _row(batch: Batch, b: int) -> Batch:
    n = batch.lengths[b]
    return Batch(batch.ids[b : b + 1, :n], batch.mask[b : b + 1, :n], batch.labels[b : b + 1, :n], [n])


def _concat(parts: list[ProbeEffects]) -> ProbeEffects:
    import torch

    kernel = None if parts[0].kernel is None else torch.cat([p.kernel for p in parts])
    rest = {name: [v for p in parts for v in p.rest[name]] for name in parts[0].rest}
    logp = [v for p in parts for v in p.logp_sum]
    peaked = {name: [v for p in parts for v in p.concentration[name]] for name in parts[0].concentration}
    return ProbeEffects(logp, torch.cat([p.predicted for p in parts]), kernel, rest, peaked)
