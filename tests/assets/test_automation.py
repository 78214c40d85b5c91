"""Automation: the catalog sensor, the nightly schedules, the refresh condition (no model is loaded here)."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from types import SimpleNamespace

import dagster as dg
import pytest
import yaml

from assets.automation import schedules, sensors
from assets.backlog import FAILED, IN_PROGRESS, MATERIALIZED, buildable_variants, plan
from assets.partitions import multi_key
from assets.resources import OutputStore
from lg_pipeline.vocabulary import StatsKey

V1, V2, HUB_ONLY = "champ__none__correct", "champ__none__wrong", "gsm8k__none__correct"


pytestmark = pytest.mark.slow  # evaluates Dagster sensors and automation on an instance

def local(path: Path) -> SimpleNamespace:
    return SimpleNamespace(source="local", path=str(path), package=None, repo_id=None)


def fake_model(folder: Path) -> Path:
    """Enough of a transformers folder for the availability check (the sensor never loads a model)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    return folder


def write_catalog(path: Path, models: dict[str, Path]) -> Path:
    entries = {n: {"source": "local", "path": str(p), "kind": "base"} for n, p in models.items()}
    path.write_text(yaml.safe_dump({"models": entries}))
    return path


# ------------------------------------------------------------------------------------------------ planning
def test_plan_registers_new_models_and_curates_before_computing(tmp_path):
    catalog = {"a": local(fake_model(tmp_path / "a")), "b": local(fake_model(tmp_path / "b"))}
    backlog = plan(catalog, ["a"], [V1, V2], {V1: MATERIALIZED}, {("a", V1): MATERIALIZED})
    assert backlog.register == ("b",)
    assert backlog.curate == (V2,)
    assert backlog.compute == (("b", V1),)
    assert set(backlog.waiting) == {("a", V2), ("b", V2)}


def test_plan_leaves_failures_and_running_work_to_the_schedule(tmp_path):
    catalog = {"a": local(fake_model(tmp_path / "a"))}
    curated = {V1: MATERIALIZED, V2: FAILED}
    gradients = {("a", V1): FAILED}
    sensor = plan(catalog, ["a"], [V1, V2], curated, gradients)
    assert sensor.compute == () and sensor.curate == ()
    nightly = plan(catalog, ["a"], [V1, V2], curated, gradients, retry_failed=True)
    assert nightly.compute == (("a", V1),) and nightly.curate == (V2,)
    running = plan(catalog, ["a"], [V1], {V1: MATERIALIZED}, {("a", V1): IN_PROGRESS}, retry_failed=True)
    assert running.empty


def test_plan_retries_a_failed_check_only_nightly(tmp_path):
    catalog = {"a": local(fake_model(tmp_path / "a"))}
    args = (catalog, ["a"], [V1], {V1: MATERIALIZED}, {("a", V1): MATERIALIZED})
    assert plan(*args, failed_checks=[("a", V1)]).empty
    assert plan(*args, retry_failed=True, failed_checks=[("a", V1)]).compute == (("a", V1),)


