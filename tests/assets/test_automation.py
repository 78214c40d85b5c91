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
from assets.partitions import multi_key, variant_partition_key
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
    from assets.partitions import AVAILABILITY, variant_of, variant_partitions

    keys = {variant_of(k) for k in variant_partitions.get_partition_keys()}  # the variants, in full
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
    assert buildable_variants("champ-n-*", release_dir="") == [V1, V2]  # as partition keys


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


def checked(
    instance, partition: str, passed: bool, asset: str = "gradient_stats", check: str = "gradient_stats_valid"
) -> None:
    """A partition's blocking check reports on its latest materialization (as its step does)."""
    from dagster._core.definitions.asset_checks.asset_check_evaluation import (
        AssetCheckEvaluationTargetMaterializationData,
    )

    key = dg.AssetKey(asset)
    latest = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[str(partition)]), limit=1
    ).records[0]
    target = AssetCheckEvaluationTargetMaterializationData(
        storage_id=latest.storage_id, run_id=latest.run_id, timestamp=latest.timestamp
    )
    evaluation = dg.AssetCheckEvaluation(
        asset_key=key, check_name=check, passed=passed, partition=str(partition),
        blocking=True, target_materialization_data=target,
    )  # fmt: skip
    instance.report_runless_asset_event(evaluation)


def test_sensor_registers_a_new_model_then_requests_its_missing_partitions(world):
    first = tick(world)
    assert [r.partition_keys for r in first.dynamic_partitions_requests] == [["a"]]
    assert {(r.job_name, r.partition_key, r.run_key) for r in first.run_requests} == {
        ("curate", variant_partition_key(V1), f"curated:{V1}"),  # run keys name the variant in full
        ("curate", variant_partition_key(V2), f"curated:{V2}"),
    }
    world.instance.add_dynamic_partitions("model", ["a"])  # what the daemon does with the request
    materialized(world.instance, "curated_dataset", variant_partition_key(V1))
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
        materialized(world.instance, "curated_dataset", variant_partition_key(variant))
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
        materialized(world.instance, "curated_dataset", variant_partition_key(v))
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
        materialized(world.instance, "curated_dataset", variant_partition_key(v))
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


# ------------------------------------------------------------------------------------------------ the refresh sensor
def _left_to_stopped_sensors(defs: dg.Definitions) -> set[str]:
    """The assets with an automation condition that no automation sensor RUNNING by default evaluates."""
    from dagster._core.definitions.sensor_definition import SensorType

    repo = defs.get_repository_def()
    graph = repo.asset_graph
    conditioned = {k for k in graph.get_all_asset_keys() if graph.get(k).automation_condition is not None}
    evaluated = set()
    for sensor in repo.sensor_defs:
        automation = sensor.sensor_type in (SensorType.AUTOMATION, SensorType.AUTO_MATERIALIZE)
        if automation and sensor.default_status == dg.DefaultSensorStatus.RUNNING:
            evaluated |= sensor.asset_selection.resolve(graph)
    return {k.to_user_string() for k in conditioned - evaluated}


def test_every_asset_with_an_automation_condition_is_evaluated_by_a_running_sensor():
    from lg_pipeline.definitions import defs

    repo = defs.get_repository_def()
    conditioned = {k.to_user_string() for k in repo.asset_graph.get_all_asset_keys()
                   if repo.asset_graph.get(k).automation_condition is not None}  # fmt: skip
    assert {"layer_summary", "figures", "dynamics_figures", "zero_shot_figures"} <= conditioned
    assert _left_to_stopped_sensors(defs) == set()
    assert "default_automation_condition_sensor" not in {s.name for s in repo.sensor_defs}  # Dagster's, Stopped


def test_an_asset_given_a_condition_later_is_covered_too():
    """The sensor's target is derived from the code location's assets; the control shows the check can fail."""
    from lg_pipeline.definitions import defs

    @dg.asset(automation_condition=dg.AutomationCondition.eager())
    def added_later() -> None: ...

    def with_sensor_over(covered: list) -> dg.Definitions:
        sensor = sensors.refresh_sensor(covered)
        return dg.Definitions(assets=[*defs.assets, added_later], sensors=[sensor], resources=defs.resources)

    assert _left_to_stopped_sensors(with_sensor_over(list(defs.assets))) == {"added_later"}  # the old, fixed list
    assert _left_to_stopped_sensors(with_sensor_over([*defs.assets, added_later])) == set()


