"""`lg-pipeline dynamics`: fine-tune on one study-format file and follow what each update does to probes."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from lg_pipeline.errors import InputError


def register(sub: argparse._SubParsersAction) -> None:
    d = sub.add_parser("dynamics", help="learning dynamics: probe log-probabilities and their per-layer changes")
    d.add_argument("--model", required=True, help="catalog name or local transformers folder")
    d.add_argument("--data", required=True, help="study-format JSON the model is trained on")
    d.add_argument("--also", action="append", default=[], metavar="LEVEL=FILE.json", help="aligned other CoT level")
    d.add_argument("--wrong", default=None, help="the wrong-answer set of the same rows (needed for --objective dpo)")
    d.add_argument("--probes", default=None, metavar="FILE.json",
                   help="one's own probes beside the run's: a list of {prompt_id, type, response}")
    d.add_argument("--teacher", choices=["none", "openai", "transformers"], default="none",
                   help="who writes the rephrase probes (cached like the curation's teacher); none: left out")
    d.add_argument("--teacher-model", default="", help="the teacher's model (catalog name or folder, or API model)")
    d.add_argument("--teacher-base-url", default="", help="openai teacher: the endpoint, e.g. https://.../v1")
    d.add_argument("--teacher-api-key-env", default="OPENAI_API_KEY", help="openai teacher: the key's variable NAME")
    d.add_argument("--teacher-max-tokens", type=int, default=2048, help="the longest rephrase, in new tokens")
    d.add_argument("--objective", choices=["sft", "dpo"], default="sft")
    d.add_argument(
        "--rejected", choices=["auto", "same_prompt", "shuffled"], default="auto",
        help="DPO's rejected responses and the `wrong` probe: same_prompt (the row's response, final answer "
        "changed), shuffled (--wrong), auto (same_prompt when every final answer is a number, else --wrong)",
    )
    d.add_argument("--steps", type=int, default=None, help="optimizer steps in all (default 20, or from --epochs)")
    d.add_argument("--epochs", type=float, default=None, help="passes over the trained rows (without --steps)")
    d.add_argument("--eval-every", type=int, default=5)
    d.add_argument("--lr", type=float, default=1e-4)
    d.add_argument("--optimizer", choices=["sgd", "adamw"], default="sgd")
    d.add_argument("--batch-size", type=int, default=2)
    d.add_argument("--n-probes", type=int, default=6, help="probe prompts (each trained one gets several responses)")
    d.add_argument("--trainable", choices=["attention", "all"], default="attention")
    d.add_argument("--chat", dest="chat", action="store_true", default=None, help="wrap in the chat template")
    d.add_argument("--no-chat", dest="chat", action="store_false")
    d.add_argument("--max-length", type=int, default=1024)
    d.add_argument("--allow-probe-truncation", action="store_true",
                   help="measure probes cut at --max-length (counted in probes.cut_tokens) instead of refusing")
    d.add_argument("--seed", type=int, default=None, help="the one run's seed (default 0)")
    d.add_argument("--seeds", default=None, metavar="0,1,2", help="one run per seed, each in --out/seed-N")
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


def settings_of(args: argparse.Namespace):
    """The run's settings from the flags (checked on construction: every bad setting in one line)."""
    from lg_pipeline.dynamics.learning.run import LearningDynamicsSettings

    train = {
        "learning_rate": args.lr, "optimizer": args.optimizer, "batch_size": args.batch_size,
        "steps": args.steps if args.steps is not None or args.epochs is not None else 20, "epochs": args.epochs,
        "seed": args.seed or 0, "trainable": args.trainable, "objective": args.objective, "chat": args.chat,
        "max_length": args.max_length,
    }
    return LearningDynamicsSettings.build(
        train=train, eval_every=args.eval_every, n_probes=args.n_probes, rejected=args.rejected,
        allow_probe_truncation=args.allow_probe_truncation,
    )


