"""The zero-shot figures: one line per ordering in its fixed colour, a legend that hides no data and is legible at
the UI's inline width, whole-step ticks, and a PNG + PDF at the path asked for."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lg_pipeline.analysis.canvas import MIN_TEXT_PX
from lg_pipeline.dynamics.zero_shot import figures
from lg_pipeline.dynamics.zero_shot.alignment import ALIGNMENT_COLUMNS
from lg_pipeline.dynamics.zero_shot.held_out import ALL_TASKS, LOSS_COLUMNS
from lg_pipeline.dynamics.zero_shot.orderings import ORDERINGS
from lg_pipeline.dynamics.zero_shot.seen_distance import SEEN_COLUMNS
from tests.helpers.figures import capture_saved_figures

pytestmark = pytest.mark.slow  # draws figures
TASKS = ("word_sorting", "gcd", "leg_counting", "basic_arithmetic", "word_sequence_reversal")
STEPS = (0, 2, 4, 6)


def losses(level: str = "none", orderings=ORDERINGS) -> pd.DataFrame:
    rows = []
    for o, ordering in enumerate(orderings):
        for step in STEPS:
            per_task = [3.0 - 0.05 * step * (1 + o / 10) + 0.1 * t for t in range(len(TASKS))]
            rows += [(ordering, step, task, loss, 4) for task, loss in zip(TASKS, per_task, strict=True)]
            rows.append((ordering, step, ALL_TASKS, float(np.mean(per_task)), 4 * len(TASKS)))
    return pd.DataFrame(rows, columns=list(LOSS_COLUMNS)).assign(level=level)


def seen(orderings=ORDERINGS) -> pd.DataFrame:
    rows = [(o, s, t, -0.9 + 0.01 * s, -0.5, -0.1, -0.6) for o in orderings for s in STEPS for t in TASKS]
    return pd.DataFrame(rows, columns=list(SEEN_COLUMNS))


def alignment() -> pd.DataFrame:
    rows = [(f"e{u}", layer, module, f"model.layers.{layer}.self_attn.{module}.weight", 0.1 * layer - u)
            for u in range(3) for layer in range(6) for module in ("q_proj", "k_proj", "v_proj", "o_proj")]  # fmt: skip
    return pd.DataFrame(rows, columns=list(ALIGNMENT_COLUMNS))


def test_every_zero_shot_figure_is_legible_with_integer_ticks_and_writes_png_and_pdf(tmp_path, monkeypatch):
    saved = capture_saved_figures(monkeypatch)
    both = pd.concat([losses("none"), losses("detailed")], ignore_index=True)
    paths = [
        figures.loss_figure(losses(), tmp_path / "m__none__loss.png", "Held-out loss, M, None CoT training"),
        figures.seen_distance_figure(seen(), tmp_path / "m__none__seen.png", "Seen-data distance, M"),
        figures.level_figure(both, tmp_path / "m__levels.png", "M: training level, same orderings"),
        figures.alignment_figure(alignment(), tmp_path / "m__none__alignment.png", "M: ⟨∇L_u, ∇L_test⟩ per layer"),
    ]
    assert [p.name for p in paths] == ["m__none__loss.png", "m__none__seen.png", "m__levels.png",
                                       "m__none__alignment.png"]  # fmt: skip
    assert all(p.is_file() and p.with_suffix(".pdf").read_bytes().startswith(b"%PDF") for p in paths)
    assert len(saved) == len(paths)
    for figure in saved:
        px, text = figure.smallest_text_px()
        assert px >= MIN_TEXT_PX, (figure.fig.get_suptitle(), text, px)
    for figure in saved[:3]:  # every x axis of these counts training steps
        assert figure.step_axes()
        for ax in figure.step_axes():
            low, high = ax.get_xlim()
            assert all(float(t).is_integer() for t in ax.get_xticks() if low <= t <= high)


def test_the_loss_figure_draws_each_ordering_in_its_colour_and_lists_them_below_the_panels(tmp_path, monkeypatch):
    saved = capture_saved_figures(monkeypatch)
    frame = losses(orderings=("rt", "nft", "fft"))
    figures.loss_figure(frame, tmp_path / "loss.png", "Held-out loss")
    fig = saved[0].fig
    panels = [ax for ax in fig.axes if ax.get_lines()]
    assert [ax.get_title() for ax in panels] == ["All held-out tasks", *TASKS]
    first = panels[0]
    colours = [line.get_color() for line in first.get_lines()]
    assert colours == [figures.ordering_color(o) for o in ("rt", "nft", "fft")]
    rt = frame[(frame.ordering == "rt") & (frame.task == ALL_TASKS)].sort_values("step")
    np.testing.assert_allclose(first.get_lines()[0].get_ydata(), rt.loss)
    (legend,) = fig.legends  # one legend, outside the panels
    assert [t.get_text() for t in legend.get_texts()] == ["RT (random)", "NFT (nearest first)", "FFT (farthest first)"]
    assert not any(ax.get_legend() for ax in fig.axes)


def test_the_metrics_figure_puts_loss_beside_the_generation_metrics_with_their_agreement(tmp_path, monkeypatch):
    from lg_pipeline.dynamics.zero_shot.stability import stability_table
    from tests.dynamics.zero_shot.test_stability import hand_run

    saved = capture_saved_figures(monkeypatch)
    frame, metrics = hand_run()
    path = figures.metrics_figure(frame, metrics, tmp_path / "metrics.png", "Loss and generation metrics, M")
    assert path.is_file() and path.with_suffix(".pdf").is_file()
    fig = saved[0].fig
    rows = ["held-out loss", "ROUGE-1", "ROUGE-L", "exact match"]  # no reward measured: no reward row
    assert [ax.get_ylabel() for ax in fig.axes[::2]] == rows
    stability = stability_table(frame, metrics)
    agreement = fig.axes[1].get_lines()[0]
    want = stability[stability.metric == "loss"].sort_values("step").rank_agreement
    np.testing.assert_allclose(agreement.get_ydata(), want)
    rt = frame[(frame.ordering == "rt") & (frame.task == ALL_TASKS)].sort_values("step")
    np.testing.assert_allclose(fig.axes[0].get_lines()[0].get_ydata(), rt.loss)
    px, text = saved[0].smallest_text_px()
    assert px >= MIN_TEXT_PX, (text, px)
    for ax in saved[0].step_axes():
        low, high = ax.get_xlim()
        assert all(float(t).is_integer() for t in ax.get_xticks() if low <= t <= high)
