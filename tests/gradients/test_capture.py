"""The one capture: every target's (X, Δ) reaches every consumer once, and the block leaves the model as it was."""

from __future__ import annotations

import pytest
import torch

from lg_pipeline.gradients.capture import (
    BatchRecorder,
    Capture,
    KeptFactors,
    consumer,
    finite_logits,
    grad_only_for,
)
from lg_pipeline.gradients.encoding import encode
from lg_pipeline.gradients.loss import per_example_loss
from lg_pipeline.gradients.padding import encoded_batch
from lg_pipeline.gradients.targets import find_targets
from tests.helpers.builders import ALL_TARGETS, example, make_model

pytestmark = pytest.mark.usefixtures("single_thread")

EXAMPLES = [example("a", 6, 14), example("b", 9, 30), example("c", 4, 7)]


def batch_of(tokenizer):
    return encoded_batch([encode(tokenizer, e, False, 1024) for e in EXAMPLES], tokenizer.pad_token_id, "cpu")


def losses_of(model, batch):
    return per_example_loss(model(input_ids=batch.ids, attention_mask=batch.mask).logits, batch.labels)


class Recording(KeptFactors):
    """Kept factors, and how often each target came and `finish` was called."""

    def __init__(self):
        super().__init__()
        self.arrivals: list[int] = []
        self.finished = 0

    def on_factors(self, factors):
        self.arrivals.append(factors.index)
        super().on_factors(factors)

    def finish(self):
        self.finished += 1


def test_each_targets_factors_give_its_weight_gradient_exactly(tokenizer):
    """Σ_b Δ_bᵀ X_b of the captured factors is the weight's autograd gradient of the batch's summed loss."""
    model = make_model("llama-gqa")
    targets = find_targets(model, ALL_TARGETS)
    batch = batch_of(tokenizer)
    first, second = Recording(), Recording()
    with Capture(model, targets, len(EXAMPLES), [first, second]) as capture:
        capture.backward(losses_of(model, batch).sum())
    assert sorted(first.arrivals) == list(range(len(targets))) == sorted(second.arrivals)
    assert first.finished == second.finished == 1
    params = dict(model.named_parameters())
    with grad_only_for(model, [t.parameter for t in targets]):
        losses_of(model, batch).sum().backward()
    for i, t in enumerate(targets):
        x, delta = first.x[i].double(), first.delta[i].double()
        assert x.shape[:2] == delta.shape[:2] == batch.ids.shape
        factored = torch.einsum("bto,bti->oi", delta, x)
        want = params[t.parameter].grad.double()
        assert float((factored - want).abs().max()) <= 1e-5 * float(want.abs().max()), t.parameter
    model.zero_grad(set_to_none=True)


def test_pad_positions_and_each_last_position_carry_no_gradient(tokenizer):
    model = make_model("qwen2")
    batch = batch_of(tokenizer)
    kept = KeptFactors()
    with Capture(model, find_targets(model), len(EXAMPLES), [kept]) as capture:
        capture.backward(losses_of(model, batch).sum())
    for delta in kept.delta.values():
        for b, n in enumerate(batch.lengths):
            assert torch.count_nonzero(delta[b, n - 1 :]) == 0
            assert torch.count_nonzero(delta[b, : n - 1]) > 0


def test_the_block_restores_flags_removes_hooks_and_leaves_grad_alone(tokenizer):
    model = make_model("llama-gqa")
    params = dict(model.named_parameters())
    frozen = "model.norm.weight"
    params[frozen].requires_grad_(False)
    marker = torch.full_like(params["model.layers.0.self_attn.q_proj.weight"], 3.0)
    params["model.layers.0.self_attn.q_proj.weight"].grad = marker.clone()  # a trainer's accumulated gradient
    seen = []
    with pytest.raises(ValueError, match="inside"):
        with Capture(model, find_targets(model), len(EXAMPLES), [consumer(seen.append)]):
            assert not any(p.requires_grad for p in model.parameters())
            raise ValueError("inside the block")
    batch = batch_of(tokenizer)
    with Capture(model, find_targets(model), len(EXAMPLES), [consumer(seen.append)]) as capture:
        capture.backward(losses_of(model, batch).sum())
    assert seen, "the consumer was never called"
    assert torch.equal(params["model.layers.0.self_attn.q_proj.weight"].grad, marker)
    assert all(p.grad is None for n, p in params.items() if n != "model.layers.0.self_attn.q_proj.weight")
    assert all(p.requires_grad for n, p in params.items() if n != frozen) and not params[frozen].requires_grad
    count = len(seen)
    losses_of(model, batch).sum().backward()  # hooks gone: nothing more reaches the consumer
    assert len(seen) == count


def test_trainable_parameters_outside_the_targets_get_their_gradient_back(tokenizer):
    model = make_model("llama-gqa")
    batch = batch_of(tokenizer)
    norm = dict(model.named_parameters())["model.norm.weight"]
    with Capture(model, find_targets(model), len(EXAMPLES), trainable=["model.norm.weight"]) as capture:
        (got,) = capture.backward(losses_of(model, batch).sum(), also=[norm])
    assert norm.grad is None
    with grad_only_for(model, ["model.norm.weight"]):
        (want,) = torch.autograd.grad(losses_of(model, batch).sum(), [norm])
    assert torch.allclose(got, want, rtol=1e-6)


def test_a_backward_without_a_forward_inside_the_block_is_refused():
    model = make_model("llama-gqa")
    with Capture(model, find_targets(model), 1) as capture, pytest.raises(RuntimeError, match="no forward"):
        capture.backward(torch.ones((), requires_grad=True))


def test_finite_logits_fails_a_batch_with_nan_logits(tokenizer):
    model = make_model("llama-gqa")
    batch = batch_of(tokenizer)
    with torch.no_grad():
        model.lm_head.weight[0, 0] = float("nan")
    with finite_logits(model), pytest.raises(FloatingPointError, match="not finite"):
        model(input_ids=batch.ids, attention_mask=batch.mask)
    model(input_ids=batch.ids, attention_mask=batch.mask)  # the hook is gone afterwards


def test_the_batch_recorder_keeps_the_inputs_only_while_asked_and_leaves_no_hook_behind():
    model = make_model("llama-gqa")
    ids = torch.tensor([[3, 4, 5]])
    on = [False]
    recorder = BatchRecorder(model, lambda: on[0])
    model(input_ids=ids)
    assert recorder.batches == []
    on[0] = True
    model(input_ids=ids, attention_mask=torch.ones_like(ids))
    assert len(recorder.batches) == 1 and torch.equal(recorder.batches[0]["input_ids"], ids)
    assert set(recorder.batches[0]) >= {"input_ids", "attention_mask"}
    recorder.clear()
    assert recorder.batches == []
    recorder.release()
    recorder.release()  # idempotent
    model(input_ids=ids)
    assert recorder.batches == [] and not model._forward_pre_hooks
