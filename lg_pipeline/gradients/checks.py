"""The statistics check: a table is complete against what was expected, and every row is internally consistent.

Expected from outside the table (never taken from it): the examples (the curated ids, the input file, or the
example ids in the table's own run manifest), the model's studied matrices (parameter, layer, module; from the
model's config or the manifest) and so its layer count, and optionally provenance values (e.g. `chat`, the
manifest's dtype). Within each row: σ_min ≤ σ_max ≤ ‖G‖_F ≤ ‖G‖_* ≤ √rank·‖G‖_F, max|G_ij| ≤ σ_max, stable rank =
‖G‖_F²/σ_max² ≤ rank and 1 ≤ effective rank ≤ rank (0 for a zero gradient) with rank ≤ min(T, out, in), min ≤
mean ≤ max, finite values, a positive loss, 1 ≤ response tokens < tokens ≤ max_length, `truncated` only on an
example that fills max_length, integer layers and token counts, the module and layer labels matching the parameter
name. Across rows: one row per (example, matrix), one loss, token count and `truncated` per example, one provenance
(run key, dtype, device type, encoding, chat, max_length). A tiny relative slack absorbs fp32 rounding; a real
violation is many orders larger.

A malformed table (a dropped column, a string where a number belongs) fails the rule that says so, and the rules
that need what is missing are left out: the check never raises on a table. `check_table` does the same from a
file: an unreadable file, a missing outcome log or a manifest of another kind are failures too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lg_pipeline.expectations import RuleReport, Rules, read_table
from lg_pipeline.schema import GRADIENT_COLUMNS, MATRIX_STATS, PROVENANCE_COLUMNS, STATUS_COLUMNS
from lg_pipeline.vocabulary import layer_index

if TYPE_CHECKING:
    import pandas as pd

SLACK = 1e-4
NORMS = ("nuclear_norm", "sigma_max", "sigma_min", "frobenius_norm")
SHOWN = ("example_id", "layer", "module", "loss", "n_tokens", "nuclear_norm", "sigma_max", "frobenius_norm")
# Per-run provenance: one value in the whole table (`truncated` is per example).
RUN_PROVENANCE = tuple(c for c in PROVENANCE_COLUMNS if c != "truncated")
NUMERIC = ("layer", "loss", "n_tokens", "n_response_tokens", *MATRIX_STATS, "max_length")
WHOLE = ("layer", "n_tokens", "n_response_tokens", "max_length")
LABELS = ("example_id", "parameter", "module")
FLAGS = ("chat", "truncated")
STATUS_VALUES = ("ok", "skipped", "failed")
MANIFEST_KIND = "gradient_stats"

TABLE_RULES: dict[str, str] = {
    "readable": "a readable Parquet table",
    "rows": "at least one row",
    "columns": "every column of a statistics table",
    "provenance_columns": "provenance columns",
    "numeric_columns": "layer, loss, token counts and statistics are numbers",
    "integer_columns": "layer and token counts are whole numbers",
    "label_columns": "example_id, parameter and module are given in every row",
    "flag_columns": "chat and truncated are true or false",
    "status_file": "the per-example outcome log beside the table (<name>.status.parquet)",
    "manifest_kind": f"the table's manifest says it is a statistics table ({MANIFEST_KIND})",
    "checkable": "the check could evaluate the table",
}
ROW_RULES: dict[str, str] = {
    "finite": "loss and statistics are finite",
    "loss_positive": "loss > 0",
    "norms_nonnegative": "norms ≥ 0",
    "sigma_min_le_sigma_max": "σ_min ≤ σ_max",
    "sigma_max_le_frobenius": "σ_max ≤ Frobenius",
    "frobenius_le_nuclear": "Frobenius ≤ nuclear",
    "nuclear_le_rank_bound": "nuclear ≤ √rank·Frobenius",
    "entries_le_sigma_max": "max |entry| ≤ σ_max",
    "min_le_mean_le_max": "grad_min ≤ grad_mean ≤ grad_max",
    "effective_rank_in_range": "effective rank 0 (zero gradient) or in [1, rank], rank ≤ min(tokens, out, in)",
    "stable_rank_in_range": "stable rank in [0, rank]",
    "stable_rank_identity": "stable rank = Frobenius² / σ_max²",
    "token_counts_in_range": "1 ≤ response tokens < tokens ≤ max_length",
    "truncated_consistent": "`truncated` only where the example fills max_length",
    "one_loss_per_example": "one loss, token count and `truncated` per example",
    "no_duplicate_rows": "one row per (example, parameter)",
    "duplicates_agree": "rows repeated for one (example, parameter) hold the same numbers",
    "label_matches_parameter": "layer and module match the parameter name",
    "expected_matrix": "the parameter is one of the model's studied matrices",
    "expected_example": "the example is one of the expected examples",
    "provenance_consistent": "one run key, dtype, device type, encoding, chat and max_length in the table",
    "provenance_as_expected": "provenance as expected (e.g. chat, the manifest's dtype)",
}
EXAMPLE_RULES: dict[str, str] = {
    "status_columns": "the outcome log has example_id and status",
    "status_values": f"every outcome is one of {', '.join(STATUS_VALUES)}",
    "one_status_per_example": "one outcome per example in the log",
    "has_outcome": "every expected example has an outcome",
    "not_failed": "no example failed",
    "ok_has_all_rows": "an `ok` example has a row for every studied matrix, and only `ok` examples have rows",
}
MEANINGS: dict[str, str] = {**TABLE_RULES, **ROW_RULES, **EXAMPLE_RULES}
# Rules a table cannot check within itself: what tells them, for the message that says they were not checked.
NEEDS_EXAMPLES = "has_outcome"
NEEDS_MATRICES = "expected_matrix"


@dataclass(frozen=True)
class Expected:
    """What the table should hold, from outside it. None: not known (that part is checked within the table).

    `source` names where the example ids came from (shown in numbers: "3 of 500 examples of --data");
    `exclusive`: rows of other examples are an error (a curated set, a data file), not earlier work kept beside
    this run's (a manifest lists only what its run was asked for). `limit`: the run's own limit, when known.
    """

    example_ids: frozenset[str] | None = None
    matrices: frozenset[tuple[str, int, str]] | None = None  # (parameter, layer, module)
    provenance: dict[str, Any] = field(default_factory=dict)
    shapes: Mapping[str, tuple[int, int]] = field(default_factory=dict)  # parameter -> (out, in), where known
    source: str = "the expected examples"
    exclusive: bool = True
    limit: int | None = None

    @property
    def n_layers(self) -> int | None:
        return None if self.matrices is None else len({layer for _, layer, _ in self.matrices})

    @staticmethod
    def of_targets(targets: Iterable[Any]) -> frozenset[tuple[str, int, str]]:
        """From `lg_pipeline.gradients.targets.find_targets` of the model."""
        return frozenset((t.parameter, t.layer, t.module) for t in targets)

    def overridden_by(self, other: Expected) -> Expected:
        """`other`'s known parts over this one's (flags over a manifest); provenance merged."""
        known = {f.name: getattr(other, f.name) for f in dataclasses.fields(other) if f.name not in _DEFAULTED}
        changes = {k: v for k, v in known.items() if v is not None}
        if other.example_ids is not None:
            changes.update(source=other.source, exclusive=other.exclusive)
        return dataclasses.replace(
            self, **changes, provenance={**self.provenance, **other.provenance}, shapes={**self.shapes, **other.shapes}
        )


_DEFAULTED = ("provenance", "shapes", "source", "exclusive")


def expected_from_manifest(manifest: Mapping[str, Any] | None) -> Expected:
    """What a table's run manifest says it should hold: its example ids, studied matrices, provenance, limit."""
    if not manifest:
        return Expected()
    ids = manifest.get("example_ids")
    matrices, shapes = _matrices(manifest.get("parameters"), manifest.get("targets"))
    settings = manifest.get("settings") if isinstance(manifest.get("settings"), Mapping) else {}
    provenance = {c: v for c in RUN_PROVENANCE if (v := manifest.get(c, settings.get(c))) is not None}
    limit = manifest.get("limit")
    return Expected(
        example_ids=frozenset(map(str, ids)) if isinstance(ids, list) else None,
        matrices=matrices,
        provenance=provenance,
        shapes=shapes,
        source="the run's manifest",
        exclusive=False,
        limit=limit if isinstance(limit, int) and not isinstance(limit, bool) else None,
    )


