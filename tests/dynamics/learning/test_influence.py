import pytest

from lg_pipeline.dynamics.learning.influence import predicted_delta, r_squared
from tests.helpers.builders import MODEL_KINDS, make_model, make_tokenizer
from tests.helpers.dynamics import logp_gradients, one_step

pytestmark = pytest.mark.slow  # trains (one real optimizer step per case)

def test_factor_inner_product_equals_the_materialised_one():
    import torch

    torch.manual_seed(0)
    x, delta, update = torch.randn(3, 7, 5), torch.randn(3, 7, 4), torch.randn(4, 5)
    expected = torch.stack([(delta[b].T @ x[b] * update).sum() for b in range(3)])
    assert torch.allclose(predicted_delta(x, delta, update), expected, rtol=1e-5)


@pytest.mark.parametrize("kind", MODEL_KINDS)
@pytest.mark.parametrize("trainable", ["attention", "all"])
def test_predicted_delta_of_every_matrix_equals_autograd_gradient_dot_actual_update(kind, trainable, single_thread):
    model, tokenizer = make_model(kind), make_tokenizer()
    before, callback, probes = one_step(model, tokenizer, trainable=trainable)
    influence = callback.tables()["influence"]
    after = dict(model.named_parameters())
    names = sorted(set(influence.parameter))
    if trainable == "all":  # every trained parameter is decomposed: the studied matrices and the rest
        assert set(names) == {n for n, _ in model.named_parameters()}
    worst = 0.0
    for probe in probes:
        _, grads = logp_gradients(before, tokenizer, probe.as_example(), names)
        got = influence[influence.probe_id == probe.probe_id].set_index("parameter").predicted_delta
        for name in names:
            update = after[name].detach().double() - dict(before.named_parameters())[name].detach().double()
            want = float((grads[name].double() * update).sum())
            if abs(want) > 1e-9:
                worst = max(worst, abs(got[name] - want) / abs(want))
    assert worst < 1e-4


def test_summed_prediction_explains_the_measured_change_at_a_tiny_learning_rate(single_thread):
    model, tokenizer = make_model("llama-gqa"), make_tokenizer()
    _, callback, _ = one_step(model, tokenizer, lr=1e-4)
    summary = callback.tables()["influence_summary"]
    assert summary.measured_delta.abs().max() > 1e-4  # something moved: the R² below is not vacuous
    assert r_squared(summary.predicted_delta, summary.measured_delta) >= 0.99


def test_r_squared_is_one_for_a_perfect_prediction_and_nan_without_variance():
    assert r_squared([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]) == 1.0
    assert r_squared([0.0, 0.0, 0.0], [1.0, 2.0, 3.0]) < 0
    assert r_squared([1.0, 1.0], [1.0, 1.0]) != r_squared([1.0, 1.0], [1.0, 1.0])
