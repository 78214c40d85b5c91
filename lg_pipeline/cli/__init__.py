"""`lg-pipeline`: the engine outside Dagster, and the offline demo of the whole data product.

A composition root. Each command is a module of this package with `register(subparsers)`; only `demo` drives
Dagster, and it is imported when it runs. Bad input ends with one line naming it (exit 2), never a stack trace.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from lg_pipeline.errors import InputError

# Command modules of this package, in the order `--help` lists them.
COMMANDS = ("gradients", "validate", "models", "export-study", "import-study", "dynamics", "zero-shot")


def _demo(args: argparse.Namespace) -> int:
    from lg_pipeline.cli.demo import run_demo

    return run_demo(models=args.models, datasets=args.datasets, n_examples=args.n_examples)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lg-pipeline", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(f"lg_pipeline.cli.{name.replace('-', '_')}").register(sub)
    d = sub.add_parser("demo", help="the whole pipeline on the offline default, recorded in $DAGSTER_HOME")
    d.add_argument("--models", nargs="*", default=None, help="catalog names (default: the offline-default models)")
    d.add_argument("--datasets", nargs="*", default=None, help="dataset names (default: one per family, offline)")
    d.add_argument("--n-examples", type=int, default=None, help="examples per variant")
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
    except OSError as exc:  # disk full, read-only, permission: one line, the file named
        where = f": {exc.filename}" if exc.filename else ""
        print(f"lg-pipeline: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
