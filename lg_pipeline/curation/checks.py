"""Data-quality checks on curated tables with Great Expectations 1.x (no Dagster here; assets/curation.py runs them).

One function per check; each turns what it verifies into plain columns (like lg_pipeline.gradients.checks does for the
gradient statistics) and validates them with a GX suite, so a failure names the expectation and the failing rows.

Within one table:
- `curated_not_empty`: every instruction and response has a non-blank character.
- `curated_ids_unique`: example ids are present and unique.
- `curated_row_count`: the stored table has exactly the rows its build accounted for (`row_accounting` in the
  build record): as many as requested, or fewer only by counted losses and a source that ran out.
- `curated_wiki_cut_length`: every response we cut to a token budget is within ±5% of it (counts recorded at build
  time with the cut's tokenizer). Rows we did not cut are exempt: long-tail articles (kept whole) and rows read from
  the study's release folder (its own cuts, kept as released).

Across a dataset's variants (the sibling tables that exist; see `sibling_variants`):
- `curated_instructions_aligned`: the variants of one source group (the levels one selection feeds, correct and
  wrong) hold the same instructions in the same order, up to the rows each one counted as lost.
- `curated_no_fixed_point`: no row of a wrong set has the correct set's response for the same instruction.
- `curated_length_order`: median response tokens None < Simplified < Detailed (same correctness). Tokens are the
  regex fallback of lg_pipeline.curation.wiki (words and punctuation marks): loading the reference tokenizer can
  mean dequantizing a model first, and an ordering of medians does not need subword precision.

A sibling that is not materialized, has no build record, or was built under other settings (rows requested, seed,
builder version, tokenizer, source) is skipped and named in `skipped`: a check never fails because a sibling is missing.
"""

from __future__ import annotations

import statistics
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lg_pipeline.curation.table import ids_digest
from lg_pipeline.curation.wiki import CUT_TOLERANCE, FALLBACK_TOKENIZER, TokenCounter
from lg_pipeline.expectations import Outcome, gx_context, run_suite
from lg_pipeline.vocabulary import CORRECTNESS, REASONING_LEVELS, VariantKey

if TYPE_CHECKING:
    import pandas as pd

    from lg_pipeline.curation.spec import DatasetSpec

COT_ORDER = REASONING_LEVELS
RELEASE_TAG = "release"  # the `source` value of rows read from the study's release folder
SETTINGS = ("n_requested", "seed", "builder_version", "tokenizer")  # what decides a selection
SHOWN = ("example_id", "instruction", "response")


@dataclass
class Curated:
    """One stored curated table, its dataset's spec and its build record (build_variant's metadata, or None)."""

    variant: str
    frame: pd.DataFrame
    build: dict[str, Any] | None = None
    spec: DatasetSpec = field(kw_only=True)

    @property
    def key(self) -> VariantKey:
        return VariantKey.parse(self.variant)

    @property
    def source_tag(self) -> str | None:
        return str(self.frame.source.iloc[0]) if len(self.frame) and "source" in self.frame else None

    @property
    def lost(self) -> int:
        """Rows the build counted as lost after selection."""
        accounting = (self.build or {}).get("row_accounting") or {}
        return int(sum((accounting.get("lost") or {}).values()))


@dataclass
class CheckReport:
    """One check's verdict: failed expectations (and plain-language problems), failing rows, what was not compared."""

    passed: bool
    failures: list[str] = field(default_factory=list)
    failing_rows: Any = None  # a DataFrame (possibly empty)
    notes: dict[str, Any] = field(default_factory=dict)
    tables: dict[str, Any] = field(default_factory=dict)  # DataFrames worth showing (medians, sibling summary)
    skipped: list[str] = field(default_factory=list)
    warn_only: bool = False  # a failure is reported as a warning and blocks nothing (the study's own release rows)


def sibling_variants(spec: DatasetSpec, variant: str | VariantKey) -> list[str]:
    """Every other variant of the same dataset (all levels, correct and wrong): what the cross-variant checks read."""
    keys = [str(VariantKey(spec.name, level, c)) for level in spec.levels for c in CORRECTNESS]
    return [k for k in keys if k != str(variant)]


