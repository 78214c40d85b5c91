"""Declarative automation conditions, set on the asset decorators (`automation_condition=`)."""

from __future__ import annotations

import dagster as dg


def refresh_when_upstream_settles() -> dg.AutomationCondition:
    """Run when an upstream partition was updated since this asset was last requested, and no upstream
    partition (nor this one) is in progress.

    Not `AutomationCondition.eager()`: eager also waits until *no* upstream partition is missing, and the
    hub-only variants of an offline machine stay missing for ever, so it would never fire. Missing upstream
    partitions are fine here: a summary covers the variants that exist and passed their check.

    The reset is "requested on the last tick, and nothing new upstream since", not `since_last_handled`:
    that one also resets when this asset's own run finishes, or when it was requested one tick ago, and
    so drops an upstream update that lands while the run is going (seen with two models finishing within
    seconds: the second never reached the figures). An update racing a request costs one extra refresh.
    """
    updated = dg.AutomationCondition.any_deps_updated()
    handled = (dg.AutomationCondition.newly_requested() & ~updated) | dg.AutomationCondition.initial_evaluation()
    return (
        updated.since(handled.with_label("requested, nothing new since"))
        & ~dg.AutomationCondition.any_deps_in_progress()
        & ~dg.AutomationCondition.in_progress()
    ).with_label("upstream updated, none in progress")
