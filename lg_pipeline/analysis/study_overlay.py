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

from lg_pipeline.analysis.curves import VARIANT_KEYS, layer_curves, ordered
from lg_pipeline.analysis.plotting import module_color, save_figure, statistic_label
from lg_pipeline.vocabulary import MODULE_LABELS

STUDY_STATS_ENV = "LG_STUDY_STATS_DIR"
OVERLAY_STATISTIC = "nuclear_norm"
STUDY_OVERLAY = "study_overlay"  # the report record's kind (a figure)


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


def add_study_overlays(curves: pd.DataFrame, models: dict, datasets: dict, out_dir: Path, report: Any,
                       root: str | Path | None = None) -> None:
    """Draw ours beside the study's for every (model, dataset) both have; nothing when no folder is named."""
    root = root if root is not None else study_stats_dir()
    if root is None or curves.empty:
        return
    ours = curves[curves.statistic == OVERLAY_STATISTIC]
    study = matching_study_curves(ours, root)
    for (model, dataset), theirs in study.groupby(["model", "dataset"], sort=True):
        mine = ours[(ours.model == model) & (ours.dataset == dataset)]
        info, ds = models[model], datasets[dataset]
        files = plot_study_overlay(mine, theirs, info.display_name, ds.display_name,
                                   out_dir / f"{model}__{dataset}", ds.level_labels())
        title = f"{info.display_name} · {ds.display_name} · ours vs the study's"
        report.add(STUDY_OVERLAY, title, [model], [dataset], files)


def plot_study_overlay(ours: pd.DataFrame, study: pd.DataFrame, model_label: str, dataset_label: str,
                       out_base: Path, level_labels: dict[str, str], statistic: str = OVERLAY_STATISTIC) -> list[Path]:
    """One panel per (level, correctness) both have: each module ours (solid) and the study's (dashed)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    keys = ["level", "correctness"]
    shared = study[keys].drop_duplicates().merge(ours[keys].drop_duplicates(), on=keys)
    panels = sorted(map(tuple, shared.to_numpy()), key=lambda k: (list(level_labels).index(k[0])
                                                                   if k[0] in level_labels else len(level_labels), k))
    fig, axes = plt.subplots(1, len(panels), squeeze=False, figsize=(4.5 * len(panels), 3.4), layout="constrained")
    modules = ordered(pd.concat([ours.module, study.module]), list(MODULE_LABELS))
    for ax, (level, correctness) in zip(axes[0], panels, strict=True):
        for source, style in ((ours, "-"), (study, "--")):
            panel = source[(source.level == level) & (source.correctness == correctness)]
            for module in modules:
                line = panel[panel.module == module].sort_values("layer")
                ax.plot(line.layer, line["mean"], color=module_color(module), linestyle=style, linewidth=1.5)
        ax.set_title(f"{level_labels.get(level, level)} · {correctness}", fontsize=10)
        ax.set_xlabel("Layer")
        ax.set_ylabel(statistic_label(statistic))
        ax.grid(True, color="lightgray", linestyle="--", linewidth=0.5)
    handles = [Line2D([], [], color=module_color(m), label=f"Proj {MODULE_LABELS.get(m, m)}") for m in modules]
    handles += [Line2D([], [], color="black", linestyle="-", label="ours"),
                Line2D([], [], color="black", linestyle="--", label="the study's")]
    axes[0][0].legend(handles=handles, fontsize=7, loc="best")
    fig.suptitle(f"{model_label} · {dataset_label}: ours vs the study's released statistics", fontsize=11)
    return save_figure(fig, out_base)
