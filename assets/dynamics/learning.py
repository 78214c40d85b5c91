"""Learning dynamics of one model fine-tuned on one curated variant: probes followed through a real SFT/DPO run,
and the checks beside it (complete and finite: blocking; predicted vs measured: a warning)."""

import copy
from collections.abc import Iterator
from typing import Any, Literal

import dagster as dg
from pydantic import Field

from assets import gates
from assets.curation.assets import curated_dataset
from assets.failures import clear_errors
from assets.metadata import file_version, inline_png, md_table
from assets.partitions import by_variant, curated_missing, model_variant_partitions, stats_key
from assets.pools import GPU_POOL
from assets.resources import ComputeResource, OutputStore
from assets.skips import skipped
from lg_pipeline.dynamics.learning.checks import AGREEMENT_R2
from lg_pipeline.dynamics.learning.run import LEARNING_DYNAMICS_VERSION, learning_run
from lg_pipeline.vocabulary import REASONING_LEVELS, StatsKey, VariantKey

# The offline default `make demo` runs: SmolLM2-135M-Instruct on CHAMP, None vs Detailed CoT, SFT.
DEMO_MODEL = "smollm2-135m-instruct"
DEMO_VARIANTS = ("champ__none__correct", "champ__detailed__correct")


class DynamicsConfig(dg.Config):
    """Run settings (the launchpad's config). Defaults are the offline default's, sized for 2 CPU cores:
    10 SGD steps of one example, eval steps 0 and 5, 2 probe prompts (one trained prompt's 5-7 responses
    and one held-out answer), sequences cut at 256 tokens. Choices are enums (Dagster refuses others at launch);
    ranges are checked as the run is submitted, every problem at once (`assets.launch`)."""

    objective: Literal["sft", "dpo"] = Field(
        default="sft", description="Training objective: sft (TRL SFT on the variant's responses) or dpo (TRL DPO, "
        "the aligned wrong-answer set as rejected responses; needs the variant's `wrong` table)."
    )
    steps: int = Field(default=10, description="Optimizer steps to train (at least 1).")
    eval_every: int = Field(
        default=5, description="Measure the probes every this many steps (steps; at least 1): step 0, K, 2K, ..."
    )
    learning_rate: float = Field(default=1e-4, description="Learning rate (per step; greater than 0).")
    optimizer: Literal["sgd", "adamw"] = Field(default="sgd", description="Optimizer: sgd (plain) or adamw.")
    batch_size: int = Field(
        default=1, description="Training examples per optimizer step (examples; at least 1). Only this run's: "
        "the compute resource's batch_size bounds gradient_stats' passes."
    )
    n_probes: int = Field(
        default=2, description="Probe prompts followed through training (prompts; at least 1), each with its "
        "responses (trained, other levels, wrong, held out)."
    )
    trainable: Literal["attention", "all"] = Field(
        default="attention", description="Weights that train: attention (q, k, v, o projections) or all."
    )
    seed: int = Field(default=0, description="Seed of the data order and the probe draw (0 to 2**32 - 1).")
    max_length: int = Field(
        default=256, description="Tokens per training and probe sequence (tokens; at least 2; longer ones are "
        "cut). 0: the compute resource's max_length."
    )


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


def learning_settings(config: DynamicsConfig, compute_max_length: int) -> Any:
    """The launchpad's config as the run's settings (checked on construction, every problem at once, named as in
    the config); `compute_max_length` stands in for `max_length: 0`."""
    from lg_pipeline.dynamics.learning.run import LearningDynamicsSettings

    train = {
        "learning_rate": config.learning_rate, "optimizer": config.optimizer, "steps": config.steps,
        "batch_size": config.batch_size, "seed": config.seed, "trainable": config.trainable,
        "objective": config.objective, "chat": None, "max_length": config.max_length or compute_max_length,
    }
    return LearningDynamicsSettings.build(train=train, eval_every=config.eval_every, n_probes=config.n_probes)


@dg.asset(
    partitions_def=model_variant_partitions,
    deps=[dg.AssetDep(curated_dataset, partition_mapping=by_variant)],
    code_version=LEARNING_DYNAMICS_VERSION,
    group_name="dynamics",
    kinds={"pytorch", "parquet"},
    pool=GPU_POOL,
    output_required=False,  # a rerun of a finished run materializes nothing: its figures do not refresh
    description=(
        "Fine-tunes a copy of the model on the variant (TRL SFT or DPO) and follows probe log-probabilities: "
        "measured change per eval step, predicted change per matrix, per-layer NTK, gradient statistics."
    ),
)
def training_dynamics(
    context: dg.AssetExecutionContext, config: DynamicsConfig, store: OutputStore, compute: ComputeResource
) -> Iterator[dg.MaterializeResult | dg.AssetObservation]:
    from data_sources.models.catalog import get_model_spec
    from lg_pipeline.dynamics.learning.run import nothing_to_do, run_learning_dynamics
    from lg_pipeline.dynamics.training import LoadedModel
    from lg_pipeline.io.manifest import data_file_fields
    from lg_pipeline.progress import StepProgress

    key = stats_key(context.partition_key)
    with clear_errors():
        settings = learning_settings(config, compute.max_length)  # first: bad settings fail before anything
        data = training_data(store, key.variant)
        out = store.dynamics(key, config.objective)
        variant = key.variant
        provenance = {**data_file_fields(store.curated(variant)), "dataset": variant.dataset, "level": variant.level,
                      "correctness": variant.correctness, "weights_file": compute.weights_identity(key.model)}
        skip = nothing_to_do(settings, data, out, chat=get_model_spec(key.model).chat,
                             dtype=compute.load_dtype(key.model), device_type=compute.device_type,
                             provenance=provenance)
        if skip:
            yield skipped(context, skip)
            return
        gates.forget_dynamics(store, key, config.objective)

        def load() -> LoadedModel:
            loaded, tokenizer, spec = compute.load(key.model)
            # Training changes weights: the process-wide loaded model stays as loaded.
            return LoadedModel(copy.deepcopy(loaded), tokenizer, spec.chat, key.model, spec.source)

        summary = run_learning_dynamics(
            settings, data, load, out, wait=True, report=context.log.info, progress=StepProgress(context.log.info),
            provenance=provenance,
        )
    yield dg.MaterializeResult(metadata=_metadata(key, config, summary, out), data_version=_version(out))


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
    return key, max(runs, key=lambda o: learning_run(store.dynamics(key, o)).summary_file.stat().st_mtime)


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
    if objective is None:
        return dg.AssetCheckResult(passed=False, metadata={"failures": dg.MetadataValue.json(["no run folder"])})
    report = check_run_folder(store.dynamics(key, objective), objective=objective)
    failures = report.details()
    gates.record_dynamics(store, key, objective, failures)
    return dg.AssetCheckResult(
        passed=report.passed,
        metadata={"objective": objective, "failures": dg.MetadataValue.json(failures),
                  "rules_run": len(report.outcomes)},
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
