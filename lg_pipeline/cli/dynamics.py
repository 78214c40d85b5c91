"""`lg-pipeline dynamics`: fine-tune on one study-format file and follow what each update does to probes."""

from __future__ import annotations

import argparse
import os

from lg_pipeline.errors import InputError


def register(sub: argparse._SubParsersAction) -> None:
    d = sub.add_parser("dynamics", help="learning dynamics: probe log-probabilities and their per-layer changes")
    d.add_argument("--model", required=True, help="catalog name or local transformers folder")
    d.add_argument("--data", required=True, help="study-format JSON the model is trained on")
    d.add_argument("--also", action="append", default=[], metavar="LEVEL=FILE.json", help="aligned other CoT level")
    d.add_argument("--wrong", default=None, help="the wrong-answer set of the same rows (needed for --objective dpo)")
    d.add_argument("--objective", choices=["sft", "dpo"], default="sft")
    d.add_argument("--steps", type=int, default=20)
    d.add_argument("--eval-every", type=int, default=5)
    d.add_argument("--lr", type=float, default=1e-4)
    d.add_argument("--optimizer", choices=["sgd", "adamw"], default="sgd")
    d.add_argument("--batch-size", type=int, default=2)
    d.add_argument("--n-probes", type=int, default=6, help="probe prompts (each trained one gets several responses)")
    d.add_argument("--trainable", choices=["attention", "all"], default="attention")
    d.add_argument("--chat", dest="chat", action="store_true", default=None, help="wrap in the chat template")
    d.add_argument("--no-chat", dest="chat", action="store_false")
    d.add_argument("--max-length", type=int, default=1024)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    d.add_argument("--dtype", default=None, help="float32, bfloat16 or float16 (default: the catalog's)")
    d.add_argument("--cache-dir", default=os.environ.get("LG_CACHE_DIR", ".cache"))
    d.add_argument("--out", required=True, help="output folder (resumes a run that stopped there)")
    d.set_defaults(func=run)


def parse_also(items: list[str]) -> dict[str, str]:
    """`["detailed=path.json"]` -> {"detailed": "path.json"}."""
    out = {}
    for item in items:
        level, sep, path = item.partition("=")
        if not sep or not level.strip() or not path.strip():
            raise InputError(f"--also: '{item}' is not LEVEL=FILE.json")
        out[level.strip()] = path.strip()
    return out


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from data_sources.models.catalog import open_model
    from lg_pipeline.dynamics.learning.probes import build_probes, check_aligned, rows_to_train
    from lg_pipeline.dynamics.learning.run import run_dynamics
    from lg_pipeline.dynamics.training import TrainConfig, trainable_parameters
    from lg_pipeline.io.study_json import load_study_json

    train = load_study_json(args.data)
    also = {level: load_study_json(path) for level, path in parse_also(args.also).items()}
    for level, rows in also.items():
        check_aligned(train, rows, f"--also {level}")
    wrong = load_study_json(args.wrong) if args.wrong else None
    if wrong is not None:
        check_aligned(train, wrong, "--wrong")
    if args.objective == "dpo" and wrong is None:
        raise InputError("--objective dpo needs --wrong (the rejected responses of the same rows)")
    n_trained = rows_to_train(len(train), args.n_probes, args.steps, args.batch_size)
    probes = build_probes(train, args.n_probes, n_trained, args.seed, also, wrong)
    model, tokenizer, spec = open_model(args.model, args.device, args.dtype, args.cache_dir)
    chat = spec.chat if args.chat is None else args.chat
    config = TrainConfig(
        learning_rate=args.lr,
        optimizer=args.optimizer,
        steps=args.steps,
        batch_size=args.batch_size,
        seed=args.seed,
        trainable=args.trainable,
        objective=args.objective,
        chat=chat,
        max_length=args.max_length,
    )
    trainable_parameters(model, config.trainable)  # a model without q/k/v/o fails here, before the progress bar
    bar = tqdm(total=args.steps, unit="step", desc=spec.display_name)

    def progress(step: int, total: int) -> None:
        bar.update(step - bar.n)

    summary = run_dynamics(
        model,
        tokenizer,
        train[:n_trained],  # rows after these are only the held-out probes' prompts
        probes,
        config,
        args.out,
        args.eval_every,
        wrong[:n_trained] if args.objective == "dpo" else None,
        progress,
    )
    bar.close()
    print(
        f"wrote {args.out}: {summary.steps} steps, {len(probes)} probes, eval steps {summary.eval_steps}; "
        f"R² of predicted vs measured over probes: {summary.r2:.4f} "
        f"(per step: {', '.join(f'{s}: {v:.4f}' for s, v in summary.r2_by_step.items())})"
    )
    return 0
