"""Figures in the study's layout: per-layer gradient curves of the Q/K/V/O projections.

Every figure takes the `layer_curves` table and draws on the canvas (`analysis/canvas`: grid, titles, the
modules' fixed colours, PNG + PDF). Axis limits come from the data, never from constants tuned to one model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from lg_pipeline.analysis.canvas import (
    TEXT_PT,
    figure_title,
    grid,
    integer_ticks,
    module_color,
    module_label,
    module_legend,
    panel_title,
    responses,
    save_figure,
)
from lg_pipeline.analysis.curves import ordered
from lg_pipeline.vocabulary import LEVEL_LABELS, MODULE_LABELS, MODULE_ORDER

STATISTIC_LABELS: dict[str, str] = {
    "nuclear_norm": "Nuclear norm",
    "ratio": "Ratio $\\sigma_{max}$ / nuclear norm",
    "nuclear_per_loss": "Nuclear norm / loss",
    "frobenius_norm": "Frobenius norm",
    "sigma_max": "Largest singular value",
    "sigma_min": "Smallest singular value",
}
BAND_REACH = 0.5  # how far past the means (in units of their span) the y range follows the interval bands


def statistic_label(statistic: str) -> str:
    return STATISTIC_LABELS.get(statistic, statistic.replace("_", " ").capitalize())


# --------------------------------------------------------------------------- helpers


def _select(curves: pd.DataFrame, **where: object) -> pd.DataFrame:
    for column, value in where.items():
        if value is not None:
            curves = curves[curves[column] == value]
    return curves


def _single(curves: pd.DataFrame, column: str, what: str) -> None:
    values = curves[column].dropna().unique()
    if len(values) > 1:
        raise ValueError(f"{what}: curves hold several {column}s ({', '.join(map(str, values))}); filter them first")


def _levels(curves: pd.DataFrame, level_labels: Mapping[str, str]) -> list[str]:
    present = set(curves["level"])
    levels = [lv for lv in level_labels if lv in present]
    if not levels:
        raise ValueError(f"no curves for levels {list(level_labels)} (present: {sorted(map(str, present))})")
    return levels


def _modules(curves: pd.DataFrame, modules: Sequence[str] | None) -> list[str]:
    return list(modules) if modules else ordered(curves["module"], MODULE_ORDER)


def _draw_module(ax, frame: pd.DataFrame, module: str, linestyle: str = "-", label: str | None = None) -> None:
    """One module's curve with its shaded confidence band."""
    frame = frame.sort_values("layer")
    color = module_color(module)
    ax.plot(
        frame["layer"],
        frame["mean"],
        color=color,
        linestyle=linestyle,
        linewidth=1.6,
        label=label or module_label(module),
    )
    if frame["ci_low"].notna().any():
        ax.fill_between(frame["layer"], frame["ci_low"], frame["ci_high"], color=color, alpha=0.15, linewidth=0)


def _limits(frame: pd.DataFrame, log: bool = False) -> tuple[float, float]:
    """y range over means and finite CI bounds, padded 5%; starts at 0 for non-negative data.

    Bounds further than `BAND_REACH` times the means' span from the means are left out (the band is clipped
    there): with n = 4 one wide interval would otherwise flatten every curve. log: over the positive values
    only, padded by 5% of the decades spanned.
    """
    means = frame["mean"].to_numpy(dtype=float)
    means = means[np.isfinite(means)]
    values = frame[["mean", "ci_low", "ci_high"]].to_numpy(dtype=float)
    values = values[np.isfinite(values)]
    if means.size:
        m_lo, m_hi = float(means.min()), float(means.max())
        if log and m_lo > 0:
            ratio = max(m_hi / m_lo, 4.0) ** BAND_REACH
            reach = (m_lo / ratio, m_hi * ratio)
        else:
            span = max(m_hi - m_lo, 0.5 * max(abs(m_lo), abs(m_hi))) or 1.0
            reach = (m_lo - BAND_REACH * span, m_hi + BAND_REACH * span)
        values = values[(values >= reach[0]) & (values <= reach[1])]
    if log:
        values = values[values > 0]
        if values.size == 0:
            return 0.1, 1.0
        lo, hi = np.log10(values.min()), np.log10(values.max())
        pad = (hi - lo) * 0.05 or 0.05
        return float(10 ** (lo - pad)), float(10 ** (hi + pad))
    if values.size == 0:
        return 0.0, 1.0
    lo, hi = float(values.min()), float(values.max())
    pad = (hi - lo) * 0.05 or abs(hi) * 0.05 or 1.0
    return (0.0 if lo >= 0 else lo - pad), hi + pad


