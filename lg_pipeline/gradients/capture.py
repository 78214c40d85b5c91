"""The one owner of hooks on the studied matrices: register, run the backward, release.

A linear layer's per-example gradient is G = Δᵀ X (X: its inputs, Δ: its output gradients, one row
per token), so everything measured from a backward needs only X and Δ per matrix and example. A
`Capture` registers a forward hook on each target layer (keeping X) and a tensor hook on its output;
as each Δ arrives in the backward it hands the batch's (X, Δ) to every *consumer* it was given, then
drops them: what is done with them belongs to the consumer (the engine's statistics in
`gradients/statistics`, the learning-dynamics probes' inner products and kernel, the zero-shot
gradient ordering). One forward and one backward feed them all.

No parameter needs a gradient for that (the backward then skips every weight-gradient GEMM), so the
graph is made to start at the embeddings' output, the backward runs to it with `autograd.grad`, and
no `.grad` is touched: a capture can run inside a training step without disturbing the trainer.
`grad_only_for` is the one "gradients only for these weights" context, `finite_logits` the one
forward hook on the whole model (the runner's NaN guard), and `BatchRecorder` the one forward pre-hook on it (a
trainer's batch, kept for measurements taken inside its step). The shape follows Opacus' `GradSampleModule` (one
owner of hooks) and Kronfluence's trackers (a named lifecycle, one quantity per consumer).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol

from lg_pipeline.gradients.targets import Target


@dataclass(frozen=True)
class Factors:
    """One target's factors for a whole batch, as its output gradient arrives.

    `x` (batch, width, in) and `delta` (batch, width, out) are right-padded like the batch and in the
    model's dtype; pad positions and each sequence's last position carry Δ = 0. `source` identifies
    the input tensor: layers fed the same input (q/k/v, gate/up) have the same one.
    """

    index: int
    x: Any
    delta: Any
    source: tuple[int, int]


class Consumer(Protocol):
    """What is done with the factors: `on_factors` in the backward, `finish` once it is over."""

    def on_factors(self, factors: Factors) -> None: ...

    def finish(self) -> None: ...


class _Calls:
    """A consumer that calls a function with each target's factors and has nothing to finish."""

    def __init__(self, fn: Callable[[Factors], None]):
        self.fn = fn

    def on_factors(self, factors: Factors) -> None:
        self.fn(factors)

    def finish(self) -> None:
        pass


class KeptFactors:
    """A consumer that keeps every target's X and Δ of the batch (the kernel's training side, the benchmark)."""

    def __init__(self) -> None:
        self.factors: dict[int, Factors] = {}

    @property
    def x(self) -> dict[int, Any]:
        return {i: f.x for i, f in self.factors.items()}

    @property
    def delta(self) -> dict[int, Any]:
        return {i: f.delta for i, f in self.factors.items()}

    def on_factors(self, factors: Factors) -> None:
        self.factors[factors.index] = factors

    def finish(self) -> None:
        pass


def consumer(on_factors: Callable[[Factors], None]) -> Consumer:
    """A consumer from a function of each target's factors (for a reduction with nothing to finish)."""
    return _Calls(on_factors)


