"""Learning dynamics of one model fine-tuned on one curated variant: probes followed through a real SFT/DPO run,
and the checks beside it (complete and finite: blocking; predicted vs measured: a warning)."""

import copy
from typing import Any

import dagster as dg

from assets import gates
from assets.curation.assets import curated_dataset
from assets.failures import clear_errors
from assets.metadata import file_version, inline_png, md_table
from assets.partitions import by_variant, curated_missing, model_variant_partitions, stats_key
from assets.pools import GPU_POOL
from assets.resources import ComputeResource, OutputStore
from lg_pipeline.dynamics.learning.checks import AGREEMENT_R2
from lg_pipeline.dynamics.learning.run import LEARNING_DYNAMICS_VERSION, learning_run
from lg_pipeline.vocabulary import REASONING_LEVELS, StatsKey, VariantKey

# The offline default `make demo` runs: SmolLM2-135M-Instruct on CHAMP, None vs Detailed CoT, SFT.
DEMO_MODEL = "smollm2-135m-instruct"
DEMO_VARIANTS = ("champ__none__correct", "champ__detailed__correct")
# The demo's DPO run beside the None-CoT SFT one (rejected: the aligned wrong set); the rest is the config's default.
DEMO_DPO_VARIANT = VariantKey.parse("champ__none__correct")
DEMO_DPO: dict = {"objective": "dpo", "steps": 6, "learning_rate": 1e-3}  # eval steps 0 and 5


class DynamicsConfig(dg.Config):
    """Run settings (the launchpad's config). Defaults are the offline default's, sized for 2 CPU cores:
    10 SGD steps of one example, eval steps 0 and 5, 2 probe prompts (one trained prompt's 5-7 responses
    and one held-out answer), sequences cut at 256 tokens."""

    objective: str = "sft"
    steps: int = 10
    eval_every: int = 5
    learning_rate: float = 1e-4
    optimizer: str = "sgd"
    batch_size: int = 1
    n_probes: int = 2
    trainable: str = "attention"
    seed: int = 0
    max_length: int = 256  # 0: the compute resource's (the engine's) max_length
    epochs: float | None = None  # passes over the trained rows; set, it replaces `steps`
    seeds: list[int] = []  # one run per seed in `dynamics_seeds/` (and the curves across them); empty: `seed`


def _table(store: OutputStore, variant: VariantKey) -> list[Any] | None:
    import pandas as pd

    from lg_pipeline.example import Example

    path = store.curated(variant)
    if not path.is_file():
        return None
    frame = pd.read_parquet(path)
    return [Example(r.example_id, r.instruction, r.response) for r in frame.itertuples()]


def _training_rows(store: OutputStore, variant: VariantKey) -> list[Any]:
    from lg_pipeline.errors import InputError

    blocked = gates.curated_gate(store, variant)
    if blocked:
        raise InputError(f"curated table for '{variant}' failed its blocking check(s) {', '.join(blocked)}")
    rows = _table(store, variant)
    if rows is None:
        raise InputError(curated_missing(variant, store.curated(variant)))
    return rows


def training_data(store: OutputStore, variant: VariantKey) -> Any:
    """The variant's curated rows and, where curated, its companion sets: the same dataset and correctness at the
    other CoT levels, and the wrong set (of a correct variant). The run matches them to the rows (or leaves them
    out) by its one rule."""
    from lg_pipeline.dynamics.learning.run import TrainingData

    others = {level: VariantKey(variant.dataset, level, variant.correctness) for level in REASONING_LEVELS}
    found = {level: _table(store, v) for level, v in others.items() if level != variant.level}
    wrong_key = VariantKey(variant.dataset, variant.level, "wrong")
    wrong = _table(store, wrong_key) if variant.correctness == "correct" else None
    labels = {level: f"the curated table '{others[level]}'" for level in found}
    labels.update(rows=f"the curated table '{variant}'", wrong=f"the aligned wrong set of '{variant}'")
    return TrainingData(
        _training_rows(store, variant), {k: v for k, v in found.items() if v is not None}, wrong, labels
    )


