"""Progress lines: the ETA is known only after the first unit, then it is the rest at the pace so far."""

from __future__ import annotations

from lg_pipeline.progress import StepProgress, UnitClock


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_eta_is_unknown_before_the_first_unit_then_the_rest_at_the_pace_so_far():
    clock = FakeClock()
    units = UnitClock(10, clock)
    assert units.eta() is None and units.timing() == "0s elapsed, ETA after the first unit"
    clock.now += 6.0
    units.done = 3
    assert units.eta() == 14.0 and units.timing() == "6s elapsed, ETA 14s"


def test_step_progress_starts_at_step_zero_and_reports_first_every_nth_and_last_steps():
    clock, lines = FakeClock(), []
    progress = StepProgress(lines.append, prefix="rt ", clock=clock)
    progress(0, 40)  # training begins: the clock starts, no line
    for step in range(1, 41):
        clock.now += 2.0
        progress(step, 40)
    assert lines[0] == "rt step 1/40, 2s elapsed, ETA 78s"
    assert [line.split()[2].rstrip(",") for line in lines] == ["1/40", *(f"{s}/40" for s in range(2, 41, 2))]
    assert lines[-1] == "rt step 40/40, 80s elapsed, ETA 0s"


def test_step_progress_without_a_start_call_says_the_eta_comes_after_the_first_step():
    clock, lines = FakeClock(), []
    progress = StepProgress(lines.append, clock=clock)
    progress(1, 3)
    clock.now += 5.0
    progress(2, 3)
    assert lines == ["step 1/3, 0s elapsed, ETA after the first unit", "step 2/3, 5s elapsed, ETA 5s"]
