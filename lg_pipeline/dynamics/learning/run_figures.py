"""The figures of one finished learning-dynamics run folder, drawn into its `figures/` subfolder.

The CLI's figures: the same `figures.draw_figures` the Dagster figures asset calls, on this one run's tables (with
the `model`, `variant`, `level` and `objective` columns the asset adds when it draws several runs together), so a
command-line run shows what the UI shows. The subfolder is one of the run folder's allowed files
(`run.LEARNING_FILES`), so a rerun into the same folder is not refused for it.
"""

from __future__ import annotations

from pathlib import Path

from lg_pipeline.dynamics.learning.figures import draw_figures
from lg_pipeline.dynamics.learning.run import FIGURES_DIR, learning_run
from lg_pipeline.io.locks import output_lock

DRAWN_TABLES = ("logprobs", "influence_summary", "influence", "kernel", "train_gradient_stats")


def draw_run_figures(out: str | Path, model: str, label: str, objective: str) -> dict[str, Path]:
    """Every figure of the run at `out` (title -> PNG, a PDF beside each) under `out/figures/`; `model` names the
    files and titles, `label` the training data (where the asset puts the variant and its CoT level)."""
    import pandas as pd

    folder = learning_run(out)
    tables = {}
    for name in DRAWN_TABLES:
        path = folder.table(name)
        frame = pd.read_parquet(path) if path.is_file() else pd.DataFrame()
        columns = {"model": model, "variant": label, "level": label, "objective": objective}
        tables[name] = frame.assign(**columns) if len(frame) else frame
    with output_lock(folder.location, wait=True):  # the figures go into the run folder: one writer at a time
        return draw_figures(tables, Path(out) / FIGURES_DIR, model)