def learning_settings(config: DynamicsConfig, compute: ComputeResource) -> Any:
    """The launchpad's config as the run's settings (checked on construction, named as in the config)."""
    from lg_pipeline.dynamics.learning.run import LearningDynamicsSettings

    train = {
        "learning_rate": config.learning_rate, "optimizer": config.optimizer,
        "steps": None if config.epochs else config.steps, "epochs": config.epochs or None,
        "batch_size": config.batch_size, "seed": config.seed, "trainable": config.trainable,
        "objective": config.objective, "chat": None, "max_length": config.max_length or compute.max_length,
    }
    return LearningDynamicsSettings.build(train=train, eval_every=config.eval_every, n_probes=config.n_probes)


@dg.asset(
    partitions_def=model_variant_partitions,
    deps=[dg.AssetDep(curated_dataset, partition_mapping=by_variant)],
    code_version=LEARNING_DYNAMICS_VERSION,
    group_name="dynamics",
    kinds={"pytorch", "parquet"},
    pool=GPU_POOL,
    description=(
        "Fine-tunes a copy of the model on the variant (TRL SFT or DPO) and follows probe log-probabilities: "
        "measured change per eval step, predicted change per matrix, per-layer NTK, gradient statistics."
    ),
)
def training_dynamics(
    context: dg.AssetExecutionContext, config: DynamicsConfig, store: OutputStore, compute: ComputeResource
) -> dg.MaterializeResult:
    from lg_pipeline.dynamics.learning.run import run_learning_dynamics
    from lg_pipeline.dynamics.training import LoadedModel
    from lg_pipeline.io.manifest import data_file_fields

    key = stats_key(context.partition_key)
    with clear_errors():
        settings = learning_settings(config, compute)
        data = training_data(store, key.variant)
        out = store.dynamics(key, config.objective)
        gates.forget_dynamics(store, key, config.objective)

        def load() -> LoadedModel:
            loaded, tokenizer, spec = compute.load(key.model)
            # Training changes weights: the process-wide loaded model stays as loaded.
            return LoadedModel(copy.deepcopy(loaded), tokenizer, spec.chat, key.model, spec.source)

        def progress(step: int, total: int) -> None:
            context.log.info(f"step {step}/{total} done")

        variant = key.variant
        provenance = {**data_file_fields(store.curated(variant)), "dataset": variant.dataset, "level": variant.level,
                      "correctness": variant.correctness}
        if config.seeds:
            return _seed_runs(context, config, store, key, settings, data, load, progress, provenance)
        summary = run_learning_dynamics(
            settings, data, load, out, wait=True, report=context.log.info, progress=progress, provenance=provenance
        )
    return dg.MaterializeResult(metadata=_metadata(key, config, summary, out), data_version=_version(out))


def _seed_runs(context, config, store, key, settings, data, load, progress, provenance) -> dg.MaterializeResult:
    """One run per seed of `config.seeds` under `store.dynamics_seeds`, then Δ log p across them (a band)."""
    from lg_pipeline.dynamics.learning.run import run_learning_dynamics
    from lg_pipeline.dynamics.seeds import (
        across_seeds_base,
        check_seeds_target,
        for_each_seed,
        learning_across_seeds,
        parse_seeds,
        seed_folder,
    )

    seeds = parse_seeds(",".join(map(str, config.seeds)), "seeds")
    base = store.dynamics_seeds(key, config.objective)
    check_seeds_target(base)
    summaries = for_each_seed(run_learning_dynamics, settings, seeds, base, data, load, wait=True,
                              report=context.log.info, progress=progress, provenance=provenance)
    title = f"{key.model} · {key.variant} · {config.objective}: Δ log p per probe type, seeds {list(seeds)}"
    runs = [(s, seed_folder(base, s)) for s in seeds]
    table, figure, frame = learning_across_seeds(runs, across_seeds_base(base), title)
    last = frame[(frame.quantity == "change") & (frame.step == frame.step.max())]
    return dg.MaterializeResult(
        metadata={
            "model": key.model,
            "variant": str(key.variant),
            "objective": config.objective,
            "seeds": dg.MetadataValue.json(list(seeds)),
            "r2_by_seed": dg.MetadataValue.json({str(s): None if v.r2 != v.r2 else v.r2 for s, v in summaries.items()}),
            "change_at_last_step_across_seeds": md_table(last.drop(columns=["quantity"])),
            "figure: across seeds": dg.MetadataValue.md(inline_png(figure)),
            "path": dg.MetadataValue.path(str(base)),
        },
        data_version=dg.DataVersion(file_version(table)),
    )