def data_of(args: argparse.Namespace):
    """The training rows, companion sets and own probes named by `--data`, `--also`, `--wrong`, `--probes` (each
    read and checked)."""
    from lg_pipeline.dynamics.learning.probe_file import load_probe_file
    from lg_pipeline.dynamics.learning.run import TrainingData
    from lg_pipeline.io.study_json import load_study_json

    also = parse_also(args.also)
    labels = {"rows": f"--data {args.data}", "wrong": "--wrong", **{level: f"--also {level}" for level in also}}
    rows = load_study_json(args.data)
    return TrainingData(
        rows,
        {level: load_study_json(path) for level, path in also.items()},
        load_study_json(args.wrong) if args.wrong else None,
        labels,
        own_probes=load_probe_file(args.probes, rows, f"--probes {args.probes}") if args.probes else (),
        teacher=teacher_of(args),
    )


def teacher_of(args: argparse.Namespace):
    """The rephrase teacher the flags name (None for none), with the curation's answer cache under --cache-dir."""
    from data_sources.teachers import make_teacher

    return make_teacher(
        args.teacher, model=args.teacher_model, base_url=args.teacher_base_url, api_key_env=args.teacher_api_key_env,
        device=args.device, max_tokens=args.teacher_max_tokens, cache_dir=Path(args.cache_dir, "curation"),
        model_cache_dir=args.cache_dir,
    )


def run(args: argparse.Namespace) -> int:
    from lg_pipeline.cli.runs import check_model_inputs, model_loader, progress_bar, seeds_of
    from lg_pipeline.dynamics.learning.run import run_learning_dynamics
    from lg_pipeline.io.manifest import data_file_fields

    settings = settings_of(args)
    seeds = seeds_of(args)
    if seeds is not None:
        return _across_seeds(args, seeds)
    check_model_inputs(args.model, args.device, args.dtype)
    data = data_of(args)
    load = model_loader(args.model, args.device, args.dtype, args.cache_dir)
    with progress_bar(settings.train.steps, "step", args.model) as bar:

        def progress(step: int, total: int) -> None:
            bar.total = total
            bar.update(step - bar.n)

        summary = run_learning_dynamics(
            settings, data, load, args.out, wait=False, report=bar.write, progress=progress,
            provenance=data_file_fields(args.data),
        )
    print(
        f"wrote {args.out}: {summary.steps} steps, {summary.n_probes} probes, eval steps {summary.eval_steps}; "
        f"R² of predicted vs measured over probes: {summary.r2:.4f} "
        f"(per step: {', '.join(f'{s}: {v:.4f}' for s, v in summary.r2_by_step.items())})"
    )
    from lg_pipeline.dynamics.learning.run_figures import draw_run_figures

    pngs = draw_run_figures(args.out, Path(args.model).name, Path(args.data).stem, args.objective)
    print(f"figures: {len(pngs)} in {Path(args.out) / 'figures'}")
    return 0


def _across_seeds(args: argparse.Namespace, seeds: tuple[int, ...]) -> int:
    """One run per seed (`--out/seed-N`), then the curves across seeds: table and band figure in `--out`."""
    from pathlib import Path

    from lg_pipeline.cli.runs import run_per_seed
    from lg_pipeline.dynamics.seeds import across_seeds_base, learning_across_seeds, seed_folders, spread_text

    run_per_seed(args, run, seeds)
    title = f"{Path(args.model).name}: Δ log p per probe type, seeds {', '.join(map(str, seeds))}"
    runs = list(seed_folders(args.out).items())
    table, figure, frame = learning_across_seeds(runs, across_seeds_base(args.out), title)
    print(f"across seeds: {table}, {figure}")
    last = frame[(frame.quantity == "change") & (frame.step == frame.step.max())]
    print(f"Δ log p since step 0 at step {int(frame.step.max())}, mean ± std [min, max] over seeds:")
    print(spread_text(last, ["probe_type"]))
    return 0
