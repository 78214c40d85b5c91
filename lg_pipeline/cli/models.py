"""`lg-pipeline models add`: validate a model and append it to the catalog."""

from __future__ import annotations

import argparse
from pathlib import Path


def _models_add(args: argparse.Namespace) -> int:
    from data_sources.models.registry import add_model
    from lg_pipeline.errors import InputError

    if args.catalog and Path(args.catalog).is_dir():
        raise InputError(f"--catalog {args.catalog}: is a directory, not a catalog file")

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
    from data_sources.models.catalog import catalog_path

    return catalog_path()


def register(sub: argparse._SubParsersAction) -> None:
    from data_sources.models.catalog import SOURCES
    from lg_pipeline.gradients.devices import DTYPES
    from lg_pipeline.vocabulary import MODEL_KINDS

    m = sub.add_parser("models", help="manage the model catalog")
    msub = m.add_subparsers(dest="models_command", required=True)
    a = msub.add_parser("add", help="validate a model and append it to the catalog ($LG_MODEL_CATALOG or models.yaml)")
    a.add_argument("name", help="catalog name, also the `model` partition key (lowercase, digits, . _ -)")
    a.add_argument("--source", required=True, choices=SOURCES)
    a.add_argument("--path", help="local: a transformers folder (config.json, weights, tokenizer)")
    a.add_argument("--repo-id", help="hub: ORG/NAME")
    a.add_argument("--package", help="packaged_gguf: the import name of the package holding the weights")
    a.add_argument("--file", help="packaged_gguf: the .gguf file inside the package")
    a.add_argument("--assemble", action="store_true", help="packaged_gguf: weights split over packages, joined once")
    a.add_argument("--kind", choices=MODEL_KINDS, help="default: instruct if a local chat template")
    a.add_argument("--family", help="models of one family are paired base vs instruct in figures (default: NAME)")
    a.add_argument("--display-name", help="name in figures (default: NAME)")
    a.add_argument("--dtype", default="float32", choices=DTYPES)
    a.add_argument("--catalog", default=None, help="catalog file (default: the one in use)")
    a.set_defaults(func=_models_add)
