"""Figures render, are not blank, use the fixed module colours and data-driven axes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lg_pipeline.analysis import plotting
from lg_pipeline.analysis.curves import CURVE_COLUMNS
from lg_pipeline.vocabulary import LEVEL_LABELS

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
    assert lines["Q correct"].get_color() == lines["Q wrong"].get_color() == plotting.MODULE_COLORS["q_proj"]
    assert lines["Q correct"].get_linestyle() != lines["Q wrong"].get_linestyle()


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
