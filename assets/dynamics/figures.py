"""The dynamics figures, one group ("figures") beside the gradient figures: every learning-dynamics run whose
completeness check passed, and every complete zero-shot run, shown inline in the UI.

Like `figures`, every figure entry names its files and the exact run partitions (and data versions) it was drawn
from (`assets.lineage`), the materialization holds tables comparing the runs (orderings; SFT vs DPO by probe type),
and every PNG under the figure folders is reachable from the UI.
"""

from pathlib import Path
from typing import Any

import dagster as dg

from assets import gates
from assets.automation.conditions import refresh_when_upstream_settles
from assets.dynamics.learning import DYNAMICS_ASSETS, LEARNING_DYNAMICS_VERSION, OBJECTIVES, dynamics_asset_name
from assets.dynamics.zero_shot import ZERO_SHOT_ASSETS, ZERO_SHOT_VERSION, zero_shot_asset_name
from assets.lineage import PartitionVersions, describe_partitions, merged, partition_versions, sources_version
from assets.metadata import figure_md, inline_png, md_table, table_value
from assets.partitions import multi_key, zero_shot_key
from assets.resources import OutputStore

DYNAMICS_FIGURES_VERSION = "dynamics-figures-3"
ZERO_SHOT_FIGURES_VERSION = "zero-shot-figures-2"
TABLE_ROWS = 500  # the comparison tables are small (runs x steps x tasks); none is cut in the demo


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


def probe_type_comparison(summary: Any) -> Any:
    """Δ log p (measured, mean over the probes of a type) at each run's last eval step: one row per model, variant
    and probe type, one column per objective (empty where that objective has no checked run)."""
    if not len(summary):
        return summary
    runs = ["model", "variant", "objective"]
    last = summary[summary.step == summary.groupby(runs).step.transform("max")]
    mean = last.groupby(["model", "variant", "probe_type", "objective"]).measured_delta.mean().unstack("objective")
    mean = mean.reindex(columns=list(OBJECTIVES))
    mean.columns = [f"Δ log p {o.upper()}" for o in mean.columns]
    return mean.reset_index()


def _learning_sources(context: Any, store: OutputStore, runs: list[tuple[Any, str]]) -> dict[str, PartitionVersions]:
    """{model: the `training_dynamics*` partitions of its runs, with data versions}."""
    sources: dict[str, PartitionVersions] = {}
    for key, objective in runs:
        asset = dynamics_asset_name(objective)
        file = store.dynamics_table(key, objective, "influence_summary")  # what the run's data version hashes
        partition_of = {str(key): str(multi_key(key.model, key.variant))}.__getitem__
        versions = partition_versions(context.instance, asset, {str(key): file}, partition_of)
        sources.setdefault(key.model, {}).setdefault(asset, {}).update(versions)
    return sources


