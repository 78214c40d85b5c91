"""`lg-pipeline migrate-partitions`: the records an older version kept under the long partition keys move to the
short ones, on a copy of an instance and an output root, losing nothing; a second run does nothing."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData,
)

from assets.resources import OutputStore
from lg_pipeline.cli import main
from lg_pipeline.vocabulary import StatsKey

V1, V2 = "champ__none__correct", "champ__none__wrong"
TEACHER_LEVEL = "gsm_symbolic__detailed__correct"
# (asset, old key, new key) of every materialization the old version recorded and that moves
MOVES = [
    ("curated_dataset", V1, "champ-n-c"),
    ("curated_dataset", V2, "champ-n-w"),
    ("gradient_stats", f"tiny|{V1}", "tiny|champ-n-c"),
    ("gradient_stats", f"tiny|{V2}", "tiny|champ-n-w"),
    ("training_dynamics", f"tiny|{V1}", "tiny|champ-n-c"),
    ("zero_shot_dynamics", "tiny|cluster_shuffled", "tiny|cl_shuffled"),
]
STAYS = [("layer_summary", "tiny"), ("zero_shot_dynamics", "tiny|rt")]  # keys that did not change


def _tags(asset: str, partition: str, version: str, **more: str) -> dict[str, str]:
    """A run's tags on a materialization: data and code versions, and a multi-partition's dimensions (which Dagster
    files the event under)."""
    tags = {"dagster/data_version": version, "dagster/code_version": _code_version(asset), **more}
    if "|" in partition:
        second = "ordering" if asset.startswith("zero_shot") else "variant"
        tags |= dict(zip(("dagster/partition/model", f"dagster/partition/{second}"), partition.split("|"), strict=True))
    return tags


def _code_version(asset: str) -> str:
    from lg_pipeline.definitions import defs

    return defs.resolve_asset_graph().get(dg.AssetKey(asset)).code_version or "none"


def _materialize(instance, asset: str, partition: str, version: str, tags: dict | None = None, **metadata) -> None:
    meta = {"path": dg.MetadataValue.path(f"/out/{partition}"), "rows": 4, "note": f"{asset} {version}", **metadata}
    tags = tags or _tags(asset, partition, version)
    instance.report_runless_asset_event(dg.AssetMaterialization(asset, partition=partition, metadata=meta, tags=tags))


def _latest(instance, asset: str, partition: str):
    found = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[partition]), limit=1
    ).records
    return found[0] if found else None


def _check(instance, asset: str, check: str, partition: str, passed: bool, aimed) -> None:
    target = AssetCheckEvaluationTargetMaterializationData(
        storage_id=aimed.storage_id, run_id=aimed.run_id, timestamp=aimed.timestamp
    )
    instance.report_runless_asset_event(dg.AssetCheckEvaluation(
        asset_key=dg.AssetKey(asset), check_name=check, passed=passed, partition=partition, blocking=True,
        target_materialization_data=target, metadata={"expectations_run": 12},
    ))  # fmt: skip


def _old_world(home: Path, out: Path) -> None:
    """What the version with the long keys left: its records under them, and its files."""
    store = OutputStore(root=str(out))
    for variant in (V1, V2):
        for path in (store.curated(variant), store.gradients(StatsKey.of("tiny", variant))):
            path.parent.mkdir(parents=True, exist_ok=True)
            pd.DataFrame({"example_id": ["a", "b"], "variant": [variant] * 2}).to_parquet(path)
        store.stats_verdict(StatsKey.of("tiny", variant)).write_text('{"passed": true}')
    zero_shot = store.zero_shot_table("tiny", "none", "cluster_shuffled", "zero_shot")
    zero_shot.parent.mkdir(parents=True, exist_ok=True)
    zero_shot.write_bytes(b"zero-shot table")
    with dg.DagsterInstance.get() as instance:
        assert Path(instance.root_directory) == home
        instance.add_dynamic_partitions("model", ["tiny"])
        for asset, old, _ in MOVES:
            _materialize(instance, asset, old, "v1")
        _materialize(instance, "curated_dataset", V1, "v2", rows=6)  # the latest one is what moves
        _materialize(instance, "gradient_stats", f"tiny|{V1}", "v1", _read(instance, V1, "v2"))  # read the latest
        for asset, key in STAYS:
            _materialize(instance, asset, key, "s1")
        _materialize(instance, "gradient_stats", "tiny|gone__none__correct", "x")  # a dataset no catalog has now
        _check(instance, "gradient_stats", "gradient_stats_valid", f"tiny|{V1}", True,
               _latest(instance, "gradient_stats", f"tiny|{V1}"))
        stale = _latest(instance, "gradient_stats", f"tiny|{V2}")
        _materialize(instance, "gradient_stats", f"tiny|{V2}", "v2", _read(instance, V2, "v1"))  # not checked since
        _check(instance, "gradient_stats", "gradient_stats_valid", f"tiny|{V2}", False, stale)
        _materialize(instance, "curated_dataset", V2, "v2")  # changed after its statistics were computed
        _check(instance, "curated_dataset", "curated_not_empty", V1, True, _latest(instance, "curated_dataset", V1))
        instance.report_runless_asset_event(dg.AssetObservation(
            "curated_dataset", partition=TEACHER_LEVEL, metadata={"cannot build here": "needs a teacher"}
        ))  # fmt: skip


def _read(instance, variant: str, version: str) -> dict[str, str]:
    """The tags of a statistics run that read the variant's latest curated table (as Dagster writes them)."""
    read = _latest(instance, "curated_dataset", variant).storage_id
    inputs = {"dagster/input_event_pointer/curated_dataset": str(read),
              "dagster/input_data_version/curated_dataset": version}
    return _tags("gradient_stats", f"tiny|{variant}", "v2", **inputs)


