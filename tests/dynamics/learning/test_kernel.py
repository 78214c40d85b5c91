import pytest

from lg_pipeline.dynamics.learning.kernel import grad_inner
from tests.helpers.builders import MODEL_KINDS, make_model, make_tokenizer
from tests.helpers.dynamics import logp_gradients, loss_gradients, one_step, rows

pytestmark = pytest.mark.slow  # trains (one real optimizer step per case)

def test_factor_kernel_equals_inner_product_of_materialised_gradients():
    import torch

    torch.manual_seed(1)
    x_o, d_o, x_u, d_u = torch.randn(2, 5, 6), torch.randn(2, 5, 3), torch.randn(3, 4, 6), torch.randn(3, 4, 3)
    got = grad_inner(x_o, d_o, x_u, d_u)
    want = torch.tensor(
        [[float(((d_o[p].T @ x_o[p]) * (d_u[u].T @ x_u[u])).sum()) for u in range(3)] for p in range(2)]
    )
    assert torch.allclose(got, want, rtol=1e-5)


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_grad_inner_entries_equal_materialised_inner_products_per_layer(kind, single_thread):
    model, tokenizer = make_model(kind), make_tokenizer()
    before, callback, probes = one_step(model, tokenizer)
    kernel = callback.tables()["kernel"]
    train = {e.example_id: e for e in rows()}
    params = {(t.layer, t.module): t.parameter for t in callback.targets}
    assert set(kernel.example_id) == {"e0", "e1"}  # the first in-order batch, named by its rows
    worst = 0.0
    names = list(params.values())
    for probe in probes:
        _, g_o = logp_gradients(before, tokenizer, probe.as_example(), names)
        for example_id in ("e0", "e1"):
            _, g_u = loss_gradients(before, tokenizer, train[example_id], names)
            got = kernel[(kernel.probe_id == probe.probe_id) & (kernel.example_id == example_id)]
            for row in got.itertuples():
                name = params[row.layer, row.module]
                want = float((g_o[name].double() * g_u[name].double()).sum())
                worst = max(worst, abs(row.grad_inner - want) / max(abs(want), 1e-12))
    assert worst < 1e-4


def test_with_plain_sgd_the_prediction_is_minus_lr_over_batch_times_the_summed_kernel(single_thread):
    model, tokenizer = make_model("qwen2"), make_tokenizer()
    lr, batch = 1e-2, 2
    _, callback, _ = one_step(model, tokenizer, lr=lr, batch_size=batch)
    tables = callback.tables()
    summed = tables["kernel"].groupby(["probe_id", "layer", "module"]).grad_inner.sum() * (-lr / batch)
    predicted = tables["influence"].set_index(["probe_id", "layer", "module"]).predicted_delta
    ratio = (predicted.loc[summed.index] - summed).abs() / summed.abs().clip(lower=1e-9)
    assert ratio.max() < 1e-3
