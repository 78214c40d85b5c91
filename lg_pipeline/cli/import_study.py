"""`lg-pipeline import-study DIR --out STATS.parquet`: the study's `grads_exp` files as one of our tables.

Reads every `<task>/<model>/grads_*.jsonl` under DIR (the study's released statistics, or an
`export-study` folder); the study has no effective or stable rank, so those columns are empty.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    i = sub.add_parser("import-study", help="read the study's grads_exp folder into one gradient-statistics table")
    i.add_argument("root", help="the study's grads_exp folder (<task>/<model>/grads_*.jsonl)")
    i.add_argument("--out", required=True, help="output Parquet (written atomically)")
    i.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lg_pipeline.io.study_stats import import_study_table

    frame = import_study_table(args.root, args.out)
    print(f"wrote {args.out}: {len(frame)} rows, {frame.example_id.nunique()} examples, "
          f"{len(frame.groupby(['model', 'dataset', 'level', 'correctness']))} variants")
    return 0
