"""Zero-shot dynamics: held-out-task loss through fine-tuning of one model on one ordering of the training items.

`zero_shot_dynamics[model|ordering]` trains in the `gpu` pool; the task split and the CoT level are run config
(the launchpad's), and each (model, level, ordering) has its own folder, so None and Detailed CoT runs of the
same orderings sit side by side. `zero_shot_complete` checks the folder; `zero_shot_figures` draws every
model's orderings and levels inline in the UI.
"""

from collections.abc import Iterator
from typing import Any, Literal

import dagster as dg
from pydantic import Field

from assets import gates
from assets.failures import clear_errors
from assets.metadata import file_version, inline_png, md_table
from assets.partitions import MODEL, model_partitions
from assets.pools import GPU_POOL
from assets.resources import ComputeResource, CurationResource, OutputStore
from assets.skips import skipped
from lg_pipeline.dynamics.zero_shot.held_out import ALL_TASKS
from lg_pipeline.dynamics.zero_shot.orderings import ORDERINGS
from lg_pipeline.dynamics.zero_shot.run import ZERO_SHOT_VERSION
from lg_pipeline.dynamics.zero_shot.tasks import DEMO_TEST_TASKS, DEMO_TRAIN_TASKS

ORDERING = "ordering"
model_ordering_partitions = dg.MultiPartitionsDefinition(
    {MODEL: model_partitions, ORDERING: dg.StaticPartitionsDefinition(list(ORDERINGS))}
)
DEMO_ORDERINGS = ("rt", "nft", "fft")
DEMO_MODEL = "smollm2-135m-instruct"


class ZeroShotConfig(dg.Config):
    """The task split, the CoT level of the training responses, and the training settings (the paper: AdamW). The
    ordering is the partition's. Choices are enums (Dagster refuses others at launch); ranges are checked as the run
    is submitted, every problem at once (`assets.launch`)."""

    train_tasks: list[str] = Field(
        default=list(DEMO_TRAIN_TASKS), description="Tasks trained on (names known to the task catalog)."
    )
    test_tasks: list[str] = Field(
        default=list(DEMO_TEST_TASKS), description="Held-out tasks whose loss is followed (none of the train tasks)."
    )
    level: Literal["none", "simplified", "detailed"] = Field(
        default="none", description="CoT level of the training responses: none, simplified or detailed."
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


def _keys(context: Any) -> tuple[str, str]:
    dims = context.partition_key.keys_by_dimension
    return dims[MODEL], dims[ORDERING]


@dg.asset(
    partitions_def=model_ordering_partitions,
    code_version=ZERO_SHOT_VERSION,
    group_name="dynamics",
    kinds={"pytorch", "parquet"},
    pool=GPU_POOL,
    output_required=False,  # a rerun of a finished run materializes nothing: its figures do not refresh
    description="Held-out-task loss at step 0 and every K steps of one epoch, seen-data distance (arXiv 2406.11721).",
)
def zero_shot_dynamics(
    context: dg.AssetExecutionContext,
    config: ZeroShotConfig,
    store: OutputStore,
    compute: ComputeResource,
    curation: CurationResource,
) -> Iterator[dg.MaterializeResult | dg.AssetObservation]:
    import pandas as pd

    from data_sources.datasets.zero_shot_tasks import OfflineTasks
    from data_sources.models.catalog import get_model_spec
    from lg_pipeline.dynamics.training import LoadedModel
    from lg_pipeline.dynamics.zero_shot.run import nothing_to_do, run_zero_shot

    model_name, ordering = _keys(context)
    out = store.zero_shot(model_name, config.level, ordering)
    with clear_errors():
        settings = zero_shot_settings(config, ordering, compute)  # first: bad settings fail before anything
        provider = OfflineTasks(curation.release_dir, compute.cache_dir)
        provenance = {"weights_file": compute.weights_identity(model_name)}
        skip = nothing_to_do(settings, provider, out, chat=get_model_spec(model_name).chat,
                             dtype=compute.load_dtype(model_name), device_type=compute.device_type,
                             provenance=provenance)
        if skip:
            yield skipped(context, skip)
            return

        def load() -> LoadedModel:
            model, tokenizer, spec = compute.load(model_name)  # the run ends with the weights it was given
            return LoadedModel(model, tokenizer, spec.chat, model_name, spec.source)

        # Another split or setting in this folder is computed beside it and replaces it once complete: the
        # launchpad's config is what the user asked for.
        result = run_zero_shot(settings, provider, load, out, wait=True, report=context.log.info, on_change="beside",
                               provenance=provenance)
    losses = pd.read_parquet(store.zero_shot_table(model_name, config.level, ordering, "zero_shot"))
    overall = losses[losses.task == ALL_TASKS].sort_values("step")
    figure = _figure(store, losses, model_name, config.level, ordering)
    extra = _alignment_metadata(store, model_name, config.level, ordering)
    yield dg.MaterializeResult(
        metadata={
            "level": config.level,
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
            "figure: held-out loss": dg.MetadataValue.md(inline_png(figure)),
            **extra,
        },
        data_version=dg.DataVersion(file_version(store.zero_shot_table(model_name, config.level, ordering,
                                                                       "zero_shot"))),
    )


def zero_shot_settings(config: ZeroShotConfig, ordering: str, compute: ComputeResource) -> Any:
    """The launchpad's config (and the partition's ordering) as the run's settings, named as in the config."""
    from lg_pipeline.dynamics.zero_shot.run import ZeroShotSettings
    from lg_pipeline.gradients.targets import parse_suffixes

    train = {
        "learning_rate": config.learning_rate, "optimizer": config.optimizer, "batch_size": config.batch_size,
        "seed": config.seed, "trainable": config.trainable, "chat": None, "max_length": compute.max_length,
    }
    return ZeroShotSettings.build(
        train=train, train_tasks=tuple(config.train_tasks), test_tasks=tuple(config.test_tasks), level=config.level,
        per_task=config.per_task, per_test_task=config.per_test_task, orderings=(ordering,),
        eval_every=config.eval_every, embedder=config.embedder, targets=parse_suffixes(compute.targets),
        cache_dir=compute.cache_dir,
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
    return {"figure: alignment per layer": dg.MetadataValue.md(inline_png(figure))}


def _figure(store: OutputStore, losses: Any, model: str, level: str, ordering: str) -> Any:
    from lg_pipeline.dynamics.zero_shot.figures import loss_figure

    path = store.zero_shot_figure(model, level, ordering, run=True)
    return loss_figure(losses, path, f"{model}, {level} CoT training, {ordering}")


@dg.asset_check(
    asset=zero_shot_dynamics,
    partitions_def=model_ordering_partitions,
    blocking=True,
    description="All tables written, the ordering a permutation of the training items, finite losses at every eval "
    "step, __all__ the task mean, step-0 losses shared, seen distances in range (as `lg-pipeline validate`).",
)
def zero_shot_complete(context: dg.AssetCheckExecutionContext, store: OutputStore) -> dg.AssetCheckResult:
    from lg_pipeline.dynamics.zero_shot.checks import check_run_folder

    model, ordering = _keys(context)
    runs = [level for m, level, o in store.zero_shot_runs() if (m, o) == (model, ordering)]
    problems = {}
    for level in runs:
        failures = check_run_folder(store.zero_shot(model, level, ordering), [ordering]).details()
        gates.record_zero_shot(store, model, level, ordering, failures)
        if failures:
            problems[level] = failures
    return dg.AssetCheckResult(
        passed=bool(runs) and not problems,
        metadata={"levels": dg.MetadataValue.json(runs), "problems": dg.MetadataValue.json(problems)},
    )
