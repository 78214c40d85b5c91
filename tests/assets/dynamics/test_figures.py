"""The dynamics figures' comparison tables: SFT vs DPO by probe type, orderings by step and task."""

from __future__ import annotations

import pandas as pd
import pytest

from assets.dynamics.figures import ordering_comparison, probe_type_comparison


def test_probe_types_compare_each_objectives_last_eval_step():
    rows = [  # (variant, objective, step, probe, type, measured)
        ("v", "sft", 0, "p1", "trained", 1.0), ("v", "sft", 5, "p1", "trained", 2.0),
        ("v", "sft", 5, "p2", "trained", 4.0), ("v", "sft", 5, "p3", "held_out", -1.0),
        ("v", "dpo", 0, "p1", "trained", 9.0), ("v", "dpo", 3, "p1", "trained", -0.5),
        ("w", "sft", 5, "p1", "trained", 7.0),
    ]
    frame = pd.DataFrame(rows, columns=["variant", "objective", "step", "probe_id", "probe_type", "measured_delta"])
    table = probe_type_comparison(frame.assign(model="m", predicted_delta=0.0))
    got = {(r.variant, r.probe_type): (r._4, r._5) for r in table.itertuples()}
    assert got[("v", "trained")] == (3.0, -0.5)  # mean of p1, p2 at step 5; DPO's last step is 3
    assert got[("v", "held_out")][0] == -1.0 and pd.isna(got[("v", "held_out")][1])
    assert got[("w", "trained")][0] == 7.0 and pd.isna(got[("w", "trained")][1])  # no DPO run: empty, not left out
    assert list(table.columns[-2:]) == ["Δ log p SFT", "Δ log p DPO"]


def test_orderings_are_columns_per_model_level_task_and_step_all_tasks_first():
    rows = [(o, s, t, loss) for o, base in (("rt", 1.0), ("fft", 2.0)) for s in (0, 4)
            for t, extra in (("gcd", 0.1), ("__all__", 0.0)) for loss in [base + s + extra]]
    losses = pd.DataFrame(rows, columns=["ordering", "step", "task", "loss"]).assign(model="m", level="none")
    table = ordering_comparison(losses)
    assert list(table.columns) == ["model", "level", "task", "step", "loss fft", "loss rt"]
    assert list(table.task) == ["__all__", "__all__", "gcd", "gcd"] and list(table.step) == [0, 4, 0, 4]
    assert table.iloc[3]["loss rt"] == pytest.approx(5.1) and table.iloc[0]["loss fft"] == pytest.approx(2.0)
