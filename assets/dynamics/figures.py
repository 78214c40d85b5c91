"""The dynamics figures, one group ("figures") beside the gradient figures: every learning-dynamics run whose
completeness check passed, and every complete zero-shot run, shown inline in the UI."""

from typing import Any

import dagster as dg

from assets import gates
from assets.automation.conditions import refresh_when_upstream_settles
from assets.dynamics.learning import LEARNING_DYNAMICS_VERSION, training_dynamics
from assets.dynamics.zero_shot import ZERO_SHOT_VERSION, zero_shot_dynamics
from assets.metadata import inline_png, md_table
from assets.resources import OutputStore

DYNAMICS_FIGURES_VERSION = "dynamics-figures-2"
ZERO_SHOT_FIGURES_VERSION = "zero-shot-figures-1"


def _read(store: OutputStore, runs: list[tuple[Any, str]], table: str) -> Any:
    """One table of every run, with model / level / variant / objective columns."""
    import pandas as pd

    frames = []
    for key, objective in runs:
        path = store.dynamics_table(key, objective, table)
        if path.is_file():
            frame = pd.read_parquet(path)
            frames.append(
                frame.assign(model=key.model, variant=str(key.variant), level=key.variant.level, objective=objective)
            )
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


@dg.asset(
    deps=[training_dynamics],
    code_version=f"{DYNAMICS_FIGURES_VERSION}+{LEARNING_DYNAMICS_VERSION}",
    group_name="figures",
    kinds={"matplotlib"},
    automation_condition=refresh_when_upstream_settles(),
    description="Probe log-probability curves per level (SFT | DPO; summed and per response token; DPO's trained "
    "and wrong responses named chosen and rejected), per-layer shares of the predicted change, the kernel and "
    "per-matrix terms by layer and module, predicted vs measured, nuclear norms along training.",
)
def dynamics_figures(context: dg.AssetExecutionContext, store: OutputStore) -> dg.MaterializeResult:
    from lg_pipeline.dynamics.learning.figures import draw_figures

    runs, skipped = [], {}
    for key, objective in store.dynamics_runs():
        why = gates.dynamics_gate(store, key, objective)
        if why:
            skipped[f"{key}/{objective}"] = why
        else:
            runs.append((key, objective))
    if not runs:
        raise dg.Failure(description=f"no checked learning-dynamics run yet: materialize training_dynamics ({skipped})")
    out = store.dynamics_figures()
    names = ("logprobs", "influence_summary", "influence", "kernel", "train_gradient_stats", "greedy_now")
    tables = {name: _read(store, runs, name) for name in names}
    meta: dict[str, Any] = {"runs": dg.MetadataValue.json([f"{k}/{o}" for k, o in runs])}
    meta["skipped_runs"] = dg.MetadataValue.json(skipped)
    for model in sorted(tables["logprobs"].model.unique()):
        of_model = {name: frame[frame.model == model] if len(frame) else frame for name, frame in tables.items()}
        for title, png in draw_figures(of_model, out, model).items():
            meta[f"figure: {model} {title}"] = dg.MetadataValue.md(f"**{model}: {title}**\n\n{inline_png(png)}")
    context.log.info(f"{len(meta) - 2} figures in {out}")
    return dg.MaterializeResult(metadata=meta)


@dg.asset(
    deps=[zero_shot_dynamics],
    code_version=f"{ZERO_SHOT_FIGURES_VERSION}+{ZERO_SHOT_VERSION}",
    group_name="figures",
    kinds={"matplotlib"},
    automation_condition=refresh_when_upstream_settles(),
    description="Held-out loss vs step per ordering (all tasks, per task), seen-data distance, None vs Detailed CoT.",
)
def zero_shot_figures(context: dg.AssetExecutionContext, store: OutputStore) -> dg.MaterializeResult:
    from lg_pipeline.dynamics.zero_shot.figures import level_figure, loss_figure, seen_distance_figure

    tables = _complete_runs(store)
    if tables is None:
        raise dg.Failure(description="no checked zero-shot run yet: materialize zero_shot_dynamics (and its check)")
    losses, seen = tables
    folder = store.zero_shot_figures()
    meta: dict[str, Any] = {}
    for (model, level), part in losses.groupby(["model", "level"], sort=True):
        name = f"{model}, {level} CoT training"
        path = loss_figure(part, store.zero_shot_figure(model, level, "loss"), f"Held-out loss, {name}")
        meta[f"figure: held-out loss, {name}"] = dg.MetadataValue.md(inline_png(path))
        s = seen[(seen.model == model) & (seen.level == level)]
        path = seen_distance_figure(s, store.zero_shot_figure(model, level, "seen"), f"Seen-data distance, {name}")
        meta[f"figure: seen-data distance, {name}"] = dg.MetadataValue.md(inline_png(path))
    for model, part in losses.groupby("model"):
        if part.level.nunique() > 1:
            title = f"{model}: training level, same orderings"
            path = level_figure(part, store.zero_shot_figure(model, "levels"), title)
            meta[f"figure: None vs Detailed CoT, {model}"] = dg.MetadataValue.md(inline_png(path))
    meta["runs"] = md_table(losses[["model", "level", "ordering"]].drop_duplicates(), 60)
    context.log.info(f"{sum(k.startswith('figure') for k in meta)} zero-shot figures in {folder}")
    return dg.MaterializeResult(metadata=meta)


def _complete_runs(store: OutputStore) -> tuple[Any, Any] | None:
    """Losses and seen distances (with model and level columns) of every run folder whose check passed (`gates`) and
    whose split and settings are those of the model's newest run: only runs that differ in ordering and level are
    compared."""
    import pandas as pd

    from lg_pipeline.dynamics.zero_shot.run import comparable_runs_key, zero_shot_run

    complete = [
        (model, level, ordering, store.zero_shot(model, level, ordering))
        for model, level, ordering in store.zero_shot_runs()
        if gates.zero_shot_gate(store, model, level, ordering) is None
    ]
    newest: dict[str, tuple[float, str]] = {}
    for model, _, _, out in complete:
        stamp = (zero_shot_run(out).table("zero_shot").stat().st_mtime, comparable_runs_key(out))
        newest[model] = max(newest.get(model, stamp), stamp)
    losses, seen = [], []
    for model, level, _, out in complete:
        if comparable_runs_key(out) != newest[model][1]:
            continue
        files = zero_shot_run(out)
        losses.append(pd.read_parquet(files.table("zero_shot")).assign(model=model, level=level))
        seen.append(pd.read_parquet(files.table("seen_distance")).assign(model=model, level=level))
    if not losses:
        return None
    return pd.concat(losses, ignore_index=True), pd.concat(seen, ignore_index=True)
