"""`lg-pipeline zero-shot`: held-out-task loss through fine-tuning, per ordering of the training items."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from lg_pipeline.vocabulary import REASONING_LEVELS


def register(sub: argparse._SubParsersAction) -> None:
    z = sub.add_parser("zero-shot", help="held-out-task loss through training, per data ordering (arXiv 2406.11721)")
    z.add_argument("--list-tasks", action="store_true", help="list the tasks available offline and exit")
    z.add_argument("--model", help="catalog name or local transformers folder")
    z.add_argument("--train-tasks", help="T1,T2,... (catalog or reasoning-gym names, or name=FILE.json)")
    z.add_argument("--test-tasks", help="U1,U2,... held-out tasks, disjoint from the training tasks")
    z.add_argument("--level", default="none", choices=REASONING_LEVELS, help="CoT level of the training responses")
    z.add_argument("--per-task", type=int, default=5, help="items per training task")
    z.add_argument("--per-test-task", type=int, default=4, help="items per test task")
    z.add_argument("--orderings", default="rt,nft,fft", help="rt,nft,fft,round_robin,cluster,cluster_shuffled,coarse,"
                   "tma,tma_far,tma_random,tma_maxmin,tma_minmax,tma_subset,gradient (README: what each is)")
    z.add_argument("--subset-k", type=int, default=2, help="tma_subset: nearest training items kept per test item")
    z.add_argument("--max-new-tokens", type=int, default=16, help="greedy answer length for ROUGE / exact match")
    z.add_argument("--no-generation-metrics", dest="generation_metrics", action="store_false",
                   help="measure the held-out loss only (no greedy answers, ROUGE, exact match)")
    z.add_argument("--reward-model", default="", help="local sequence-classification folder scoring the answers")
    z.add_argument("--eval-every", type=int, default=4, help="held-out loss every K steps (and at step 0)")
    z.add_argument("--lr", type=float, default=1e-5)
    z.add_argument("--optimizer", default="adamw", help="adamw (the paper's) or sgd")
    z.add_argument("--batch-size", type=int, default=4)
    z.add_argument("--embedder", default="minilm", help="minilm (all-MiniLM-L6-v2) or model (its hidden states)")
    z.add_argument("--trainable", default="all", choices=["all", "attention"], help="parameters that train")
    z.add_argument("--targets", default="q,k,v,o", help="matrices the gradient ordering sums over")
    z.add_argument("--seed", type=int, default=None, help="the one run's seed (default 0)")
    z.add_argument("--seeds", default=None, metavar="0,1,2", help="one run per seed, each in --out/seed-N")
    z.add_argument("--epochs", type=float, default=1.0, help="passes over the training items per ordering")
    z.add_argument("--max-length", type=int, default=1024)
    z.add_argument("--chat", dest="chat", action="store_true", default=None, help="wrap in the chat template")
    z.add_argument("--no-chat", dest="chat", action="store_false")
    z.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    z.add_argument("--dtype", default=None, help="float32, bfloat16 or float16 (default: the catalog's)")
    z.add_argument("--cache-dir", default=os.environ.get("LG_CACHE_DIR", ".cache"))
    z.add_argument("--release-dir", default=os.environ.get("LG_RELEASE_DIR"), help="the study's release folder")
    z.add_argument("--out", help="output folder (resumes a run that stopped)")
    z.set_defaults(func=run)


def _list_tasks(provider) -> int:
    for name in provider.names():
        print(f"{name}\t{provider.describe(name)}")
    return 0


def run(args: argparse.Namespace) -> int:
    from data_sources.datasets.zero_shot_tasks import OfflineTasks
    from lg_pipeline.cli.runs import check_model_inputs, model_loader, seeds_of
    from lg_pipeline.dynamics.zero_shot.run import run_zero_shot
    from lg_pipeline.errors import InputError

    provider = OfflineTasks(args.release_dir, args.cache_dir)
    if args.list_tasks:
        return _list_tasks(provider)
    for flag in ("model", "train_tasks", "test_tasks", "out"):
        if not getattr(args, flag):
            raise InputError(f"--{flag.replace('_', '-')} is required (or --list-tasks)")
    settings = settings_of(args)
    seeds = seeds_of(args)
    if seeds is not None:
        return _across_seeds(args, seeds)
    check_model_inputs(args.model, args.device, args.dtype)
    load = model_loader(args.model, args.device, args.dtype, args.cache_dir)
    result = run_zero_shot(
        settings, provider, load, args.out, wait=False, report=lambda m: print(m, flush=True), on_change="refuse"
    )
    timing = ", ".join(f"{k} {v:.1f}s" for k, v in result.seconds.items())
    print(f"wrote {args.out}: orderings {', '.join(result.orderings_done)} (resumed {result.resumed}); {timing}")
    _figures(result.out, Path(args.model).name, args.level)
    _summary(result.out)
    return 0


def settings_of(args: argparse.Namespace):
    """The run's settings from the flags (checked on construction: every bad setting in one line)."""
    from lg_pipeline.dynamics.zero_shot.run import ZeroShotSettings
    from lg_pipeline.dynamics.zero_shot.tasks import parse_task_list
    from lg_pipeline.gradients.targets import parse_suffixes

    train = {
        "learning_rate": args.lr, "optimizer": args.optimizer, "batch_size": args.batch_size, "seed": args.seed or 0,
        "epochs": args.epochs,
        "trainable": args.trainable, "chat": args.chat, "max_length": args.max_length,
    }
    return ZeroShotSettings.build(
        train=train,
        train_tasks=tuple(parse_task_list(args.train_tasks, "--train-tasks")),
        test_tasks=tuple(parse_task_list(args.test_tasks, "--test-tasks")),
        level=args.level,
        per_task=args.per_task,
        per_test_task=args.per_test_task,
        orderings=tuple(s.strip() for s in args.orderings.split(",") if s.strip()),
        eval_every=args.eval_every,
        embedder=args.embedder,
        targets=parse_suffixes(args.targets),
        cache_dir=args.cache_dir,
        generation_metrics=args.generation_metrics,
        max_new_tokens=args.max_new_tokens,
        reward_model=args.reward_model,
        subset_k=args.subset_k,
    )


