"""The learning-dynamics figures: what they compute from the run tables, how they label DPO, and that every figure
is legible at the UI's inline width with whole-step ticks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lg_pipeline.dynamics.learning import figures
from tests.helpers.figures import capture_saved_figures

TYPES = ("trained", "wrong", "held_out", "other_prompt", "shuffled_words", "irrelevant", "other_level:detailed",
         "greedy")
CONCENTRATION = ["max_prob_mean", "entropy_mean", "a_norm_mean", "residual_norm_mean"]
MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")
EVAL_STEPS = (0, 2, 4)
N_LAYERS = 6
STATS_COLUMNS = "step example_id layer module parameter loss n_tokens n_response_tokens nuclear_norm".split()


def run_tables(objective: str = "sft", level: str = "none", seed: int = 0, kernel: bool = True) -> dict:
    """A small run's tables as the callback writes them, with the columns the asset adds (model, variant, ...)."""
    rng = np.random.default_rng(seed)
    probes = [(f"p{k}-{t}", t, 10 + 7 * k + 3 * i) for k in range(2) for i, t in enumerate(TYPES)]
    logprobs, summary, influence, kern, stats, greedy_now = [], [], [], [], [], []
    for step in EVAL_STEPS:
        for probe_id, probe_type, n_resp in probes:
            rise = 2.0 if probe_type == "trained" else (-1.5 if probe_type == "wrong" else 0.3)
            for s in (step, step + 1):
                logp = -3.0 * n_resp + rise * s
                peaked = 0.2 + 0.05 * s if probe_type == "greedy" else 0.2
                logprobs.append((s, probe_id, probe_type, logp, logp / n_resp, n_resp, peaked, 3 - 5 * peaked, 9, 1))
                if probe_type == "greedy" and s == step:
                    greedy_now.append((s, probe_id, logp / n_resp + 0.5, 0.6, 1.0, 9, 1))
            terms = rng.normal(0.1, 0.05, size=(N_LAYERS, len(MODULES)))
            for layer in range(N_LAYERS):
                for m, module in enumerate(MODULES):
                    parameter = f"model.layers.{layer}.self_attn.{module}.weight"
                    influence.append((step, probe_id, layer, module, parameter, float(terms[layer, m])))
                    for u in ("e0", "e1"):
                        kern.append((step, probe_id, u, layer, module, float(rng.normal(1.0, 0.3))))
            influence.append((step, probe_id, -1, "embed_tokens", "model.embed_tokens.weight", 0.01))
            total = float(terms.sum()) + 0.01
            summary.append((step, probe_id, probe_type, total, total + float(rng.normal(0, 0.01))))
        for layer in range(N_LAYERS):
            for module in MODULES:
                stats.append((step, "e0", layer, module, f"model.layers.{layer}.self_attn.{module}.weight",
                              1.5, 40, 20, 5.0 + layer + step))  # fmt: skip
    run = {"model": "m", "variant": f"champ__{level}__correct", "level": level, "objective": objective}
    frames = {
        "logprobs": pd.DataFrame(
            logprobs,
            columns=["step", "probe_id", "probe_type", "logp_sum", "logp_mean", "n_response_tokens", *CONCENTRATION],
        ),
        "greedy_now": pd.DataFrame(greedy_now, columns=["step", "probe_id", "logp_mean", *CONCENTRATION]),
        "influence_summary": pd.DataFrame(
            summary, columns=["step", "probe_id", "probe_type", "predicted_delta", "measured_delta"]
        ),
        "influence": pd.DataFrame(
            influence, columns=["step", "probe_id", "layer", "module", "parameter", "predicted_delta"]
        ),
        "kernel": pd.DataFrame(kern, columns=["step", "probe_id", "example_id", "layer", "module", "grad_inner"]),
        "train_gradient_stats": pd.DataFrame(stats, columns=STATS_COLUMNS),
    }
    if not kernel:  # DPO: batches without labels, no kernel and no batch statistics
        frames["kernel"] = frames["kernel"].iloc[:0]
        frames["train_gradient_stats"] = frames["train_gradient_stats"].iloc[:0]
    return {name: frame.assign(**run) for name, frame in frames.items()}


def several_runs() -> dict:
    """One model: SFT at None and Detailed CoT, and DPO at None CoT (no kernel)."""
    runs = [run_tables("sft", "none"), run_tables("sft", "detailed", seed=1), run_tables("dpo", "none", 2, False)]
    return {name: pd.concat([r[name] for r in runs], ignore_index=True) for name in runs[0]}


