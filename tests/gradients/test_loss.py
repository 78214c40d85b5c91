"""The chunked SFT loss against the model's own loss and autograd through materialised logits."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lg_pipeline.gradients import loss as loss_module
from lg_pipeline.gradients.encoding import IGNORE_INDEX
from lg_pipeline.gradients.loss import ChunkedLinearCrossEntropy, chunked_head, per_example_loss, response_losses
from tests.helpers.builders import MODEL_KINDS, VOCAB, make_model

pytestmark = pytest.mark.usefixtures("single_thread")


def _batch(lengths: list[int], prompts: list[int], seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    width = max(lengths)
    ids = torch.randint(3, len(VOCAB), (len(lengths), width), generator=gen)
    mask = torch.zeros_like(ids)
    labels = torch.full_like(ids, IGNORE_INDEX)
    for b, (n, p) in enumerate(zip(lengths, prompts, strict=True)):
        mask[b, :n] = 1
        labels[b, p:n] = ids[b, p:n]
    return ids, mask, labels


def _keep_gradient(into: list):
    """Forward hook: the embeddings' output starts the graph and its gradient lands in `into`."""

    def hook(module, args, out):
        out.requires_grad_(True)
        out.register_hook(into.append)

    return hook


@pytest.mark.parametrize("budget", [loss_module.LOGIT_BUDGET, 3 * len(VOCAB) + 5], ids=["one-chunk", "many-chunks"])
@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_chunked_losses_and_input_gradients_equal_the_materialised_ones(kind, budget, monkeypatch):
    """Per-example losses equal the model's own loss; d(sum of losses)/d(embeddings) equals autograd's."""
    monkeypatch.setattr(loss_module, "LOGIT_BUDGET", budget)
    model = make_model(kind)
    assert chunked_head(model)
    ids, mask, labels = _batch([30, 17, 25], [5, 9, 3])
    grads = {}
    for name in ("chunked", "materialised"):
        captured: list[torch.Tensor] = []
        hook = model.get_input_embeddings().register_forward_hook(_keep_gradient(captured))
        try:
            for p in model.parameters():
                p.requires_grad_(False)
            if name == "chunked":
                losses = response_losses(model, ids, mask, labels, {})
            else:
                logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
                losses = per_example_loss(logits, labels)
            losses.sum().backward()
        finally:
            hook.remove()
            for p in model.parameters():
                p.requires_grad_(True)
        grads[name] = (losses.detach(), captured[0])
    for b, n in enumerate([30, 17, 25]):
        own = model(input_ids=ids[b : b + 1, :n], labels=labels[b : b + 1, :n]).loss.item()
        assert grads["chunked"][0][b].item() == pytest.approx(own, rel=1e-5)
    assert torch.allclose(grads["chunked"][1], grads["materialised"][1], rtol=1e-4, atol=1e-7)
    assert grads["chunked"][1].abs().max() > 0


def test_gemma2_soft_capping_is_applied():
    model = make_model("gemma2")
    assert model.config.final_logit_softcapping == 30.0
    ids, mask, labels = _batch([20], [4])
    with torch.no_grad():
        got = response_losses(model, ids, mask, labels, {}).item()
    assert got == pytest.approx(model(input_ids=ids, labels=labels).loss.item(), rel=1e-5)


def test_the_head_weight_is_never_given_a_silent_wrong_gradient():
    hidden, weight = torch.randn(4, 8, requires_grad=True), torch.randn(11, 8, requires_grad=True)
    with pytest.raises(RuntimeError, match="no gradient to the output projection"):
        ChunkedLinearCrossEntropy.apply(hidden, weight, None, torch.tensor([1, 2, 3, 4]), None).sum().backward()


def test_a_model_type_not_known_to_be_a_plain_head_uses_its_own_logits(monkeypatch):
    model = make_model("llama-gqa")
    monkeypatch.setattr(model.config, "model_type", "cohere")
    assert not chunked_head(model)
    ids, mask, labels = _batch([20, 12], [4, 2])
    with torch.no_grad():
        got = response_losses(model, ids, mask, labels, {}).tolist()
    want = [
        model(input_ids=ids[b : b + 1, :n], labels=labels[b : b + 1, :n]).loss.item() for b, n in enumerate([20, 12])
    ]
    assert got == pytest.approx(want, rel=1e-5)


def test_materialised_per_example_loss_is_as_accurate_as_the_models_loss_with_a_large_vocabulary():
    """Confident predictions over a 49k vocabulary (a real model's regime, which tiny random models never reach).

    Reducing over the vocabulary in the (batch, vocab, T) layout is ~1e-3 off here on CPU;
    the model's loss reduces (tokens, vocab) rows.
    """
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 50, 49152, generator=gen) * 2
    labels = torch.randint(0, 49152, (2, 50), generator=gen)
    logits.scatter_(2, labels.roll(-1, 1).unsqueeze(-1), 15.0)  # loss ~0.1
    labels[:, :5] = IGNORE_INDEX
    rows = [(logits[b, :-1], labels[b, 1:]) for b in range(2)]
    expected = [F.cross_entropy(lg, lb, ignore_index=IGNORE_INDEX).item() for lg, lb in rows]
    exact = [F.cross_entropy(lg.double(), lb, ignore_index=IGNORE_INDEX).item() for lg, lb in rows]
    got = per_example_loss(logits, labels).tolist()
    assert got == pytest.approx(expected, rel=1e-6)
    assert got == pytest.approx(exact, rel=3e-4)