def refresh_tick(world, cursor=None):
    """One evaluation of the refresh sensor's conditions, over exactly its target (what the daemon evaluates)."""
    from lg_pipeline.definitions import defs

    sensor = defs.get_repository_def().get_sensor_def(sensors.REFRESH_SENSOR)
    return dg.evaluate_automation_conditions(
        defs=defs, instance=world.instance, asset_selection=sensor.asset_selection, cursor=cursor
    )


@pytest.mark.parametrize(
    "run, check, figures",
    [
        ("training_dynamics", "training_dynamics_complete", "dynamics_figures"),
        ("zero_shot_dynamics", "zero_shot_complete", "zero_shot_figures"),
        ("training_dynamics_dpo", "training_dynamics_dpo_complete", "dynamics_figures"),  # one asset per objective
        ("zero_shot_dynamics_detailed", "zero_shot_detailed_complete", "zero_shot_figures"),  # and per level
    ],
)
def test_a_materialized_dynamics_run_refreshes_its_figures_without_a_click(world, run, check, figures):
    world.instance.add_dynamic_partitions("model", ["a"])
    learning = run.startswith("training_dynamics")
    partition = multi_key("a", V1) if learning else dg.MultiPartitionKey({"model": "a", "ordering": "rt"})
    result = refresh_tick(world)
    assert result.total_requested == 0
    materialized(world.instance, run, partition)
    result = refresh_tick(world, result.cursor)
    assert result.total_requested == 0  # its blocking check has not run yet
    checked(world.instance, partition, True, run, check)
    result = refresh_tick(world, result.cursor)
    assert result.get_num_requested(dg.AssetKey(figures)) == 1 and result.total_requested == 1
    materialized(world.instance, figures, None)
    result = refresh_tick(world, result.cursor)
    assert result.total_requested == 0  # handled: once


# ---------------------------------------------------------------------------------------------- unbuildable partitions
def test_the_catalog_sensor_observes_each_partition_that_cannot_build_once_per_change(world, monkeypatch):
    from assets.partitions import unbuildable_partitions

    monkeypatch.delenv("LG_TEACHER", raising=False)
    world.instance.add_dynamic_partitions("model", ["a"])
    unbuildable = unbuildable_partitions()
    assert unbuildable  # the teacher levels, while no teacher is set

    def observed(result) -> dict[tuple[str, str], str]:
        return {(e.asset_key.to_user_string(), e.partition): e.metadata["cannot build here"].value
                for e in result.asset_events}  # fmt: skip

    refresh = refresh_tick(world)
    first = tick(world)
    per_model = ("gradient_stats", "training_dynamics", "training_dynamics_dpo")
    expected = {("curated_dataset", variant_partition_key(v)): why for v, why in unbuildable.items()}
    expected |= {(asset, str(multi_key("a", v))): why for v, why in unbuildable.items() for asset in per_model}
    assert observed(first) == expected
    second = tick(world, first.cursor)
    assert second.asset_events == [] and second.cursor == first.cursor  # nothing changed: nothing said again
    for event in first.asset_events:  # what the daemon does with them
        world.instance.report_runless_asset_event(event)
    assert refresh_tick(world, refresh.cursor).total_requested == 0  # an observation is no update: no refresh
    world.instance.add_dynamic_partitions("model", ["b"])
    third = tick(world, second.cursor)
    assert set(observed(third)) == {(asset, str(multi_key("b", v))) for v in unbuildable for asset in per_model}
    world.instance.delete_dynamic_partition("model", "b")
    monkeypatch.setenv("LG_TEACHER", "precomputed")
    fourth = tick(world, third.cursor)
    assert set(observed(fourth)) == set(expected)  # every one of them, but of the deleted model's partitions
    assert set(observed(fourth).values()) == {"(buildable now)"}


# ------------------------------------------------------------------------------------------------ a quiet terminal
def _sensor_lines(err: str) -> list[str]:
    """The messages the sensor logged (its console logger's lines, less the time and level)."""
    return [line.split(" - INFO - ", 1)[1] for line in err.splitlines() if " - INFO - " in line]


