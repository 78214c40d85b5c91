"""`lg-pipeline`: the engine outside Dagster, and the offline demo of the whole data product.

A composition root. Each command is a module of this package with `register(subparsers)`; only `demo` and
`migrate-partitions` drive Dagster, which they import when they run. Bad input ends with one line naming it (exit 2),
never a stack trace; settings are named by their flags (`lg_pipeline.cli.runs.flag`); a run stopped by what it
computed (a loss that is not finite) ends with one line saying where (exit 1).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from lg_pipeline.errors import InputError, RunStopped, SettingsError

# Command modules of this package, in the order `--help` lists them.
COMMANDS = (
    "gradients", "validate", "models", "export-study", "import-study", "dynamics", "zero-shot", "migrate-partitions",
)


def _demo(args: argparse.Namespace) -> int:
    from lg_pipeline.cli.demo import run_demo

    return run_demo(models=args.models, datasets=args.datasets, n_examples=args.n_examples)


class _UsageError(Exception):
    """A command line argparse refuses (unknown flag, a word where a number goes)."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a refused command line is one line (exit 2) like any other bad input, not usage + error."""

    def error(self, message: str):  # type: ignore[override]
        command = self.prog.removeprefix("lg-pipeline").strip()
        raise _UsageError(f"{command}: {message}" if command else message)


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="lg-pipeline", description=__doc__)
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
    try:
        args = parser().parse_args(argv)
    except _UsageError as exc:
        return _error(str(exc), 2)
    try:
        return args.func(args)
    except (SettingsError, RunStopped) as exc:
        from lg_pipeline.cli.runs import in_flags

        return _error(in_flags(exc), 1 if isinstance(exc, RunStopped) else 2)
    except InputError as exc:
        return _error(str(exc), 2)
    except FileNotFoundError as exc:
        return _error(f"file not found: {Path(exc.filename or str(exc))}", 2)
    except OSError as exc:  # disk full, read-only, permission: one line, the file named
        where = f": {exc.filename}" if exc.filename else ""
        return _error(f"{exc.strerror or exc}{where}", 2)


def _error(message: str, code: int) -> int:
    print(f"lg-pipeline: error: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
