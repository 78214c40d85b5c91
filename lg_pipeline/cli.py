"""`lg-pipeline`: the engine outside Dagster, and the offline demo of the whole data product.

Bad input ends with one line naming it (exit 2), never a stack trace.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from lg_pipeline.examples import InputError


def _gradients(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from data_sources.model_catalog import open_model
    from lg_pipeline.engine import EngineConfig
    from lg_pipeline.examples import load_study_json
    from lg_pipeline.gradient_run import run_to_parquet
    from lg_pipeline.targets import parse_suffixes

    examples = load_study_json(args.data)[: args.limit]
    model, tokenizer, spec = open_model(args.model, args.device, args.dtype, args.cache_dir)
    chat = spec.chat if args.chat is None else args.chat
    config = EngineConfig(args.method, parse_suffixes(args.targets), args.batch_size, args.max_length, chat)
    bar = tqdm(total=len(examples), unit="ex", desc=spec.display_name)
    summary = run_to_parquet(model, tokenizer, examples, config, args.out, report=bar.write)
    bar.update(len(examples))
    bar.close()
    print(f"wrote {args.out}: {summary.counts} in {summary.seconds:.1f}s (resumed {summary.resumed})")
    for problem in summary.problems:
        print(f"  {problem['status']}: {problem['example_id']}: {problem['reason']}", file=sys.stderr)
    return 0 if summary.counts["ok"] or not examples else 1


def _demo(args: argparse.Namespace) -> int:
    from assets.demo import run_demo

    return run_demo(models=args.models, n_examples=args.n_examples)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lg-pipeline", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    g = sub.add_parser("gradients", help="per-example gradient statistics of one model on one JSON file")
    g.add_argument("--model", required=True, help="catalog name or local transformers folder")
    g.add_argument("--data", required=True, help="study-format JSON: list of {instruction, input, output}")
    g.add_argument("--out", required=True, help="output Parquet (resumes if a previous run stopped midway)")
    g.add_argument("--limit", type=int, default=None)
    g.add_argument("--chat", dest="chat", action="store_true", default=None, help="wrap in the chat template")
    g.add_argument("--no-chat", dest="chat", action="store_false")
    g.add_argument("--max-length", type=int, default=1024)
    g.add_argument("--batch-size", type=int, default=4)
    g.add_argument("--method", choices=["core", "full-svd"], default="core")
    g.add_argument("--targets", default="q,k,v,o", help="module-name suffixes, e.g. q,k,v,o,gate,up,down or fc1")
    g.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    g.add_argument("--dtype", default=None, help="float32, bfloat16 or float16 (default: the catalog's)")
    g.add_argument("--cache-dir", default=os.environ.get("LG_CACHE_DIR", ".cache"))
    g.set_defaults(func=_gradients)

    d = sub.add_parser("demo", help="the whole pipeline on the offline default, recorded in $DAGSTER_HOME")
    d.add_argument("--models", nargs="*", default=None, help="catalog names (default: the offline-default models)")
    d.add_argument("--n-examples", type=int, default=None)
    d.set_defaults(func=_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except InputError as exc:
        print(f"lg-pipeline: error: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"lg-pipeline: error: file not found: {Path(exc.filename or str(exc))}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
