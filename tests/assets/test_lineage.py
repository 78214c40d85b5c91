"""Figure lineage: each figure/table names the exact summary and statistics partitions and data versions."""

from __future__ import annotations

import dagster as dg
import pytest

from assets.lineage import combined_version, lineage, model_sources
from lg_pipeline.analysis.report import BASE_VS_INSTRUCT, CROSS_MODEL_MAD, LEVELS, MAD_TABLE, Report

DV = "dagster/data_version"


def materialize(instance, asset: str, partition: str, version: str) -> None:
    instance.report_runless_asset_event(dg.AssetMaterialization(asset, partition=partition, tags={DV: version}))


@pytest.mark.slow
def test_sources_are_the_versions_the_summary_read_not_later_ones(tmp_path):
    with dg.instance_for_test() as instance:  # recorded under the partition key, named in full in the lineage
        materialize(instance, "gradient_stats", "a|champ-n-c", "g1")
        materialize(instance, "layer_summary", "a", "s1")
        materialize(instance, "gradient_stats", "a|champ-n-c", "g2")  # after the summary: not drawn
        stray = tmp_path / "b.parquet"
        stray.write_bytes(b"stats")  # computed under another DAGSTER_HOME: only the file's version is known
        sources = model_sources(
            instance, {"a": ["champ__none__correct"], "b": ["champ__none__correct"]}, {"b|champ__none__correct": stray}
        )
    assert sources["a"].summary_version == "s1"
    assert sources["a"].gradients == {"a|champ__none__correct": "g1"}
    assert sources["b"].summary_version is None
    assert sources["b"].gradients["b|champ__none__correct"].startswith("file:")


def test_each_figure_and_table_is_matched_to_its_own_partitions(tmp_path):
    from assets.lineage import ModelSource

    grads = {
        m: ModelSource(
            m, f"s-{m}", "run", {f"{m}|{v}": f"g-{m}-{v}" for v in ("champ__none__correct", "wiki__len100__correct")}
        )
        for m in ("base", "inst")
    }
    out = tmp_path / "figures"
    report = Report()
    report.add(LEVELS, "levels", ["base"], ["champ"], [out / "base" / "champ_levels.png"])
    pair = out / "base_vs_instruct" / "base__inst__wiki.png"
    report.add(BASE_VS_INSTRUCT, "pair", ["base", "inst"], ["wiki"], [pair])
    report.add(MAD_TABLE, "math", ["inst"], ["champ", "gsm_symbolic"], [out / "inst" / "math_mad.csv"])
    report.add(CROSS_MODEL_MAD, "cross", ["base", "inst"], None, [out / "cross_model_mad.csv"])
    entries = lineage(report, grads)
    assert entries["levels"] == {
        "models": ["base"],
        "layer_summary": {"base": "s-base"},
        "gradient_stats": {"base|champ__none__correct": "g-base-champ__none__correct"},
    }
    assert entries["pair"]["models"] == ["base", "inst"]
    assert set(entries["pair"]["gradient_stats"]) == {"base|wiki__len100__correct", "inst|wiki__len100__correct"}
    assert set(entries["math"]["gradient_stats"]) == {"inst|champ__none__correct"}
    assert len(entries["cross"]["gradient_stats"]) == 4


def test_figures_data_version_follows_the_summaries():
    from assets.lineage import ModelSource

    one = {"a": ModelSource("a", "s1", None)}
    assert combined_version(one) == combined_version({"a": ModelSource("a", "s1", "other run")})
    assert combined_version(one) != combined_version({"a": ModelSource("a", "s2", None)})


@pytest.mark.slow  # a Dagster instance
def test_dynamics_figures_name_the_latest_version_of_each_run_partition(tmp_path):
    from assets.lineage import describe_partitions, merged, partition_versions, sources_version

    stray = tmp_path / "influence_summary.parquet"
    stray.write_bytes(b"run")  # a run written under another DAGSTER_HOME: only the file's version is known
    with dg.instance_for_test() as instance:
        materialize(instance, "training_dynamics_dpo", "a|champ-n-c", "d1")
        materialize(instance, "training_dynamics_dpo", "a|champ-n-c", "d2")
        files = {"a|champ__none__correct": tmp_path / "absent", "b|champ__none__correct": stray}
        versions = partition_versions(instance, "training_dynamics_dpo", files, {
            "a|champ__none__correct": "a|champ-n-c", "b|champ__none__correct": "b|champ-n-c"}.__getitem__)
    assert versions["a|champ__none__correct"] == "d2"
    assert versions["b|champ__none__correct"].startswith("file:")
    line = describe_partitions({"training_dynamics_dpo": versions})
    assert "`training_dynamics_dpo[a|champ__none__correct]` vd2" in line and "[b|champ__none__correct]` vfile:" in line
    both = merged([{"x": {"p": "1"}}, {"x": {"q": "2"}, "y": {"p": "3"}}])
    assert both == {"x": {"p": "1", "q": "2"}, "y": {"p": "3"}}
    assert sources_version(both) != sources_version({"x": {"p": "1", "q": "2"}, "y": {"p": "4"}})