def test_the_catalog_sensor_says_each_line_once_per_change(world, capfd):
    """The backlog line was logged every tick, and again as the skip reason the daemon prints: twice every 30 s."""
    world.instance.add_dynamic_partitions("model", ["a"])
    capfd.readouterr()
    cursor, results = None, []
    for _ in range(3):  # work to request: the same requests each tick (run keys keep them from running twice)
        results.append(tick(world, cursor))
        cursor = results[-1].cursor
    for v in (V1, V2):
        materialized(world.instance, "curated_dataset", variant_partition_key(v))
        materialized(world.instance, "gradient_stats", multi_key("a", v))
    for _ in range(3):  # nothing missing
        results.append(tick(world, cursor))
        cursor = results[-1].cursor
    lines = _sensor_lines(capfd.readouterr().err)
    assert lines and len(lines) == len(set(lines)), lines
    assert sum("curated table(s) to build" in line for line in lines) == 1
    assert not [line for line in lines if "nothing missing" in line]  # the skip reason says it (the daemon logs it)
    assert [r.skip_reason.skip_message for r in results[3:]] == ["nothing missing"] * 3


def _daemon_lines(logger_name: str, messages: list[str]) -> list[str]:
    """What the daemon's logger lets through of `messages`, with the project's filters installed."""
    import logging

    from assets.automation.daemon_log import install_daemon_log_filters

    install_daemon_log_filters()
    install_daemon_log_filters()  # once per process, however often the instance is loaded
    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    logger = logging.getLogger(logger_name)
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        for message in messages:
            logger.info(message)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    return seen


def test_the_daemon_says_each_line_of_a_sensor_tick_once_per_change():
    from assets.automation.daemon_log import SENSOR_LOGGER

    beat, skip = "Checking for new runs for sensor: cat_sensor", "Sensor cat_sensor skipped: "
    done = 'Skipping 1 run for sensor cat_sensor already completed with run keys: ["curated:x"]'
    launch = ["Creating new run for cat_sensor", "Launching run for cat_sensor", "Completed launch of run 1 for cat"]
    ticks = [[beat, skip + "nothing missing"]] * 3 + [[beat, *launch], [beat, done], [beat, done]]
    ticks += [[beat, skip + "nothing missing"], [beat, skip + "1 waiting"], [beat, skip + "1 waiting"]]
    ticks += [["Checking for new runs for sensor: other", "Sensor other skipped: 1 waiting"]]
    said = _daemon_lines(SENSOR_LOGGER, ["Instance is configured with the following daemons", *sum(ticks, [])])
    assert said == [
        "Instance is configured with the following daemons",  # before any tick
        beat,
        skip + "nothing missing",  # then two ticks alike: nothing
        *launch,
        done,  # its heartbeat was in the tick before: not news (nor ever again, after the first tick)
        skip + "nothing missing",
        skip + "1 waiting",
        "Checking for new runs for sensor: other",  # another sensor's ticks are its own
        "Sensor other skipped: 1 waiting",
    ]


def test_a_quiet_automation_tick_says_nothing_and_a_new_evaluation_id_is_no_news():
    from assets.automation.daemon_log import AUTOMATION_LOGGER

    def tick(evaluation: int, runs: int) -> list[str]:
        where = "for refresh_results in lg_pipeline.definitions"
        return [
            f"Checking 4 assets/checks and 0 observable source assets {where} in thread dagster-daemon-ASSET",
            "Prefetching asset records for 7 records.",
            f"Tick produced {runs} runs and 0 asset evaluations for evaluation ID {evaluation} {where}",
            f"Submitting {runs} runs for evaluation {evaluation} {where}",
            f"Finished auto-materialization tick {where}",
        ]

    said = _daemon_lines(AUTOMATION_LOGGER, [*tick(7, 0), *tick(9, 0), *tick(11, 1), *tick(13, 0), *tick(15, 0)])
    assert said[:5] == tick(7, 0)  # the first tick, in full
    assert said[5:] == [tick(11, 1)[2], tick(11, 1)[3], tick(13, 0)[2], tick(13, 0)[3]]  # what changed, and back