def _home(path: Path) -> Path:
    """A DAGSTER_HOME with the project's instance settings (as `make setup` makes it)."""
    path.mkdir(parents=True)
    shutil.copy(Path(__file__).resolve().parents[2] / "deploy" / "local" / "dagster.yaml", path)
    return path


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*")
            if p.is_file()}  # fmt: skip


def _event_count(instance) -> int:
    kinds = ("ASSET_MATERIALIZATION", "ASSET_OBSERVATION", "ASSET_CHECK_EVALUATION")
    records = instance.event_log_storage.get_event_records  # the instance's own method is deprecated (Dagster 1.13)
    return sum(
        len(records(dg.EventRecordsFilter(event_type=getattr(dg.DagsterEventType, kind)), limit=10_000))
        for kind in kinds
    )


@pytest.fixture
def migrated(tmp_path, monkeypatch, capsys):
    """An old instance and output root, their copies, and the first migration's output (run on the copies)."""
    home, out = _home(tmp_path / "home"), tmp_path / "outputs"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    _old_world(home, out)
    copy_home, copy_out = tmp_path / "copy" / "home", tmp_path / "copy" / "outputs"
    shutil.copytree(home, copy_home)
    shutil.copytree(out, copy_out)
    monkeypatch.setenv("DAGSTER_HOME", str(copy_home))
    monkeypatch.setenv("LG_OUTPUT_ROOT", str(copy_out))
    capsys.readouterr()
    assert main(["migrate-partitions"]) == 0
    return {"out": out, "copy_out": copy_out, "printed": capsys.readouterr().out}


