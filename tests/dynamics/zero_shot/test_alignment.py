"""The gradient ordering's alignments against materialised autograd inner products ⟨∇_W L_u, ∇_W L_test⟩."""

from __future__ import annotations

import pytest

from lg_pipeline.dynamics.zero_shot.alignment import AlignmentConfig, alignments, total_alignment
from lg_pipeline.gradients.targets import find_targets
from tests.helpers.builders import ALL_TARGETS, example, make_model
from tests.helpers.materialised import example_gradients

TRAIN = [example(f"u{i}", 6 + i, 5 + 3 * i) for i in range(5)]
TEST = [example(f"t{j}", 8 + 2 * j, 4 + j) for j in range(3)]


def materialised(model, tokenizer, targets) -> dict[tuple[str, str], float]:
    """One backward per item with every target weight's gradient formed, then the inner products."""
    import torch

    params = dict(model.named_parameters())

    def grads(items, scale):
        total = {t.parameter: torch.zeros_like(params[t.parameter], dtype=torch.float64) for t in targets}
        for e in items:
            _, grad = example_gradients(model, tokenizer, e)
            for t in targets:
                total[t.parameter] += scale * grad[t.parameter].double()
        return total

    test_grad = grads(TEST, 1.0 / len(TEST))
    out = {}
    for e in TRAIN:
        g = grads([e], 1.0)
        for t in targets:
            out[e.example_id, t.parameter] = float((g[t.parameter] * test_grad[t.parameter]).sum())
    model.zero_grad(set_to_none=True)
    return out


@pytest.mark.parametrize("form,batch_size", [("factors", 2), ("pooled", 3), ("auto", 5)])
def test_alignments_equal_materialised_inner_products(tokenizer, single_thread, form, batch_size):
    model = make_model("llama-gqa", seed=1)
    targets = find_targets(model, ALL_TARGETS)
    reference = materialised(model, tokenizer, targets)
    config = AlignmentConfig(targets=ALL_TARGETS, batch_size=batch_size, test_form=form)
    frame = alignments(model, tokenizer, TRAIN, TEST, config)
    assert len(frame) == len(TRAIN) * len(targets)
    scale = max(abs(v) for v in reference.values())
    assert scale > 0
    for row in frame.itertuples():
        ref = reference[row.example_id, row.parameter]
        assert abs(row.alignment - ref) <= 1e-4 * max(abs(ref), 1e-3 * scale), (row.example_id, row.parameter)
    totals = total_alignment(frame, [e.example_id for e in TRAIN])
    for e, total in zip(TRAIN, totals, strict=True):
        ref = sum(v for (u, _), v in reference.items() if u == e.example_id)
        assert abs(total - ref) <= 1e-4 * scale


def test_alignments_leave_the_model_without_gradients(tokenizer, single_thread):
    model = make_model("qwen2", seed=2)
    alignments(model, tokenizer, TRAIN[:2], TEST[:1], AlignmentConfig(batch_size=2))
    assert all(p.grad is None for p in model.parameters())
    assert all(p.requires_grad for p in model.parameters())
