"""The study's own curves beside ours: with `LG_STUDY_STATS_DIR` set to a `grads_exp` folder, one more figure.

Wherever model, dataset and variant (level, correctness) of the study's statistics match
ours, each module's per-layer mean is drawn twice: ours solid, the study's dashed, one
panel per level. The study's model folders are mapped to our catalog names on import
(`lg_pipeline.io.study_stats.STUDY_MODELS`); a folder of ours (`export-study`) passes through.
Means and bands come from `layer_curves`, the same code as our own curves.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd

from lg_pipeline.analysis.canvas import (
    figure_title,
    integer_ticks,
    module_color,
    module_legend,
    panel_title,
    save_figure,
    wrap,
)
from lg_pipeline.analysis.curves import VARIANT_KEYS, layer_curves, ordered
from lg_pipeline.analysis.plotting import statistic_label
from lg_pipeline.vocabulary import MODULE_ORDER

STUDY_STATS_ENV = "LG_STUDY_STATS_DIR"
OVERLAY_STATISTIC = "nuclear_norm"
STUDY_OVERLAY = "study_overlay"  # the report record's kind (a figure)
STYLES = {"ours": "-", "the study's": "--"}  # line style per source, in the order (ours, study)


def study_stats_dir() -> Path | None:
    """The study's `grads_exp` folder named by `LG_STUDY_STATS_DIR`, or None when unset or empty."""
    value = os.environ.get(STUDY_STATS_ENV, "").strip()
    return Path(value) if value else None


def matching_study_curves(ours: pd.DataFrame, root: str | Path, statistic: str = OVERLAY_STATISTIC) -> pd.DataFrame:
    """The study's per-layer curves of `statistic` for the variants `ours` (a `layer_curves` table) also has."""
    from lg_pipeline.io.study_stats import import_study_tree

    stats = import_study_tree(root)
    wanted = ours[list(VARIANT_KEYS)].drop_duplicates()
    stats = stats.merge(wanted, on=list(VARIANT_KEYS), how="inner")
    return layer_curves(stats, [statistic]) if len(stats) else pd.DataFrame(columns=ours.columns)


def add_study_overlays(
    curves: pd.DataFrame, models: dict, datasets: dict, out_dir: Path, report: Any, root: str | Path | None = None
) -> None:
    """Draw ours beside the study's for every (model, dataset) both have; nothing when no folder is named."""
    root = root if root is not None else study_stats_dir()
    if root is None or curves.empty:
        return
    ours = curves[curves.statistic == OVERLAY_STATISTIC]
    study = matching_study_curves(ours, root)
    for (model, dataset), theirs in study.groupby(["model", "dataset"], sort=True):
        mine = ours[(ours.model == model) & (ours.dataset == dataset)]
        info, ds = models[model], datasets[dataset]
        files = plot_study_overlay(
            mine, theirs, info.display_name, ds.display_name, out_dir / f"{model}__{dataset}", ds.level_labels()
        )
        title = f"{info.display_name} · {ds.display_name} · ours vs the study's"
        report.add(STUDY_OVERLAY, title, [model], [dataset], files)


def plot_study_overlay(
    ours: pd.DataFrame,
    study: pd.DataFrame,
    model_label: str,
    dataset_label: str,
    out_base: Path,
    level_labels: dict[str, str],
    statistic: str = OVERLAY_STATISTIC,
) -> list[Path]:
    """One panel per (level, correctness) both have: each module ours (solid) and the study's (dashed)."""
    keys = ["level", "correctness"]
    shared = study[keys].drop_duplicates().merge(ours[keys].drop_duplicates(), on=keys)
    rank = {level: k for k, level in enumerate(level_labels)}
    panels = sorted(map(tuple, shared.to_numpy()), key=lambda k: (rank.get(k[0], len(rank)), k))
    fig, axes = wrap(len(panels))
    modules = ordered(pd.concat([ours.module, study.module]), MODULE_ORDER)
    for ax, (level, correctness) in zip(axes, panels, strict=True):
        for source, style in zip((ours, study), STYLES.values(), strict=True):
            panel = source[(source.level == level) & (source.correctness == correctness)]
            for module in modules:
                line = panel[panel.module == module].sort_values("layer")
                ax.plot(line.layer, line["mean"], color=module_color(module), linestyle=style, linewidth=1.5)
        panel_title(ax, f"{level_labels.get(level, level)} · {correctness}")
        ax.set_xlabel("Layer")
        ax.set_ylabel(statistic_label(statistic))
        integer_ticks(ax.xaxis)
        ax.grid(True, color="lightgray", linestyle="--", linewidth=0.5)
    module_legend(axes[0], modules, STYLES)
    figure_title(fig, f"{model_label} · {dataset_label}: ours vs the study's released statistics")
    return save_figure(fig, out_base)
