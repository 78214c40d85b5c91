"""The figure canvas: grids capped at the display width, titles folded to it, fixed module colours, and no text
under 9 px where a figure is shown inline — checked for every figure kind of the analysis."""

from __future__ import annotations

import pandas as pd
import pytest

from lg_pipeline.analysis import canvas, plotting
from lg_pipeline.analysis.canvas import MAX_WIDTH_IN, MIN_TEXT_PX
from lg_pipeline.vocabulary import LEVEL_LABELS, MLP, MODULE_COLORS, MODULE_ORDER
from tests.analysis.test_plotting import REASONING, curves, orders_apart
from tests.helpers.figures import capture_saved_figures

WIKI = {k: LEVEL_LABELS[k] for k in ("len100", "len500", "len1000", "longtail")}
TO_WIKI = {"none": "len100", "simplified": "len500", "detailed": "len1000"}
TO_MLP = {"q_proj": "gate_proj", "k_proj": "up_proj", "v_proj": "down_proj"}


def test_titles_fold_at_spaces_to_the_width_and_never_inside_math():
    text = "SmolLM2-135M Instruct on GSM8K: nuclear norm and ratio $\\sigma_{max}$ / nuclear norm per layer"
    folded = canvas.wrapped(text, width_in=3.0, size_pt=10)
    assert folded.replace("\n", " ") == text
    assert max(map(len, folded.split("\n"))) <= int(3.0 * 72 / (0.55 * 10))
    assert canvas.wrapped("a $x + y$ b " * 6, 1.0, 10).count("$") == 12
    assert all(line.count("$") % 2 == 0 for line in canvas.wrapped("a $x + y$ b " * 6, 1.0, 10).split("\n"))
    assert canvas.wrapped("one\ntwo", 10, 10) == "one\ntwo"  # given line breaks stay


def test_module_colours_and_order_live_beside_the_labels():
    assert canvas.module_color("q_proj") == MODULE_COLORS["q_proj"] == "tab:red"
    assert canvas.module_color("fc1") == canvas.module_color("fc1")  # unknown: stable fallback
    assert canvas.module_label("v_proj") == "Proj V"
    assert MODULE_ORDER[:4] == ("q_proj", "k_proj", "v_proj", "o_proj") and set(MLP) <= set(MODULE_ORDER)
    assert canvas.responses("wrong") == "wrong responses" and canvas.responses(None) == "all responses"


@pytest.mark.slow  # draws figures
def test_a_grid_is_capped_at_the_display_width_and_wrap_hides_spare_cells():
    plt = canvas.pyplot()
    fig, axes = canvas.grid(2, 6)
    assert axes.shape == (2, 6) and fig.get_figwidth() == pytest.approx(MAX_WIDTH_IN)
    plt.close(fig)
    fig, axes = canvas.grid(1, 2)
    assert tuple(fig.get_size_inches()) == (2 * canvas.PANEL_SIZE[0], canvas.PANEL_SIZE[1])  # under the cap: as asked
    plt.close(fig)
    fig, panels = canvas.wrap(6)
    assert len(panels) == 6 and len(fig.axes) == 8  # two rows of four
    assert [ax.axison for ax in fig.axes] == [True] * 6 + [False] * 2
    plt.close(fig)


@pytest.mark.slow  # draws figures
def test_save_figure_writes_png_and_pdf_atomically_and_raises_small_text_to_the_minimum(tmp_path, monkeypatch):
    saved = capture_saved_figures(monkeypatch)
    fig, axes = canvas.grid(1, 4)
    for ax in axes[0]:
        ax.plot([0, 1, 2], [3, 1, 2], label="a line")
        ax.legend(fontsize=5)
        ax.text(1, 2, "a small note", fontsize=4)
        ax.tick_params(labelsize=5)
    paths = canvas.save_figure(fig, tmp_path / "f")
    assert [p.name for p in paths] == ["f.png", "f.pdf"] and paths[1].read_bytes().startswith(b"%PDF")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.pdf", "f.png"]  # no temp files left
    assert canvas.pyplot().get_fignums() == []  # closed
    px, text = saved[0].smallest_text_px()
    assert px >= MIN_TEXT_PX, text
    assert saved[0].width_px > canvas.DISPLAY_WIDTH_PX  # shown scaled down: the raised text accounts for it