def spans_decades(curves: pd.DataFrame, column: str = "level", factor: float = 10.0) -> bool:
    """Whether the typical (median) value of the groups in `column` differs by `factor` or more: then a shared
    linear axis flattens the smaller ones and a log-y variant is drawn too."""
    medians = curves[curves["mean"] > 0].groupby(column)["mean"].median()
    return len(medians) > 1 and float(medians.max()) >= factor * float(medians.min())


def _n_label(frame: pd.DataFrame) -> str:
    """The number of examples behind a panel ("n=4", "n=3-4" when layers differ)."""
    counts = frame["n"].dropna()
    if counts.empty:
        return "n=0"
    lo, hi = int(counts.min()), int(counts.max())
    return f"n={hi}" if lo == hi else f"n={lo}-{hi}"


def _style(ax, title: str, ylabel: str, layers: pd.Series, legend: bool = True) -> None:
    panel_title(ax, title)
    ax.set_xlabel("Layer")
    ax.set_ylabel(ylabel)
    lo, hi = float(layers.min()), float(layers.max())
    ax.set_xlim(lo, hi if hi > lo else lo + 1.0)
    if hi > 1.0:  # layer numbers (depth 0-1 in the cross-model figure keeps its fractions)
        integer_ticks(ax.xaxis)
    ax.grid(True, color="lightgray", linestyle="--", linewidth=0.5)
    if legend:
        ax.legend(fontsize=TEXT_PT, loc="best")


def _module_panel(
    ax, panel: pd.DataFrame, modules: Sequence[str] | None, title: str, statistic: str, ylim, log: bool = False
) -> None:
    """One panel: each module's curve with its band, labelled, on the given y range."""
    for module in _modules(panel, modules):
        _draw_module(ax, _select(panel, module=module), module)
    _style(ax, title, statistic_label(statistic), panel["layer"])
    if log:
        ax.set_yscale("log")
    ax.set_ylim(*ylim)


def _one_source(curves: pd.DataFrame, what: str) -> None:
    """A figure shows one model on one dataset; mixing them would silently average nothing."""
    _single(curves, "model", what)
    _single(curves, "dataset", what)


# --------------------------------------------------------------------------- figures


def plot_level_panels(
    curves: pd.DataFrame,
    model_display: str,
    dataset_display: str,
    statistic: str,
    out_base: Path,
    level_labels: Mapping[str, str] = LEVEL_LABELS,
    *,
    correctness: str | None = "correct",
    include_ratio: bool = False,
    modules: Sequence[str] | None = None,
    log_y: bool = False,
) -> list[Path]:
    """One panel per level with the modules' curves; optional second row with the ratio.

    `curves` must hold one model and one dataset. Levels are drawn in the order of
    `level_labels`, and only those present. All panels of a row share the y range so
    levels compare at a glance; `log_y` draws that range on a log scale (for levels
    that differ by orders of magnitude, see `spans_decades`).
    """
    curves = _select(curves, correctness=correctness)
    _one_source(curves, "plot_level_panels")
    levels = _levels(curves, level_labels)
    rows = [statistic] + (["ratio"] if include_ratio else [])
    fig, axes = grid(len(rows), len(levels))
    for r, stat in enumerate(rows):
        data = _select(curves, statistic=stat)
        if data.empty:
            raise ValueError(f"no curves for statistic '{stat}'")
        ylim = _limits(data, log_y)
        for c, level in enumerate(levels):
            panel = _select(data, level=level)
            title = f"{level_labels[level]} ({_n_label(panel)}) | {statistic_label(stat)}"
            _module_panel(axes[r][c], panel, modules, title, stat, ylim, log_y)
    what = " and ".join(statistic_label(s).lower() for s in rows)
    scale = ", log scale" if log_y else ""
    figure_title(
        fig,
        f"{model_display} on {dataset_display}: {what} of each projection's gradient per layer",
        f"mean over {responses(correctness)}, 95% interval; one y range per row{scale}",
    )
    return save_figure(fig, out_base)


CORRECTNESS_STYLES: dict[str, str] = {"correct": "-", "wrong": "--"}


