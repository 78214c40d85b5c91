"""The report: which figures and tables it draws for which models, and the grouped index page."""

from __future__ import annotations

import pandas as pd
import pytest

from lg_pipeline.analysis import report as rep
from lg_pipeline.analysis.curves import mad_summary
from tests.analysis.test_plotting import curves, orders_apart

pytestmark = pytest.mark.slow  # draws every figure of a whole report (tens of seconds)

def test_every_kind_is_drawn_where_it_applies_and_indexed(tmp_path):
    base = orders_apart().assign(model="base-m")
    instruct = curves("inst-m", n_layers=18)
    both = pd.concat([base, instruct], ignore_index=True)
    models = {
        "base-m": rep.ModelInfo("base-m", "Base M", "base", "fam"),
        "inst-m": rep.ModelInfo("inst-m", "Inst M", "instruct", "fam"),
    }
    datasets = {"gsm8k": rep.DatasetInfo("gsm8k", "GSM8K", "math")}
    report = rep.build_report(both, mad_summary(both), models, datasets, tmp_path)
    kinds = {(a.kind, a.models) for a in report.artifacts}
    assert (rep.LEVELS_LOG, ("base-m",)) in kinds  # levels 1000x apart
    assert (rep.LEVELS_LOG, ("inst-m",)) not in kinds  # levels close: no log variant
    assert (rep.CORRECT_VS_WRONG, ("base-m",)) in kinds and (rep.RELATIVE_DIFFERENCE, ("base-m",)) in kinds
    assert (rep.CROSS_MODEL, ("base-m", "inst-m")) in kinds
    assert (rep.BASE_VS_INSTRUCT, ("base-m", "inst-m")) in kinds
    assert all(a.png is not None and a.png.is_file() for a in report.figures)
    assert report.index == tmp_path / "index.html"
    page = report.index.read_text()
    for item in report.figures:
        assert str(item.png.relative_to(tmp_path)) in page
    assert "<table" in page and "base-m · gsm8k" in page
