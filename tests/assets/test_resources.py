"""Resource settings: every documented LG_* variable is read when the code location loads, not at import."""

from __future__ import annotations

import pytest

from assets import resources
from lg_pipeline.errors import InputError


def test_variables_set_after_import_are_read_when_resources_are_built(monkeypatch, tmp_path):
    for variables in resources.ENV_SETTINGS.values():
        for variable in variables.values():
            monkeypatch.delenv(variable, raising=False)
    defaults = resources.resources_for("local")
    assert defaults["store"].root == resources.DEFAULT_OUTPUT_ROOT and defaults["compute"].device == "cpu"
    assert defaults["curation"].n_offline_examples == 4 and defaults["curation"].teacher == ""
    monkeypatch.setenv("LG_OUTPUT_ROOT", str(tmp_path / "out"))
    monkeypatch.setenv("LG_N_OFFLINE_EXAMPLES", "7")
    monkeypatch.setenv("LG_TEACHER", "precomputed")
    monkeypatch.setenv("LG_DEVICE", "cuda:1")
    monkeypatch.setenv("LG_CACHE_DIR", str(tmp_path / "cache"))
    built = resources.resources_for("local")
    assert built["store"].root == str(tmp_path / "out")
    assert built["curation"].n_offline_examples == 7 and built["curation"].teacher == "precomputed"
    assert built["compute"].device == "cuda:1"
    assert built["compute"].cache_dir == built["curation"].cache_dir == str(tmp_path / "cache")
    gpu = resources.resources_for("gpu")["compute"]
    assert (gpu.device, gpu.dtype, gpu.batch_size) == ("cuda", "bfloat16", 8)  # the profile, as before


def test_every_setting_names_a_real_field_and_a_bad_number_names_its_variable(monkeypatch):
    classes = {"store": resources.OutputStore, "curation": resources.CurationResource}
    classes["compute"] = resources.ComputeResource
    for name, fields in resources.ENV_SETTINGS.items():
        assert set(fields) <= set(classes[name].model_fields)
    monkeypatch.setenv("LG_N_OFFLINE_EXAMPLES", "four")
    with pytest.raises(InputError, match="LG_N_OFFLINE_EXAMPLES='four'"):
        resources.resources_for("local")


def test_peak_memory_is_reported_in_mib():
    peak = resources.peak_memory("cpu")
    assert set(peak) == {"peak_rss_mib"} and 10 < peak["peak_rss_mib"] < 1_000_000


def test_zero_shot_figure_names_come_from_the_store(tmp_path):
    from assets.resources import OutputStore

    store = OutputStore(root=str(tmp_path))
    assert store.zero_shot_figure("m", "none", "loss") == tmp_path / "figures/zero_shot/m__none__loss.png"
    assert store.zero_shot_figure("m", "none", "rt", run=True) == tmp_path / "figures/zero_shot/runs/m__none__rt.png"