@pytest.mark.parametrize("small_text", [False, True], ids=["legible", "raised"])
def test_save_figure_draws_each_format_once_more_only_when_text_is_raised(small_text, tmp_path, monkeypatch):
    drawn = []
    render = canvas._render
    monkeypatch.setattr(canvas, "_render", lambda fig, fmt, dpi: drawn.append(fmt) or render(fig, fmt, dpi))
    fig, axes = canvas.grid(1, 1)
    axes[0][0].plot([0, 1], [1, 0])
    axes[0][0].tick_params(labelsize=4 if small_text else 12)
    canvas.save_figure(fig, tmp_path / "f")
    assert drawn == (["png", "png", "pdf"] if small_text else ["png", "pdf"])


def _kind_cases():
    base, instruct = curves("base"), curves("instruct", scale=2.0)
    deep, shallow = curves("deep", n_layers=30), curves("shallow", n_layers=18, scale=50.0)
    attention = curves()
    mlp = attention[attention.module != "o_proj"].assign(module=lambda f: f.module.map(TO_MLP))
    every_module = pd.concat([attention, mlp], ignore_index=True)  # all seven studied matrices
    long_name = "A Very Long Model Display Name 1.5B Instruct"
    return {
        "levels with ratio": lambda out: plotting.plot_level_panels(
            orders_apart(), long_name, "GSM8K [demo data]", "nuclear_norm", out, REASONING, include_ratio=True
        ),
        "levels, log y": lambda out: plotting.plot_level_panels(
            orders_apart(), "M", "GSM8K", "nuclear_norm", out, REASONING, include_ratio=True, log_y=True
        ),
        "wiki levels, every module": lambda out: plotting.plot_level_panels(
            every_module.assign(level=every_module.level.map(TO_WIKI)), "M", "Wikipedia", "nuclear_norm", out, WIKI
        ),
        "correct vs wrong": lambda out: plotting.plot_correct_vs_wrong(
            orders_apart(), long_name, "GSM8K", "nuclear_norm", out, REASONING
        ),
        "heat map, 80 layers": lambda out: plotting.plot_heatmap(curves(n_layers=80), "M", "GSM8K", out, REASONING),
        "base vs instruct": lambda out: plotting.plot_base_vs_instruct(
            base, instruct, "Base", "Instruct", "GSM8K", "nuclear_norm", out
        ),
        "cross model": lambda out: plotting.plot_cross_model(
            pd.concat([deep, shallow]), {"deep": "Deep", "shallow": "Shallow"}, "GSM8K", "nuclear_norm", out, REASONING
        ),
        "study overlay, six panels": lambda out: _study_overlay(out),
    }


def _study_overlay(out):
    from lg_pipeline.analysis.study_overlay import plot_study_overlay

    ours = curves()
    ours = ours[ours.statistic == "nuclear_norm"]
    return plot_study_overlay(ours, ours.assign(mean=ours["mean"] * 1.1), "M", "GSM8K", out, REASONING)


KINDS = _kind_cases()


@pytest.mark.slow  # draws figures
@pytest.mark.parametrize("kind", list(KINDS))
def test_every_analysis_figure_kind_is_legible_at_the_inline_width(kind, tmp_path, monkeypatch):
    saved = capture_saved_figures(monkeypatch)
    KINDS[kind](tmp_path / "figure")
    (figure,) = saved
    px, text = figure.smallest_text_px()
    assert px >= MIN_TEXT_PX, (kind, text, px)
    assert figure.fig.get_figwidth() <= MAX_WIDTH_IN + 1e-9
    for ax in figure.fig.axes:
        if ax.get_xlabel() == "Layer":  # layer numbers: whole ticks only
            low, high = ax.get_xlim()
            assert all(float(t).is_integer() for t in ax.get_xticks() if low <= t <= high), (kind, ax.get_title())