@dg.asset(
    deps=list(DYNAMICS_ASSETS.values()),
    code_version=f"{DYNAMICS_FIGURES_VERSION}+{LEARNING_DYNAMICS_VERSION}",
    group_name="figures",
    kinds={"matplotlib"},
    automation_condition=refresh_when_upstream_settles(),
    description="Probe log-probability curves per level (SFT | DPO; summed and per response token; DPO's trained "
    "and wrong responses named chosen and rejected), per-layer shares of the predicted change, the kernel and "
    "per-matrix terms by layer and module, predicted vs measured, nuclear norms along training. Each figure "
    "lists its files and the `training_dynamics` / `training_dynamics_dpo` partitions it was drawn from; "
    "`table: Δ log p by probe type` compares SFT and DPO at the last eval step; `table: runs` lists each run's "
    "settings.",
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
    sources = _learning_sources(context, store, runs)
    meta: dict[str, Any] = {"runs": dg.MetadataValue.json([f"{k}/{o}" for k, o in runs])}
    meta["skipped_runs"] = dg.MetadataValue.json(skipped)
    drawn: list[Path] = []
    for model in sorted(tables["logprobs"].model.unique()):
        of_model = {name: frame[frame.model == model] if len(frame) else frame for name, frame in tables.items()}
        line = describe_partitions(sources[model])  # every figure of a model is drawn from all its runs' tables
        for title, png in draw_figures(of_model, out, model).items():
            meta[f"figure: {model} {title}"] = dg.MetadataValue.md(figure_md(png, f"{model}: {title}", line))
            drawn.append(png)
    comparison = probe_type_comparison(tables["influence_summary"])
    meta["table: Δ log p by probe type, SFT vs DPO (last eval step)"] = table_value(comparison, TABLE_ROWS)
    meta["table: runs"] = table_value(_run_settings(store, runs), TABLE_ROWS)
    all_sources = merged(sources.values())
    meta |= _files(out, drawn, all_sources)
    context.log.info(f"{len(drawn)} figures in {out}")
    return dg.MaterializeResult(metadata=meta, data_version=dg.DataVersion(sources_version(all_sources)))


def _run_settings(store: OutputStore, runs: list[tuple[Any, str]]) -> Any:
    """One row per drawn run: its partition and the training settings it ran with (from its settings file)."""
    import pandas as pd

    from assets.metadata import RUN_SETTINGS
    from lg_pipeline.dynamics.learning.run import learning_run

    rows = []
    for key, objective in runs:
        config = (learning_run(store.dynamics(key, objective)).read_settings() or {}).get("config", {})
        rows.append({"asset": dynamics_asset_name(objective), "partition": str(key),
                     **{name: config.get(name) for name in RUN_SETTINGS}})
    return pd.DataFrame(rows)


def _files(folder: Path, shown: list[Path], sources: PartitionVersions) -> dict[str, Any]:
    """Every PNG in the figure folder: `png_files` lists them all with where each is shown; any not shown inline
    above (left from an older run or version) is listed by path, so no written figure is out of reach."""
    every = sorted(folder.rglob("*.png")) if folder.is_dir() else []
    inline = {p.resolve() for p in shown}
    files = {str(p): "inline above" if p.resolve() in inline else "by path only" for p in every}
    return {
        "png_files": dg.MetadataValue.json(files),
        "drawn_from": dg.MetadataValue.json(sources),
        "folder": dg.MetadataValue.path(str(folder)),
    }


@dg.asset(
    deps=list(ZERO_SHOT_ASSETS.values()),
    code_version=f"{ZERO_SHOT_FIGURES_VERSION}+{ZERO_SHOT_VERSION}",
    group_name="figures",
    kinds={"matplotlib"},
    automation_condition=refresh_when_upstream_settles(),
    description="Held-out loss vs step per ordering (all tasks, per task), seen-data distance, None vs Detailed "
    "CoT, and every run's own figures. Each figure lists its file and the `zero_shot_dynamics*` partitions it was "
    "drawn from; `table: held-out loss by ordering` compares the orderings at each eval step, per task and over "
    "all tasks (`__all__`).",
)
def zero_shot_figures(context: dg.AssetExecutionContext, store: OutputStore) -> dg.MaterializeResult:
    from lg_pipeline.dynamics.zero_shot.figures import level_figure, loss_figure, seen_distance_figure

    tables = _complete_runs(store)
    bands = _seed_bands(store)
    if tables is None and not bands:
        raise dg.Failure(description="no checked zero-shot run yet: materialize zero_shot_dynamics (and its check)")
    folder = store.zero_shot_figures()
    meta: dict[str, Any] = dict(bands)
    if tables is None:
        return dg.MaterializeResult(metadata=meta)
    losses, seen = tables
    sources = _zero_shot_sources(context, store, losses)
    drawn: list[Path] = []
    for (model, level), part in losses.groupby(["model", "level"], sort=True):
        name, line = f"{model}, {level} CoT training", describe_partitions(sources[model, level])
        path = loss_figure(part, store.zero_shot_figure(model, level, "loss"), f"Held-out loss, {name}")
        meta[f"figure: held-out loss, {name}"] = dg.MetadataValue.md(figure_md(path, None, line))
        s = seen[(seen.model == model) & (seen.level == level)]
        path2 = seen_distance_figure(s, store.zero_shot_figure(model, level, "seen"), f"Seen-data distance, {name}")
        meta[f"figure: seen-data distance, {name}"] = dg.MetadataValue.md(figure_md(path2, None, line))
        drawn += [path, path2]
    for model, part in losses.groupby("model"):
        if part.level.nunique() > 1:
            title = f"{model}: training level, same orderings"
            path = level_figure(part, store.zero_shot_figure(model, "levels"), title)
            line = describe_partitions(merged(v for (m, _), v in sources.items() if m == model))
            meta[f"figure: None vs Detailed CoT, {model}"] = dg.MetadataValue.md(figure_md(path, None, line))
            drawn.append(path)
    meta["runs"] = md_table(losses[["model", "level", "ordering"]].drop_duplicates(), 60)
    meta["table: held-out loss by ordering"] = table_value(ordering_comparison(losses), TABLE_ROWS)
    run_meta, run_pngs = _run_figures(store, losses, sources)
    meta |= run_meta
    all_sources = merged(sources.values())
    meta |= _files(folder, drawn + run_pngs, all_sources)
    context.log.info(f"{len(drawn) + len(run_pngs)} zero-shot figures in {folder}")
    return dg.MaterializeResult(metadata=meta, data_version=dg.DataVersion(sources_version(all_sources)))


def ordering_comparison(losses: Any) -> Any:
    """Held-out loss at each eval step, one column per ordering: over all test items (`__all__`) and per task, one
    row per model, training level, task and step."""
    from lg_pipeline.dynamics.zero_shot.held_out import ALL_TASKS

    wide = losses.pivot_table(index=["model", "level", "task", "step"], columns="ordering", values="loss")
    wide.columns = [f"loss {c}" for c in wide.columns]
    wide = wide.reset_index()
    wide["_all_first"] = wide.task != ALL_TASKS
    return wide.sort_values(["model", "level", "_all_first", "task", "step"]).drop(columns="_all_first")


def _zero_shot_sources(context: Any, store: OutputStore, losses: Any) -> dict[tuple[str, str], PartitionVersions]:
    """{(model, level): the `zero_shot_dynamics*` partitions (model|ordering) its figures were drawn from}."""
    sources: dict[tuple[str, str], PartitionVersions] = {}
    for (model, level), part in losses.groupby(["model", "level"], sort=True):
        orderings = {f"{model}|{o}": o for o in part.ordering.unique()}  # named in full, as the run folders are
        files = {name: store.zero_shot_table(model, level, o, "zero_shot") for name, o in orderings.items()}
        asset = zero_shot_asset_name(level)
        partition_of = {name: str(zero_shot_key(model, o)) for name, o in orderings.items()}.__getitem__
        sources[model, level] = {asset: partition_versions(context.instance, asset, files, partition_of)}
    return sources


def _run_figures(
    store: OutputStore, losses: Any, sources: dict[tuple[str, str], PartitionVersions]
) -> tuple[dict[str, Any], list[Path]]:
    """Each drawn run's own figures (its loss curves, the gradient ordering's alignments), one entry per level."""
    meta, pngs = {}, []
    for (model, level), part in losses.groupby(["model", "level"], sort=True):
        asset, parts = [], []
        for ordering in sorted(part.ordering.unique()):
            key = f"{model}|{ordering}"
            one = {a: {key: v[key]} for a, v in sources[model, level].items() if key in v}
            for name in (ordering, "alignment") if ordering == "gradient" else (ordering,):
                png = store.zero_shot_figure(model, level, name, run=True)
                if png.is_file():
                    parts.append(figure_md(png, f"{model}, {level} CoT, {name}", describe_partitions(one)))
                    asset.append(png)
        if parts:
            meta[f"figures: runs of {model}, {level} CoT"] = dg.MetadataValue.md("\n\n".join(parts))
            pngs += asset
    return meta, pngs


def _seed_bands(store: OutputStore) -> dict[str, Any]:
    """Per model and level with multi-seed runs: held-out loss per ordering across seeds (mean, min–max band) and
    its table, from the finished seed runs whose settings (all but the seed and its draw) are the newest's."""
    from lg_pipeline.dynamics.seeds import zero_shot_across_seeds
    from lg_pipeline.dynamics.zero_shot.run import zero_shot_run

    groups: dict[tuple[str, str], list[tuple[float, str, int, Any]]] = {}
    for model, level, _, seed, folder in store.zero_shot_seed_runs():
        settings = zero_shot_run(folder).read_settings() or {}
        same = {k: v for k, v in settings.items() if k not in ("run_key", "tasks", "seed")}
        stamp = zero_shot_run(folder).settings_file.stat().st_mtime
        groups.setdefault((model, level), []).append((stamp, repr(sorted(same.items())), seed, folder))
    meta = {}
    for (model, level), runs in sorted(groups.items()):
        newest = max(runs, key=lambda r: r[0])[1]
        kept = [(seed, folder) for _, same, seed, folder in runs if same == newest]
        seeds = sorted({s for s, _ in kept})
        title = f"Held-out loss, {model}, {level} CoT training, seeds {', '.join(map(str, seeds))}"
        _, figure, table = zero_shot_across_seeds(kept, store.zero_shot_across_seeds(model, level), title)
        meta[f"figure: held-out loss across seeds, {model}, {level} CoT"] = dg.MetadataValue.md(inline_png(figure))
        meta[f"across seeds, {model}, {level} CoT"] = md_table(table.round(4), 60)
    return meta


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
