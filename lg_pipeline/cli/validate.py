"""`lg-pipeline validate PATH`: the check of the Dagster layer on any output, outside Dagster.

PATH is a statistics table (checked from its run manifest, or against `--data`/`--model`), a learning-dynamics
folder or a zero-shot folder (checked from its own settings). Exit 0: every rule passed; 1: a rule failed (one line
each, naming the file and the rule); 2: bad input, or a table that cannot be checked completely (no manifest and no
`--data`/`--model`: the line says which rules were not checked) — never a bare "passed".
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

# The flag that tells a rule a table cannot check within itself.
FLAG_FOR: dict[str, str] = {"has_outcome": "--data", "expected_matrix": "--model"}


def register(sub: argparse._SubParsersAction) -> None:
    v = sub.add_parser("validate", help="check a statistics table or a dynamics/zero-shot folder; exit 1 naming "
                                        "each failed rule")
    v.add_argument("stats", metavar="PATH", help="a statistics table (`lg-pipeline gradients`, a Dagster run), or a "
                                                 "learning-dynamics or zero-shot run folder")
    v.add_argument("--data", help="the study-format JSON it was computed from: every example must be there")
    v.add_argument("--model", help="catalog name or folder: every studied matrix of the model must be there")
    v.add_argument("--targets", default=None, help="module suffixes (default: the run's, from its manifest)")
    v.add_argument("--cache-dir", default=os.environ.get("LG_CACHE_DIR", ".cache"))
    v.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lg_pipeline.errors import InputError
    from lg_pipeline.validation import GRADIENT, output_kind, validate_output

    path = Path(args.stats)
    kind = output_kind(path)
    expected = None
    if kind == GRADIENT:
        _check_readable(path)
        expected = _flags(args, path)
    elif args.data or args.model or args.targets:
        raise InputError(f"{path}: --data, --model and --targets are for a statistics table, not a {kind}")
    verdict = validate_output(path, expected)
    report = verdict.report
    for line in verdict.warning_lines():
        print(line, file=sys.stderr)
    if not report.passed:
        for line in verdict.failure_lines():
            print(line, file=sys.stderr)
        return 1
    if report.unchecked:
        missing = ", ".join(
            f"{rule} ({why}: pass {FLAG_FOR[rule]})" if rule in FLAG_FOR else f"{rule} ({why})"
            for rule, why in report.unchecked.items()
        )
        raise InputError(f"{path}: {len(report.outcomes)} rules passed; not checked without a manifest: {missing}")
    print(f"{path}: passed ({len(report.outcomes)} rules, {kind}{_size(path, kind)})")
    return 0


def _size(path: Path, kind: str) -> str:
    from lg_pipeline.validation import GRADIENT

    if kind != GRADIENT:
        return ""
    import pandas as pd

    frame = pd.read_parquet(path, columns=["example_id"])
    return f", {frame.example_id.nunique()} examples, {len(frame)} rows"


def _check_readable(path: Path) -> None:
    """A table that is not one at all is bad input (exit 2), not a failed check."""
    import pyarrow.parquet as pq

    from lg_pipeline.errors import InputError
    from lg_pipeline.io.manifest import read_manifest

    try:
        columns = set(pq.read_schema(path).names)
    except Exception as exc:  # ArrowInvalid, OSError: a torn, empty or foreign file
        raise InputError(f"{path}: not a readable Parquet table ({type(exc).__name__})") from None
    kind = (read_manifest(path) or {}).get("kind", "")
    if kind == "gradient_status" or (not kind and {"example_id", "status"} <= columns and "parameter" not in columns):
        raise InputError(f"{path}: is an outcome log, not a statistics table (validate the table beside it)")
    if kind and kind != "gradient_stats":
        folder = f": validate its folder {path.parent}" if "." in kind else ""
        raise InputError(f"{path}: its manifest says it is a {kind} table, not a statistics table{folder}")
    needed = {"example_id", "parameter", "layer", "module", "loss", "n_tokens", "n_response_tokens"}
    if not needed & columns:
        raise InputError(f"{path}: not a statistics table (none of {', '.join(sorted(needed))})")


def _flags(args: argparse.Namespace, path: Path):
    """What the flags say the table must hold (over what its manifest says)."""
    from lg_pipeline.gradients.checks import Expected
    from lg_pipeline.io.study_json import load_study_json

    ids = frozenset(e.example_id for e in load_study_json(args.data)) if args.data else None
    matrices, provenance = _model_layout(args, path) if args.model else (None, {})
    return Expected(ids, matrices, provenance, source="--data")


def _model_layout(args: argparse.Namespace, path: Path):
    from data_sources.models.catalog import model_catalog, studied_matrices
    from lg_pipeline.errors import InputError
    from lg_pipeline.gradients.checks import Expected

    try:
        matrices = Expected.of_targets(studied_matrices(args.model, _targets(args, path), args.cache_dir))
    except InputError as exc:
        raise InputError(str(exc) if args.model in str(exc) else f"--model {args.model}: {exc}") from None
    catalog = model_catalog()
    provenance = {"chat": catalog[args.model].chat} if args.model in catalog else {}
    return matrices, provenance


def _targets(args: argparse.Namespace, path: Path) -> tuple[str, ...]:
    """--targets, else the run's (its manifest, or the run key beside the table), else attention."""
    from lg_pipeline.gradients.runner import key_path
    from lg_pipeline.gradients.targets import parse_suffixes
    from lg_pipeline.io.manifest import read_manifest
    from lg_pipeline.vocabulary import ATTENTION

    if args.targets:
        return parse_suffixes(args.targets)
    recorded = (read_manifest(path) or {}).get("targets")
    if isinstance(recorded, list) and recorded:
        return parse_suffixes(recorded)
    try:
        return tuple(json.loads(key_path(path).read_text(encoding="utf-8"))["targets"])
    except (OSError, ValueError, KeyError, TypeError):
        return ATTENTION
