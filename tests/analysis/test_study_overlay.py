"""With LG_STUDY_STATS_DIR naming a small made study tree, the report draws the study's curves beside ours."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lg_pipeline.analysis.curves import layer_curves, mad_summary
from lg_pipeline.analysis.report import STUDY_OVERLAY, DatasetInfo, ModelInfo, build_report
from lg_pipeline.analysis.study_overlay import STUDY_STATS_ENV, matching_study_curves
from lg_pipeline.io.study_stats import export_study_tree
from tests.analysis.test_plotting import assert_image_ok

pytestmark = pytest.mark.slow  # draws figures

MODELS = {"llama-3.1-8b": ModelInfo("llama-3.1-8b", "Llama 3.1 8B", "base", "llama")}
DATASETS = {"gsm8k": DatasetInfo("gsm8k", "GSM8K", "math"), "aqua": DatasetInfo("aqua", "AQuA", "math")}


def stats(scale: float, datasets=("gsm8k", "aqua"), model: str = "llama-3.1-8b") -> pd.DataFrame:
    rows = []
    for dataset in datasets:
        for level in ("none", "detailed"):
            for e in range(3):
                for layer in range(4):
                    for m, module in enumerate(("q_proj", "o_proj")):
                        value = scale * (1 + m) * (10 + layer + 5 * (level == "none") + e)
                        rows.append({"example_id": f"{dataset}{level}{e}", "layer": layer, "module": module,
                                     "parameter": f"model.layers.{layer}.self_attn.{module}.weight", "loss": 1.0 + e,
                                     "n_tokens": 50, "n_response_tokens": 20, "nuclear_norm": value,
                                     "sigma_max": value / 4, "sigma_min": 0.0, "frobenius_norm": value / 2,
                                     "grad_mean": 0.0, "grad_max": 1.0, "grad_min": -1.0, "effective_rank": 3.0,
                                     "stable_rank": 2.0, "model": model, "dataset": dataset, "level": level,
                                     "correctness": "correct"})  # fmt: skip
    return pd.DataFrame(rows)


@pytest.fixture
def study_tree(tmp_path):
    """The study's layout under its own model folder name (llama3_8b), for GSM8K only, 3× our numbers."""
    root = tmp_path / "grads_exp"
    paths = export_study_tree(stats(3.0, datasets=("gsm8k",)), root)
    assert [p.parent.name for p in paths] == ["llama3_8b", "llama3_8b"]
    return root


def test_study_curves_are_matched_by_model_dataset_and_variant(study_tree):
    ours = layer_curves(stats(1.0), ["nuclear_norm"])
    theirs = matching_study_curves(ours, study_tree)
    assert set(theirs.dataset) == {"gsm8k"} and set(theirs.model) == {"llama-3.1-8b"}
    assert set(theirs.level) == {"none", "detailed"}
    mine = ours[ours.dataset == "gsm8k"].set_index(["level", "module", "layer"])["mean"].sort_index()
    assert np.allclose(theirs.set_index(["level", "module", "layer"])["mean"].sort_index(), 3 * mine)


def test_report_draws_the_overlay_only_when_the_folder_is_named(study_tree, tmp_path, monkeypatch):
    ours = stats(1.0)
    curves = layer_curves(ours)
    mad = mad_summary(curves)
    monkeypatch.delenv(STUDY_STATS_ENV, raising=False)
    without = build_report(curves, mad, MODELS, DATASETS, tmp_path / "plain")
    assert not [a for a in without.artifacts if a.kind == STUDY_OVERLAY]
    monkeypatch.setenv(STUDY_STATS_ENV, str(study_tree))
    report = build_report(curves, mad, MODELS, DATASETS, tmp_path / "figs")
    (overlay,) = [a for a in report.artifacts if a.kind == STUDY_OVERLAY]
    assert overlay.is_figure and overlay.datasets == ("gsm8k",) and overlay.models == ("llama-3.1-8b",)
    assert_image_ok(overlay.png, min_width=400)
    assert overlay.title in (tmp_path / "figs" / "index.md").read_text()