def _matrices(parameters: Any, targets: Any) -> tuple[frozenset | None, dict[str, tuple[int, int]]]:
    """A manifest's `parameters`: names, or objects with parameter (and layer, module, shape)."""
    if not isinstance(parameters, list) or not parameters:
        return None, {}
    suffixes = [t for t in targets if isinstance(t, str)] if isinstance(targets, list) else []
    matrices, shapes = set(), {}
    for item in parameters:
        entry = item if isinstance(item, Mapping) else {"parameter": item}
        name = str(entry.get("parameter", ""))
        stem = name.removesuffix(".weight")
        module = entry.get("module") or next((s for s in suffixes if stem.endswith("." + s)), stem.rsplit(".", 1)[-1])
        layer, shape = entry.get("layer", layer_index(name)), entry.get("shape")
        if not isinstance(layer, int):
            continue  # not a matrix with a layer: a malformed entry tells nothing (the rows are checked anyway)
        matrices.add((name, layer, str(module)))
        if isinstance(shape, list) and len(shape) == 2 and all(isinstance(n, int) for n in shape):
            shapes[name] = (shape[0], shape[1])
    return frozenset(matrices), shapes


@dataclass
class Report(RuleReport):
    """The check's verdict with the statistics rows that broke a row rule (shown in the Dagster check)."""

    failing_rows: Any = None


