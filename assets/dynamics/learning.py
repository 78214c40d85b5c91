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
from assets.metadata import file_version, inline_png, md_table, run_settings
from assets.partitions import by_variant, curated_missing, model_variant_partitions, stats_key
from assets.pools import GPU_POOL
from assets.resources import ComputeResource, CurationResource, OutputStore
from assets.skips import skipped
from lg_pipeline.dynamics.learning.checks import AGREEMENT_R2
from lg_pipeline.dynamics.learning.run import LEARNING_DYNAMICS_VERSION, learning_run
from lg_pipeline.vocabulary import REASONING_LEVELS, StatsKey, VariantKey

# The offline default `make demo` runs: SmolLM2-135M-Instruct on CHAMP, None vs Detailed CoT, SFT.
DEMO_MODEL = "smollm2-135m-instruct"
DEMO_VARIANTS = ("champ__none__correct", "champ__detailed__correct")
# The demo's DPO run beside the None-CoT SFT one (rejected: the aligned wrong set); the rest is the config's default.
DEMO_DPO_VARIANT = VariantKey.parse("champ__none__correct")
DEMO_DPO: dict = {"steps": 6, "learning_rate": 1e-3}  # training_dynamics_dpo's config: eval steps 0 and 5


class DynamicsConfig(dg.Config):
    """Run settings (the launchpad's config). Defaults are the offline default's, sized for 2 CPU cores:
    10 SGD steps of one example, eval steps 0 and 5, 2 probe prompts (one trained prompt's 5-7 responses
    and one held-out answer), sequences cut at 256 tokens. The objective is the asset's (`training_dynamics`:
    SFT, `training_dynamics_dpo`: DPO). Choices are enums (Dagster refuses others at launch); ranges are checked as
    the run is submitted, every problem at once (`assets.launch`)."""

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
    rejected: Literal["auto", "same_prompt", "shuffled"] = Field(
        default="auto", description="DPO's rejected responses: same_prompt (the chosen response with its final answer "
        "changed, format kept), shuffled (the variant's wrong set: another prompt's answer), auto (same_prompt for "
        "math datasets)."
    )
    probes_file: str = Field(
        default="", description="One's own probes: a JSON file, a list of {prompt_id, type, response} (empty: none)."
    )
    allow_probe_truncation: bool = Field(
        default=False, description="Measure probes cut at max_length (else the run refuses them, naming each)."
    )
    rephrase: bool = Field(
        default=False, description="Add rephrase probes written by the curation resource's teacher (none offline)."
    )
    epochs: float | None = Field(
        default=None, description="Passes over the trained rows (epochs; above 0); set, it replaces `steps`."
    )
    seeds: list[int] = Field(
        default=[], description="One run per seed in `dynamics_seeds/`, with the curves across them (a band); "
        "empty: the one run of `seed`."
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


def training_data(store: OutputStore, variant: VariantKey, probes_file: str = "", teacher: Any = None) -> Any:
    """The variant's curated rows and, where curated, its companion sets: the same dataset and correctness at the
    other CoT levels, and the wrong set (of a correct variant). The run matches them to the rows (or leaves them
    out) by its one rule. `probes_file`: one's own probes on these rows (the config's `probes_file`); `teacher`:
    who writes the rephrase probes (None: left out)."""
    from lg_pipeline.dynamics.learning.probe_file import load_probe_file
    from lg_pipeline.dynamics.learning.run import TrainingData

    others = {level: VariantKey(variant.dataset, level, variant.correctness) for level in REASONING_LEVELS}
    found = {level: _table(store, v) for level, v in others.items() if level != variant.level}
    wrong_key = VariantKey(variant.dataset, variant.level, "wrong")
    wrong = _table(store, wrong_key) if variant.correctness == "correct" else None
    labels = {level: f"the curated table '{others[level]}'" for level in found}
    labels.update(rows=f"the curated table '{variant}'", wrong=f"the aligned wrong set of '{variant}'")
    from data_sources.datasets.catalog import dataset_spec

    rows = _training_rows(store, variant)
    own = load_probe_file(probes_file, rows, f"probes_file {probes_file}") if probes_file else ()
    return TrainingData(
        rows, {k: v for k, v in found.items() if v is not None}, wrong, labels,
        family=dataset_spec(variant).family, own_probes=own, teacher=teacher,
    )


def learning_settings(config: DynamicsConfig, compute_max_length: int, objective: str = "sft") -> Any:
    """The launchpad's config (and the asset's objective) as the run's settings (checked on construction, every
    problem at once, named as in the config); `compute_max_length` stands in for `max_length: 0`."""
    from lg_pipeline.dynamics.learning.run import LearningDynamicsSettings

    train = {
        "learning_rate": config.learning_rate, "optimizer": config.optimizer,
        "steps": None if config.epochs else config.steps, "epochs": config.epochs or None,
        "batch_size": config.batch_size, "seed": config.seed, "trainable": config.trainable,
        "objective": objective, "chat": None, "max_length": config.max_length or compute_max_length,
    }
    return LearningDynamicsSettings.build(
        train=train, eval_every=config.eval_every, n_probes=config.n_probes, rejected=config.rejected,
        allow_probe_truncation=config.allow_probe_truncation,
    )


OBJECTIVES = ("sft", "dpo")


def dynamics_asset_name(objective: str) -> str:
    """One asset per objective, so an SFT and a DPO run of one partition are two materializations, neither hiding
    the other; SFT keeps the original name (and its records)."""
    return "training_dynamics" if objective == "sft" else f"training_dynamics_{objective}"


def _dynamics_asset(objective: str) -> dg.AssetsDefinition:
    @dg.asset(
        name=dynamics_asset_name(objective),
        partitions_def=model_variant_partitions,
        deps=[dg.AssetDep(curated_dataset, partition_mapping=by_variant)],
        code_version=LEARNING_DYNAMICS_VERSION,
        group_name="dynamics",
        kinds={"pytorch", "parquet"},
        pool=GPU_POOL,
        output_required=False,  # a rerun of a finished run materializes nothing: its figures do not refresh
        description=(
            f"Fine-tunes a copy of the model on the variant (TRL, objective {objective.upper()}) and follows probe "
            "log-probabilities: measured change per eval step, predicted change per matrix, per-layer gradient inner "
            "products (grad_inner), gradient statistics. The run's settings are in its metadata."
        ),
    )
    def _asset(
        context: dg.AssetExecutionContext,
        config: DynamicsConfig,
        store: OutputStore,
        compute: ComputeResource,
        curation: CurationResource,
    ) -> Iterator[dg.MaterializeResult | dg.AssetObservation]:
        yield from _train(context, config, store, compute, curation, objective)

    return _asset


def _train(
    context: dg.AssetExecutionContext, config: DynamicsConfig, store: OutputStore, compute: ComputeResource,
    curation: CurationResource, objective: str,
) -> Iterator[dg.MaterializeResult | dg.AssetObservation]:
    from data_sources.models.catalog import get_model_spec
    from lg_pipeline.dynamics.learning.run import nothing_to_do, run_learning_dynamics
    from lg_pipeline.dynamics.training import LoadedModel
    from lg_pipeline.io.manifest import data_file_fields
    from lg_pipeline.progress import StepProgress

    key = stats_key(context.partition_key)
    with clear_errors():
        settings = learning_settings(config, compute.max_length, objective)  # first: bad settings fail first
        teacher = curation.make_teacher() if config.rephrase else None
        data = training_data(store, key.variant, config.probes_file, teacher)
        out = store.dynamics(key, objective)
        variant = key.variant
        provenance = {**data_file_fields(store.curated(variant)), "dataset": variant.dataset, "level": variant.level,
                      "correctness": variant.correctness, "weights_file": compute.weights_identity(key.model)}

        def load() -> LoadedModel:
            loaded, tokenizer, spec = compute.load(key.model)
            # Training changes weights: the process-wide loaded model stays as loaded.
            return LoadedModel(copy.deepcopy(loaded), tokenizer, spec.chat, key.model, spec.source)

        if config.seeds:  # folders of their own (`dynamics_seeds/`): the one run's folder and verdict stay
            yield _seed_runs(context, config, store, key, objective, settings, data, load, provenance)
            return
        skip = nothing_to_do(settings, data, out, chat=get_model_spec(key.model).chat,
                             dtype=compute.load_dtype(key.model), device_type=compute.device_type,
                             provenance=provenance)
        if skip:
            yield skipped(context, skip)
            return
        gates.forget_dynamics(store, key, objective)
        summary = run_learning_dynamics(
            settings, data, load, out, wait=True, report=context.log.info, progress=StepProgress(context.log.info),
            provenance=provenance,
        )
    yield dg.MaterializeResult(metadata=_metadata(key, settings, summary, out), data_version=_version(out))


def _seed_runs(context, config, store, key, objective, settings, data, load, provenance) -> dg.MaterializeResult:
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
    from lg_pipeline.progress import StepProgress

    seeds = parse_seeds(",".join(map(str, config.seeds)), "seeds")
    base = store.dynamics_seeds(key, objective)
    check_seeds_target(base)
    summaries = for_each_seed(run_learning_dynamics, settings, seeds, base, data, load, wait=True,
                              report=context.log.info, progress=StepProgress(context.log.info), provenance=provenance)
    title = f"{key.model} · {key.variant} · {objective}: Δ log p per probe type, seeds {list(seeds)}"
    runs = [(s, seed_folder(base, s)) for s in seeds]
    table, figure, frame = learning_across_seeds(runs, across_seeds_base(base), title)
    last = frame[(frame.quantity == "change") & (frame.step == frame.step.max())]
    return dg.MaterializeResult(
        metadata={
            "model": key.model,
            "variant": str(key.variant),
            "objective": objective,
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


def _metadata(key: StatsKey, settings: Any, summary: Any, out) -> dict[str, Any]:
    import pandas as pd

    frame = pd.read_parquet(learning_run(out).table("influence_summary"))
    by_type = frame.groupby("probe_type", as_index=False)[["predicted_delta", "measured_delta"]].mean()
    return {
        "model": key.model,
        "variant": str(key.variant),
        **run_settings(settings.train, eval_every=settings.eval_every, n_probes=settings.n_probes),
        "steps": summary.steps,
        "eval_steps": dg.MetadataValue.json(summary.eval_steps),
        "probes": summary.n_probes,
        "r2_predicted_vs_measured": float("nan") if summary.r2 != summary.r2 else round(summary.r2, 6),
        "resumed_eval_steps": dg.MetadataValue.json(summary.resumed_steps),
        "companion_sets": dg.MetadataValue.json(summary.companions),
        "mean_change_by_probe_type": md_table(by_type),
        "path": dg.MetadataValue.path(str(out)),
    }


def _dynamics_checks(asset: dg.AssetsDefinition, objective: str) -> list[dg.AssetChecksDefinition]:
    """The blocking completeness check and the agreement warning of one objective's asset."""
    name = asset.key.to_user_string()

    @dg.asset_check(
        asset=asset,
        name=f"{name}_complete",
        partitions_def=model_variant_partitions,
        blocking=True,
        description="Every table and file written; every eval step has every probe before and after; predicted = Σ "
        "of its per-matrix terms, measured = Δ log-probability; ranges, keys, finite numbers (as `lg-pipeline "
        "validate`).",
    )
    def complete(context: dg.AssetCheckExecutionContext, store: OutputStore) -> dg.AssetCheckResult:
        return _complete(stats_key(context.partition_key), objective, store)

    @dg.asset_check(
        asset=asset,
        name=f"{name}_agreement",
        partitions_def=model_variant_partitions,
        blocking=False,
        description=f"R² of measured by predicted change over probes ≥ {AGREEMENT_R2} (warning), with the scatter.",
    )
    def agreement(context: dg.AssetCheckExecutionContext, store: OutputStore) -> dg.AssetCheckResult:
        return _agreement(stats_key(context.partition_key), objective, store)

    return [complete, agreement]


def _has_run(store: OutputStore, key: StatsKey, objective: str) -> bool:
    return (key, objective) in store.dynamics_runs()


def _complete(key: StatsKey, objective: str, store: OutputStore) -> dg.AssetCheckResult:
    from lg_pipeline.dynamics.learning.checks import check_run_folder

    seeded = {f"{o}/seed-{s}": check_run_folder(f, objective=o).details()
              for o, s, f in store.dynamics_seed_runs(key) if o == objective}
    seed_failures = {name: failures for name, failures in seeded.items() if failures}  # checked, not gated
    if not _has_run(store, key, objective):
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


def _agreement(key: StatsKey, objective: str, store: OutputStore) -> dg.AssetCheckResult:
    import tempfile
    from pathlib import Path

    import pandas as pd

    from lg_pipeline.dynamics.learning.checks import agreement, agreement_warning
    from lg_pipeline.dynamics.learning.figures import plot_predicted_vs_measured

    if not _has_run(store, key, objective):
        return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.WARN)
    out = store.dynamics(key, objective)
    r2 = agreement(out)
    summary = pd.read_parquet(learning_run(out).table("influence_summary"))
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


DYNAMICS_ASSETS = {objective: _dynamics_asset(objective) for objective in OBJECTIVES}
DYNAMICS_CHECKS = {objective: _dynamics_checks(DYNAMICS_ASSETS[objective], objective) for objective in OBJECTIVES}
training_dynamics, training_dynamics_dpo = DYNAMICS_ASSETS["sft"], DYNAMICS_ASSETS["dpo"]
training_dynamics_complete, training_dynamics_agreement = DYNAMICS_CHECKS["sft"]
training_dynamics_dpo_complete, training_dynamics_dpo_agreement = DYNAMICS_CHECKS["dpo"]
