"""⟨∇_W L_u, ∇_W L_test⟩ for every training item u and studied matrix W, from the engine's factors.

A step on item u changes the held-out loss by about −η⟨∇L_test, ∇L_u⟩, so these alignments (at step 0) order
the `gradient` ordering. No per-example gradient is formed: the engine's hooks give each item's layer inputs X_u
(T×in) and output gradients Δ_u (T×out), with ∇_W L_u = Δ_uᵀ X_u. L_test is the mean of the test items' losses,
so ∇_W L_test = Δ_cᵀ X_c with the test items' factors stacked (Δ scaled by 1/J). Per matrix, the test side is
kept in whichever form is smaller:
- factors, when T_c·(in+out) ≤ in·out: ⟨Δ_uᵀ X_u, Δ_cᵀ X_c⟩ = ⟨X_u X_cᵀ, Δ_u Δ_cᵀ⟩ (two T_u×T_c products);
- the pooled out×in matrix G = Δ_cᵀ X_c otherwise: ⟨Δ_uᵀ X_u, G⟩ = Σ (Δ_u G) ∘ X_u.
Both are exact; products are taken in float64.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from lg_pipeline.example import Example
from lg_pipeline.gradients.capture import Capture, Factors, consumer
from lg_pipeline.gradients.encoding import Encoded, encode

# The engine's batch layout and loss, so these gradients are the engine's (right padding, response-only labels).
from lg_pipeline.gradients.engine import model_device, pad_token_id, positions_with_loss
from lg_pipeline.gradients.loss import per_example_loss
from lg_pipeline.gradients.padding import encoded_batch
from lg_pipeline.gradients.targets import Target, find_targets
from lg_pipeline.vocabulary import ATTENTION

ALIGNMENT_COLUMNS = ("example_id", "layer", "module", "parameter", "alignment")


@dataclass(frozen=True)
class AlignmentConfig:
    targets: tuple[str, ...] = ATTENTION
    batch_size: int = 4
    max_length: int = 1024
    chat: bool = False
    test_form: str = "auto"  # auto | factors | pooled (tests force each form)


def _encode_all(tokenizer: Any, items: Sequence[Example], config: AlignmentConfig) -> list[Encoded]:
    from lg_pipeline.errors import InputError

    out = []
    for e in items:
        enc = encode(tokenizer, e, config.chat, config.max_length)
        if enc is None:
            raise InputError(f"item {e.example_id!r}: no response token left within max_length={config.max_length}")
        out.append(enc)
    return out


def _backward(model: Any, targets: list[Target], batch: list[Encoded], pad_id: int, scale: float, on_factors) -> None:
    """One forward/backward of Σ scale·L_b through the capture, each example's (X, Δ) of each target to
    `on_factors(index, example, x, delta)`; no parameter gets a gradient."""
    padded = encoded_batch(batch, pad_id, model_device(model))

    def per_example(f: Factors) -> None:
        for b, n in enumerate(padded.lengths):
            on_factors(f.index, b, f.x[b, :n], f.delta[b, :n])

    with Capture(model, targets, len(batch), [consumer(per_example)]) as capture:
        keep = positions_with_loss(model, padded.labels)
        logits = model(input_ids=padded.ids, attention_mask=padded.mask, use_cache=False, **keep).logits
        losses = per_example_loss(logits, padded.labels)
        capture.backward(losses.sum() * scale)


class _TestGradient:
    """∇_W L_test per target, as stacked factors or as the pooled matrix (see the module docstring)."""

    def __init__(self, targets: list[Target], modules: dict[str, Any], n_tokens: int, form: str):
        self.forms = []
        for t in targets:
            w = modules[t.module_path].weight
            out_f, in_f = w.shape
            small = n_tokens * (in_f + out_f) <= in_f * out_f
            self.forms.append({"auto": "factors" if small else "pooled"}.get(form, form))
        self.xs: dict[int, list[Any]] = {}
        self.ds: dict[int, list[Any]] = {}
        self.pooled: dict[int, Any] = {}

    def add(self, index: int, b: int, x: Any, delta: Any) -> None:
        x, delta = x.double(), delta.double()
        if self.forms[index] == "factors":
            self.xs.setdefault(index, []).append(x)
            self.ds.setdefault(index, []).append(delta)
        else:
            g = delta.T @ x
            self.pooled[index] = g if index not in self.pooled else self.pooled[index] + g

    def finish(self) -> None:
        import torch

        self.xs = {i: torch.cat(v) for i, v in self.xs.items()}
        self.ds = {i: torch.cat(v) for i, v in self.ds.items()}

    def inner(self, index: int, x: Any, delta: Any) -> float:
        """⟨Δᵀ X, ∇_W L_test⟩ for one example's factors."""
        x, delta = x.double(), delta.double()
        if self.forms[index] == "factors":
            return float(((x @ self.xs[index].T) * (delta @ self.ds[index].T)).sum())
        return float(((delta @ self.pooled[index]) * x).sum())


def alignments(
    model: Any,
    tokenizer: Any,
    train: Sequence[Example],
    test: Sequence[Example],
    config: AlignmentConfig = AlignmentConfig(),
    progress: Callable[[int, int], None] | None = None,
):
    """Rows (example_id, layer, module, parameter, alignment) for every training item × studied matrix."""
    import pandas as pd

    targets = find_targets(model, config.targets)
    modules = dict(model.named_modules())
    pad_id = pad_token_id(tokenizer)
    was_training = model.training
    model.eval()
    try:
        test_enc = _encode_all(tokenizer, test, config)
        grad_test = _TestGradient(targets, modules, sum(e.n_tokens for e in test_enc), config.test_form)
        for start in range(0, len(test_enc), config.batch_size):
            batch = test_enc[start : start + config.batch_size]
            _backward(model, targets, batch, pad_id, 1.0 / len(test_enc), grad_test.add)
        grad_test.finish()
        train_enc = _encode_all(tokenizer, train, config)
        values: dict[tuple[int, int], float] = {}
        for start in range(0, len(train_enc), config.batch_size):
            batch = train_enc[start : start + config.batch_size]

            def on_factors(index: int, b: int, x: Any, delta: Any, start: int = start) -> None:
                values[start + b, index] = grad_test.inner(index, x, delta)

            _backward(model, targets, batch, pad_id, 1.0, on_factors)
            if progress:
                progress(min(start + config.batch_size, len(train_enc)), len(train_enc))
    finally:
        model.train(was_training)
    rows = [
        {"example_id": e.example_id, "layer": t.layer, "module": t.module, "parameter": t.parameter,
         "alignment": values[u, i]}
        for u, e in enumerate(train_enc)
        for i, t in enumerate(targets)
    ]
    return pd.DataFrame(rows, columns=list(ALIGNMENT_COLUMNS))


def total_alignment(frame, example_ids: Sequence[str]):
    """Σ over the studied matrices, in the order of `example_ids` (numpy array)."""
    totals = frame.groupby("example_id")["alignment"].sum()
    return totals.reindex(list(example_ids)).to_numpy(dtype=float)
