"""Zero-shot dynamics: held-out-task loss through fine-tuning of one model on one ordering of the training items.

`zero_shot_dynamics[model|ordering]` trains in the `gpu` pool; the task split and the CoT level are run config
(the launchpad's), and each (model, level, ordering) has its own folder, so None and Detailed CoT runs of the
same orderings sit side by side. `zero_shot_complete` checks the folder; `zero_shot_figures` draws every
model's orderings and levels inline in the UI.
"""

from typing import Any

import dagster as dg

from assets import gates
from assets.failures import clear_errors
from assets.metadata import file_version, inline_png, md_table
from assets.partitions import MODEL, model_partitions
from assets.pools import GPU_POOL
from assets.resources import ComputeResource, CurationResource, OutputStore
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
    """The task split, the CoT level of the training responses, and the training settings (the paper: AdamW)."""

    train_tasks: list[str] = list(DEMO_TRAIN_TASKS)
    test_tasks: list[str] = list(DEMO_TEST_TASKS)
    level: str = "none"
    per_task: int = 4
    per_test_task: int = 4
    eval_every: int = 4
    learning_rate: float = 1e-5
    optimizer: str = "adamw"
    batch_size: int = 4
    embedder: str = "minilm"
    trainable: str = "all"
    seed: int = 0
    generation_metrics: bool = True  # greedy answers scored with ROUGE-1, ROUGE-L, exact match at each eval step
    max_new_tokens: int = 16
    reward_model: str = ""  # a local sequence-classification folder; none offline
    subset_k: int = 2  # tma_subset: nearest training items kept per test item


def _keys(context: Any) -> tuple[str, str]:
    dims = context.partition_key.keys_by_dimension
    return dims[MODEL], dims[ORDERING]


@dg.asset(
    partitions_def=model_ordering_partitions,
    code_version=ZERO_SHOT_VERSION,
    group_name="dynamics",
    kinds={"pytorch", "parquet"},
    pool=GPU_POOL,
    description="Held-out-task loss at step 0 and every K steps of one epoch, seen-data distance (arXiv 2406.11721).",
)
def zero_shot_dynamics(
    context: dg.AssetExecutionContext,
    config: ZeroShotConfig,
    store: OutputStore,
    compute: ComputeResource,
    curation: CurationResource,
) -> dg.MaterializeResult:
    import pandas as pd

    from data_sources.datasets.zero_shot_tasks import OfflineTasks
    from lg_pipeline.dynamics.training import LoadedModel
    from lg_pipeline.dynamics.zero_shot.run import run_zero_shot

    model_name, ordering = _keys(context)
    out = store.zero_shot(model_name, config.level, ordering)
    with clear_errors():
        settings = zero_shot_settings(config, ordering, compute)
        provider = OfflineTasks(curation.release_dir, compute.cache_dir)

        def load() -> LoadedModel:
            model, tokenizer, spec = compute.load(model_name)  # the run ends with the weights it was given
            return LoadedModel(model, tokenizer, spec.chat, model_name, spec.source)

        # Another split or setting in this folder is computed beside it and replaces it once complete: the
        # launchpad's config is what the user asked for.
        result = run_zero_shot(settings, provider, load, out, wait=True, report=context.log.info, on_change="beside")
    losses = pd.read_parquet(store.zero_shot_table(model_name, config.level, ordering, "zero_shot"))
    overall = losses[losses.task == ALL_TASKS].sort_values("step")
    figure = _figure(store, losses, model_name, config.level, ordering)
    extra = _alignment_metadata(store, model_name, config.level, ordering)
    return dg.MaterializeResult(
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
