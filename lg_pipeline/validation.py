"""One validator for every output: a gradient-statistics table, a learning-dynamics folder or a zero-shot folder.

`output_kind(path)` tells which a path holds (a file is a statistics table; a folder by the tables and settings
its run wrote) and `validate_output(path, expected)` runs that output's check: the same core functions the Dagster
checks call (`gradients.checks.check_table`, `dynamics.learning.checks.check_run_folder`,
`dynamics.zero_shot.checks.check_run_folder`). It sits above both dynamics wings, which know nothing of each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lg_pipeline.errors import InputError
from lg_pipeline.expectations import RuleReport

GRADIENT, LEARNING, ZERO_SHOT = "gradient table", "learning-dynamics folder", "zero-shot folder"
KINDS = (GRADIENT, LEARNING, ZERO_SHOT)


@dataclass
class Validation:
    """The verdict on one output, with the lines that say it (one per failed rule, naming the file)."""

    path: Path
    kind: str
    report: RuleReport

    def _line(self, outcome: Any, verdict: str) -> str:
        where = self.path
        if outcome.where:  # a file of the run folder, or the outcome log beside a table
            where = self.path.with_name(outcome.where) if self.kind == GRADIENT else self.path / outcome.where
        return f"{where}: {verdict} {self.report.describe(outcome)}"

    def failure_lines(self) -> list[str]:
        return [self._line(o, "failed") for o in self.report.failures()]

    def warning_lines(self) -> list[str]:
        return [self._line(o, "warning:") for o in self.report.warnings()]


def output_kind(path: str | Path) -> str:
    """Which output `path` is; an InputError naming it when it is none of them (or not there)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: not found")
    if path.is_file():
        return GRADIENT
    if not path.is_dir():
        raise InputError(f"{path}: not a file or folder")
    from lg_pipeline.dynamics.learning.callback import TABLES as LEARNING_TABLES
    from lg_pipeline.dynamics.zero_shot.checks import TABLES as ZERO_SHOT_TABLES
    from lg_pipeline.io.run_folder import SUMMARY_FILE

    learning = any((path / f"{t}.parquet").is_file() for t in LEARNING_TABLES) or (path / SUMMARY_FILE).is_file()
    zero_shot = any((path / f"{t}.parquet").is_file() for t in ZERO_SHOT_TABLES)
    if learning != zero_shot:
        return LEARNING if learning else ZERO_SHOT
    named = ", ".join(f"{t}.parquet" for t in ("influence_summary", "zero_shot"))
    what = "tables of both runs" if learning else f"no table of a run ({named}, ...)"
    raise InputError(f"{path}: not a learning-dynamics or zero-shot run folder ({what})")


def validate_output(path: str | Path, expected: Any = None) -> Validation:
    """Check the output at `path`; `expected` (a `gradients.checks.Expected`) only for a statistics table."""
    path = Path(path)
    kind = output_kind(path)
    if kind == GRADIENT:
        from lg_pipeline.gradients.checks import check_table

        return Validation(path, kind, check_table(path, expected))
    if expected is not None:
        raise InputError(f"{path}: a {kind} is checked from its own settings; --data and --model are for a table")
    if kind == LEARNING:
        from lg_pipeline.dynamics.learning.checks import check_run_folder

        return Validation(path, kind, check_run_folder(path))
    from lg_pipeline.dynamics.zero_shot.checks import check_run_folder as check_zero_shot

    return Validation(path, kind, check_zero_shot(path))