def validate_gradient_stats(
    stats: pd.DataFrame, status: pd.DataFrame | None = None, expected: Expected | None = None
) -> Report:
    """Check one statistics table (and its per-example outcome log) against `expected`."""
    rules = Rules(MEANINGS)
    return _validate(stats, status, expected or Expected(), rules)


def check_table(path: str | Path, expected: Expected | None = None) -> Report:
    """Check the statistics table at `path` with its outcome log, from its manifest and `expected` (over it).

    Never raises on a file: not found, unreadable, no outcome log, or a manifest of another kind is a failure.
    """
    import pandas as pd

    from lg_pipeline.gradients.runner import status_path
    from lg_pipeline.io.manifest import read_manifest

    path = Path(path)
    rules = Rules(MEANINGS, where=path.name)
    stats = read_table(path, rules, "readable")
    if stats is None:
        return Report(rules.outcomes, MEANINGS, rules.unchecked, pd.DataFrame())
    manifest = read_manifest(path)
    kind = (manifest or {}).get("kind", MANIFEST_KIND)
    rules.check("manifest_kind", kind == MANIFEST_KIND, f"its manifest says {kind!r}")
    status_file = status_path(path)
    status = read_table(status_file, rules, "status_file")
    merged = expected_from_manifest(manifest).overridden_by(expected or Expected())
    return _validate(stats, status, merged, rules)


def _validate(stats: pd.DataFrame, status: pd.DataFrame | None, expected: Expected, rules: Rules) -> Report:
    import pandas as pd

    f = _table_rules(stats.reset_index(drop=True), rules)
    try:
        _row_rules(f, expected, rules)
        _provenance_rules(f, expected, rules)
        _example_rules(f, status, expected, rules)
    except Exception as exc:  # a table malformed in a way no rule foresaw: a failed check, never a traceback
        rules.broke(exc)
    if expected.example_ids is None:
        rules.skip(NEEDS_EXAMPLES, "the examples the run was asked for")
    if expected.matrices is None:
        rules.skip(NEEDS_MATRICES, "the model's studied matrices")
    bad = sorted({i for o in rules.outcomes if o.column in ROW_RULES for i in o.failing_index})
    shown = f.loc[bad, [c for c in SHOWN if c in f]] if bad else pd.DataFrame(columns=[c for c in SHOWN if c in f])
    return Report(rules.outcomes, MEANINGS, rules.unchecked, shown)


def check_rows(frame: pd.DataFrame, rules: Rules, by: tuple[str, ...] = (), max_length: int | None = None) -> None:
    """The row rules of a statistics table on a table of the same statistics written by another run (the
    learning dynamics' `train_gradient_stats`: one set per `by` = step), which carries no provenance columns."""
    f = _table_rules(frame.reset_index(drop=True), rules, provenance=False)
    expected = Expected(provenance={} if max_length is None else {"max_length": max_length})
    _row_rules(f, expected, rules, by)


