"""`lg-pipeline import-study DIR --out STATS.parquet`: the study's `grads_exp` files as one of our tables.

Reads every `<task>/<model>/grads_*.jsonl` under DIR (the study's released statistics, or an
`export-study` folder); the study has no effective or stable rank, so those columns are empty.
--out is a new file, or an earlier import (replaced): never a table a run computed, whose outcome log and run key
beside it would then describe the imported rows.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    i = sub.add_parser("import-study", help="read the study's grads_exp folder into one gradient-statistics table")
    i.add_argument("root", help="the study's grads_exp folder (<task>/<model>/grads_*.jsonl)")
    i.add_argument("--out", required=True, help="output Parquet: a new file or an earlier import (written atomically)")
    i.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lg_pipeline.io.study_stats import import_study_table

    out = check_import_target(Path(args.out))
    frame = import_study_table(args.root, out)
    print(f"wrote {out}: {len(frame)} rows, {frame.example_id.nunique()} examples, "
          f"{len(frame.groupby(['model', 'dataset', 'level', 'correctness']))} variants")
    return 0


def check_import_target(out: Path) -> Path:
    """--out may be replaced only when it is new or an earlier import, with no run's files beside it."""
    from lg_pipeline.errors import InputError
    from lg_pipeline.gradients.runner import key_path, status_path
    from lg_pipeline.io.manifest import read_manifest
    from lg_pipeline.io.study_stats import IMPORT_KIND

    if out.suffix != ".parquet":
        raise InputError(f"--out {out}: must be a .parquet table")
    if out.is_dir():
        raise InputError(f"--out {out}: is a directory, not a table")
    if out.parent.exists() and not out.parent.is_dir():
        raise InputError(f"--out {out}: {out.parent} is not a folder")
    if out.exists() or out.is_symlink():
        if not out.is_file():
            raise InputError(f"--out {out}: is not a regular file; refusing to replace it")
        kind = (read_manifest(out) or {}).get("kind")
        if kind != IMPORT_KIND:
            what = f"a {kind} table" if kind else "a table no import wrote"
            raise InputError(f"--out {out}: exists and is {what}; refusing to replace it (choose a new file)")
    beside = [p for p in (key_path(out), status_path(out)) if p.exists()]
    if beside:
        raise InputError(f"--out {out}: {beside[0].name} of a computed run is beside it; choose a new file")
    return out
