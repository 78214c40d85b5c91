"""Per-example gradient statistics of every studied matrix of a causal LM.

Two methods, same numbers:
- `core` (default): batches of examples, one forward/backward per batch. The capture's
  hooks hand each target layer's input X and output gradient Δ to the statistics
  (`gradients/statistics`, from the factors: `spectra.stacked_factor_stats`). No parameter needs a
  gradient, so the backward skips every weight-gradient GEMM, which pays for forming
  G per example; the vocabulary projection runs only where a label follows, in chunks of
  positions (`lg_pipeline.gradients.loss`), so its memory does not grow with the batch.
- `full-svd`: the study's method, one example per backward and a full SVD of each
  materialised `param.grad`. Kept as the reference for tests and the benchmark.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from lg_pipeline.errors import InputError
from lg_pipeline.example import Example
from lg_pipeline.gradients.capture import Capture, grad_only_for
from lg_pipeline.gradients.encoding import ENCODINGS, IGNORE_INDEX, Encoded, encode, study_drops_system
from lg_pipeline.gradients.padding import encoded_batch
from lg_pipeline.gradients.spectra import matrix_stats
from lg_pipeline.gradients.statistics import (
    MatrixStatistics,
    check_schedule,
    default_schedule,
    default_workers,
    single_threaded_blas,
)
from lg_pipeline.gradients.targets import Target, find_targets
from lg_pipeline.schema import MATRIX_STATS
from lg_pipeline.vocabulary import ATTENTION

log = logging.getLogger(__name__)  # OOM splits; the Dagster compute resource forwards these to the run log
Method = Literal["core", "full-svd"]
# Bump when the numbers the engine produces could change: the UI then marks statistics stale.
# engine-3: the last position (Δ = 0) leaves the factors (exact σ_min = 0), effective and stable rank.
ENGINE_VERSION = "engine-3"


@dataclass(frozen=True)
class EngineConfig:
    """What to compute; the device and dtype are the model's own (chosen when loading it)."""

    method: Method = "core"
    targets: tuple[str, ...] = ATTENTION
    batch_size: int = 4
    max_length: int = 1024
    chat: bool = False
    # Threads for the statistics after the backward (lg_pipeline.gradients.statistics); None: per device
    # (CPU: torch's threads, CUDA: 1). 0 with no schedule set means in the hook (the setting's older meaning).
    stats_workers: int | None = None
    # How text becomes tokens: `pair` (prompt and response apart) or `study` (the study's whole-text
    # rules); see lg_pipeline.gradients.encoding.
    encoding: str = "pair"
    # Padded tokens (examples × longest) per forward/backward: a batch stops growing before it would pass
    # this, so activation memory is bounded whatever `batch_size` is (one example always runs alone).
    # None: per device (`default_token_budget`).
    max_batch_tokens: int | None = None
    # When the statistics are computed: `in-hook` (as each gradient arrives) or `after-backward` (on
    # `stats_workers` threads); the same numbers either way. None: per device (CUDA in-hook, CPU after-backward).
    stats_schedule: str | None = None


@dataclass
class ExampleResult:
    """Outcome for one example: `ok` with one row per target, or `skipped`/`failed` with a reason."""

    example_id: str
    status: str
    reason: str = ""
    rows: list[dict[str, Any]] = field(default_factory=list)


class PassObserver(Protocol):
    """What the engine tells while one forward/backward pass runs, before its examples' results exist: a long
    batch is then not silent (the runner's progress lines)."""

    def pass_started(self, n_examples: int) -> None: ...

    def gradients_arrived(self, done: int, total: int) -> None: ...

    def backward_done(self) -> None: ...

    def matrices_done(self, done: int, total: int) -> None: ...


class _BackwardDone:
    """A capture consumer handed in before the statistics: it counts the targets whose output gradient arrived
    (the backward's progress), and its `finish` comes first once the backward is over."""

    def __init__(self, observer: PassObserver, n_targets: int):
        self.observer, self.n_targets, self.arrived = observer, n_targets, 0

    def on_factors(self, factors: Any) -> None:
        self.arrived += 1
        self.observer.gradients_arrived(self.arrived, self.n_targets)

    def finish(self) -> None:
        self.observer.backward_done()


