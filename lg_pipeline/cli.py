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
    from lg_pipeline.targets import find_targets, parse_suffixes

    examples = load_study_json(args.data)[: args.limit]
    model, tokenizer, spec = open_model(args.model, args.device, args.dtype, args.cache_dir)
    chat = spec.chat if args.chat is None else args.chat
    config = EngineConfig(args.method, parse_suffixes(args.targets), args.batch_size, args.max_length, chat)
    find_targets(model, config.targets)  # a bad --targets fails here, before the progress bar is drawn
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

    return run_demo(models=args.models, datasets=args.datasets, n_examples=args.n_examples)


def _models_add(args: argparse.Namespace) -> int:
    from data_sources.model_registry import add_model

    spec = add_model(
        args.name,
        args.source,
        catalog=args.catalog,
        kind=args.kind,
        family=args.family,
        display_name=args.display_name,
        dtype=args.dtype,
        package=args.package,
        file=args.file,
        assemble=args.assemble,
        repo_id=args.repo_id,
        path=args.path,
    )
    where = spec.path or spec.repo_id or f"{spec.package}/{spec.file}"
    print(f"added {spec.name} ({spec.source}, {spec.kind}: {where}) to {args.catalog or _catalog_in_use()}")
    print("a running `dagster dev` registers it as a `model` partition and computes it (model_catalog_sensor)")
    return 0


def _catalog_in_use() -> Path:
    from data_sources.model_catalog import catalog_path

    return catalog_path()


def _add_models_parser(sub: argparse._SubParsersAction) -> None:
    m = sub.add_parser("models", help="manage the model catalog")
    msub = m.add_subparsers(dest="models_command", required=True)
    a = msub.add_parser("add", help="validate a model and append it to the catalog ($LG_MODEL_CATALOG or models.yaml)")
    a.add_argument("name", help="catalog name, also the `model` partition key (lowercase, digits, . _ -)")
    a.add_argument("--source", required=True, choices=["packaged_gguf", "hub", "local"])
    a.add_argument("--path", help="local: a transformers folder (config.json, weights, tokenizer)")
    a.add_argument("--repo-id", help="hub: ORG/NAME")
    a.add_argument("--package", help="packaged_gguf: the import name of the package holding the weights")
    a.add_argument("--file", help="packaged_gguf: the .gguf file inside the package")
    a.add_argument("--assemble", action="store_true", help="packaged_gguf: weights split over packages, joined once")
    a.add_argument("--kind", choices=["base", "instruct"], help="default: instruct if a local chat template")
    a.add_argument("--family", help="models of one family are paired base vs instruct in figures (default: NAME)")
    a.add_argument("--display-name", help="name in figures (default: NAME)")
    a.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    a.add_argument("--catalog", default=None, help="catalog file (default: the one in use)")
    a.set_defaults(func=_models_add)


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
    d.add_argument("--datasets", nargs="*", default=None, help="dataset names (default: one per family, offline)")
    d.add_argument("--n-examples", type=int, default=None, help="examples per variant")
    d.set_defaults(func=_demo)

    _add_models_parser(sub)
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