def _table_rules(f: pd.DataFrame, rules: Rules, provenance: bool = True) -> pd.DataFrame:
    """Columns present and typed; the frame with its numeric columns as numbers (what is not becomes NaN)."""
    import numpy as np
    import pandas as pd

    rules.check("rows", len(f) > 0, "the table has no rows")
    missing = [c for c in GRADIENT_COLUMNS if c not in f]
    rules.check("columns", not missing, f"missing {', '.join(missing)}")
    if provenance:
        absent = [c for c in PROVENANCE_COLUMNS if c not in f]
        rules.check("provenance_columns", not absent, f"missing {', '.join(absent)}")
    numeric = [c for c in NUMERIC if c in f]
    not_numbers = [c for c in numeric if not (pd.api.types.is_numeric_dtype(f[c]) and f[c].dtype != bool)]
    rules.check("numeric_columns", not not_numbers, f"{', '.join(not_numbers)} not numeric")
    f = f.assign(**{c: pd.to_numeric(f[c], errors="coerce") for c in not_numbers})
    whole = {c: f[c] for c in WHOLE if c in f}
    fractional = {c: int((s.notna() & (s != np.floor(s))).sum()) for c, s in whole.items()}
    broken = [f"{c} ({n} of {len(f)} rows)" for c, n in fractional.items() if n]
    rules.check("integer_columns", not broken, f"fractional values in {', '.join(broken)}")
    labels = [c for c in LABELS if c in f and (f[c].isna().any() or not _all_strings(f[c]))]
    rules.check("label_columns", not labels, f"missing or non-text values in {', '.join(labels)}")
    f = f.assign(**{c: f[c].astype(str) for c in labels})  # the other rules still run (lists cannot be grouped)
    flags = [c for c in FLAGS if c in f and not pd.api.types.is_bool_dtype(f[c])]
    rules.check("flag_columns", not flags, f"{', '.join(flags)} not true/false")
    return f


def _all_strings(column: pd.Series) -> bool:
    return all(isinstance(v, str) for v in column)


def _has(f: pd.DataFrame, *columns: str) -> bool:
    return all(c in f for c in columns)


def _rows(rules: Rules, f: pd.DataFrame, rule: str, ok: Any) -> None:
    """A row rule: the detail counts the failing rows and names the first."""
    import numpy as np

    ok = np.asarray(ok, dtype=bool)
    bad = np.flatnonzero(~ok)
    first = ""
    if len(bad) and _has(f, "example_id", "parameter"):
        first = f"; first: {f.example_id.iloc[bad[0]]} {f.parameter.iloc[bad[0]]}"
    rules.check(rule, ok, f"{len(bad)} of {len(f)} rows{first}")


def _rank_bound(f: pd.DataFrame, expected: Expected) -> Any:
    """Rank of each row's gradient at most: its tokens, and min(out, in) where the shape is known."""
    import numpy as np

    tokens = f.n_tokens.astype(float).to_numpy()
    if not expected.shapes or "parameter" not in f:
        return tokens
    sides = np.array([min(expected.shapes.get(p, (np.inf, np.inf))) for p in f.parameter], dtype=float)
    return np.minimum(tokens, sides)


class _Numbers(dict):
    """The numeric columns as float arrays, by attribute (`n.loss`): numpy comparisons cost a fraction of pandas'."""

    __getattr__ = dict.__getitem__


def _numbers(f: pd.DataFrame) -> _Numbers:
    return _Numbers({c: f[c].to_numpy(dtype=float) for c in NUMERIC if c in f})