def test_every_old_partitions_latest_records_move_to_its_new_key_with_their_metadata(migrated):
    printed = migrated["printed"]
    with dg.DagsterInstance.get() as instance:
        for asset, old, new in MOVES:
            before, after = _latest(instance, asset, old), _latest(instance, asset, new)
            assert after is not None and after.storage_id > before.storage_id, (asset, new)
            was, now = before.asset_materialization, after.asset_materialization
            assert now.metadata == {**was.metadata, "migrated_from": dg.MetadataValue.text(old)}
            assert now.partition == new and after.partition_key == new
            dimensions = {k: v for k, v in was.tags.items() if k.startswith("dagster/partition/")}
            assert dimensions == {} or "|".join(dimensions.values()) == old
            kept = {k: v for k, v in was.tags.items() if k not in dimensions and "input_event_pointer" not in k}
            assert {k: v for k, v in now.tags.items() if k in kept} == kept  # data and code versions: none stale
            assert "|".join(v for k, v in now.tags.items() if k.startswith("dagster/partition/")) == (
                new if dimensions else "")
            assert f"moved {asset}: materialization of {old} -> {new}" in printed
        curated = _latest(instance, "curated_dataset", "champ-n-c")
        assert curated.asset_materialization.metadata["rows"].value == 6
        stats = _latest(instance, "gradient_stats", "tiny|champ-n-c").asset_materialization.tags  # the moved input
        assert stats["dagster/input_event_pointer/curated_dataset"] == str(curated.storage_id)
        assert stats["dagster/input_data_version/curated_dataset"] == "v2"
        from lg_pipeline.definitions import defs
        from tests.assets.test_staleness import stale_resolver

        resolver = stale_resolver(instance, list(defs.assets), list(defs.asset_checks))  # the UI's "Unsynced"
        stats_key = dg.AssetKey("gradient_stats")
        assert resolver.get_status(stats_key, "tiny|champ-n-c").name == "FRESH"  # as fresh as it was
        assert resolver.get_status(stats_key, "tiny|champ-n-w").name == "STALE"  # its input changed since, as before
        for asset, key in STAYS:  # nothing recorded again
            assert "migrated_from" not in _latest(instance, asset, key).asset_materialization.metadata
        assert "gone__none__correct" in printed and "left as it is" in printed
        status = instance.get_status_by_partition(
            dg.AssetKey("gradient_stats"), ["tiny|champ-n-c", "tiny|champ-n-w"], _stats_partitions()
        )
        assert {k: v.name for k, v in status.items()} == {
            "tiny|champ-n-c": "MATERIALIZED", "tiny|champ-n-w": "MATERIALIZED"
        }

        storage = instance.event_log_storage
        check = dg.AssetCheckKey(dg.AssetKey("gradient_stats"), "gradient_stats_valid")
        infos = {i.partition_key: i for i in storage.get_asset_check_partition_info([check])}
        assert infos["tiny|champ-n-c"].latest_execution_status.name == "SUCCEEDED"
        assert infos["tiny|champ-n-c"].is_current  # it checked the latest: the summaries are not held back
        assert infos["tiny|champ-n-w"].latest_execution_status.name == "FAILED"
        assert not infos["tiny|champ-n-w"].is_current  # it checked an older one, as before
        evaluation = _evaluation(storage, check, "tiny|champ-n-c")
        assert evaluation.metadata["expectations_run"].value == 12 and evaluation.blocking
        assert evaluation.metadata["migrated_from"].value == f"tiny|{V1}"
        curated = dg.AssetCheckKey(dg.AssetKey("curated_dataset"), "curated_not_empty")
        assert _evaluation(storage, curated, "champ-n-c").passed

        observed = instance.fetch_observations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("curated_dataset"), asset_partitions=["gsmsy-d-c"]), limit=1
        ).records[0].asset_observation
        assert observed.metadata["cannot build here"].value == "needs a teacher"
        assert observed.metadata["migrated_from"].value == TEACHER_LEVEL


def test_the_output_root_is_left_byte_for_byte(migrated):
    assert _tree(migrated["copy_out"]) == _tree(migrated["out"]) and _tree(migrated["out"])
    assert "nothing to rename" in migrated["printed"]


def test_a_second_migration_finds_nothing_to_do(migrated, capsys):
    with dg.DagsterInstance.get() as instance:
        before = _event_count(instance)
    assert main(["migrate-partitions"]) == 0
    assert "nothing to migrate" in capsys.readouterr().out
    with dg.DagsterInstance.get() as instance:
        assert _event_count(instance) == before


def test_a_dry_run_lists_what_would_move_and_records_nothing(tmp_path, monkeypatch, capsys):
    home = _home(tmp_path / "home")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("LG_OUTPUT_ROOT", str(tmp_path / "outputs"))
    _old_world(home, tmp_path / "outputs")
    with dg.DagsterInstance.get() as instance:
        before = _event_count(instance)
    capsys.readouterr()
    assert main(["migrate-partitions", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"would move gradient_stats: materialization of tiny|{V1} -> tiny|champ-n-c" in out
    with dg.DagsterInstance.get() as instance:
        assert _event_count(instance) == before


def test_a_file_named_by_a_partition_key_or_a_missing_instance_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "nowhere"))
    assert main(["migrate-partitions"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "DAGSTER_HOME" in err[0] and "nowhere" in err[0]
    monkeypatch.setenv("DAGSTER_HOME", str(_home(tmp_path / "home")))
    stray = tmp_path / "outputs" / "curated" / "champ-d-c.parquet"
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"x")
    (tmp_path / "outputs" / "curated" / "champ__detailed__correct.parquet").write_bytes(b"x")
    monkeypatch.setenv("LG_OUTPUT_ROOT", str(tmp_path / "outputs"))
    assert main(["migrate-partitions"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "champ-d-c.parquet" in err[0] and "1 file(s)" in err[0]


def _stats_partitions():
    from assets.partitions import model_variant_partitions

    return model_variant_partitions


def _evaluation(storage, check, partition):
    from dagster._core.event_api import PartitionKeyFilter

    (record,) = storage.get_asset_check_execution_history(
        check, limit=1, partition_filter=PartitionKeyFilter(key=partition)
    )
    return record.event.dagster_event.event_specific_data
