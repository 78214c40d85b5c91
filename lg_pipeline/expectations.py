"""What every check of the core reports, and the Great Expectations 1.x plumbing of the checks that use GX.

A check is a list of named rules. Each rule yields an `Outcome` (passed or not, the failing row positions and, when
it failed, what broke in numbers); a `RuleReport` gathers them with the rules that could not be checked and why
(a missing example list is not a pass). The gradient and dynamics checks evaluate their rules with pandas (each is
a boolean column or a table-wide comparison: a GX suite over those columns would add a context and a validation
pass per rule, and tell nothing more); the curation checks keep their GX suites (`gx_context`, `run_suite`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

RULE = "rule"  # the `expectation` of an outcome evaluated without GX


@dataclass
class Outcome:
    """One rule's (or GX expectation's) verdict and the row positions that broke it (first 20)."""

    expectation: str
    column: str
    passed: bool
    failing_index: list[int] = field(default_factory=list)
    detail: str = ""  # what broke, in numbers ("3 of 500 examples ...")
    where: str = ""  # the file it judged, inside a run folder ("" for the table itself)
    warning: bool = False  # a warning: shown, never a failure


@dataclass
class RuleReport:
    """The verdict of one check: every rule's outcome, and the rules it could not check (rule -> why)."""

    outcomes: list[Outcome]
    meanings: Mapping[str, str] = field(default_factory=dict)
    unchecked: dict[str, str] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(o.passed for o in self.outcomes if not o.warning)

    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.passed and not o.warning]

    def warnings(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.passed and o.warning]

    def failed_rules(self) -> list[str]:
        return [o.column for o in self.failures()]

    def describe(self, outcome: Outcome) -> str:
        """`rule: meaning (what broke)`."""
        meaning = self.meanings.get(outcome.column, outcome.expectation)
        return f"{outcome.column}: {meaning}" + (f" ({outcome.detail})" if outcome.detail else "")

    def explain(self) -> list[str]:
        return [self.describe(o) for o in self.failures()]

    def details(self) -> list[str]:
        """What broke, one line per failed rule: the detail where there is one, else the rule's meaning."""
        return [o.detail or self.describe(o) for o in self.failures()]


class Rules:
    """Collects outcomes while a check runs: `check` a rule (a bool or a boolean column), `skip` one that cannot be
    evaluated (a column it needs is missing: the `columns` rule has failed already)."""

    def __init__(self, meanings: Mapping[str, str], where: str = ""):
        self.meanings, self.where = meanings, where
        self.outcomes: list[Outcome] = []
        self.unchecked: dict[str, str] = {}

    def check(self, rule: str, ok: Any, detail: str = "", *, where: str | None = None, warning: bool = False) -> bool:
        """Record `rule`: `ok` is a bool or a boolean array/Series (one per row); `detail` is shown if it fails."""
        import numpy as np

        values = np.asarray(ok, dtype=bool).reshape(-1)
        bad = np.flatnonzero(~values)
        passed = bool(values.all())
        self.outcomes.append(
            Outcome(RULE, rule, passed, [int(i) for i in bad[:20]], "" if passed else detail,
                    self.where if where is None else where, warning)
        )
        return passed

    def fail(self, rule: str, detail: str, *, where: str | None = None) -> None:
        self.check(rule, False, detail, where=where)

    def broke(self, exc: BaseException) -> None:
        """A table malformed in a way no rule foresaw: the check fails (`checkable`), it never raises."""
        first = str(exc).splitlines()[0][:120] if str(exc) else ""
        self.fail("checkable", f"{type(exc).__name__}: {first}")

    def skip(self, rule: str, why: str) -> None:
        self.unchecked[rule] = why

    def report(self) -> RuleReport:
        return RuleReport(self.outcomes, self.meanings, self.unchecked)