def test_unavailable_models_are_neither_registered_nor_computed(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    catalog = {
        "gone": local(tmp_path / "missing"),
        "hub": SimpleNamespace(source="hub", repo_id="org/m", path=None, package=None),
        "pkg": SimpleNamespace(source="packaged_gguf", package="no_such_package_xyz", path=None, repo_id=None),
        "ok": local(fake_model(tmp_path / "ok")),
    }
    backlog = plan(catalog, [], [V1], {}, {})
    assert backlog.register == ("ok",)  # only what can run here becomes a partition
    assert set(backlog.unavailable) == {"gone", "hub", "pkg"}
    assert "HF_HUB_OFFLINE" in backlog.describe()


def test_unbuildable_variants_are_no_partitions_and_say_why(monkeypatch):
    from assets.backlog import variant_availability
    from assets.partitions import AVAILABILITY, variant_partitions

    keys = set(variant_partitions.get_partition_keys())
    assert V1 in keys and HUB_ONLY not in keys
    assert set(AVAILABILITY.reasons) & keys == set()
    assert "set LG_RELEASE_DIR" in AVAILABILITY.reasons[HUB_ONLY] or "hub" in AVAILABILITY.reasons[HUB_ONLY]
    note = AVAILABILITY.note()
    assert note.startswith(f"Not partitioned here ({len(AVAILABILITY.reasons)} variants")
    assert len(note.splitlines()) <= 1 + len(set(AVAILABILITY.reasons.values()))  # one line per reason
    automated = variant_availability("")  # what the sensor and the nightly fill ask for
    teacher = [v for v, why in automated.reasons.items() if "LG_TEACHER" in why]
    assert set(teacher) <= keys  # still partitions: a teacher may come with the launchpad's config
    if teacher:  # the automation fills a teacher level in once a teacher is configured
        monkeypatch.setenv("LG_TEACHER", "precomputed")
        assert set(teacher) <= set(variant_availability("").buildable)


def test_buildable_variants_offline_release_and_narrowing(tmp_path, monkeypatch):
    monkeypatch.delenv("LG_AUTO_VARIANTS", raising=False)
    offline = buildable_variants(release_dir="")
    assert V1 in offline and HUB_ONLY not in offline
    from data_sources.datasets.catalog import dataset_catalog

    rel = dataset_catalog()["gsm8k"].release_file("none", "correct")
    (tmp_path / rel).parent.mkdir(parents=True)
    (tmp_path / rel).write_text("[]")
    with_release = buildable_variants(release_dir=str(tmp_path))
    assert set(with_release) - set(offline) == {HUB_ONLY}
    assert buildable_variants("champ__none__*", release_dir="") == [V1, V2]


# ------------------------------------------------------------------------------------------------ sensor
@pytest.fixture
def world(tmp_path, monkeypatch):
    """A persistent test instance and a catalog of fake local models; only two variants are filled in."""
    monkeypatch.setenv("LG_AUTO_VARIANTS", f"{V1},{V2}")
    catalog = write_catalog(tmp_path / "models.yaml", {"a": fake_model(tmp_path / "a")})
    monkeypatch.setenv("LG_MODEL_CATALOG", str(catalog))
    with dg.instance_for_test() as instance:
        yield SimpleNamespace(instance=instance, catalog=catalog, tmp=tmp_path)


def tick(world, cursor: str | None = None) -> dg.SensorResult:
    from lg_pipeline.definitions import defs

    store = OutputStore(root=str(world.tmp / "out"))
    with dg.build_sensor_context(
        instance=world.instance, definitions=defs, resources={"store": store}, cursor=cursor
    ) as context:
        return sensors.model_catalog_sensor(context)


def test_sensor_says_what_is_skipped_once_per_change(world, monkeypatch, capfd):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub = {"source": "hub", "repo_id": "org/m", "kind": "base"}
    write_catalog(world.catalog, {"a": fake_model(world.tmp / "a")})
    raw = yaml.safe_load(world.catalog.read_text())
    raw["models"]["hub-m"] = hub
    world.catalog.write_text(yaml.safe_dump(raw))

    logged = []

    def skipped_lines(cursor):
        capfd.readouterr()
        result = tick(world, cursor)
        logged[:] = capfd.readouterr().err.splitlines()  # the sensor's log goes to its console logger
        return result, [line for line in logged if "is not registered" in line]

    first, lines = skipped_lines(None)
    assert len(lines) == 1 and "hub-m" in lines[0] and "HF_HUB_OFFLINE" in lines[0]
    assert any("Not partitioned here" in line for line in logged)
    assert first.cursor
    second, lines = skipped_lines(first.cursor)
    assert lines == [] and second.cursor == first.cursor  # the same every tick: said once
    raw["models"]["hub-2"] = hub
    world.catalog.write_text(yaml.safe_dump(raw))
    third, lines = skipped_lines(second.cursor)
    assert len(lines) == 2 and third.cursor != second.cursor  # changed: said again, in full


def materialized(instance, asset: str, partition: str) -> None:
    instance.report_runless_asset_event(dg.AssetMaterialization(asset, partition=partition))


def checked(instance, partition: str, passed: bool) -> None:
    """The blocking check of a statistics partition reports on its latest materialization (as its step does)."""
    from dagster._core.definitions.asset_checks.asset_check_evaluation import (
        AssetCheckEvaluationTargetMaterializationData,
    )

    asset = dg.AssetKey("gradient_stats")
    latest = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=asset, asset_partitions=[str(partition)]), limit=1
    ).records[0]
    target = AssetCheckEvaluationTargetMaterializationData(
        storage_id=latest.storage_id, run_id=latest.run_id, timestamp=latest.timestamp
    )
    evaluation = dg.AssetCheckEvaluation(
        asset_key=asset, check_name="gradient_stats_valid", passed=passed, partition=str(partition),
        blocking=True, target_materialization_data=target,
    )  # fmt: skip
    instance.report_runless_asset_event(evaluation)