# ------------------------------------------------------------------------------------------------ helpers
def _context(context: Any) -> Any:
    return context if context is not None else gx_context()


def _validate(context: Any, frame: pd.DataFrame, expectations: list[Any], name: str) -> list[Outcome]:
    import great_expectations as gx

    suite = gx.ExpectationSuite(name=name)
    for expectation in expectations:
        suite.add_expectation(expectation)
    unique = f"{name}_{uuid.uuid4().hex[:8]}"  # one GX context serves every check: data source names must differ
    return run_suite(context, frame.reset_index(drop=True), suite, unique)


def _report(outcomes: list[Outcome], frame: pd.DataFrame, shown: tuple[str, ...] = SHOWN, **extra: Any) -> CheckReport:
    failed = [o for o in outcomes if not o.passed]
    bad = sorted({i for o in failed for i in o.failing_index})
    rows = frame.reset_index(drop=True).loc[bad, [c for c in shown if c in frame]]
    names = [f"{o.expectation}({o.column})" if o.column else o.expectation for o in failed]
    return CheckReport(passed=not failed, failures=names, failing_rows=rows, **extra)


def _empty_rows(frame: pd.DataFrame, shown: tuple[str, ...] = SHOWN) -> pd.DataFrame:
    return frame.head(0)[[c for c in shown if c in frame]]


def _incomparable(table: Curated, other: Curated | None, settings: tuple[str, ...] = SETTINGS) -> str | None:
    """Why `other` cannot be compared with `table` (None: it can)."""
    if other is None:
        return "not materialized yet"
    if table.build is None or other.build is None:
        return "no build record"
    differ = [
        f"{k} {other.build.get(k)!r} vs {table.build.get(k)!r}"
        for k in settings
        if other.build.get(k) != table.build.get(k)
    ]
    if other.source_tag != table.source_tag and len(other.frame) and len(table.frame):
        differ.append(f"source {other.source_tag!r} vs {table.source_tag!r}")
    return f"built under other settings ({'; '.join(differ)})" if differ else None


def _gx() -> Any:
    import great_expectations as gx

    return gx.expectations


# ------------------------------------------------------------------------------------------------ within one table
def check_not_empty(table: Curated, context: Any = None) -> CheckReport:
    frame = table.frame.reset_index(drop=True)[list(SHOWN)].copy()
    for column in ("instruction", "response"):
        frame[f"{column}_chars"] = frame[column].fillna("").astype(str).str.strip().str.len()
    E = _gx()
    expectations = [
        E.ExpectColumnValuesToBeBetween(column=f"{c}_chars", min_value=1) for c in ("instruction", "response")
    ]
    return _report(_validate(_context(context), frame, expectations, "curated_not_empty"), frame)


def check_ids_unique(table: Curated, context: Any = None) -> CheckReport:
    frame = table.frame.reset_index(drop=True)[list(SHOWN)]
    E = _gx()
    expectations = [
        E.ExpectColumnValuesToNotBeNull(column="example_id"),
        E.ExpectColumnValuesToBeUnique(column="example_id"),
    ]
    report = _report(_validate(_context(context), frame, expectations, "curated_ids_unique"), frame)
    report.notes["duplicated_ids"] = int(frame.example_id.duplicated().sum())
    return report