def gx_context() -> Any:
    """An ephemeral GX context (suites need one to exist first), without progress bars in the run's logs."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context


def run_suite(context: Any, frame: pd.DataFrame, suite: Any, name: str) -> list[Outcome]:
    """Validate `frame` against `suite` in a GX context: one Outcome per expectation (the curation checks)."""
    batch = (
        context.data_sources.add_pandas(name)
        .add_dataframe_asset(name)
        .add_batch_definition_whole_dataframe("all")
        .get_batch(batch_parameters={"dataframe": frame})
    )
    result = batch.validate(suite)
    return [
        Outcome(
            r.expectation_config.type,
            str(r.expectation_config.kwargs.get("column") or r.expectation_config.kwargs.get("column_A") or ""),
            bool(r.success),
            [int(i) for i in r.result.get("partial_unexpected_index_list") or []],
        )
        for r in result.results
    ]


# ------------------------------------------------------------------------------------------------ table rules
# Shared by the checks of every run's tables: a file that reads, has its columns, numbers that are numbers.
TABLE_MEANINGS: dict[str, str] = {
    "readable": "a readable Parquet table",
    "columns": "every column the table is written with",
    "numeric_columns": "numbers are numbers",
    "integer_columns": "steps, layers, positions and counts are whole numbers",
    "finite": "every number is finite",
    "unique_rows": "one row per key",
    "duplicates_agree": "rows repeated for one key hold the same values",
    "manifest_kind": "the table's manifest names this table",
    "checkable": "the check could evaluate the tables",
}


def read_table(path: Any, rules: Rules, rule: str = "readable", where: str | None = None) -> pd.DataFrame | None:
    """The Parquet table at `path`, or None with `rule` failed saying why (missing, a folder, torn, 0 bytes)."""
    import pandas as pd

    where = path.name if where is None else where
    if not path.exists():
        rules.fail(rule, f"{path.name} not found", where=where)
        return None
    if not path.is_file():
        rules.fail(rule, f"{path.name} is not a file", where=where)
        return None
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # ArrowInvalid, OSError, ...: a torn, empty or foreign file is a failed rule
        size = path.stat().st_size
        rules.fail(rule, f"{path.name} cannot be read as Parquet ({type(exc).__name__}, {size} bytes)", where=where)
        return None
    rules.check(rule, True, where=where)
    return frame


def typed(
    frame: pd.DataFrame, rules: Rules, table: str, columns: Any, numeric: Any = (), whole: Any = ()
) -> pd.DataFrame | None:
    """`frame` with its `numeric` columns as numbers, or None when a column is missing (`columns` failed).

    A value that is not a number fails `numeric_columns` and becomes NaN; a fractional step or layer fails
    `integer_columns`.
    """
    import numpy as np
    import pandas as pd

    where = f"{table}.parquet"
    missing = [c for c in columns if c not in frame]
    if not rules.check("columns", not missing, f"{table}: missing {', '.join(missing)}", where=where):
        return None
    types, dtypes = pd.api.types, dict(frame.dtypes)
    wrong = [c for c in numeric if not types.is_numeric_dtype(dtypes[c]) or types.is_bool_dtype(dtypes[c])]
    rules.check("numeric_columns", not wrong, f"{table}: {', '.join(wrong)} not numeric", where=where)
    if wrong:
        frame = frame.assign(**{c: pd.to_numeric(frame[c], errors="coerce") for c in wrong})
    values = {c: frame[c].to_numpy(dtype=float) for c in whole}
    fractional = [c for c, v in values.items() if np.any(np.isfinite(v) & (v != np.floor(v)))]
    rules.check("integer_columns", not fractional, f"{table}: fractional values in {', '.join(fractional)}",
                where=where)
    return frame


def finite(frame: pd.DataFrame, rules: Rules, table: str, columns: Any, rule: str = "finite") -> None:
    """Every value of `columns` finite; the detail counts them: `logprobs: 2 non-finite value(s) in logp_sum`."""
    import numpy as np

    columns = list(columns)
    bad = {c: ~np.isfinite(frame[c].to_numpy(dtype=float)) for c in columns}
    rows = np.logical_or.reduce(list(bad.values())) if bad else np.zeros(len(frame), bool)
    named = ", ".join(sorted(c for c, b in bad.items() if b.any()))
    count = int(sum(b.sum() for b in bad.values()))
    rules.check(rule, ~rows, f"{table}: {count} non-finite value(s) in {named}", where=f"{table}.parquet")


def unique(frame: pd.DataFrame, rules: Rules, table: str, keys: Any) -> None:
    """One row per key (`unique_rows`); rows repeated for a key hold the same values (`duplicates_agree`)."""
    from collections import Counter

    keys = list(keys)
    where = f"{table}.parquet"
    # Counted over plain tuples: pandas' `duplicated` factorizes every key column first, slower on these tables.
    key_rows = list(zip(*(frame[c] for c in keys), strict=True))
    counts = Counter(key_rows)
    repeated = [counts[k] > 1 for k in key_rows]
    n_repeated = sum(repeated)
    rules.check("unique_rows", [not r for r in repeated],
                f"{table}: {n_repeated} rows repeat a ({', '.join(keys)})", where=where)
    values = [c for c in frame.columns if c not in keys]
    n = 0
    if n_repeated and values:
        copies = frame[repeated]
        n = int(copies.groupby(keys)[values].transform("nunique", dropna=False).gt(1).any(axis=1).sum())
    rules.check("duplicates_agree", n == 0, f"{table}: {n} repeated rows disagree", where=where)


@dataclass(frozen=True)
class TableSpec:
    """What one table of a run folder holds: its columns, its key, which are numbers (whole, finite)."""

    columns: tuple[str, ...]
    keys: tuple[str, ...]
    numeric: tuple[str, ...] = ()
    whole: tuple[str, ...] = ()
    finite: tuple[str, ...] = ()


def read_run_tables(
    folder: Any, specs: Mapping[str, TableSpec], names: Any, rules: Rules, kind_of: Callable[[Any], str | None],
    kind_prefix: str,
) -> dict[str, pd.DataFrame] | None:
    """The tables `names` of a run folder, each read, its manifest kind (`kind_of(path)`, e.g. `zero_shot.tasks`)
    checked, its columns typed, its numbers finite and its keys unique; None when one cannot be used."""
    tables = {}
    for name in names:
        path = folder / f"{name}.parquet"
        frame = read_table(path, rules)
        kind = kind_of(path) or f"{kind_prefix}.{name}"
        rules.check("manifest_kind", kind == f"{kind_prefix}.{name}", f"{name}: its manifest says {kind!r}",
                    where=path.name)
        spec = specs[name]
        tables[name] = None if frame is None else typed(frame, rules, name, spec.columns, spec.numeric, spec.whole)
    if any(frame is None for frame in tables.values()):
        return None
    for name, frame in tables.items():
        if specs[name].finite:
            finite(frame, rules, name, specs[name].finite)
        unique(frame, rules, name, specs[name].keys)
    return tables