def test_sensor_registers_a_new_model_then_requests_its_missing_partitions(world):
    first = tick(world)
    assert [r.partition_keys for r in first.dynamic_partitions_requests] == [["a"]]
    assert {(r.job_name, r.partition_key, r.run_key) for r in first.run_requests} == {
        ("curate", V1, f"curated:{V1}"),
        ("curate", V2, f"curated:{V2}"),
    }
    world.instance.add_dynamic_partitions("model", ["a"])  # what the daemon does with the request
    materialized(world.instance, "curated_dataset", V1)
    second = tick(world)
    gradients = [r for r in second.run_requests if r.job_name == "gradients"]
    assert [(r.partition_key, r.run_key) for r in gradients] == [(multi_key("a", V1), f"gradients:a|{V1}")]
    assert not second.dynamic_partitions_requests



def test_a_variant_whose_curated_check_failed_is_held_back_by_sensor_and_schedule(world):
    """Its runs would fail at once (the gate in gradient_stats), every night: the backlog lists them as blocked."""
    from assets.metadata import file_version

    store = OutputStore(root=str(world.tmp / "out"))
    world.instance.add_dynamic_partitions("model", ["a"])
    for variant in (V1, V2):
        materialized(world.instance, "curated_dataset", variant)
        store.curated(variant).parent.mkdir(parents=True, exist_ok=True)
        store.curated(variant).write_text(variant)  # stands in for the table: the verdict names its version
    verdict = {"passed": False, "failures": ["curated_ids_unique"], "data_version": file_version(store.curated(V2))}
    store.curated_verdict(V2).write_text(json.dumps(verdict))
    requested = [r.partition_key for r in tick(world).run_requests if r.job_name == "gradients"]
    assert requested == [multi_key("a", V1)]
    with dg.build_schedule_context(instance=world.instance, resources={"store": store}) as context:
        nightly = schedules.fill_missing_nightly(context)
    assert [r.partition_key for r in nightly] == [multi_key("a", V1)]
    backlog = sensors.current_backlog(world.instance, store, retry_failed=True)
    assert backlog.blocked == (("a", V2),) and "1 blocked by a failed curated check" in backlog.describe()

def test_sensor_picks_up_a_model_added_to_the_catalog_and_never_deletes_one(world):
    from data_sources.models.registry import add_model

    world.instance.add_dynamic_partitions("model", ["a"])
    for v in (V1, V2):
        materialized(world.instance, "curated_dataset", v)
        materialized(world.instance, "gradient_stats", multi_key("a", v))
    assert tick(world).skip_reason  # nothing missing
    folder = fake_model(world.tmp / "b")
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", 2) + b"{}")  # whole (empty): add_model checks it
    (folder / "tokenizer.json").write_text("x")
    add_model("b", "local", path=folder)
    result = tick(world)
    assert [r.partition_keys for r in result.dynamic_partitions_requests] == [["b"]]
    assert {r.partition_key for r in result.run_requests} == {multi_key("b", V1), multi_key("b", V2)}
    write_catalog(world.catalog, {"b": folder})  # "a" removed from the catalog
    world.instance.add_dynamic_partitions("model", ["b"])
    result = tick(world)
    assert not any(isinstance(r, dg.DeleteDynamicPartitionsRequest) for r in result.dynamic_partitions_requests)
    assert "a" in world.instance.get_dynamic_partitions("model")