def check_row_count(table: Curated, context: Any = None) -> CheckReport:
    """Rows as requested, or fewer only by counted losses after selection and a source that ran out."""
    frame = table.frame.reset_index(drop=True)
    build = table.build or {}
    accounting = build.get("row_accounting")
    if accounting is None:
        why = "no build record" if table.build is None else "the build record has no row accounting (older builder)"
        return CheckReport(False, [f"{why}: rematerialize curated_dataset"], _empty_rows(frame))
    requested, selected = int(accounting["requested"]), int(accounting["selected"])
    source_rows, examined = accounting.get("source_rows"), int(accounting["examined"])
    lost = {k: int(v) for k, v in (accounting.get("lost") or {}).items()}
    expected = selected - sum(lost.values())
    problems = []
    if selected > requested:
        problems.append(f"selected {selected} rows, more than the {requested} requested")
    if selected < requested and (source_rows is None or examined < source_rows):
        problems.append(
            f"silent shortfall: selected {selected} of {requested} requested rows although the source was not "
            f"exhausted ({examined} of {source_rows} records examined)"
        )
    if int(build.get("n_rows", -1)) != expected:
        problems.append(
            f"the build wrote {build.get('n_rows')} rows but accounted for {expected} "
            f"({selected} selected - {sum(lost.values())} counted as lost): rows lost without being counted"
        )
    if build.get("ids_digest") is not None and build["ids_digest"] != ids_digest(list(frame.example_id)):
        problems.append("the stored table's example ids differ from the ones its build recorded")
    E = _gx()
    expectations = [
        E.ExpectTableRowCountToEqual(value=expected),
        E.ExpectTableRowCountToBeBetween(min_value=1, max_value=requested),
    ]
    outcomes = _validate(_context(context), frame, expectations, "curated_row_count")
    report = _report(outcomes, frame)
    report.failures = problems + report.failures
    report.passed = report.passed and not problems
    report.notes.update(
        rows=len(frame),
        requested=requested,
        accounted_rows=expected,
        shortfall={"source_exhausted": requested - selected, **lost} if len(frame) < requested else {},
        source_rows=source_rows,
        examined=examined,
    )
    return report


def check_wiki_cut_length(table: Curated, context: Any = None) -> CheckReport:
    """Each cut row's recorded token count within ±CUT_TOLERANCE of the level's budget; uncut rows exempt."""
    spec, level = table.spec, table.key.level
    frame = table.frame.reset_index(drop=True)
    budget = spec.cut_tokens.get(level)
    if budget is None:
        why = "whole articles, not cut" if spec.family == "wiki" else "not a wiki length cut"
        return CheckReport(True, failing_rows=_empty_rows(frame), notes={"applies": False, "why": why})
    if table.source_tag == RELEASE_TAG:
        why = "rows from the study's release folder: cut by the study, not by us, kept as released (exempt)"
        return CheckReport(True, failing_rows=_empty_rows(frame), notes={"applies": False, "why": why})
    rows = frame[[*SHOWN, "cut_token_count"]].copy() if "cut_token_count" in frame else frame[list(SHOWN)].copy()
    if "cut_token_count" not in rows:
        rows["cut_token_count"] = None
    rows["budget_tokens"] = budget
    rows["fraction_of_budget"] = rows.cut_token_count.astype(float) / budget
    E = _gx()
    expectations = [
        E.ExpectColumnValuesToNotBeNull(column="cut_token_count"),
        E.ExpectColumnValuesToBeBetween(
            column="fraction_of_budget", min_value=1 - CUT_TOLERANCE, max_value=1 + CUT_TOLERANCE
        ),
    ]
    tokenizer = (table.build or {}).get("tokenizer")
    if tokenizer == FALLBACK_TOKENIZER:  # the counts can be re-verified here, cheaply
        counter = TokenCounter()
        rows["recounted"] = [counter.count(r) for r in rows.response.fillna("")]
        rows["count_matches"] = rows.recounted == rows.cut_token_count.fillna(-1)
        expectations.append(E.ExpectColumnValuesToBeInSet(column="count_matches", value_set=[True]))
    shown = (*SHOWN[:2], "cut_token_count", "budget_tokens", "fraction_of_budget")
    report = _report(_validate(_context(context), rows, expectations, "curated_wiki_cut_length"), rows, shown)
    counts = rows.cut_token_count.dropna()
    report.notes.update(
        applies=True,
        budget_tokens=budget,
        tolerance=CUT_TOLERANCE,
        tokenizer=tokenizer,
        tokens_min=int(counts.min()) if len(counts) else None,
        tokens_max=int(counts.max()) if len(counts) else None,
        recounted="fallback counts recomputed" if "recounted" in rows else "recorded counts (model tokenizer)",
    )
    return report


