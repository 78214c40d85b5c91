"""Zero-shot dynamics: held-out-task loss through fine-tuning of one model on one ordering of the training items.

One asset per CoT level of the training responses (`zero_shot_dynamics`: None CoT, `zero_shot_dynamics_simplified`,
`zero_shot_dynamics_detailed`), partitioned by model x ordering, so a Detailed run never hides the None run of
the same partition; each trains in the `gpu` pool, the task split is run config (the launchpad's), and each
(model, level, ordering) has its own folder. `zero_shot_complete` (`zero_shot_<level>_complete`) checks the folder;
`zero_shot_figures` draws every model's orderings and levels inline in the UI.
"""

from collections.abc import Iterator
from typing import Any, Literal

import dagster as dg
from pydantic import Field

from assets import gates
from assets.failures import clear_errors
from assets.metadata import figure_md, file_version, md_table, run_settings
from assets.partitions import model_ordering_partitions, zero_shot_dims
from assets.pools import GPU_POOL
from assets.resources import ComputeResource, CurationResource, OutputStore
from assets.skips import skipped
from lg_pipeline.dynamics.zero_shot.held_out import ALL_TASKS
from lg_pipeline.dynamics.zero_shot.run import ZERO_SHOT_VERSION
from lg_pipeline.dynamics.zero_shot.tasks import DEMO_TEST_TASKS, DEMO_TRAIN_TASKS
from lg_pipeline.vocabulary import LEVEL_LABELS, REASONING_LEVELS

DEMO_ORDERINGS = ("rt", "nft", "fft")
# The demo's multi-seed zero-shot run: the same split with one item per training task (3 steps), two seeds.
DEMO_SEEDS_ORDERINGS = ("rt", "nft")
DEMO_SEEDS: dict = {"seeds": [0, 1], "per_task": 1, "eval_every": 1, "generation_metrics": False}  # the band: loss
# The demo's single-seed orderings measure the loss only: greedy answers at every eval step took about half of each
# ordering's time, past the demo's budget (the README's `lg-pipeline zero-shot` command measures them).
DEMO_CONFIG: dict = {"generation_metrics": False}
DEMO_MODEL = "smollm2-135m-instruct"


class ZeroShotConfig(dg.Config):
    """The task split and the training settings (the paper: AdamW); the CoT level of the training responses is the
    asset's, the ordering the partition's. Choices are enums (Dagster refuses others at launch); ranges are checked
    as the run is submitted, every problem at once (`assets.launch`)."""

    train_tasks: list[str] = Field(
        default=list(DEMO_TRAIN_TASKS), description="Tasks trained on (names known to the task catalog)."
    )
    test_tasks: list[str] = Field(
        default=list(DEMO_TEST_TASKS), description="Held-out tasks whose loss is followed (none of the train tasks)."
    )
    per_task: int = Field(default=4, description="Training items drawn per train task (items; at least 1).")
    per_test_task: int = Field(default=4, description="Held-out items drawn per test task (items; at least 1).")
    eval_every: int = Field(
        default=4, description="Held-out loss every this many steps (steps; at least 1), and at step 0 and the last."
    )
    learning_rate: float = Field(default=1e-5, description="Learning rate (per step; greater than 0).")
    optimizer: Literal["adamw", "sgd"] = Field(default="adamw", description="Optimizer: adamw (the paper's) or sgd.")
    batch_size: int = Field(
        default=4, description="Training items per optimizer step (items; at least 1); one epoch is "
        "ceil(items / batch_size) steps. Only this run's: the compute resource's batch_size bounds gradient_stats' "
        "passes."
    )
    embedder: Literal["minilm", "model"] = Field(
        default="minilm", description="Sentence embeddings for the seen-data distance and the embedding orderings: "
        "minilm (all-MiniLM-L6-v2, the paper's) or model (the model's own last hidden states, mean-pooled, at "
        "the initial weights)."
    )
    trainable: Literal["all", "attention"] = Field(
        default="all", description="Weights that train: all (the paper's) or attention (q, k, v, o projections)."
    )
    seed: int = Field(default=0, description="Seed of the item draw and the random ordering (0 to 2**32 - 1).")
    epochs: float = Field(default=1.0, description="Passes over the training items per ordering (epochs; above 0).")
    seeds: list[int] = Field(
        default=[], description="One run per seed in `zero_shot_seeds/`, drawn with a band by `zero_shot_figures`; "
        "empty: the one run of `seed`."
    )
    generation_metrics: bool = Field(
        default=True, description="Greedy answers on the held-out items at each eval step, scored with ROUGE-1, "
        "ROUGE-L and exact match beside the loss."
    )
    max_new_tokens: int = Field(default=16, description="Tokens per greedy answer (tokens; at least 1).")
    reward_model: str = Field(
        default="", description="A local sequence-classification model folder scoring the answers (empty: none; "
        "none offline)."
    )
    subset_k: int = Field(
        default=2, description="tma_subset: the nearest training items kept per test item (items; at least 1)."
    )


