"""Per-example gradient statistics of every studied matrix of a causal LM.

Two methods, same numbers:
- `core` (default): batches of examples, one forward/backward per batch. Hooks keep
  each target layer's input X and output gradient Δ; statistics come from the
  factors (see `spectra.factor_stats`). No parameter needs a gradient, so the
  backward skips every weight-gradient GEMM, which pays for forming G per example.
- `full-svd`: the study's method, one example per backward and a full SVD of each
  materialised `param.grad`. Kept as the reference for tests and the benchmark.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from lg_pipeline.encoding import IGNORE_INDEX, Encoded, encode
from lg_pipeline.examples import Example
from lg_pipeline.schema import MATRIX_STATS
from lg_pipeline.spectra import factor_stats, matrix_stats, r_factor
from lg_pipeline.targets import ATTENTION, Target, find_targets

log = logging.getLogger(__name__)  # OOM splits; the Dagster compute resource forwards these to the run log
Method = Literal["core", "full-svd"]
# Bump when the numbers the engine produces could change: the UI then marks statistics stale.
ENGINE_VERSION = "engine-2"


@dataclass(frozen=True)
class EngineConfig:
    """What to compute; the device and dtype are the model's own (chosen when loading it)."""

    method: Method = "core"
    targets: tuple[str, ...] = ATTENTION
    batch_size: int = 4
    max_length: int = 1024
    chat: bool = False


@dataclass
class ExampleResult:
    """Outcome for one example: `ok` with one row per target, or `skipped`/`failed` with a reason."""

    example_id: str
    status: str
    reason: str = ""
    rows: list[dict[str, Any]] = field(default_factory=list)


def compute_gradient_stats(
    model: Any,
    tokenizer: Any,
    examples: Iterable[Example],
    config: EngineConfig = EngineConfig(),
) -> Iterator[ExampleResult]:
    """Yield one result per example, in input order within each batch."""
    targets = find_targets(model, config.targets)
    model.eval()
    batch: list[Encoded] = []
    size = 1 if config.method == "full-svd" else max(1, config.batch_size)
    for example in examples:
        enc = encode(tokenizer, example, config.chat, config.max_length)
        if enc is None:
            yield ExampleResult(
                example.example_id, "skipped", f"no response token left within max_length={config.max_length}"
            )
            continue
        batch.append(enc)
        if len(batch) == size:
            yield from _run_isolating_failures(model, targets, batch, config.method, tokenizer)
            batch = []
    if batch:
        yield from _run_isolating_failures(model, targets, batch, config.method, tokenizer)


def _run_isolating_failures(model, targets, batch, method, tokenizer) -> list[ExampleResult]:
    """Run a batch; on error (out of memory included) split it so only the bad example fails."""
    try:
        runner = _core_batch if method == "core" else _full_svd_example
        return runner(model, targets, batch, _pad_id(tokenizer))
    except Exception as exc:  # recorded per example, never swallowed silently
        _free_memory(model)
        if len(batch) == 1:
            return [ExampleResult(batch[0].example_id, "failed", f"{type(exc).__name__}: {exc}"[:500])]
        half = len(batch) // 2
        if is_out_of_memory(exc):
            log.warning("out of memory on a batch of %d: retrying as %d + %d", len(batch), half, len(batch) - half)
        return _run_isolating_failures(model, targets, batch[:half], method, tokenizer) + _run_isolating_failures(
            model, targets, batch[half:], method, tokenizer
        )


def is_out_of_memory(exc: BaseException) -> bool:
    """torch.OutOfMemoryError (CUDA) or an allocator failure on CPU."""
    text = str(exc).lower()
    return type(exc).__name__ == "OutOfMemoryError" or "out of memory" in text or "can't allocate memory" in text


def _pad_id(tokenizer: Any) -> int:
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0):
        if candidate is not None:
            return int(candidate)
    return 0


def _free_memory(model: Any) -> None:
    import torch

    model.zero_grad(set_to_none=True)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _device(model: Any):
    return next(model.parameters()).device


def _tensors(batch: list[Encoded], pad_id: int, device) -> tuple[Any, Any, Any]:
    """Right-padded ids, attention mask and labels (-100 on prompt and padding)."""
    import torch

    width = max(e.n_tokens for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
    for i, e in enumerate(batch):
        ids[i, : e.n_tokens] = torch.tensor(e.input_ids)
        mask[i, : e.n_tokens] = 1
        labels[i, : e.n_tokens] = torch.tensor(e.labels())
    return ids.to(device), mask.to(device), labels.to(device)


def per_example_loss(logits: Any, labels: Any) -> Any:
    """Mean next-token cross-entropy over each example's response tokens (as `model(...).loss`).

    Computed on (tokens, vocab) rows like the model's own loss: on CPU the (batch, vocab, T)
    layout reduces over the vocabulary less accurately (~1e-4 relative with a 49k vocabulary).
    Labels are shifted rather than logits, so the (batch·T, vocab) rows are a view, not a copy.
    """
    import torch.nn.functional as F

    shifted = F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)  # the last position predicts nothing
    flat = logits.float().reshape(-1, logits.shape[-1])
    ce = F.cross_entropy(flat, shifted.reshape(-1), ignore_index=IGNORE_INDEX, reduction="none")
    return ce.view(shifted.shape).sum(1) / (shifted != IGNORE_INDEX).sum(1)


