"""`lg-pipeline validate`: the statistics check of the Dagster layer, on any table, outside Dagster."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    v = sub.add_parser("validate", help="check a statistics table; exit 1 naming each failed rule")
    v.add_argument("stats", help="a statistics table written by `lg-pipeline gradients` (or a Dagster run)")
    v.add_argument("--data", help="the study-format JSON it was computed from: every example must be there")
    v.add_argument("--model", help="catalog name or folder: every studied matrix of the model must be there")
    v.add_argument("--targets", default=None, help="module suffixes (default: the run's, from STATS.run.json)")
    v.add_argument("--cache-dir", default=os.environ.get("LG_CACHE_DIR", ".cache"))
    v.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import pandas as pd

    from lg_pipeline.errors import InputError
    from lg_pipeline.gradients.checks import Expected, validate_gradient_stats
    from lg_pipeline.gradients.runner import status_path
    from lg_pipeline.io.study_json import load_study_json

    path = Path(args.stats)
    if not path.is_file():
        raise InputError(f"statistics table not found: {path}")
    try:
        stats = pd.read_parquet(path)
    except Exception as exc:  # a torn or foreign file: one line
        raise InputError(f"{path}: not a readable Parquet table ({type(exc).__name__})") from None
    needed = {"example_id", "parameter", "layer", "module", "loss", "n_tokens", "n_response_tokens"}
    if not needed <= set(stats.columns):
        raise InputError(f"{path}: not a statistics table (missing {', '.join(sorted(needed - set(stats.columns)))})")
    status = pd.read_parquet(status_path(path)) if status_path(path).is_file() else None
    ids = frozenset(e.example_id for e in load_study_json(args.data)) if args.data else None
    matrices, provenance = (_model_layout(args, path) if args.model else (None, {}))
    report = validate_gradient_stats(stats, status, Expected(ids, matrices, provenance))
    if report.passed:
        n_examples = stats.example_id.nunique()
        print(f"{path}: passed ({len(report.outcomes)} rules, {n_examples} examples, {len(stats)} rows)")
        return 0
    for line in report.explain():
        print(f"{path}: failed {line}", file=sys.stderr)
    return 1


def _model_layout(args: argparse.Namespace, path: Path):
    from data_sources.models.catalog import model_catalog, studied_matrices
    from lg_pipeline.gradients.checks import Expected
    from lg_pipeline.gradients.runner import key_path
    from lg_pipeline.gradients.targets import parse_suffixes
    from lg_pipeline.vocabulary import ATTENTION

    if args.targets:
        targets = parse_suffixes(args.targets)
    else:
        try:
            targets = tuple(json.loads(key_path(path).read_text(encoding="utf-8"))["targets"])
        except (OSError, ValueError, KeyError):
            targets = ATTENTION
    matrices = Expected.of_targets(studied_matrices(args.model, targets, args.cache_dir))
    catalog = model_catalog()
    provenance = {"chat": catalog[args.model].chat} if args.model in catalog else {}
    return matrices, provenance