# --------------------------------------------------------------------------- what the figures compute


def test_the_change_per_token_is_the_summed_change_over_the_probes_response_tokens():
    logprobs = run_tables()["logprobs"]
    changes = figures.logprob_changes(logprobs)
    one = changes[changes.probe_id == "p1-trained"].set_index("step")
    first = logprobs[logprobs.probe_id == "p1-trained"].set_index("step").logp_sum
    np.testing.assert_allclose(one.change, first - first.loc[0])
    n = int(one.n_response_tokens.iloc[0])
    assert n == 17 and one.change.loc[5] == pytest.approx(2.0 * 5)
    np.testing.assert_allclose(one.change_per_token, one.change / n)
    assert (changes[changes.step == 0].change == 0).all()


def test_under_dpo_the_trained_and_wrong_responses_are_named_chosen_and_rejected():
    assert figures.probe_label("trained", ["dpo"]) == "chosen"
    assert figures.probe_label("wrong", ["dpo"]) == "rejected"
    assert figures.probe_label("trained", ["sft"]) == "trained"
    assert figures.probe_label("held_out", ["dpo"]) == "held_out"
    assert figures.probe_label("wrong", ["sft", "dpo"]) == "wrong (DPO: rejected)"


def test_kernel_terms_are_the_means_over_probes_and_steps_of_each_layer_and_module():
    tables = run_tables()
    terms = figures.kernel_terms(tables["influence"], tables["kernel"], tables["influence_summary"])
    kernel, influence = tables["kernel"], tables["influence"]
    wrong = kernel.probe_id.str.endswith("-wrong") & (kernel.layer == 3) & (kernel.module == "v_proj")
    # Σ over the batch, mean over the rest
    expected = kernel[wrong].groupby(["step", "probe_id"]).grad_inner.sum().mean()
    got = terms.set_index(["quantity", "probe_type", "module", "layer"]).value
    assert got.loc[("kernel", "wrong", "v_proj", 3)] == pytest.approx(expected)
    held = influence.probe_id.str.endswith("-held_out") & (influence.layer == 0) & (influence.module == "q_proj")
    assert got.loc[("term", "held_out", "q_proj", 0)] == pytest.approx(influence[held].predicted_delta.mean())
    assert set(terms.module) == set(MODULES)  # the embedding's term is not a studied matrix
    no_kernel = figures.kernel_terms(influence, kernel.iloc[:0], tables["influence_summary"])
    assert set(no_kernel.quantity) == {"term"}


def test_kernel_terms_keep_a_studied_matrix_of_another_family_but_no_norm():
    tables = run_tables()
    other = {"q_proj": "fc1", "k_proj": "input_layernorm"}
    influence = tables["influence"].assign(module=tables["influence"].module.replace(other))
    kernel = tables["kernel"][tables["kernel"].module != "k_proj"].replace({"module": {"q_proj": "fc1"}})
    terms = figures.kernel_terms(influence, kernel, tables["influence_summary"])
    assert set(terms[terms.quantity == "term"].module) == {"fc1", "v_proj", "o_proj"}
    assert set(terms[terms.quantity == "kernel"].module) == {"fc1", "v_proj", "o_proj"}


def test_layer_shares_of_a_probe_add_up_to_one_in_absolute_value():
    tables = run_tables()
    shares = figures.layer_shares(tables["influence"], tables["influence_summary"])
    positive = shares.groupby(["probe_type", "step"]).share.apply(lambda v: v.abs().sum())
    np.testing.assert_allclose(positive, 1.0)  # every synthetic term is positive: no cancellation
    assert figures.thirds(N_LAYERS) == [("early", range(0, 2)), ("middle", range(2, 4)), ("late", range(4, 6))]


# --------------------------------------------------------------------------- drawn


