"""Probability concentration and the DPO pair statistics against plain materialised computations."""

import copy

import pytest

from lg_pipeline.dynamics.learning.measure import CONCENTRATION, PairedRows, concentration
from lg_pipeline.gradients.capture import Factors
from lg_pipeline.gradients.statistics import MatrixStatistics
from lg_pipeline.gradients.targets import Target
from lg_pipeline.schema import MATRIX_STATS


def test_concentration_equals_explicit_softmax_jacobian_entropy_and_residual():
    import torch

    torch.manual_seed(0)
    vocab = 7
    logits = torch.randn(2, 5, vocab) * 3
    labels = torch.tensor([[-100, -100, 3, 1, 4], [-100, 2, 6, -100, -100]])  # row 1: right-padded
    got = concentration(logits, labels)
    for b in range(2):
        positions = [t for t in range(4) if labels[b, t + 1] != -100]  # position t predicts token t+1
        want = {c: [] for c in CONCENTRATION}
        for t in positions:
            p = torch.softmax(logits[b, t].double(), -1)
            jacobian = torch.eye(vocab, dtype=torch.float64) - torch.ones(vocab, 1, dtype=torch.float64) * p[None]
            want["max_prob_mean"].append(float(p.max()))
            want["entropy_mean"].append(float(torch.distributions.Categorical(probs=p).entropy()))
            want["a_norm_mean"].append(float(torch.linalg.matrix_norm(jacobian, "fro")))
            e = torch.zeros(vocab, dtype=torch.float64)
            e[labels[b, t + 1]] = 1
            want["residual_norm_mean"].append(float(torch.linalg.vector_norm(p - e)))
        for c in CONCENTRATION:
            assert got[c][b] == pytest.approx(sum(want[c]) / len(want[c]), rel=1e-5), c
    assert all(0 <= v <= 1 for v in got["max_prob_mean"]) and all(v >= 0 for v in got["entropy_mean"])


def test_paired_rows_give_the_statistics_of_each_pairs_summed_gradient():
    import torch

    torch.manual_seed(2)
    lengths = [5, 3, 4, 6]  # pairs (row 0, row 2) and (row 1, row 3)
    x, delta = torch.randn(4, 6, 8), torch.randn(4, 6, 5)
    for r, n in enumerate(lengths):
        delta[r, n - 1 :] = 0  # the last position predicts nothing, padding carries nothing
    target = Target("w", "m", 0, "m")
    pair_lengths = [lengths[0] + lengths[2] - 1, lengths[1] + lengths[3] - 1]
    stats = MatrixStatistics([target], pair_lengths)
    paired = PairedRows(stats, lengths)
    paired.on_factors(Factors(0, x, delta, (0, 0)))
    paired.finish()
    table = stats.table()[0]
    for u, (c, r) in enumerate(((0, 2), (1, 3))):
        g = delta[c].T.double() @ x[c].double() + delta[r].T.double() @ x[r].double()
        s = torch.linalg.svdvals(g)
        named = dict(zip(MATRIX_STATS, table[u].tolist(), strict=True))
        assert named["nuclear_norm"] == pytest.approx(float(s.sum()), rel=1e-4)
        assert named["sigma_max"] == pytest.approx(float(s.max()), rel=1e-4)
        assert named["frobenius_norm"] == pytest.approx(float(torch.linalg.matrix_norm(g)), rel=1e-4)


@pytest.mark.slow  # trains one DPO step
def test_dpo_shares_equal_materialised_chosen_and_rejected_terms_and_add_up(single_thread):
    """−lr/B Σ_u ⟨∇ logp(o), ∇_θ ℓ_u⟩ with ℓ_u TRL's sigmoid loss on θ_0, one response held fixed for each term."""
    import torch
    import torch.nn.functional as F

    from lg_pipeline.dynamics.learning.callback import DynamicsCallback
    from lg_pipeline.dynamics.learning.probes import build_probes
    from lg_pipeline.dynamics.training import TrainSettings, fine_tune
    from tests.helpers.builders import make_model, make_tokenizer
    from tests.helpers.dynamics import logp_gradients, rows, sequence_logp, wrong_rows

    model, tokenizer = make_model("qwen2"), make_tokenizer()
    before = copy.deepcopy(model)
    lr, beta, batch = 1e-2, 0.5, 2
    probes = build_probes(rows(), 3, batch, seed=0, wrong=wrong_rows())
    callback = DynamicsCallback(tokenizer, probes, eval_every=1, train_examples=rows(), dpo_beta=beta)
    config = TrainSettings(steps=1, batch_size=batch, learning_rate=lr, objective="dpo", dpo_beta=beta)
    fine_tune(model, tokenizer, rows(), config, callbacks=[callback], rejected=wrong_rows())
    tables = callback.tables()
    names = [t.parameter for t in callback.targets]
    params = dict(before.named_parameters())
    for p in before.parameters():
        p.requires_grad_(False)
    wanted = [params[n].requires_grad_(True) for n in names]
    terms = {"chosen": [torch.zeros_like(p) for p in wanted], "rejected": [torch.zeros_like(p) for p in wanted]}
    for good, bad in zip(rows()[:batch], wrong_rows()[:batch], strict=True):
        with torch.no_grad():
            ref_good, ref_bad = sequence_logp(before, tokenizer, good), sequence_logp(before, tokenizer, bad)
        for term in terms:
            lp_good, lp_bad = sequence_logp(before, tokenizer, good), sequence_logp(before, tokenizer, bad)
            held = lp_bad.detach() if term == "chosen" else lp_good.detach()
            pair = (lp_good, held) if term == "chosen" else (held, lp_bad)
            loss = -F.logsigmoid(beta * ((pair[0] - ref_good) - (pair[1] - ref_bad)))
            for acc, g in zip(terms[term], torch.autograd.grad(loss, wanted), strict=True):
                acc += g
    summary = tables["influence_summary"].set_index("probe_id")
    worst = 0.0
    for probe in probes:
        _, g_o = logp_gradients(before, tokenizer, probe.as_example(), names)
        row = summary.loc[probe.probe_id]
        for term in terms:
            pairs = zip(names, terms[term], strict=True)
            want = -lr / batch * sum(float((g_o[n].double() * g.double()).sum()) for n, g in pairs)
            worst = max(worst, abs(row[f"{term}_share"] - want))
        worst = max(worst, abs(row.chosen_share + row.rejected_share - row.predicted_delta))
    assert worst < 1e-4
    kernel = tables["kernel"]
    assert set(kernel.example_id) == {"e0", "e1"}
    assert (kernel.grad_inner - kernel.grad_inner_chosen - kernel.grad_inner_rejected).abs().max() < 1e-6
    residuals = tables["train_residuals"]
    assert set(residuals.term) == {"chosen", "rejected"} and (residuals.residual_norm_mean > 0).all()
    assert len(tables["train_gradient_stats"]) == batch * len(names)