def _figures(out: Path, model: str, level: str) -> None:
    import pandas as pd

    from lg_pipeline.dynamics.zero_shot.figures import loss_figure, metrics_figure, seen_distance_figure
    from lg_pipeline.dynamics.zero_shot.run import zero_shot_run
    from lg_pipeline.io.locks import output_lock

    folder = zero_shot_run(out)
    name = f"{model}, {level} CoT training"
    with output_lock(folder.location, wait=True):  # the figures go into the run folder: one writer at a time
        losses = pd.read_parquet(folder.table("zero_shot"))
        loss_figure(losses, out / "zero_shot.png", f"Held-out loss, {name}")
        seen = pd.read_parquet(folder.table("seen_distance"))
        seen_distance_figure(seen, out / "seen_distance.png", f"Seen-data distance, {name}")
        metrics = pd.read_parquet(folder.table("generation_metrics"))
        if len(metrics):
            metrics_figure(losses, metrics, out / "metrics.png", f"Loss and generation metrics, {name}")
    print(f"figures: {out / 'zero_shot.png'}, {out / 'seen_distance.png'}"
          + (f", {out / 'metrics.png'}" if len(metrics) else ""))


def _summary(out: Path) -> None:
    """Held-out loss (all test items) per ordering at every eval step, as the run measured it."""
    import pandas as pd

    from lg_pipeline.dynamics.zero_shot.held_out import ALL_TASKS
    from lg_pipeline.dynamics.zero_shot.run import zero_shot_run

    losses = pd.read_parquet(zero_shot_run(out).table("zero_shot"))
    table = losses[losses.task == ALL_TASKS].pivot(index="step", columns="ordering", values="loss")
    print("held-out loss, all test items:")
    print(table.round(4).to_string())
    metrics = pd.read_parquet(zero_shot_run(out).table("generation_metrics"))
    for metric in ("rouge1", "rougeL", "exact_match", "reward"):
        part = metrics[metrics.task == ALL_TASKS]
        if len(part) and part[metric].notna().any():
            print(f"{metric}, all test items:")
            print(part.pivot(index="step", columns="ordering", values=metric).round(4).to_string())
    stability = pd.read_parquet(zero_shot_run(out).table("metric_stability"))
    print("agreement of the test tasks on the orderings (Kendall's W), per metric:")
    print(stability.pivot(index="step", columns="metric", values="rank_agreement").round(3).to_string())


def _across_seeds(args: argparse.Namespace, seeds: tuple[int, ...]) -> int:
    """One run per seed (`--out/seed-N`), then the held-out loss across seeds: table and band figure in `--out`."""
    from lg_pipeline.cli.runs import run_per_seed
    from lg_pipeline.dynamics.seeds import across_seeds_base, seed_folders, spread_text, zero_shot_across_seeds

    run_per_seed(args, run, seeds)
    title = f"Held-out loss, {Path(args.model).name}, {args.level} CoT training, seeds {', '.join(map(str, seeds))}"
    runs = list(seed_folders(args.out).items())
    table, figure, frame = zero_shot_across_seeds(runs, across_seeds_base(args.out), title)
    print(f"across seeds: {table}, {figure}")
    print("held-out loss (all test items), mean ± std [min, max] over seeds:")
    print(spread_text(frame, ["ordering", "step"]))
    return 0