class Capture:
    """Hooks on `targets` of `model` for one forward/backward of `n_rows` sequences; use as a `with` block.

    Inside the block only `trainable` parameters require a gradient (none by default); every flag
    and hook is restored or removed on leaving it, whatever happens.
    """

    def __init__(
        self,
        model: Any,
        targets: Sequence[Target],
        n_rows: int,
        consumers: Sequence[Consumer] = (),
        trainable: Iterable[str] = (),
    ):
        self.model, self.targets, self.n_rows = model, list(targets), n_rows
        self.consumers, self.trainable = list(consumers), set(trainable)
        self._graph_inputs: list[Any] = []
        # Inputs are identified by id(): hold them so no freed tensor's id is reused by a later layer's input.
        self._inputs: list[Any] = []
        self._handles: list[Any] = []
        self._flags = contextlib.ExitStack()

    def __enter__(self) -> Capture:
        self._flags.enter_context(grad_only_for(self.model, self.trainable))
        try:
            modules = dict(self.model.named_modules())
            for index, target in enumerate(self.targets):
                self._handles.append(modules[target.module_path].register_forward_hook(self._forward_hook(index)))
            self._handles.append(self.model.get_input_embeddings().register_forward_hook(self._start_graph))
        except BaseException:
            self.release()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()

    def backward(self, value: Any, also: Sequence[Any] = ()) -> tuple[Any, ...]:
        """Backward of the scalar `value`: consumers see every target's factors, then finish.

        Returns the gradients of `also` (trainable tensors outside the targets; None where unused).
        """
        import torch

        if not self._graph_inputs:
            raise RuntimeError("no forward ran inside the capture: nothing to take a backward of")
        inputs = [*self._graph_inputs, *also]
        grads = torch.autograd.grad(value, inputs, allow_unused=True)
        for consumer in self.consumers:
            consumer.finish()
        return tuple(grads[len(self._graph_inputs) :])

    def release(self) -> None:
        """Remove every hook and restore every flag; idempotent."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._inputs.clear()
        self._graph_inputs.clear()
        self._flags.close()

    def _start_graph(self, module: Any, args: Any, out: Any) -> None:
        """No weight needs a gradient: the graph starts at the embeddings' output."""
        if not out.requires_grad:
            out.requires_grad_(True)
        self._graph_inputs.append(out)

    def _forward_hook(self, index: int) -> Callable:
        def hook(module: Any, args: Any, output: Any) -> None:
            layer_input = args[0]
            self._inputs.append(layer_input)
            source = (id(layer_input), layer_input._version)
            x = self._per_row(layer_input.detach())
            output.register_hook(lambda grad: self._deliver(index, x, source, grad))

        return hook

    def _per_row(self, t: Any) -> Any:
        """(batch, width, features) whatever the layer saw: OPT-style blocks flatten tokens to 2-D."""
        return t.reshape(self.n_rows, -1, t.shape[-1])

    def _deliver(self, index: int, x: Any, source: tuple[int, int], grad: Any) -> None:
        import torch

        factors = Factors(index, x, self._per_row(grad.detach()), source)
        with torch.no_grad():
            for consumer in self.consumers:
                consumer.on_factors(factors)


@contextlib.contextmanager
def grad_only_for(model: Any, names: Iterable[str] = ()) -> Iterator[None]:
    """Exactly the named parameters require a gradient for the block; every flag comes back after it.

    `.grad` is left alone: a trainer's accumulated gradients survive a measurement taken inside its step.
    """
    saved = {n: p.requires_grad for n, p in model.named_parameters()}
    keep = set(names)
    try:
        for n, p in model.named_parameters():
            p.requires_grad_(n in keep)
        yield
    finally:
        for n, p in model.named_parameters():
            p.requires_grad_(saved[n])


@contextlib.contextmanager
def finite_logits(model: Any) -> Iterator[None]:
    """Fail a batch whose logits hold NaN or inf as "loss is not finite", before the spectra turn it into a
    linear-algebra error (a NaN weight, an fp16 overflow). The engine splits the batch to find the example."""

    def check(_module: Any, _inputs: Any, output: Any) -> None:
        import torch

        logits = getattr(output, "logits", None)
        if logits is not None and not bool(torch.isfinite(logits).all()):
            raise FloatingPointError("loss is not finite (NaN or inf in the model's logits)")

    handle = model.register_forward_hook(check)
    try:
        yield
    finally:
        handle.remove()


class BatchRecorder:
    """Keeps the keyword inputs (`input_ids`, `attention_mask`, `labels`, ...) of each forward of `model` while
    `when()` holds, from construction until `release`: how a callback inside a trainer's step sees the batch the
    trainer fed, without touching the trainer. Inputs only: nothing of the forward's graph is kept."""

    def __init__(self, model: Any, when: Callable[[], bool]):
        self.batches: list[dict[str, Any]] = []
        self._when = when
        self._handle: Any = model.register_forward_pre_hook(self._record, with_kwargs=True)

    def clear(self) -> None:
        self.batches = []

    def release(self) -> None:
        """Remove the hook; idempotent."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def _record(self, _module: Any, _args: Any, kwargs: dict[str, Any]) -> None:
        if self._when():
            self.batches.append(dict(kwargs))