def _row_rules(f: pd.DataFrame, expected: Expected, rules: Rules, by: tuple[str, ...] = ()) -> None:
    import numpy as np

    s = 1 + SLACK
    n = _numbers(f)
    stats = [c for c in ("loss", *MATRIX_STATS) if c in f]
    if stats:
        _rows(rules, f, "finite", np.isfinite(f[stats].to_numpy(dtype=float)).all(axis=1))
    if _has(f, "loss"):
        _rows(rules, f, "loss_positive", n.loss > 0)
    if _has(f, *NORMS):
        _rows(rules, f, "norms_nonnegative", np.all([n[c] >= 0 for c in NORMS], axis=0))
        _rows(rules, f, "sigma_min_le_sigma_max", n.sigma_min <= n.sigma_max * s)
        _rows(rules, f, "sigma_max_le_frobenius", n.sigma_max <= n.frobenius_norm * s)
        _rows(rules, f, "frobenius_le_nuclear", n.frobenius_norm <= n.nuclear_norm * s)
    if _has(f, "sigma_max", "grad_max", "grad_min"):
        _rows(rules, f, "entries_le_sigma_max", np.maximum(np.abs(n.grad_max), np.abs(n.grad_min)) <= n.sigma_max * s)
    if _has(f, "grad_min", "grad_mean", "grad_max"):
        scale = SLACK * np.maximum(np.abs(n.grad_max), np.abs(n.grad_min))
        _rows(rules, f, "min_le_mean_le_max", (n.grad_min <= n.grad_mean + scale) & (n.grad_mean <= n.grad_max + scale))
    if _has(f, "n_tokens"):
        _rank_rules(f, n, _rank_bound(f, expected), rules)
    if _has(f, "n_tokens", "n_response_tokens"):
        cap = n.max_length if "max_length" in f else expected.provenance.get("max_length", np.inf)
        in_range = (n.n_response_tokens >= 1) & (n.n_response_tokens < n.n_tokens) & (n.n_tokens <= cap)
        _rows(rules, f, "token_counts_in_range", in_range)
        if "truncated" in f and ("max_length" in f or "max_length" in expected.provenance):
            _rows(rules, f, "truncated_consistent", ~f.truncated.eq(True).to_numpy() | (n.n_tokens >= cap))
    _key_rules(f, rules, by)
    _label_rules(f, expected, rules)


def _rank_rules(f: pd.DataFrame, n: _Numbers, rank: Any, rules: Rules) -> None:
    import numpy as np

    s = 1 + SLACK
    if _has(f, "nuclear_norm", "frobenius_norm"):
        _rows(rules, f, "nuclear_le_rank_bound", n.nuclear_norm <= np.sqrt(rank) * n.frobenius_norm * s)
    if _has(f, "effective_rank", "nuclear_norm"):
        er = n.effective_rank
        zero = (er == 0) & (n.nuclear_norm == 0)
        _rows(rules, f, "effective_rank_in_range", zero | ((er >= 1 - SLACK) & (er <= rank * s)))
    if _has(f, "stable_rank"):
        _rows(rules, f, "stable_rank_in_range", (n.stable_rank >= 0) & (n.stable_rank <= rank * s))
    if _has(f, "stable_rank", "frobenius_norm", "sigma_max"):
        top = n.sigma_max
        identity = np.where(top > 0, (n.frobenius_norm / np.where(top > 0, top, 1.0)) ** 2, 0.0)
        _rows(rules, f, "stable_rank_identity", np.abs(n.stable_rank - identity) <= 1e-3 * np.maximum(identity, 1.0))


def _key_rules(f: pd.DataFrame, rules: Rules, by: tuple[str, ...] = ()) -> None:
    """One row per (example, parameter); one loss, token count and `truncated` per example (per `by`)."""
    import numpy as np

    if not _has(f, *by, "example_id", "parameter"):
        return
    keys = [*by, "example_id", "parameter"]
    repeated = f.duplicated(keys, keep=False)
    _rows(rules, f, "no_duplicate_rows", ~repeated)
    numbers = [c for c in ("loss", *MATRIX_STATS) if c in f]
    ok = np.ones(len(f), dtype=bool)
    if repeated.any():
        disagree = f[repeated].groupby(keys)[numbers].transform("nunique", dropna=False).gt(1).any(axis=1)
        ok = ~f.index.isin(disagree[disagree].index)
    _rows(rules, f, "duplicates_agree", ok)
    per_example = [c for c in ("loss", "n_tokens", "n_response_tokens", "truncated") if c in f]
    if per_example:
        counts = f.groupby([*by, "example_id"])[per_example].transform("nunique", dropna=False)
        _rows(rules, f, "one_loss_per_example", (counts == 1).all(axis=1))


def _label_rules(f: pd.DataFrame, expected: Expected, rules: Rules) -> None:
    if _has(f, "parameter", "module", "layer"):
        matches = [
            isinstance(p, str) and isinstance(m, str) and p.endswith(f".{m}.weight") and layer_index(p) == layer
            for p, m, layer in zip(f.parameter, f.module, f.layer, strict=True)
        ]
        _rows(rules, f, "label_matches_parameter", matches)
        if expected.matrices is not None:
            keys = zip(f.parameter, f.layer, f.module, strict=True)
            _rows(rules, f, "expected_matrix", [k in expected.matrices for k in keys])
    if "example_id" in f and expected.example_ids is not None and expected.exclusive:
        _rows(rules, f, "expected_example", f.example_id.isin(expected.example_ids))