def plot_correct_vs_wrong(
    curves: pd.DataFrame,
    model_display: str,
    dataset_display: str,
    statistic: str,
    out_base: Path,
    level_labels: Mapping[str, str] = LEVEL_LABELS,
    *,
    modules: Sequence[str] | None = None,
) -> list[Path]:
    """Per level, correct responses solid and wrong ones dashed (same module colours), each level on its own y
    scale; below, the per-layer relative difference |correct - wrong| / |correct| (the study's
    `relative_difference`), on one scale shared by the levels.

    Own scales per level because the levels differ by orders of magnitude: on a shared axis the Detailed-CoT
    separation (the study's second finding) is flat at the bottom.
    """
    from lg_pipeline.analysis.curves import compare_curves

    curves = _select(curves, statistic=statistic)
    _one_source(curves, "plot_correct_vs_wrong")
    levels = _levels(curves, level_labels)
    rel = compare_curves(curves, "correctness", "correct", "wrong")
    rel_frame = rel.assign(mean=100 * rel["rel_diff"], ci_low=np.nan, ci_high=np.nan)
    rel_lim = _limits(rel_frame)
    fig, axes = grid(2, len(levels))
    for c, level in enumerate(levels):
        panel = _select(curves, level=level)
        ax, mods = axes[0][c], _modules(panel, modules)
        for module in mods:
            for correctness, style in CORRECTNESS_STYLES.items():
                part = _select(panel, module=module, correctness=correctness)
                if not part.empty:
                    _draw_module(ax, part, module, style, f"{MODULE_LABELS.get(module, module)} {correctness}")
        counts = ", ".join(
            f"{k} {_n_label(_select(panel, correctness=k))}" for k in CORRECTNESS_STYLES if k in set(panel.correctness)
        )
        _style(ax, f"{level_labels[level]} ({counts})", statistic_label(statistic), curves["layer"], legend=False)
        module_legend(ax, mods, CORRECTNESS_STYLES)
        ax.set_ylim(*_limits(panel))  # this level's own data
        low = axes[1][c]
        one = _select(rel_frame, level=level)
        for module in _modules(one, modules) if not one.empty else []:
            _draw_module(low, _select(one, module=module), module)
        _style(low, f"{level_labels[level]}: relative difference", "|correct − wrong| / |correct| (%)", curves["layer"])
        low.set_ylim(*rel_lim)
    figure_title(
        fig,
        f"{model_display} on {dataset_display}: {statistic_label(statistic).lower()} per layer, correct (solid) vs "
        "wrong (dashed) responses",
        "mean, 95% interval; top row: one y scale per level; bottom: relative difference",
    )
    return save_figure(fig, out_base)


def plot_base_vs_instruct(
    base: pd.DataFrame,
    instruct: pd.DataFrame,
    base_display: str,
    instruct_display: str,
    dataset_display: str,
    statistic: str,
    out_base: Path,
    level_labels: Mapping[str, str] = LEVEL_LABELS,
    *,
    correctness: str | None = "correct",
    modules: Sequence[str] | None = None,
) -> list[Path]:
    """Base model (left column) and its instruct version (right), one row per level, shared y per row."""
    sides = [
        (_select(base, statistic=statistic, correctness=correctness), base_display),
        (_select(instruct, statistic=statistic, correctness=correctness), instruct_display),
    ]
    for frame, name in sides:
        _one_source(frame, f"plot_base_vs_instruct ({name})")
    levels = _levels(pd.concat([s[0] for s in sides]), level_labels)
    fig, axes = grid(len(levels), 2)
    for r, level in enumerate(levels):
        ylim = _limits(pd.concat([_select(f, level=level) for f, _ in sides]))
        for c, (frame, name) in enumerate(sides):
            title = f"{name} | {level_labels[level]}"
            _module_panel(axes[r][c], _select(frame, level=level), modules, title, statistic, ylim)
    figure_title(
        fig,
        f"{base_display} (base) vs {instruct_display} (instruct) on {dataset_display}: "
        f"{statistic_label(statistic).lower()} per layer",
        f"mean over {responses(correctness)}, 95% interval; one y range per level",
    )
    return save_figure(fig, out_base)


