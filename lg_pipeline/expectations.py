"""Great Expectations 1.x plumbing shared by every check of the core: one outcome type, one context, one runner."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd


@dataclass
class Outcome:
    """One expectation's verdict and the row positions that broke it (first 20)."""

    expectation: str
    column: str
    passed: bool
    failing_index: list[int] = field(default_factory=list)


def gx_context() -> Any:
    """An ephemeral GX context (suites need one to exist first), without progress bars in the run's logs."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context


def run_suite(context: Any, frame: pd.DataFrame, suite: Any, name: str) -> list[Outcome]:
    """Validate `frame` against `suite` in a GX context: one Outcome per expectation (also used by curation)."""
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