def _keys(context: Any) -> tuple[str, str]:
    """(model, ordering name) of the partition (`assets.partitions.zero_shot_dims`)."""
    return zero_shot_dims(context.partition_key)


def zero_shot_asset_name(level: str) -> str:
    """One asset per training level; None CoT keeps the original name (and its records)."""
    return "zero_shot_dynamics" if level == "none" else f"zero_shot_dynamics_{level}"


def _zero_shot_asset(level: str) -> dg.AssetsDefinition:
    @dg.asset(
        name=zero_shot_asset_name(level),
        partitions_def=model_ordering_partitions,
        code_version=ZERO_SHOT_VERSION,
        group_name="dynamics",
        kinds={"pytorch", "parquet"},
        pool=GPU_POOL,
        output_required=False,  # a rerun of a finished run materializes nothing: its figures do not refresh
        description=f"Held-out-task loss at step 0 and every K steps of one epoch of {LEVEL_LABELS[level]} training "
        "responses, seen-data distance (arXiv 2406.11721). The run's settings are in its metadata.",
    )
    def _asset(
        context: dg.AssetExecutionContext,
        config: ZeroShotConfig,
        store: OutputStore,
        compute: ComputeResource,
        curation: CurationResource,
    ) -> Iterator[dg.MaterializeResult | dg.AssetObservation]:
        yield from _train(context, config, store, compute, curation, level)

    return _asset


def _train(
    context: dg.AssetExecutionContext,
    config: ZeroShotConfig,
    store: OutputStore,
    compute: ComputeResource,
    curation: CurationResource,
    level: str,
) -> Iterator[dg.MaterializeResult | dg.AssetObservation]:
    import pandas as pd

    from data_sources.datasets.zero_shot_tasks import OfflineTasks
    from data_sources.models.catalog import get_model_spec
    from lg_pipeline.dynamics.training import LoadedModel
    from lg_pipeline.dynamics.zero_shot.run import nothing_to_do, run_zero_shot

    model_name, ordering = _keys(context)
    out = store.zero_shot(model_name, level, ordering)
    with clear_errors():
        settings = zero_shot_settings(config, ordering, compute, level)  # first: bad settings fail before anything
        provider = OfflineTasks(curation.release_dir, compute.cache_dir)
        provenance = {"weights_file": compute.weights_identity(model_name)}

        def load() -> LoadedModel:
            model, tokenizer, spec = compute.load(model_name)  # the run ends with the weights it was given
            return LoadedModel(model, tokenizer, spec.chat, model_name, spec.source)

        if config.seeds:  # folders of their own (`zero_shot_seeds/`): the one run's folder stays
            yield _seed_runs(context, config, store, model_name, level, ordering, settings, provider, load)
            return
        skip = nothing_to_do(settings, provider, out, chat=get_model_spec(model_name).chat,
                             dtype=compute.load_dtype(model_name), device_type=compute.device_type,
                             provenance=provenance)
        if skip:
            yield skipped(context, skip)
            return
        # Another split or setting in this folder is computed beside it and replaces it once complete: the
        # launchpad's config is what the user asked for.
        result = run_zero_shot(settings, provider, load, out, wait=True, report=context.log.info, on_change="beside",
                               provenance=provenance)
    losses = pd.read_parquet(store.zero_shot_table(model_name, level, ordering, "zero_shot"))
    overall = losses[losses.task == ALL_TASKS].sort_values("step")
    figure = _figure(store, losses, model_name, level, ordering)
    extra = _alignment_metadata(store, model_name, level, ordering)
    yield dg.MaterializeResult(
        metadata={
            **run_settings(settings.train, level=level, eval_every=settings.eval_every, embedder=settings.embedder),
            "train_tasks": dg.MetadataValue.json(config.train_tasks),
            "test_tasks": dg.MetadataValue.json(config.test_tasks),
            "held_out_loss_step_0": float(overall.loss.iloc[0]),
            "held_out_loss_last": float(overall.loss.iloc[-1]),
            "steps": int(overall.step.iloc[-1]),
            "resumed": bool(result.resumed),
            "seconds": dg.MetadataValue.json({k: round(v, 1) for k, v in result.seconds.items()}),
            "device": compute.leased_device,
            "path": dg.MetadataValue.path(str(out)),
            "held_out_loss": md_table(overall[["step", "loss", "n_examples"]]),
            "figure: held-out loss": dg.MetadataValue.md(figure_md(figure)),
            **extra,
        },
        data_version=dg.DataVersion(file_version(store.zero_shot_table(model_name, level, ordering, "zero_shot"))),
    )


