"""`lg-pipeline export-study STATS.parquet... --out DIR`: our statistics in the study's `grads_exp` layout.

The study's own plotting scripts read the result (`<task>/<model>/grads_<dataset>_<variant>.jsonl`).
Each table's model, dataset, level and correctness come from its columns (a Dagster table), else from its run
manifest (a `lg-pipeline gradients` table), else from the flags below. Every name must be one path component:
a table never chooses a folder outside --out.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    e = sub.add_parser("export-study", help="write gradient-statistics tables in the study's grads_exp layout")
    e.add_argument("stats", nargs="+", help="gradient-statistics Parquet tables (a Dagster run's or the CLI's)")
    e.add_argument("--out", required=True, help="the grads_exp folder to write into")
    for name in ("model", "dataset", "level", "correctness"):
        e.add_argument(f"--{name}", help=f"the tables' {name}, where neither a column nor the manifest says it")
    e.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lg_pipeline.io.study_stats import VARIANT_COLUMNS, export_stats_tables

    given = {c: getattr(args, c) for c in VARIANT_COLUMNS if getattr(args, c)}
    paths = export_stats_tables(args.stats, args.out, given)
    print(f"wrote {len(paths)} study files under {args.out}")
    for path in paths:
        print(f"  {path}")
    return 0
