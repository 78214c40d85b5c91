"""Declarative automation conditions, set on the asset decorators (`automation_condition=`)."""

from __future__ import annotations

import dagster as dg


def deps_checked_or_missing() -> dg.AutomationCondition:
    """Every upstream partition is missing, or its blocking checks passed (or are requested this tick).

    `AutomationCondition.all_deps_blocking_checks_passed()` with one change: a partition never materialized has
    no check to pass, and partitions not filled in here (`LG_AUTO_VARIANTS`, a failed run) stay missing, so the
    stock condition would hold every summary back for ever. What it guards against is kept: a statistics
    partition materialized but not yet checked (its check runs in the same run, a step later) holds the summary
    back — the summary would fail "not validated yet" — until the check has passed.
    """
    checked = dg.AutomationCondition.all_checks_match(
        dg.AutomationCondition.check_passed() | dg.AutomationCondition.will_be_requested(), blocking_only=True
    )
    # Not `all_deps_match(...)`: with a partition mapping a dependency matches when *any* of its mapped
    # partitions does; "none materialized and unchecked" is what holds for every partition.
    unchecked = ~dg.AutomationCondition.missing() & ~checked
    return (
        ~dg.AutomationCondition.any_deps_match(unchecked.with_label("materialized, blocking check not passed"))
    ).with_label("every upstream partition missing or its blocking checks passed")


def refresh_when_upstream_settles() -> dg.AutomationCondition:
    """Run when an upstream partition was updated since this asset was last requested, no upstream partition
    (nor this one) is in progress, and every updated upstream partition passed its blocking checks.

    Not `AutomationCondition.eager()`: eager also waits until *no* upstream partition is missing, and variants
    that are not filled in here stay missing for ever, so it would never fire. Missing upstream partitions are
    fine: a summary covers the variants that exist and passed their check.

    The reset is "requested on the last tick, and nothing new upstream since", not `since_last_handled`:
    that one also resets when this asset's own run finishes, or when it was requested one tick ago, and
    so drops an upstream update that lands while the run is going (seen with two models finishing within
    seconds: the second never reached the figures). An update racing a request costs one extra refresh.
    The same memory keeps an update whose check has not run yet: `updated.since(handled)` stays true until the
    check passes and the request goes out, so waiting for the check never loses the refresh.
    """
    updated = dg.AutomationCondition.any_deps_updated()
    handled = (dg.AutomationCondition.newly_requested() & ~updated) | dg.AutomationCondition.initial_evaluation()
    return (
        updated.since(handled.with_label("requested, nothing new since"))
        & ~dg.AutomationCondition.any_deps_in_progress()
        & ~dg.AutomationCondition.in_progress()
        & deps_checked_or_missing()
    ).with_label("upstream updated and checked, none in progress")