def test_a_run_waiting_for_the_gpu_pool_reads_as_words():
    from assets.automation.daemon_log import QUEUE_LOGGER

    counts = {"gpu": {"granularity": "run", "slot_count": 1, "pending_step_count": 0, "pending_step_run_ids": [],
                      "launched_count": 0, "in_progress_count": 1}}  # fmt: skip
    raw = f"Run 3f2a is blocked by global concurrency limits: {json.dumps(counts)}"  # Dagster's line
    (said,) = _daemon_lines(QUEUE_LOGGER, [raw])
    assert said == (
        "Run 3f2a waits in the queue for pool 'gpu': 1 of 1 slot(s) taken (1 run(s) in progress, 0 just launched); "
        "it starts when a slot frees"
    )
    assert "{" not in said
    assert _daemon_lines(QUEUE_LOGGER, ["Run 3f2a is blocked by global concurrency limits: {not json}"]) == [
        "Run 3f2a is blocked by global concurrency limits: {not json}"  # a shape it cannot read passes unchanged
    ]


def test_the_filters_match_what_dagster_1_13_prints():
    """The filters read Dagster's own lines: a Dagster that prints them otherwise must fail here, not go unnoticed."""
    import inspect

    from dagster._core.op_concurrency_limits_counter import GlobalOpConcurrencyLimitsCounter
    from dagster._daemon import asset_daemon
    from dagster._daemon import sensor as sensor_daemon
    from dagster._daemon.asset_daemon import AssetDaemon
    from dagster._daemon.daemon import SensorDaemon, get_default_daemon_logger
    from dagster._daemon.run_coordinator import queued_run_coordinator_daemon as queue

    from assets.automation.daemon_log import AUTOMATION_LOGGER, QUEUE_LOGGER, SENSOR_LOGGER

    assert get_default_daemon_logger(queue.QueuedRunCoordinatorDaemon.__name__).name == QUEUE_LOGGER
    assert get_default_daemon_logger(SensorDaemon.__name__).name == SENSOR_LOGGER
    assert 'is blocked by global concurrency limits: {concurrency_blocked_info}"' in inspect.getsource(queue)
    assert get_default_daemon_logger(AssetDaemon.__name__).name == AUTOMATION_LOGGER
    assert 'f"Checking for new runs for sensor: {remote_sensor.name}"' in inspect.getsource(sensor_daemon)
    automation = inspect.getsource(asset_daemon)  # a tick's first line, naming the sensor
    assert 'f"Checking {num_target_entities} assets/checks and"' in automation
    assert 'return f" for {sensor.name} in {repo_name}"' in automation  # "... source assets for <sensor> in ..."
    assert 'evaluation ID"' in automation and 'f" {evaluation_id}{print_group_name}"' in automation  # an id a tick
    source = inspect.getsource(GlobalOpConcurrencyLimitsCounter.get_blocked_run_debug_info)
    assert all(f'"{k}"' in source for k in ("slot_count", "in_progress_count", "launched_count", "pending_step_count"))


def _project_instance_settings() -> dict:
    return yaml.safe_load((Path(__file__).resolve().parents[2] / "deploy" / "local" / "dagster.yaml").read_text())


def test_the_instance_keeps_dagster_debug_events_off_the_terminal(capfd):
    @dg.asset
    def says_hello(context) -> None:  # (no annotation: this module postpones them, Dagster reads it)
        context.log.info("hello from our code")

    def terminal(overrides: dict) -> str:
        with dg.instance_for_test(overrides=overrides) as instance:
            capfd.readouterr()
            assert dg.materialize([says_hello], instance=instance).success
            return capfd.readouterr().err

    settings = _project_instance_settings()
    assert settings["python_logs"]["python_log_level"] == "INFO"
    loud = terminal({})
    assert " - DEBUG - " in loud and "STEP_START" in loud  # control: Dagster's default prints every event
    quiet = terminal({"python_logs": settings["python_logs"]})
    assert " - DEBUG - " not in quiet and "STEP_START" not in quiet
    assert "hello from our code" in quiet  # INFO and up from our code stays


def test_the_instance_queues_runs_with_the_readable_coordinator():
    import logging

    from assets.automation.daemon_log import QUEUE_LOGGER, ReadablePoolWaits, ReadableQueuedRunCoordinator

    settings = _project_instance_settings()
    overrides = {k: settings[k] for k in ("run_coordinator", "concurrency")}
    with dg.instance_for_test(overrides=overrides) as instance:
        assert isinstance(instance.run_coordinator, ReadableQueuedRunCoordinator)
        queue = instance.get_concurrency_config().run_queue_config
        assert queue.max_concurrent_runs == settings["concurrency"]["runs"]["max_concurrent_runs"]
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 1
    assert any(isinstance(f, ReadablePoolWaits) for f in logging.getLogger(QUEUE_LOGGER).filters)
