"""Progress lines with an ETA, one wording for every run (gradient statistics, learning and zero-shot dynamics).

A run's first unit carries its warm-up (kernels, caches, the first eval), so the pace is only known once one unit
is done: before that a line says so rather than guessing; after it, the ETA is the remaining units at the mean pace
so far.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

# At most about this many step lines per run (plus the last): a 1,000-step run logs every 50th step.
STEP_LINES = 20


class UnitClock:
    """Units done out of a total, and the time since the clock started."""

    def __init__(self, total: int, clock: Callable[[], float] = time.monotonic, started: float | None = None):
        self.total, self.done, self._clock = max(int(total), 0), 0, clock
        self.started = clock() if started is None else started

    @property
    def elapsed(self) -> float:
        return self._clock() - self.started

    def eta(self) -> float | None:
        """Seconds left at the pace so far; None before the first unit is done."""
        if self.done <= 0:
            return None
        return self.elapsed / self.done * max(self.total - self.done, 0)

    def timing(self) -> str:
        """`12s elapsed, ETA 30s` (or `ETA after the first unit`)."""
        eta = self.eta()
        left = "ETA after the first unit" if eta is None else f"ETA {eta:.0f}s"
        return f"{self.elapsed:.0f}s elapsed, {left}"


class StepProgress:
    """A `progress(step, total)` callback that reports `step k/N, 12s elapsed, ETA 30s` through `report`.

    `progress(0, N)` (training begins) starts the clock; without it the clock starts at the first call. Lines come
    for the first timed step, every `ceil(N / STEP_LINES)`-th step and the last one, so a long run's log stays
    readable. `prefix` names the run's part (an ordering).
    """

    def __init__(self, report: Callable[[str], None], prefix: str = "", clock: Callable[[], float] = time.monotonic):
        self.report, self.prefix, self._clock = report, prefix, clock
        self._units: UnitClock | None = None
        self._base, self._total = 0, 0

    def __call__(self, step: int, total: int) -> None:
        if self._units is None or step == 0 or total != self._total:
            # Steps counted from the first call: the pace is that of the steps timed (a resumed run's too).
            self._units, self._base, self._total = UnitClock(total - step, self._clock), step, total
            if step == 0:
                return
        units = self._units
        units.done = step - self._base
        stride = max(1, math.ceil(total / STEP_LINES))
        if units.done <= 1 or step == total or step % stride == 0:
            self.report(f"{self.prefix}step {step}/{total}, {units.timing()}")