# ------------------------------------------------------------------------------------------------ across variants
def check_instructions_aligned(
    table: Curated, siblings: Mapping[str, Curated | None], context: Any = None
) -> CheckReport:
    """Same instructions in the same order as the variants built from the same selection, up to counted losses."""
    import pandas as pd

    spec, level = table.spec, table.key.level
    group = spec.group_for(level)
    levels = group.levels if group is not None else (level,)
    keys = [str(VariantKey(spec.name, lvl, c)) for lvl in levels if lvl in spec.levels for c in CORRECTNESS]
    frame = table.frame.reset_index(drop=True)
    rows = frame[list(SHOWN[:2])].copy()
    rows["instruction_matches"] = True
    rows["order_matches"] = True
    rows["missing_in"] = ""
    summary, skipped = [], []
    here = list(frame.example_id)
    for key in [k for k in keys if k != table.variant]:
        other = siblings.get(key)
        reason = _incomparable(table, other, SETTINGS)
        if reason:
            skipped.append(f"{key}: {reason}")
            continue
        there = dict(zip(other.frame.example_id, other.frame.instruction, strict=True))
        here_set = set(here)
        rank_here = {e: i for i, e in enumerate(e for e in here if e in there)}
        rank_there = {e: i for i, e in enumerate(e for e in other.frame.example_id if e in here_set)}
        for i, eid in enumerate(here):
            if eid in there:
                rows.at[i, "instruction_matches"] &= there[eid] == rows.at[i, "instruction"]
                rows.at[i, "order_matches"] &= rank_here[eid] == rank_there[eid]
            else:
                rows.at[i, "missing_in"] = ", ".join(filter(None, [rows.at[i, "missing_in"], key]))
        summary.append(
            {
                "sibling": key,
                "only_here": sum(e not in there for e in here),
                "only_there": sum(e not in here_set for e in other.frame.example_id),
                "lost_here": table.lost,
                "lost_there": other.lost,
            }
        )
    context = _context(context)
    E = _gx()
    outcomes = _validate(
        context,
        rows,
        [
            E.ExpectColumnValuesToBeInSet(column="instruction_matches", value_set=[True]),
            E.ExpectColumnValuesToBeInSet(column="order_matches", value_set=[True]),
        ],
        "curated_instructions_aligned",
    )
    table_summary = pd.DataFrame(summary, columns=["sibling", "only_here", "only_there", "lost_here", "lost_there"])
    if summary:
        counted = _validate(
            context,
            table_summary,
            [  # a row one side lacks must be one that side counted as lost
                E.ExpectColumnPairValuesAToBeGreaterThanB(column_A="lost_there", column_B="only_here", or_equal=True),
                E.ExpectColumnPairValuesAToBeGreaterThanB(column_A="lost_here", column_B="only_there", or_equal=True),
            ],
            "curated_instructions_counted",
        )
        for outcome in counted:  # positions in the summary: show this table's rows the failing siblings lack
            failing = set(table_summary.sibling.iloc[outcome.failing_index])
            outcome.failing_index = [i for i, m in enumerate(rows.missing_in) if failing & set(m.split(", "))]
        outcomes += counted
    report = _report(outcomes, rows, (*SHOWN[:2], "instruction_matches", "order_matches", "missing_in"))
    report.skipped = skipped
    report.tables["siblings"] = table_summary
    report.notes["compared_with"] = list(table_summary.sibling)
    return report