@contextlib.contextmanager
def _grad_only_for(model: Any, names: set[str]):
    """Temporarily let exactly the named parameters require a gradient."""
    saved = {n: p.requires_grad for n, p in model.named_parameters()}
    try:
        for n, p in model.named_parameters():
            p.requires_grad_(n in names)
        yield
    finally:
        for n, p in model.named_parameters():
            p.requires_grad_(saved[n])
        model.zero_grad(set_to_none=True)


class _FactorCapture:
    """Hooks that compute each target's per-example statistics as its output gradient arrives.

    Layers fed the same input tensor (q/k/v, gate/up) share one QR of it.
    """

    def __init__(self, model: Any, targets: list[Target], lengths: list[int]):
        self.lengths = lengths
        self.stats: dict[int, list[Any]] = {}
        self._r_cache: dict[tuple[int, int, int], Any] = {}
        # Inputs are keyed by id(): hold them so no freed tensor's id is reused by a later layer's input.
        self._inputs: list[Any] = []
        modules = dict(model.named_modules())
        self._handles = [
            modules[t.module_path].register_forward_hook(self._forward_hook(i)) for i, t in enumerate(targets)
        ]
        # No parameter requires a gradient: make the graph start at the embeddings.
        self._handles.append(
            model.get_input_embeddings().register_forward_hook(lambda m, a, out: out.requires_grad_(True))
        )

    def _forward_hook(self, index: int):
        def hook(module, args, output):
            self._inputs.append(args[0])
            x = self._per_example(args[0].detach())
            key = (id(args[0]), args[0]._version)
            output.register_hook(lambda grad: self._on_grad(index, x, key, grad))

        return hook

    def _per_example(self, t: Any) -> Any:
        """(batch, width, features) whatever the layer saw: OPT-style blocks flatten tokens to 2-D."""
        return t.reshape(len(self.lengths), -1, t.shape[-1])

    def _on_grad(self, index: int, x: Any, key: tuple[int, int], grad: Any) -> None:
        import torch

        grad = self._per_example(grad)
        with torch.no_grad():
            self.stats[index] = [
                factor_stats(x[b, :n], grad[b, :n], lambda b=b, n=n: self._shared_r(key, b, x[b, :n]))
                for b, n in enumerate(self.lengths)
            ]

    def _shared_r(self, key: tuple[int, int], b: int, xb: Any) -> Any:
        if (*key, b) not in self._r_cache:
            self._r_cache[(*key, b)] = r_factor(xb)
        return self._r_cache[(*key, b)]

    def close(self) -> None:
        for h in self._handles:
            h.remove()
        self._r_cache.clear()
        self._inputs.clear()


def _core_batch(model: Any, targets: list[Target], batch: list[Encoded], pad_id: int) -> list[ExampleResult]:
    import torch

    ids, mask, labels = _tensors(batch, pad_id, _device(model))
    capture = _FactorCapture(model, targets, [e.n_tokens for e in batch])
    try:
        with _grad_only_for(model, set()):
            logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
            losses = per_example_loss(logits, labels)
            del logits
            losses.sum().backward()
    finally:
        capture.close()
    if len(capture.stats) != len(targets):
        raise RuntimeError(f"gradients reached {len(capture.stats)} of {len(targets)} target layers")
    # (targets, batch, stats) -> one host transfer for the whole batch.
    table = torch.stack([torch.stack(capture.stats[i]) for i in range(len(targets))]).cpu().tolist()
    loss_values = losses.detach().cpu().tolist()
    return [
        _result(e, loss_values[b], targets, [table[i][b] for i in range(len(targets))]) for b, e in enumerate(batch)
    ]


def _full_svd_example(model: Any, targets: list[Target], batch: list[Encoded], pad_id: int) -> list[ExampleResult]:
    import torch

    (enc,) = batch
    params = dict(model.named_parameters())
    ids = torch.tensor([enc.input_ids], device=_device(model))
    labels = torch.tensor([enc.labels()], device=ids.device)
    with _grad_only_for(model, {t.parameter for t in targets}):
        loss = model(input_ids=ids, labels=labels, use_cache=False).loss
        loss.backward()
        stats = [matrix_stats(params[t.parameter].grad).cpu().tolist() for t in targets]
    return [_result(enc, float(loss.detach().cpu()), targets, stats)]


def _result(enc: Encoded, loss: float, targets: list[Target], stats: list[list[float]]) -> ExampleResult:
    common = {
        "example_id": enc.example_id,
        "loss": loss,
        "n_tokens": enc.n_tokens,
        "n_response_tokens": enc.n_response_tokens,
    }
    rows = [
        {
            **common,
            "layer": t.layer,
            "module": t.module,
            "parameter": t.parameter,
            **dict(zip(MATRIX_STATS, values, strict=True)),
        }
        for t, values in zip(targets, stats, strict=True)
    ]
    return ExampleResult(enc.example_id, "ok", rows=rows)
