"""Figures of every learning-dynamics run whose completeness check passed, shown inline in the UI."""

from typing import Any

import dagster as dg

from assets import gates
from assets.automation.conditions import refresh_when_upstream_settles
from assets.dynamics.assets import DYNAMICS_VERSION, training_dynamics
from assets.metadata import inline_png
from assets.resources import OutputStore

DYNAMICS_FIGURES_VERSION = "dynamics-figures-1"


def _read(store: OutputStore, runs: list[tuple[Any, str]], table: str) -> Any:
    """One table of every run, with model / level / variant / objective columns."""
    import pandas as pd

    frames = []
    for key, objective in runs:
        path = store.dynamics(key, objective) / f"{table}.parquet"
        if path.is_file():
            frame = pd.read_parquet(path)
            frames.append(
                frame.assign(model=key.model, variant=str(key.variant), level=key.variant.level, objective=objective)
            )
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


@dg.asset(
    deps=[training_dynamics],
    code_version=f"{DYNAMICS_FIGURES_VERSION}+{DYNAMICS_VERSION}",
    group_name="dynamics",
    kinds={"matplotlib"},
    automation_condition=refresh_when_upstream_settles(),
    description="Probe log-probability curves per level (SFT | DPO), per-layer shares of the predicted change, "
    "predicted vs measured, nuclear norms along training.",
)
def dynamics_figures(context: dg.AssetExecutionContext, store: OutputStore) -> dg.MaterializeResult:
    from lg_pipeline.dynamics.figures import (
        layer_shares,
        plot_layer_share,
        plot_logprob_curves,
        plot_nuclear_norms,
        plot_predicted_vs_measured,
    )

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
    logprobs, summary = _read(store, runs, "logprobs"), _read(store, runs, "influence_summary")
    influence, stats = _read(store, runs, "influence"), _read(store, runs, "train_gradient_stats")
    meta: dict[str, Any] = {"runs": dg.MetadataValue.json([f"{k}/{o}" for k, o in runs])}
    meta["skipped_runs"] = dg.MetadataValue.json(skipped)
    for model in sorted(logprobs.model.unique()):
        pngs = {
            "log-probabilities": plot_logprob_curves(
                logprobs[logprobs.model == model], f"{model}: probe log-probabilities", out / f"{model}_logprobs"
            ),
            "predicted vs measured": plot_predicted_vs_measured(
                summary[summary.model == model], model, out / f"{model}_agreement"
            ),
        }
        if len(stats):
            pngs["nuclear norms"] = plot_nuclear_norms(
                stats[stats.model == model], f"{model}: gradient nuclear norms along training", out / f"{model}_nuclear"
            )
        for key, objective in [r for r in runs if r[0].model == model]:
            where = (influence.variant == str(key.variant)) & (influence.objective == objective)
            chosen = (summary.variant == str(key.variant)) & (summary.objective == objective)
            shares = layer_shares(
                influence[where & (influence.model == model)], summary[chosen & (summary.model == model)]
            )
            name = f"{key.variant} {objective}"
            pngs[f"layer shares {name}"] = plot_layer_share(
                shares, f"{model} · {name}", out / f"{model}_{key.variant}_{objective}_layers"
            )
        for title, png in pngs.items():
            meta[f"figure: {model} {title}"] = dg.MetadataValue.md(f"**{model}: {title}**\n\n{inline_png(png)}")
    context.log.info(f"{len(meta) - 2} figures in {out}")
    return dg.MaterializeResult(metadata=meta)