def plot_heatmap(
    curves: pd.DataFrame,
    model_display: str,
    dataset_display: str,
    out_base: Path,
    level_labels: Mapping[str, str] = LEVEL_LABELS,
    *,
    statistic: str = "nuclear_norm",
    correctness: str | None = "correct",
    modules: Sequence[str] | None = None,
) -> list[Path]:
    """Mean statistic over layer (x) x module (y), one panel per level, one shared colour scale."""
    curves = _select(curves, statistic=statistic, correctness=correctness)
    _one_source(curves, "plot_heatmap")
    levels = _levels(curves, level_labels)
    mods = _modules(curves, modules)
    layers = sorted(curves["layer"].unique())
    finite = curves["mean"][np.isfinite(curves["mean"])]
    tenfold = spans_decades(curves) or spans_decades(curves, "module")
    log = tenfold and bool((finite > 0).all())  # levels or projections tenfold apart: a log colour scale
    vmin, vmax = (float(finite.min()), float(finite.max())) if len(finite) else (0.0, 1.0)
    from matplotlib.colors import LogNorm, Normalize

    norm = LogNorm(vmin, vmax) if log else Normalize(vmin, vmax)
    panel = (max(6.0, 0.25 * len(layers) + 2), 0.45 * len(mods) + 0.6 + 1.2 / len(levels))
    fig, axes = grid(len(levels), 1, panel=panel)  # a deep model gets narrower cells, not a wider figure
    image = None
    for r, level in enumerate(levels):
        cells = _select(curves, level=level).pivot_table(index="module", columns="layer", values="mean")
        cells = cells.reindex(index=mods, columns=layers)
        ax = axes[r][0]
        image = ax.imshow(
            cells.to_numpy(dtype=float),
            aspect="auto",
            cmap="viridis",
            norm=norm,
            extent=(layers[0] - 0.5, layers[-1] + 0.5, len(mods) - 0.5, -0.5),
        )
        ax.set_yticks(range(len(mods)), [MODULE_LABELS.get(m, m) for m in mods])
        integer_ticks(ax.xaxis)
        panel_title(ax, level_labels[level])
    axes[-1][0].set_xlabel("Layer")
    fig.colorbar(image, ax=[row[0] for row in axes], label=statistic_label(statistic))
    figure_title(
        fig,
        f"{model_display} on {dataset_display}: mean {statistic_label(statistic).lower()} per layer (x) and "
        "projection (y)",
        f"{responses(correctness)}, one {'log ' if log else ''}colour scale for all levels",
    )
    return save_figure(fig, out_base)


def plot_cross_model(
    curves: pd.DataFrame,
    model_displays: Mapping[str, str],
    dataset_display: str,
    statistic: str,
    out_base: Path,
    level_labels: Mapping[str, str] = LEVEL_LABELS,
    *,
    correctness: str | None = "correct",
    modules: Sequence[str] | None = None,
) -> list[Path]:
    """Every model on one axis: one statistic, one level per row, one module per column, layers as depth 0-1.

    Models differ in depth (18 vs 30 layers), so x is layer / (layers - 1); they differ in width too, so a row
    goes to a log scale when the models' typical values differ tenfold or more (`spans_decades`).
    """
    curves = _select(curves, statistic=statistic, correctness=correctness)
    _single(curves, "dataset", "plot_cross_model")
    if curves.empty:
        raise ValueError(f"no curves for statistic '{statistic}'")
    depth = curves.groupby("model")["layer"].transform("max").replace(0, 1)
    curves = curves.assign(layer=curves["layer"] / depth)
    levels = _levels(curves, level_labels)
    mods = _modules(curves, modules)
    names = [m for m in model_displays if m in set(curves.model)] + sorted(set(curves.model) - set(model_displays))
    fig, axes = grid(len(levels), len(mods))
    for r, level in enumerate(levels):
        row = _select(curves, level=level)
        log = spans_decades(row, "model")
        ylim = _limits(row, log)
        for c, module in enumerate(mods):
            ax = axes[r][c]
            for i, model in enumerate(names):
                part = _select(row, module=module, model=model).sort_values("layer")
                if part.empty:
                    continue
                color = f"C{i % 10}"
                ax.plot(part["layer"], part["mean"], color=color, linewidth=1.6, label=model_displays.get(model, model))
                if part["ci_low"].notna().any():
                    ax.fill_between(part["layer"], part["ci_low"], part["ci_high"], color=color, alpha=0.15, lw=0)
            title = f"{level_labels[level]} | {module_label(module)}"
            _style(ax, title, statistic_label(statistic), pd.Series([0.0, 1.0]), legend=(r == 0 and c == 0))
            ax.set_xlabel("Depth (layer / last layer)")
            if log:
                ax.set_yscale("log")
            ax.set_ylim(*ylim)
    figure_title(
        fig,
        f"Every model on {dataset_display}: {statistic_label(statistic).lower()} per layer, depth normalised 0-1",
        f"mean over {responses(correctness)}, 95% interval; one y range per row, log scale where models differ tenfold",
    )
    return save_figure(fig, out_base)