def _version(out) -> dg.DataVersion:
    return dg.DataVersion(file_version(learning_run(out).table("influence_summary")))


def _metadata(key: StatsKey, config: DynamicsConfig, summary: Any, out) -> dict[str, Any]:
    import pandas as pd

    frame = pd.read_parquet(learning_run(out).table("influence_summary"))
    by_type = frame.groupby("probe_type", as_index=False)[["predicted_delta", "measured_delta"]].mean()
    return {
        "model": key.model,
        "variant": str(key.variant),
        "objective": config.objective,
        "steps": summary.steps,
        "eval_steps": dg.MetadataValue.json(summary.eval_steps),
        "probes": summary.n_probes,
        "r2_predicted_vs_measured": float("nan") if summary.r2 != summary.r2 else round(summary.r2, 6),
        "resumed_eval_steps": dg.MetadataValue.json(summary.resumed_steps),
        "companion_sets": dg.MetadataValue.json(summary.companions),
        "mean_change_by_probe_type": md_table(by_type),
        "path": dg.MetadataValue.path(str(out)),
    }


def _run(context: dg.AssetCheckExecutionContext, store: OutputStore):
    """The partition's most recently written run folder: (key, objective), objective None when there is none."""
    key = stats_key(context.partition_key)
    runs = [objective for k, objective in store.dynamics_runs() if k == key]
    if not runs:
        return key, None
    # The most recently written run of this partition (an SFT and a DPO run may both exist).
    from lg_pipeline.io.run_folder import SUMMARY_FILE

    return key, max(runs, key=lambda o: (store.dynamics(key, o) / SUMMARY_FILE).stat().st_mtime)


@dg.asset_check(
    asset=training_dynamics,
    partitions_def=model_variant_partitions,
    blocking=True,
    description="Every table and file written; every eval step has every probe before and after; predicted = Σ of "
    "its per-matrix terms, measured = Δ log-probability; ranges, keys, finite numbers (as `lg-pipeline validate`).",
)
def training_dynamics_complete(context: dg.AssetCheckExecutionContext, store: OutputStore) -> dg.AssetCheckResult:
    from lg_pipeline.dynamics.learning.checks import check_run_folder

    key, objective = _run(context, store)
    seeded = {f"{o}/seed-{s}": check_run_folder(f, objective=o).details() for o, s, f in store.dynamics_seed_runs(key)}
    seed_failures = {name: failures for name, failures in seeded.items() if failures}  # checked, not gated
    if objective is None:
        return dg.AssetCheckResult(
            passed=bool(seeded) and not seed_failures,
            metadata={"failures": dg.MetadataValue.json(["no run folder"] if not seeded else []),
                      "seed_runs": dg.MetadataValue.json(sorted(seeded)),
                      "seed_failures": dg.MetadataValue.json(seed_failures)},
        )
    report = check_run_folder(store.dynamics(key, objective), objective=objective)
    failures = report.details()
    gates.record_dynamics(store, key, objective, failures)
    return dg.AssetCheckResult(
        passed=report.passed and not seed_failures,
        metadata={"objective": objective, "failures": dg.MetadataValue.json(failures),
                  "rules_run": len(report.outcomes), "seed_runs": dg.MetadataValue.json(sorted(seeded)),
                  "seed_failures": dg.MetadataValue.json(seed_failures)},
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

    from lg_pipeline.dynamics.learning.checks import agreement, agreement_warning
    from lg_pipeline.dynamics.learning.figures import plot_predicted_vs_measured

    key, objective = _run(context, store)
    if objective is None:
        return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.WARN)
    out = store.dynamics(key, objective)
    r2 = agreement(out)
    summary = pd.read_parquet(out / "influence_summary.parquet")
    with tempfile.TemporaryDirectory() as tmp:
        png = plot_predicted_vs_measured(summary, f"{key.model} · {key.variant} · {objective}", Path(tmp) / "scatter")
        figure = inline_png(png)
    why = agreement_warning(r2, AGREEMENT_R2)
    return dg.AssetCheckResult(
        passed=why is None,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "r2": float(r2),
            "threshold": AGREEMENT_R2,
            "objective": objective,
            "warning": why or "",
            "scatter": dg.MetadataValue.md(figure),
        },
    )