def test_fill_schedule_retries_a_failed_check_the_sensor_leaves_alone(world):
    world.instance.add_dynamic_partitions("model", ["a"])
    for v in (V1, V2):
        materialized(world.instance, "curated_dataset", v)
        materialized(world.instance, "gradient_stats", multi_key("a", v))
    store = OutputStore(root=str(world.tmp / "out"))
    verdict = store.stats_verdict(StatsKey.of("a", V2))
    verdict.parent.mkdir(parents=True)
    verdict.write_text(json.dumps({"passed": False, "failures": ["x"], "data_version": "0"}))
    assert tick(world).skip_reason
    # Contexts are closed (`with`): an open one leaves the instance's state storage set for later tests.
    with dg.build_schedule_context(instance=world.instance, resources={"store": store}) as context:
        requests = schedules.fill_missing_nightly(context)
    assert [(r.job_name, r.partition_key, r.run_key) for r in requests] == [("gradients", multi_key("a", V2), None)]
    with dg.build_schedule_context(instance=world.instance) as context:
        curate = schedules.curate_missing_nightly(context)
    assert isinstance(curate, dg.SkipReason)


# ------------------------------------------------------------------------------------------------ automation
def test_summary_and_figures_refresh_although_other_partitions_stay_missing(world):
    from lg_pipeline.definitions import defs

    world.instance.add_dynamic_partitions("model", ["a"])
    selection = dg.AssetSelection.assets("layer_summary", "figures")
    result = dg.evaluate_automation_conditions(defs=defs, instance=world.instance, asset_selection=selection)
    assert result.total_requested == 0  # first tick: nothing updated yet
    materialized(world.instance, "gradient_stats", multi_key("a", V1))  # every other variant still missing
    checked(world.instance, multi_key("a", V1), True)
    result = dg.evaluate_automation_conditions(
        defs=defs, instance=world.instance, asset_selection=selection, cursor=result.cursor
    )
    assert result.get_requested_partitions(dg.AssetKey("layer_summary")) == {"a"}
    assert result.get_num_requested(dg.AssetKey("figures")) == 0  # another partitioning: waits for the summary
    materialized(world.instance, "layer_summary", "a")
    result = dg.evaluate_automation_conditions(
        defs=defs, instance=world.instance, asset_selection=selection, cursor=result.cursor
    )
    assert result.get_num_requested(dg.AssetKey("figures")) == 1
    assert result.get_num_requested(dg.AssetKey("layer_summary")) == 0  # handled: no repeat without new data
    materialized(world.instance, "figures", None)
    result = dg.evaluate_automation_conditions(
        defs=defs, instance=world.instance, asset_selection=selection, cursor=result.cursor
    )
    assert result.total_requested == 0


def test_a_summary_waits_for_the_blocking_check_and_never_loses_the_refresh(world):
    """The race made deterministic: the statistics are materialized, the automation tick comes before their check."""
    from lg_pipeline.definitions import defs

    world.instance.add_dynamic_partitions("model", ["a"])
    selection = dg.AssetSelection.assets("layer_summary")
    summary = dg.AssetKey("layer_summary")

    def evaluate(cursor=None):
        return dg.evaluate_automation_conditions(
            defs=defs, instance=world.instance, asset_selection=selection, cursor=cursor
        )

    result = evaluate()
    materialized(world.instance, "gradient_stats", multi_key("a", V1))
    result = evaluate(result.cursor)
    assert result.total_requested == 0  # not checked yet: a summary now would fail "not validated yet"
    result = evaluate(result.cursor)
    assert result.total_requested == 0  # still waiting, on later ticks too
    checked(world.instance, multi_key("a", V1), True)
    result = evaluate(result.cursor)
    assert result.get_requested_partitions(summary) == {"a"}  # the update was kept while waiting
    result = evaluate(result.cursor)
    assert result.total_requested == 0  # handled: once
    materialized(world.instance, "gradient_stats", multi_key("a", V2))
    checked(world.instance, multi_key("a", V2), False)
    result = evaluate(result.cursor)
    assert result.total_requested == 0  # a failed blocking check: the summary would be blocked, not requested
    # (A fixed rerun of V2 is the first case again; the runless check reports here cannot repeat a partition.)