def compute_gradient_stats(
    model: Any,
    tokenizer: Any,
    examples: Iterable[Example],
    config: EngineConfig = EngineConfig(),
    observer: PassObserver | None = None,
) -> Iterator[ExampleResult]:
    """Yield one result per example, in input order within each batch; `observer` hears each pass's progress."""
    check_config(model, config)
    runner = _BatchRunner(model, find_targets(model, config.targets), config, pad_token_id(tokenizer), observer)
    model.eval()
    drop_system = study_drops_system(str(getattr(model.config, "model_type", "")))
    skipped: list[ExampleResult] = []

    def encoded() -> Iterator[Encoded]:
        for example in examples:
            enc = encode(tokenizer, example, config.chat, config.max_length, config.encoding, drop_system)
            if enc is None:
                reason = f"no response token left within max_length={config.max_length}"
                skipped.append(ExampleResult(example.example_id, "skipped", reason))
            else:
                yield enc

    for batch in pass_groups(encoded(), runner.fits):
        yield from skipped  # those met while the batch was gathered, as soon as it is complete
        skipped.clear()
        yield from runner.run(batch)
    yield from skipped


def pass_groups(items: Iterable[Encoded], fits: Callable[[list[Encoded]], bool]) -> Iterator[list[Encoded]]:
    """Consecutive examples, a group growing while `fits` accepts it (a lone example always forms one)."""
    group: list[Encoded] = []
    for item in items:
        if group and not fits([*group, item]):
            yield group
            group = []
        group.append(item)
    if group:
        yield group


def fits_one_pass(batch: list[Encoded], batch_size: int, token_budget: int) -> bool:
    """Whether these examples may share one forward/backward: few enough, and few enough padded tokens."""
    return len(batch) <= batch_size and len(batch) * max(e.n_tokens for e in batch) <= token_budget


def default_token_budget(device: Any) -> int:
    """Padded tokens per pass when the config leaves it open: 1024 on a CPU, 8192 on an accelerator.

    On 2 CPU cores batching long examples buys nothing and costs memory: four Gemma-3-270M
    Detailed-CoT examples in one padded pass ran slower than one at a time at about twice the
    peak memory (`bench/bench_suite.py` prints both), while short None-CoT examples still share a
    pass. On an accelerator batching pays; 8192 is a guess not yet measured on one.
    """
    return 1024 if getattr(device, "type", str(device)) == "cpu" else 8192


def check_config(model: Any, config: EngineConfig) -> None:
    """Refuse what would give wrong numbers: an unknown encoding, or fp16 weights.

    fp16 runs the backward without loss scaling, so small output gradients underflow to 0
    and the statistics come out wrong without any error; bf16 has fp32's range.
    """
    import torch

    if config.encoding not in ENCODINGS:
        raise InputError(f"encoding '{config.encoding}' is not one of {', '.join(ENCODINGS)}")
    if config.stats_schedule is not None:
        check_schedule(config.stats_schedule)
    if next(model.parameters()).dtype == torch.float16:
        raise InputError("dtype float16: gradients underflow without loss scaling; use bfloat16 or float32")


class _BatchRunner:
    """Runs batches with the configured method, splitting a failing batch so only the bad example fails.

    After an out-of-memory error, later batches are no larger than the half that is tried next.
    """

    def __init__(
        self, model: Any, targets: list[Target], config: EngineConfig, pad_id: int,
        observer: PassObserver | None = None,
    ):
        self.model, self.targets, self.method, self.pad_id = model, targets, config.method, pad_id
        self.observer = observer
        self.batch_size = 1 if config.method == "full-svd" else max(1, config.batch_size)
        device = model_device(model)
        self.token_budget = config.max_batch_tokens or default_token_budget(device)
        self.schedule = stats_schedule(config, device)
        self.workers = default_workers(device) if config.stats_workers is None else max(1, config.stats_workers)

    def fits(self, batch: list[Encoded]) -> bool:
        return fits_one_pass(batch, self.batch_size, self.token_budget)

    def run(self, batch: list[Encoded]) -> list[ExampleResult]:
        try:
            if self.observer is not None:
                self.observer.pass_started(len(batch))
            if self.method == "full-svd":
                return _full_svd_example(self.model, self.targets, batch, self.pad_id, self.observer)
            return _core_batch(self.model, self.targets, batch, self.pad_id, self.schedule, self.workers, self.observer)
        except Exception as exc:  # recorded per example, never swallowed silently
            reason, out_of_memory = f"{type(exc).__name__}: {exc}"[:500], is_out_of_memory(exc)
        # Recover here, outside the `except` block: the exception's traceback holds the failed batch's frames
        # (its activations and autograd graph); Python drops it at the end of the block, so the memory is free
        # before the halves are tried.
        _free_memory(self.model)
        if len(batch) == 1:
            return [ExampleResult(batch[0].example_id, "failed", reason)]
        half = len(batch) // 2
        if out_of_memory:
            self.batch_size = min(self.batch_size, half)
            log.warning(
                "out of memory on a batch of %d: retrying as %d + %d, later batches at most %d",
                len(batch),
                half,
                len(batch) - half,
                self.batch_size,
            )
        return self.run(batch[:half]) + self.run(batch[half:])


