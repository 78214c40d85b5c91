"""Checks of a learning-dynamics run: complete and finite (blocking), predicted vs measured (warning)."""

import dagster as dg

from assets import gates
from assets.dynamics.assets import training_dynamics
from assets.metadata import inline_png
from assets.partitions import model_variant_partitions, stats_key
from assets.resources import OutputStore

AGREEMENT_R2 = 0.9  # the bar on SmolLM2-135M at the default learning rate


def _run(context: dg.AssetCheckExecutionContext, store: OutputStore):
    """The partition's run folder and its recorded settings (objective, steps, eval_every)."""
    import json

    from lg_pipeline.dynamics.run import RUN_FILE

    key = stats_key(context.partition_key)
    runs = [objective for k, objective in store.dynamics_runs() if k == key]
    if not runs:
        return key, None, None
    # The most recently written run of this partition (an SFT and a DPO run may both exist).
    objective = max(runs, key=lambda o: (store.dynamics(key, o) / "summary.json").stat().st_mtime)
    out = store.dynamics(key, objective)
    return key, objective, json.loads((out / RUN_FILE).read_text())


@dg.asset_check(
    asset=training_dynamics,
    partitions_def=model_variant_partitions,
    blocking=True,
    description="Every table written; every eval step has every probe before and after; all numbers finite.",
)
def training_dynamics_complete(context: dg.AssetCheckExecutionContext, store: OutputStore) -> dg.AssetCheckResult:
    from lg_pipeline.dynamics.checks import completeness_failures

    key, objective, run = _run(context, store)
    if run is None:
        return dg.AssetCheckResult(passed=False, metadata={"failures": dg.MetadataValue.json(["no run folder"])})
    config = run["config"]
    failures = completeness_failures(store.dynamics(key, objective), config["steps"], run["eval_every"], objective)
    gates.record_dynamics(store, key, objective, failures)
    return dg.AssetCheckResult(
        passed=not failures,
        metadata={"objective": objective, "failures": dg.MetadataValue.json(failures)},
    )


@dg.asset_check(
    asset=training_dynamics,
    partitions_def=model_variant_partitions,
    blocking=False,
    description=f"R² of measured by predicted change over probes ≥ {AGREEMENT_R2} (warning), with the scatter.",
)
def training_dynamics_agreement(context: dg.AssetCheckExecutionContext, store: OutputStore) -> dg.AssetCheckResult:
    import tempfile
    from pathlib import Path

    import pandas as pd

    from lg_pipeline.dynamics.checks import agreement
    from lg_pipeline.dynamics.figures import plot_predicted_vs_measured

    key, objective, run = _run(context, store)
    if run is None:
        return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.WARN)
    out = store.dynamics(key, objective)
    r2 = agreement(out)
    summary = pd.read_parquet(out / "influence_summary.parquet")
    with tempfile.TemporaryDirectory() as tmp:
        png = plot_predicted_vs_measured(summary, f"{key.model} · {key.variant} · {objective}", Path(tmp) / "scatter")
        figure = inline_png(png)
    return dg.AssetCheckResult(
        passed=bool(r2 >= AGREEMENT_R2),
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "r2": float(r2),
            "threshold": AGREEMENT_R2,
            "objective": objective,
            "scatter": dg.MetadataValue.md(figure),
        },
    )
