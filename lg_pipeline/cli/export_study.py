"""`lg-pipeline export-study STATS.parquet... --out DIR`: our statistics in the study's `grads_exp` layout.

The study's own plotting scripts read the result (`<task>/<model>/grads_<dataset>_<variant>.jsonl`).
Each table needs the variant columns the pipeline writes (model, dataset, level, correctness).
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    e = sub.add_parser("export-study", help="write gradient-statistics tables in the study's grads_exp layout")
    e.add_argument("stats", nargs="+", help="gradient-statistics Parquet tables (the pipeline's, with variant columns)")
    e.add_argument("--out", required=True, help="the grads_exp folder to write into")
    e.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lg_pipeline.io.study_stats import export_stats_tables

    paths = export_stats_tables(args.stats, args.out)
    print(f"wrote {len(paths)} study files under {args.out}")
    for path in paths:
        print(f"  {path}")
    return 0