def _seed_runs(context, config, store, model_name, level, ordering, settings, provider, load) -> dg.MaterializeResult:
    """One run per seed of `config.seeds` under `store.zero_shot_seeds` (each its own run folder); the band across
    them is `zero_shot_figures`'."""
    import pandas as pd

    from lg_pipeline.dynamics.seeds import check_seeds_target, for_each_seed, parse_seeds, seed_folder
    from lg_pipeline.dynamics.zero_shot.run import run_zero_shot, zero_shot_run

    seeds = parse_seeds(",".join(map(str, config.seeds)), "seeds")
    base = store.zero_shot_seeds(model_name, level, ordering)
    check_seeds_target(base)
    for_each_seed(run_zero_shot, settings, seeds, base, provider, load, wait=True, report=context.log.info,
                  on_change="beside")
    last = {}
    for seed in seeds:
        losses = pd.read_parquet(zero_shot_run(seed_folder(base, seed)).table("zero_shot"))
        overall = losses[losses.task == ALL_TASKS].sort_values("step")
        last[str(seed)] = float(overall.loss.iloc[-1])
    return dg.MaterializeResult(
        metadata={
            "level": level,
            "seeds": dg.MetadataValue.json(list(seeds)),
            "held_out_loss_last_by_seed": dg.MetadataValue.json(last),
            "path": dg.MetadataValue.path(str(base)),
        },
        data_version=dg.DataVersion(
            "+".join(file_version(zero_shot_run(seed_folder(base, s)).table("zero_shot")) for s in seeds)
        ),
    )


def zero_shot_settings(config: ZeroShotConfig, ordering: str, compute: ComputeResource, level: str = "none") -> Any:
    """The launchpad's config (the partition's ordering, the asset's level) as the run's settings, named as in the
    config."""
    from lg_pipeline.dynamics.zero_shot.run import ZeroShotSettings
    from lg_pipeline.gradients.targets import parse_suffixes

    train = {
        "learning_rate": config.learning_rate, "optimizer": config.optimizer, "batch_size": config.batch_size,
        "seed": config.seed, "trainable": config.trainable, "chat": None, "max_length": compute.max_length,
        "epochs": config.epochs,
    }
    return ZeroShotSettings.build(
        train=train, train_tasks=tuple(config.train_tasks), test_tasks=tuple(config.test_tasks), level=level,
        per_task=config.per_task, per_test_task=config.per_test_task, orderings=(ordering,),
        eval_every=config.eval_every, embedder=config.embedder, targets=parse_suffixes(compute.targets),
        cache_dir=compute.cache_dir, generation_metrics=config.generation_metrics,
        max_new_tokens=config.max_new_tokens, reward_model=config.reward_model, subset_k=config.subset_k,
    )