@pytest.mark.slow  # draws figures
def test_every_figure_of_a_model_is_drawn_legible_with_integer_ticks(tmp_path, monkeypatch):
    from lg_pipeline.analysis.canvas import MIN_TEXT_PX

    saved = capture_saved_figures(monkeypatch)
    pngs = figures.draw_figures(several_runs(), tmp_path, "m")
    assert set(pngs) == {
        "log-probabilities",
        "predicted vs measured",
        "nuclear norms",
        "squeezing",
        "layer shares champ__none__correct sft",
        "layer shares champ__detailed__correct sft",
        "layer shares champ__none__correct dpo",
        "kernel and terms champ__none__correct sft",
        "kernel and terms champ__detailed__correct sft",
        "kernel and terms champ__none__correct dpo",
    }
    for png in pngs.values():
        assert png.is_file() and png.with_suffix(".pdf").is_file()
    assert len(saved) == len(pngs)
    for figure in saved:
        px, text = figure.smallest_text_px()
        assert px >= MIN_TEXT_PX, (figure.fig.get_suptitle(), text, px)
        for ax in figure.step_axes():
            low, high = ax.get_xlim()
            ticks = [t for t in ax.get_xticks() if low <= t <= high]
            assert ticks and all(float(t).is_integer() for t in ticks), (ax.get_title(), ticks)


@pytest.mark.slow  # draws figures
def test_log_probability_curves_show_the_sum_and_per_token_and_name_dpo_chosen_and_rejected(tmp_path, monkeypatch):
    saved = capture_saved_figures(monkeypatch)
    tables = several_runs()
    figures.plot_logprob_curves(tables["logprobs"], "m", tmp_path / "lp")
    fig = saved[0].fig
    titles = [ax.get_title().replace("\n", " ") for ax in fig.axes]
    columns = ["SFT · summed", "SFT · per token", "DPO · summed", "DPO · per token"]
    assert titles == [f"{level} · {column}" for level in ("None CoT", "Detailed CoT") for column in columns]
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "trained (DPO: chosen)" in labels and "wrong (DPO: rejected)" in labels
    changes = figures.logprob_changes(tables["logprobs"])
    dpo = changes[(changes.objective == "dpo") & (changes.probe_type == "wrong")]
    per_token = dpo.groupby("step").change_per_token.mean()
    lines = {tuple(np.round(line.get_ydata(), 9)) for line in fig.axes[3].get_lines()}
    assert tuple(np.round(per_token.to_numpy(), 9)) in lines  # the DPO per-token panel draws the rejected mean
    only_dpo = tables["logprobs"][tables["logprobs"].objective == "dpo"]
    figures.plot_logprob_curves(only_dpo, "m", tmp_path / "dpo")
    labels = [t.get_text() for t in saved[1].fig.legends[0].get_texts()]
    assert labels[:2] == ["chosen", "rejected"] and "trained" not in labels


@pytest.mark.slow  # draws figures
def test_the_kernel_figure_has_a_row_per_quantity_and_says_when_dpo_has_no_kernel(tmp_path, monkeypatch):
    saved = capture_saved_figures(monkeypatch)
    sft, dpo = run_tables(), run_tables("dpo", kernel=False)
    for name, tables in (("sft", sft), ("dpo", dpo)):
        terms = figures.kernel_terms(tables["influence"], tables["kernel"], tables["influence_summary"])
        figures.plot_kernel_terms(terms, name, tmp_path / name, name)
    sft_fig, dpo_fig = saved[0].fig, saved[1].fig
    assert len(sft_fig.axes) == 2 * len(MODULES) and len(dpo_fig.axes) == len(MODULES)
    assert "no kernel" in dpo_fig.get_suptitle() and "no kernel" not in sft_fig.get_suptitle()
    assert "chosen" in [t.get_text() for t in dpo_fig.legends[0].get_texts()]


@pytest.mark.slow  # draws a figure
def test_the_squeezing_figure_puts_sft_beside_dpo_with_greedy_now_and_the_concentration(tmp_path, monkeypatch):
    saved = capture_saved_figures(monkeypatch)
    runs = several_runs()
    figures.plot_squeezing(runs["logprobs"], runs["greedy_now"], "m", tmp_path / "squeeze")
    fig = saved[-1].fig
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == [f"{o} · {q}" for q in figures.SQUEEZE_ROWS.values() for o in ("SFT", "DPO")]
    logprobs = runs["logprobs"]
    greedy = logprobs[(logprobs.objective == "dpo") & (logprobs.probe_type == "greedy")]
    want = greedy.groupby("step").max_prob_mean.mean()
    ax = next(a for a in fig.axes if a.get_title() == "DPO · mean max-token probability")
    drawn = [line for line in ax.get_lines() if line.get_color() == figures.probe_color("greedy")]
    assert list(drawn[0].get_ydata()) == pytest.approx(list(want.values))
    now = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert len(now) == 1 and list(now[0].get_xdata()) == list(EVAL_STEPS)