def check_no_fixed_point(table: Curated, siblings: Mapping[str, Curated | None], context: Any = None) -> CheckReport:
    """A wrong set never gives the correct set's response for the same instruction."""
    variant = table.key
    frame = table.frame.reset_index(drop=True)
    if variant.correctness != "wrong":
        return CheckReport(True, failing_rows=_empty_rows(frame), notes={"applies": False, "why": "a correct set"})
    key = str(variant.with_correctness("correct"))
    correct = siblings.get(key)
    reason = _incomparable(table, correct, ("builder_version",))
    if reason:
        return CheckReport(True, failing_rows=_empty_rows(frame), skipped=[f"{key}: {reason}"], notes={"applies": True})
    rows = frame[list(SHOWN)].copy()
    answers = dict(zip(correct.frame.example_id, correct.frame.response, strict=True))
    rows["correct_response"] = rows.example_id.map(answers)
    paired = rows.correct_response.notna()
    rows["fixed_point"] = paired & (
        rows.response.fillna("").astype(str).str.strip() == rows.correct_response.fillna("").astype(str).str.strip()
    )
    E = _gx()
    outcomes = _validate(
        _context(context),
        rows,
        [E.ExpectColumnValuesToBeInSet(column="fixed_point", value_set=[False])],
        "curated_no_fixed_point",
    )
    report = _report(outcomes, rows, (*SHOWN, "correct_response"))
    report.notes.update(applies=True, compared_with=key, fixed_points=int(rows.fixed_point.sum()))
    report.notes["rows_without_a_correct_row"] = int((~paired).sum())
    if table.source_tag == RELEASE_TAG:  # the study's own shuffle (None CoT yes/no sets repeat answers): as released
        report.warn_only = True
        report.notes["why_warning"] = "the study's release wrong set, kept as released: reported, not blocking"
    return report


def check_length_order(
    table: Curated, siblings: Mapping[str, Curated | None], context: Any = None, counter: TokenCounter | None = None
) -> CheckReport:
    """Median response tokens None < Simplified < Detailed across the dataset's levels of the same correctness."""
    import pandas as pd

    spec, variant = table.spec, table.key
    frame = table.frame.reset_index(drop=True)
    if variant.level not in COT_ORDER:
        return CheckReport(True, failing_rows=_empty_rows(frame), notes={"applies": False, "why": "not a CoT level"})
    counter = counter or TokenCounter()
    medians, skipped = [], []
    for lvl in [lvl for lvl in COT_ORDER if lvl in spec.levels]:
        key = str(variant.with_level(lvl))
        other = table if key == table.variant else siblings.get(key)
        reason = None if other is table else _incomparable(table, other, ("builder_version",))
        if reason is None and not len(other.frame):
            reason = "no rows"
        if reason:
            skipped.append(f"{key}: {reason}")
            continue
        tokens = [counter.count(str(r)) for r in other.frame.response.fillna("")]
        medians.append({"variant": key, "level": lvl, "rows": len(tokens), "median_tokens": statistics.median(tokens)})
    table_medians = pd.DataFrame(medians, columns=["variant", "level", "rows", "median_tokens"])
    report = CheckReport(True, failing_rows=table_medians.head(0), skipped=skipped)
    if len(table_medians) >= 2:
        E = _gx()
        outcomes = _validate(
            _context(context),
            table_medians,
            [E.ExpectColumnValuesToBeIncreasing(column="median_tokens", strictly=True)],
            "curated_length_order",
        )
        report = _report(outcomes, table_medians, tuple(table_medians.columns), skipped=skipped)
        if not report.passed:
            report.failing_rows = table_medians  # an ordering is broken by the whole sequence, not one row
    report.tables["medians"] = table_medians
    report.notes.update(applies=True, tokens=counter.name, compared=len(table_medians))
    return report


# ------------------------------------------------------------------------------------------------ all of them
CHECKS = (
    "curated_not_empty",
    "curated_ids_unique",
    "curated_row_count",
    "curated_instructions_aligned",
    "curated_no_fixed_point",
    "curated_wiki_cut_length",
    "curated_length_order",
)


def check_curated(table: Curated, siblings: Mapping[str, Curated | None]) -> dict[str, CheckReport]:
    """Every check on one table (siblings: variant -> its table, None when not materialized), in CHECKS order."""
    context = _context(None)  # one GX context for all of them
    return {
        "curated_not_empty": check_not_empty(table, context),
        "curated_ids_unique": check_ids_unique(table, context),
        "curated_row_count": check_row_count(table, context),
        "curated_instructions_aligned": check_instructions_aligned(table, siblings, context),
        "curated_no_fixed_point": check_no_fixed_point(table, siblings, context),
        "curated_wiki_cut_length": check_wiki_cut_length(table, context),
        "curated_length_order": check_length_order(table, siblings, context),
    }