def _alignment_metadata(store: OutputStore, model: str, level: str, ordering: str) -> dict[str, Any]:
    """The gradient ordering's per-layer alignments, when this run computed them."""
    import pandas as pd

    from lg_pipeline.dynamics.zero_shot.figures import alignment_figure

    alignment = pd.read_parquet(store.zero_shot_table(model, level, ordering, "alignment"))
    if not len(alignment):
        return {}
    figure = store.zero_shot_figure(model, level, "alignment", run=True)
    alignment_figure(alignment, figure, f"{model}, {level} CoT: ⟨∇L_u, ∇L_test⟩ per layer at step 0")
    return {"figure: alignment per layer": dg.MetadataValue.md(figure_md(figure))}


def _figure(store: OutputStore, losses: Any, model: str, level: str, ordering: str) -> Any:
    from lg_pipeline.dynamics.zero_shot.figures import loss_figure

    path = store.zero_shot_figure(model, level, ordering, run=True)
    return loss_figure(losses, path, f"{model}, {level} CoT training, {ordering}")


def _zero_shot_check(asset: dg.AssetsDefinition, level: str) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=asset,
        name="zero_shot_complete" if level == "none" else f"zero_shot_{level}_complete",
        partitions_def=model_ordering_partitions,
        blocking=True,
        description="All tables written, the ordering a permutation of the training items, finite losses at every "
        "eval step, __all__ the task mean, step-0 losses shared, seen distances in range (as `lg-pipeline "
        "validate`).",
    )
    def complete(context: dg.AssetCheckExecutionContext, store: OutputStore) -> dg.AssetCheckResult:
        return _complete(store, *_keys(context), level)

    return complete


def _complete(store: OutputStore, model: str, ordering: str, level: str) -> dg.AssetCheckResult:
    from lg_pipeline.dynamics.zero_shot.checks import check_run_folder

    seeded = [(seed, folder) for m, lv, o, seed, folder in store.zero_shot_seed_runs()
              if (m, lv, o) == (model, level, ordering)]
    problems = {}
    for seed, folder in seeded:  # multi-seed runs: checked alike (no verdict file: they are not gated)
        failures = check_run_folder(folder, [ordering]).details()
        if failures:
            problems[f"seed-{seed}"] = failures
    seed_meta = {"seed_runs": dg.MetadataValue.json([f"seed-{seed}" for seed, _ in seeded]),
                 "seed_problems": dg.MetadataValue.json(problems)}
    if (model, level, ordering) not in store.zero_shot_runs():
        return dg.AssetCheckResult(passed=bool(seeded) and not problems, metadata={
            "level": level, "problems": dg.MetadataValue.json([] if seeded else ["no run folder"]), **seed_meta})
    failures = check_run_folder(store.zero_shot(model, level, ordering), [ordering]).details()
    gates.record_zero_shot(store, model, level, ordering, failures)
    return dg.AssetCheckResult(
        passed=not failures and not problems,
        metadata={"level": level, "problems": dg.MetadataValue.json(failures), **seed_meta},
    )


ZERO_SHOT_ASSETS = {level: _zero_shot_asset(level) for level in REASONING_LEVELS}
ZERO_SHOT_CHECKS = {level: _zero_shot_check(asset, level) for level, asset in ZERO_SHOT_ASSETS.items()}
zero_shot_dynamics = ZERO_SHOT_ASSETS["none"]
zero_shot_dynamics_simplified = ZERO_SHOT_ASSETS["simplified"]
zero_shot_dynamics_detailed = ZERO_SHOT_ASSETS["detailed"]
zero_shot_complete = ZERO_SHOT_CHECKS["none"]
zero_shot_simplified_complete = ZERO_SHOT_CHECKS["simplified"]
zero_shot_detailed_complete = ZERO_SHOT_CHECKS["detailed"]
