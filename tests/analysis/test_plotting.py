"""Figures render, are not blank, use the fixed module colours and data-driven axes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lg_pipeline.analysis import plotting
from lg_pipeline.analysis.curves import CURVE_COLUMNS
from lg_pipeline.vocabulary import LEVEL_LABELS, MODULE_COLORS

pytestmark = pytest.mark.slow  # draws figures (seconds each)

MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")
REASONING = {k: LEVEL_LABELS[k] for k in ("none", "simplified", "detailed")}


def curves(model="m", levels=("none", "simplified", "detailed"), n_layers=12, scale=1.0) -> pd.DataFrame:
    rows = []
    for li, level in enumerate(levels):
        for ci, correctness in enumerate(("correct", "wrong")):
            for mi, module in enumerate(MODULES):
                for stat in ("nuclear_norm", "ratio"):
                    for layer in range(n_layers):
                        mean = scale * (1 + mi) * (10 + layer + 5 * li + 3 * ci) / (20 if stat == "ratio" else 1)
                        rows.append((model, "gsm8k", level, correctness, module, layer, stat, mean,
                                     mean * 0.9, mean * 1.1, 8, 0))  # fmt: skip
    return pd.DataFrame(rows, columns=list(CURVE_COLUMNS))


def assert_image_ok(path, min_width=200):
    import matplotlib.image as mpimg

    image = mpimg.imread(path)
    assert image.ndim == 3 and image.shape[1] >= min_width and image.shape[0] >= 100
    rgb = image[..., :3]
    assert rgb.var() > 0
    assert not np.all(rgb >= 0.99)  # not all white
    return image


@pytest.fixture
def captured(monkeypatch):
    """(y limits, lines) of every axes of each figure a plot function saves, read before it is closed."""
    snapshots = []
    original = plotting.save_figure

    def keep(fig, out_base, *args, **kwargs):
        fig.canvas.draw()
        snapshots.append([(ax.get_ylim(), list(ax.get_lines())) for ax in fig.axes])
        return original(fig, out_base, *args, **kwargs)

    monkeypatch.setattr(plotting, "save_figure", keep)
    return snapshots


def test_level_panels_png_and_pdf(tmp_path):
    paths = plotting.plot_level_panels(curves(), "SmolLM2-135M", "GSM8K", "nuclear_norm", tmp_path / "f", REASONING)
    assert [p.suffix for p in paths] == [".png", ".pdf"]
    assert paths[1].read_bytes().startswith(b"%PDF")
    image = assert_image_ok(paths[0], min_width=600)
    with_ratio = plotting.plot_level_panels(
        curves(), "SmolLM2-135M", "GSM8K", "nuclear_norm", tmp_path / "g", REASONING, include_ratio=True
    )
    taller = assert_image_ok(with_ratio[0])
    assert taller.shape[0] > image.shape[0] * 1.5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.pdf", "f.png", "g.pdf", "g.png"]  # no temp files left


def test_module_colours_are_fixed_and_axes_follow_data(tmp_path, captured):
    data = curves(scale=7.0)
    plotting.plot_level_panels(data, "M", "GSM8K", "nuclear_norm", tmp_path / "f", REASONING)
    top = data[(data.statistic == "nuclear_norm") & (data.correctness == "correct")]["ci_high"].max()
    for (low, high), lines in captured[0]:
        colours = {line.get_label(): line.get_color() for line in lines}
        assert colours == {"Proj Q": "tab:red", "Proj K": "tab:green", "Proj V": "tab:blue", "Proj O": "tab:gray"}
        assert low == 0.0 and top <= high <= top * 1.1


def test_correct_vs_wrong_uses_same_colour_two_styles(tmp_path, captured):
    paths = plotting.plot_correct_vs_wrong(curves(), "M", "GSM8K", "nuclear_norm", tmp_path / "cw", REASONING)
    assert_image_ok(paths[0])
    lines = {line.get_label(): line for line in captured[0][0][1]}
    assert lines["Q correct"].get_color() == lines["Q wrong"].get_color() == MODULE_COLORS["q_proj"]
    assert lines["Q correct"].get_linestyle() != lines["Q wrong"].get_linestyle()


def orders_apart() -> pd.DataFrame:
    """None CoT 1000x larger than Detailed CoT, wrong 20% above correct from layer 6 on (as the study finds)."""
    data = curves()
    factor = data.level.map({"none": 1000.0, "simplified": 30.0, "detailed": 1.0})
    wrong_late = (data.correctness == "wrong") & (data.layer >= 6)
    correct = data.assign(correctness="correct")
    base = correct["mean"].where(data.correctness == "correct")
    data = data.assign(mean=base.groupby([data.level, data.module, data.statistic, data.layer]).transform("max"))
    data["mean"] = data["mean"] * factor * np.where(wrong_late, 1.2, 1.0)
    return data.assign(ci_low=data["mean"] * 0.9, ci_high=data["mean"] * 1.1)


def test_correct_vs_wrong_detailed_panel_has_its_own_scale_and_a_relative_difference_row(tmp_path, captured):
    data = orders_apart()
    plotting.plot_correct_vs_wrong(data, "M", "GSM8K", "nuclear_norm", tmp_path / "cw", REASONING)
    axes = captured[0]
    assert len(axes) == 6  # 2 rows x 3 levels
    detailed = data[(data.level == "detailed") & (data.statistic == "nuclear_norm")]
    low, high = axes[2][0]  # top row, third level: Detailed CoT
    assert low == 0.0 and detailed.ci_high.max() <= high <= detailed.ci_high.max() * 1.1
    none_high = axes[0][0][1]
    assert none_high > 100 * high  # on a shared axis Detailed CoT would be flat at the bottom
    rel_lines = {line.get_label(): line for line in axes[5][1]}  # bottom row, Detailed CoT
    q = rel_lines["Proj Q"].get_ydata()
    np.testing.assert_allclose(q[:6], 0.0, atol=1e-9)
    np.testing.assert_allclose(q[6:], 20.0)  # |correct - wrong| / |correct| in %


def test_a_log_y_variant_where_levels_differ_by_orders_of_magnitude(tmp_path, captured):
    data = orders_apart()
    assert plotting.spans_decades(data[(data.statistic == "nuclear_norm") & (data.correctness == "correct")])
    assert not plotting.spans_decades(curves())
    plotting.plot_level_panels(data, "M", "GSM8K", "nuclear_norm", tmp_path / "log", REASONING, log_y=True)
    (low, high), _ = captured[0][0]
    top = data[(data.statistic == "nuclear_norm") & (data.correctness == "correct")]
    assert 0 < low <= top["ci_low"].min() and high >= top["ci_high"].max()


def test_cross_model_puts_every_model_on_one_depth_axis(tmp_path, captured):
    deep, shallow = curves("deep", n_layers=30), curves("shallow", n_layers=18, scale=50.0)
    paths = plotting.plot_cross_model(
        pd.concat([deep, shallow]), {"deep": "Deep", "shallow": "Shallow"}, "GSM8K", "nuclear_norm",
        tmp_path / "x", REASONING,
    )  # fmt: skip
    assert_image_ok(paths[0])
    assert len(captured[0]) == 3 * 4  # levels x modules
    lines = {line.get_label(): line.get_xdata() for line in captured[0][0][1]}
    assert set(lines) == {"Deep", "Shallow"}
    assert lines["Deep"][0] == lines["Shallow"][0] == 0.0 and lines["Deep"][-1] == lines["Shallow"][-1] == 1.0
    with pytest.raises(ValueError, match="several datasets"):
        plotting.plot_cross_model(pd.concat([deep, deep.assign(dataset="x")]), {}, "D", "nuclear_norm", tmp_path / "y")


def test_base_vs_instruct_and_heatmap(tmp_path):
    base, instruct = curves("base"), curves("instruct", scale=2.0)
    paths = plotting.plot_base_vs_instruct(base, instruct, "Base", "Instruct", "GSM8K", "nuclear_norm", tmp_path / "bi")
    assert_image_ok(paths[0])
    heat = plotting.plot_heatmap(curves(n_layers=30), "M", "GSM8K", tmp_path / "heat", REASONING)
    assert_image_ok(heat[0])


def test_wiki_levels_and_unknown_modules(tmp_path):
    wiki = {k: LEVEL_LABELS[k] for k in ("len100", "len500", "len1000", "longtail")}
    data = curves(levels=tuple(wiki))
    data.loc[data.module == "o_proj", "module"] = "fc1"
    paths = plotting.plot_level_panels(data, "M", "Wikipedia", "nuclear_norm", tmp_path / "w", wiki)
    assert_image_ok(paths[0], min_width=800)


def test_mixed_models_are_rejected(tmp_path):
    mixed = pd.concat([curves("a"), curves("b")])
    with pytest.raises(ValueError, match="several models"):
        plotting.plot_level_panels(mixed, "M", "D", "nuclear_norm", tmp_path / "x", REASONING)
    with pytest.raises(ValueError, match="no curves for levels"):
        plotting.plot_level_panels(curves(), "M", "D", "nuclear_norm", tmp_path / "x", {"len100": "Length 100"})
