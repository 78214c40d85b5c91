"""Benchmark zero-shot dynamics: what the embedder and the gradient ordering cost next to one training epoch.

Timed side by side in this one run, on the same split and model (ratios only, never compared with another
machine or run):
1. MiniLM embeddings of every training and test item (the first call also loads the model: shown apart);
2. the trained model's own mean-pooled hidden states (`--embedder model`);
3. the gradient ordering's alignments ⟨∇L_u, ∇L_test⟩ of every training item, from the engine's factors;
4. one epoch of fine-tuning on the same items through `fine_tune` (TRL), the unit of the ratios.
Each is timed `--repeats` times, alternating, best kept, so load from other processes slows them alike.
The weights are restored after every epoch. No target is asserted.

    .venv/bin/python bench/bench_zero_shot.py [--model smollm2-135m-instruct] [--per-task 4] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from lg_pipeline.dynamics.zero_shot.tasks import DEMO_TEST_TASKS, DEMO_TRAIN_TASKS

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m-instruct", help="catalog name or local transformers folder")
    p.add_argument("--train-tasks", default=",".join(DEMO_TRAIN_TASKS))
    p.add_argument("--test-tasks", default=",".join(DEMO_TEST_TASKS))
    p.add_argument("--per-task", type=int, default=4)
    p.add_argument("--per-test-task", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--optimizer", default="adamw")
    p.add_argument("--trainable", default="all")
    p.add_argument("--targets", default="q,k,v,o", help="matrices the alignments sum over")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default=None)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--cache-dir", default=os.environ.get("LG_CACHE_DIR", str(ROOT / ".cache")))
    return p.parse_args(argv)


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    import torch

    from data_sources.datasets.zero_shot_tasks import OfflineTasks
    from data_sources.models.catalog import open_model
    from lg_pipeline.dynamics.training import TrainSettings, fine_tune
    from lg_pipeline.dynamics.zero_shot.alignment import AlignmentConfig, alignments
    from lg_pipeline.dynamics.zero_shot.embeddings import minilm_embedder, model_embedder
    from lg_pipeline.dynamics.zero_shot.tasks import build_split
    from lg_pipeline.gradients.targets import parse_suffixes

    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    split = build_split(args.train_tasks.split(","), args.test_tasks.split(","), OfflineTasks(cache_dir=args.cache_dir),
                        "none", args.per_task, args.per_test_task)
    train, test = [e for _, e in split.train_items()], [e for _, e in split.test_items()]
    items = train + test
    model, tokenizer, spec = open_model(args.model, args.device, args.dtype, args.cache_dir)
    initial = {k: v.detach().clone() for k, v in model.state_dict().items()}
    steps = -(-len(train) // args.batch_size)
    config = TrainSettings(learning_rate=1e-5, optimizer=args.optimizer, steps=steps, batch_size=args.batch_size,
                         trainable=args.trainable, chat=spec.chat)
    align = AlignmentConfig(parse_suffixes(args.targets), args.batch_size, 1024, spec.chat)
    minilm_load = timed(lambda: minilm_embedder(args.cache_dir, args.device))  # unpack (first time) and load
    embed_minilm, embed_model = minilm_embedder(args.cache_dir, args.device), model_embedder(model, tokenizer)

    def epoch() -> None:
        fine_tune(model, tokenizer, train, config)
        model.load_state_dict(initial)

    runners = {
        "minilm embeddings": lambda: embed_minilm(items),
        "model embeddings": lambda: embed_model(items),
        "gradient alignments": lambda: alignments(model, tokenizer, train, test, align),
        "one training epoch": epoch,
    }
    best = {name: float("inf") for name in runners}
    for _ in range(args.repeats):
        for name, fn in runners.items():
            best[name] = min(best[name], timed(fn))
    unit = best["one training epoch"]
    threads, load = torch.get_num_threads(), os.getloadavg()[0]
    print(f"{spec.display_name} on {args.device}, {threads} torch thread(s), load average {load:.1f}")
    print(f"{len(train)} training items ({steps} steps of {args.batch_size}, {args.optimizer}, {args.trainable}), "
          f"{len(test)} held-out items; best of {args.repeats}")
    print(f"{'':24s} {'seconds':>8s} {'× one epoch':>12s}")
    for name, seconds in best.items():
        print(f"{name:24s} {seconds:8.2f} {seconds / unit:12.3f}")
    print(f"{'minilm load (once)':24s} {minilm_load:8.2f} {minilm_load / unit:12.3f}")


if __name__ == "__main__":
    main()