def _provenance_rules(f: pd.DataFrame, expected: Expected, rules: Rules) -> None:
    import numpy as np

    present = [c for c in RUN_PROVENANCE if c in f]
    mixed = [c for c in present if f[c].nunique(dropna=False) > 1]
    rules.check("provenance_consistent", not mixed, f"several values of {', '.join(mixed)}")
    if expected.provenance:
        checks = [(f[c] == v).to_numpy() if c in f else np.zeros(len(f), bool) for c, v in expected.provenance.items()]
        wrong = [c for c, ok in zip(expected.provenance, checks, strict=True) if not ok.all()]
        detail = "; ".join(f"{c}: expected {expected.provenance[c]!r}" for c in wrong)
        rules.check("provenance_as_expected", np.logical_and.reduce(checks) if len(f) else True, detail)


def _latest_outcomes(status: pd.DataFrame | None, rules: Rules) -> pd.Series | None:
    """The outcome log's status per example (None: no log); its own rules checked on the way."""
    import pandas as pd

    if status is None:
        return None
    missing = [c for c in STATUS_COLUMNS[:2] if c not in status]
    if not rules.check("status_columns", not missing, f"missing {', '.join(missing)}"):
        return None
    unknown = ~status.status.isin(STATUS_VALUES)
    rules.check("status_values", ~unknown, f"{int(unknown.sum())} outcomes are not one of {', '.join(STATUS_VALUES)}")
    repeated = status.example_id.duplicated(keep=False)
    rules.check("one_status_per_example", ~repeated, f"{status.example_id[repeated].nunique()} examples logged twice")
    return pd.Series(status.status.to_numpy(), index=status.example_id.astype(str)).groupby(level=0).last()


def _example_rules(f: pd.DataFrame, status: pd.DataFrame | None, expected: Expected, rules: Rules) -> None:
    """One verdict per example (expected, with rows, or logged)."""
    import pandas as pd

    latest = _latest_outcomes(status, rules)
    if not _has(f, "example_id", "parameter"):
        return
    present = f.groupby(f.example_id.astype(str)).parameter.agg(lambda p: frozenset(p))
    ids = set(present.index) | set(latest.index if latest is not None else ()) | set(expected.example_ids or ())
    index = pd.Index(sorted(ids))
    outcome = latest.reindex(index) if latest is not None else pd.Series([None] * len(index), index=index)
    has = present.reindex(index)
    wanted = (
        frozenset(p for p, _, _ in expected.matrices) if expected.matrices is not None
        else frozenset().union(*present) if len(present) else frozenset()
    )
    n_rows = has.map(lambda p: len(p & wanted) if isinstance(p, frozenset) else 0)
    any_rows = has.map(lambda p: isinstance(p, frozenset))
    if expected.example_ids is not None:
        asked = index.isin(expected.example_ids)
        found = outcome.notna() | (any_rows if latest is None else False)
        lacking = asked & ~found.to_numpy(dtype=bool)
        n_asked = int(asked.sum())
        limit = f"; the run was limited to {expected.limit}" if expected.limit is not None else ""
        detail = f"{n_asked - int(lacking.sum())} of {n_asked} examples of {expected.source} have an outcome{limit}"
        rules.check("has_outcome", ~lacking, detail)
    failed = (outcome == "failed").to_numpy(dtype=bool)
    rules.check("not_failed", ~failed, f"{int(failed.sum())} of {len(index)} examples failed")
    is_ok = (outcome == "ok").to_numpy(dtype=bool) if latest is not None else any_rows.to_numpy(dtype=bool)
    complete = (n_rows == len(wanted)).to_numpy()
    fine = (is_ok & complete) | (~is_ok & ~any_rows.to_numpy(dtype=bool))
    bad = [i for i in index[~fine]]
    example = ""
    if bad:
        lacking_params = sorted(wanted - (has[bad[0]] if isinstance(has[bad[0]], frozenset) else frozenset()))
        example = f"; {bad[0]} has {int(n_rows[bad[0]])} of {len(wanted)} matrices"
        example += f" (lacks e.g. {lacking_params[0]})" if lacking_params else " (or rows without an ok outcome)"
    rules.check("ok_has_all_rows", fine, f"{len(bad)} of {len(index)} examples{example}")