def stats_schedule(config: EngineConfig, device: Any) -> str:
    """The configured schedule; else in the hook for `stats_workers=0`, else the device's default."""
    if config.stats_schedule is not None:
        return config.stats_schedule
    return "in-hook" if config.stats_workers == 0 else default_schedule(device)


def is_out_of_memory(exc: BaseException) -> bool:
    """torch.OutOfMemoryError (CUDA) or an allocator failure on CPU."""
    text = str(exc).lower()
    return type(exc).__name__ == "OutOfMemoryError" or "out of memory" in text or "can't allocate memory" in text


def pad_token_id(tokenizer: Any) -> int:
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0):
        if candidate is not None:
            return int(candidate)
    return 0


def _free_memory(model: Any) -> None:
    import torch

    model.zero_grad(set_to_none=True)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def model_device(model: Any):
    return next(model.parameters()).device


def batch_tensors(batch: list[Encoded], pad_id: int, device) -> tuple[Any, Any, Any]:
    """Right-padded ids, attention mask and labels (-100 on prompt and padding): `padding.encoded_batch`'s."""
    padded = encoded_batch(batch, pad_id, device)
    return padded.ids, padded.mask, padded.labels


def _core_batch(
    model: Any, targets: list[Target], batch: list[Encoded], pad_id: int, schedule: str, workers: int = 1,
    observer: PassObserver | None = None,
) -> list[ExampleResult]:
    from lg_pipeline.gradients.loss import response_losses

    padded = encoded_batch(batch, pad_id, model_device(model))
    keep = positions_with_loss(model, padded.labels)
    on_matrices = observer.matrices_done if observer is not None else None
    stats = MatrixStatistics(targets, padded.lengths, schedule, workers, on_matrices)
    consumers = [stats] if observer is None else [_BackwardDone(observer, len(targets)), stats]
    with single_threaded_blas(padded.ids.device), Capture(model, targets, len(batch), consumers) as capture:
        losses = response_losses(model, padded.ids, padded.mask, padded.labels, keep)
        capture.backward(losses.sum())
    # (targets, batch, stats) -> one host transfer for the whole batch.
    table = stats.table().cpu().tolist()
    loss_values = losses.detach().cpu().tolist()
    return [
        _result(e, loss_values[b], targets, [table[i][b] for i in range(len(targets))]) for b, e in enumerate(batch)
    ]


def positions_with_loss(model: Any, labels: Any) -> dict[str, int]:
    """`logits_to_keep`: the vocabulary projection only from the first position that predicts a label.

    Prompt tokens carry no loss, so their logits (and the backward through the largest
    matrix of a small model) are skipped; models without the argument get every position.
    """
    import inspect

    if "logits_to_keep" not in inspect.signature(model.forward).parameters:
        return {}
    labelled = (labels != IGNORE_INDEX).any(0).nonzero()
    first = max(0, int(labelled[0]) - 1) if len(labelled) else 0  # predicts the first labelled token
    return {"logits_to_keep": labels.shape[1] - first}


def _full_svd_example(
    model: Any, targets: list[Target], batch: list[Encoded], pad_id: int, observer: PassObserver | None = None
) -> list[ExampleResult]:
    import torch

    (enc,) = batch
    params = dict(model.named_parameters())
    ids = torch.tensor([enc.input_ids], device=model_device(model))
    labels = torch.tensor([enc.labels()], device=ids.device)
    try:
        with grad_only_for(model, {t.parameter for t in targets}):
            loss = model(input_ids=ids, labels=labels, use_cache=False).loss
            loss.backward()
            if observer is not None:
                observer.backward_done()
            stats = []
            for t in targets:
                stats.append(matrix_stats(params[t.parameter].grad).cpu().tolist())
                if observer is not None:
                    observer.matrices_done(len(stats), len(targets))
    finally:
        model.zero_grad(set_to_none=True)  # the engine's passes own no gradient
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