def test_an_update_landing_while_the_figures_run_is_not_lost(world):
    """The figures run requested for model a finishes after b's summary landed: the figures must run again."""
    from lg_pipeline.definitions import defs

    world.instance.add_dynamic_partitions("model", ["a", "b"])
    selection = dg.AssetSelection.assets("figures")
    result = dg.evaluate_automation_conditions(defs=defs, instance=world.instance, asset_selection=selection)
    materialized(world.instance, "layer_summary", "a")
    result = dg.evaluate_automation_conditions(
        defs=defs, instance=world.instance, asset_selection=selection, cursor=result.cursor
    )
    assert result.total_requested == 1  # figures requested for a
    materialized(world.instance, "layer_summary", "b")  # while that run draws the figures...
    materialized(world.instance, "figures", None)  # ...which then finishes, without b
    result = dg.evaluate_automation_conditions(
        defs=defs, instance=world.instance, asset_selection=selection, cursor=result.cursor
    )
    assert result.total_requested == 1


def test_eager_would_never_fire_here(world):
    """Why the custom condition exists: eager() waits for partitions not filled in here, which never come."""
    from assets.analysis.summaries import layer_summary

    eager = layer_summary.map_asset_specs(
        lambda s: s.replace_attributes(automation_condition=dg.AutomationCondition.eager())
    )
    from assets.gradients.assets import gradient_stats

    world.instance.add_dynamic_partitions("model", ["a"])
    from assets.resources import resources_for

    assets = dg.Definitions(assets=[gradient_stats, eager], resources=resources_for())
    result = dg.evaluate_automation_conditions(defs=assets, instance=world.instance)
    materialized(world.instance, "gradient_stats", multi_key("a", V1))
    result = dg.evaluate_automation_conditions(defs=assets, instance=world.instance, cursor=result.cursor)
    assert result.total_requested == 0
    from assets.partitions import variant_partitions

    for v in variant_partitions.get_partition_keys():  # only once every variant exists does eager fire
        materialized(world.instance, "gradient_stats", multi_key("a", v))
    result = dg.evaluate_automation_conditions(defs=assets, instance=world.instance, cursor=result.cursor)
    assert result.get_requested_partitions(dg.AssetKey("layer_summary")) == {"a"}


def test_demo_leaves_the_whole_article_wiki_cuts_to_the_ui_unless_named():
    from data_sources.datasets.catalog import buildable_variant_keys
    from lg_pipeline.cli.demo import demo_variants

    buildable = buildable_variant_keys(None)
    default = demo_variants(buildable, None)
    assert "wiki__len100__correct" in default and "champ__detailed__wrong" in default
    assert not [v for v in default if v.startswith(("wiki__len500", "wiki__len1000"))]
    assert "wiki__len1000__wrong" in buildable  # offline: gensim's dump excerpt
    named = demo_variants(buildable, ["wiki"])
    assert {"wiki__len500__correct", "wiki__len1000__wrong"} <= set(named)
    assert not [v for v in named if not v.startswith("wiki__")]


def test_sensor_stores_the_gpu_pool_limit_before_requesting_runs(world, tmp_path):
    """On a fresh instance Dagster's run queue lets every queued run through on its first pass over a pool."""
    from assets.pools import GPU_POOL

    project = yaml.safe_load((Path(__file__).resolve().parents[2] / "deploy" / "local" / "dagster.yaml").read_text())
    with dg.instance_for_test(overrides={"concurrency": project["concurrency"]}) as instance:
        assert GPU_POOL not in instance.event_log_storage.get_concurrency_keys()
        tick(SimpleNamespace(instance=instance, tmp=tmp_path))
        info = instance.event_log_storage.get_concurrency_info(GPU_POOL)
        assert info.slot_count == project["concurrency"]["pools"]["default_limit"] == 1
