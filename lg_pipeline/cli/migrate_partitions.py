"""`lg-pipeline migrate-partitions`: once after upgrading to the short partition keys, move the Dagster records of
the old keys over to the new ones.

Variant partition keys used to be the variants in full (`champ__detailed__correct`, `model|champ__detailed__correct`)
and the zero-shot ordering `cluster_shuffled` its name; they are now `champ-d-c`, `model|champ-d-c` and
`model|cl_shuffled` (`assets/partitions.py`). What Dagster recorded under an old key is not seen under the new one, so
the UI would show every computed partition as missing, the catalog sensor would ask for it again (its run keys, which
name the variants in full, keep it from running twice) and the summaries would wait on checks that never ran. For
every asset of the code location with a variant or an ordering dimension, this re-reports, under the new key and as
a runless event, the latest of each old key's:

- materialization (its metadata, with `migrated_from` added, and its tags: data and code versions; the tags naming
  the partition's dimensions, `dagster/partition/<dimension>`, which Dagster files the event under, say the new
  key's; an input's event pointer is re-aimed at the input's moved materialization, so a partition reads as fresh
  or as stale ("Unsynced") as it did, `_Inputs`);
- observation (the catalog sensor's "cannot build here", a skipped run's reason);
- asset check evaluation (pass or fail, metadata, severity), aimed at the re-reported materialization when it was
  aimed at the old key's latest one, so a passed blocking check still lets the summaries refresh.

The old records stay where they are (history is never rewritten); a partition whose new key already has a newer
record of the same kind (migrated before, or materialized since) is left alone, so a second run does nothing. Not
moved: failed or in-progress states (Dagster has no runless failure event: such a partition reads "missing" under
its new key, and the nightly schedule, which retries missing and failed partitions alike, fills it in), and the runs
themselves (their `dagster/partition` tag keeps the key they ran under).

What is keyed by model only (`layer_summary`) keeps its records, but reads "Unsynced" once the statistics it was
drawn from have moved, until it runs again: the refresh sensor counts the moved statistics as updates and refreshes
the summaries and the figures once (their data is unchanged).

Stored outputs need nothing: every file under the output root is named by the variants in full (`OutputStore`),
which did not change; the command checks that no file or folder there is named by a new partition key.

A composition root like `demo`: the one other command that drives Dagster (the import-linter contract in
pyproject.toml); Dagster is imported when the command runs.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MIGRATED_FROM = "migrated_from"


@dataclass(frozen=True)
class Moved:
    """One record re-reported under its new partition key."""

    asset: str  # `asset` or `asset:check`
    kind: str  # materialization | observation | check evaluation
    old: str
    new: str

    def line(self) -> str:
        return f"{self.asset}: {self.kind} of {self.old} -> {self.new}"


def migrate(instance: Any, definitions: Any, dry_run: bool = False) -> tuple[list[Moved], list[str]]:
    """Re-report the latest records of every old-form partition key of `definitions` on `instance` under its new
    key; (what moved, or would with `dry_run`; the keys that could not be read, with why)."""
    from assets.partitions import ORDERING, VARIANT, dimensions

    graph = definitions.resolve_asset_graph()
    moved: list[Moved] = []
    unreadable: list[str] = []
    keyed = {}  # asset key -> its partitions definition, for the assets with a dimension whose keys changed
    for key in graph.toposorted_asset_keys:  # upstream first: a pointer to an input's event can follow it
        partitions_def = graph.get(key).partitions_def
        if {VARIANT, ORDERING} & set(dimensions(partitions_def)):
            keyed[key] = partitions_def
    inputs = _Inputs(keyed)
    for key, partitions_def in keyed.items():
        moved += _events(instance, key, partitions_def, dry_run, unreadable, inputs)
        moved += _events(instance, key, partitions_def, dry_run, unreadable, None)
    for check_key in sorted(graph.asset_check_keys, key=str):
        if check_key.asset_key in keyed:
            moved += _check_evaluations(instance, check_key, keyed[check_key.asset_key], dry_run, unreadable)
    return moved, sorted(set(unreadable))


def _renamed(keys: Iterable[str], partitions_def: Any, unreadable: list[str], asset: str) -> Iterator[tuple[str, str]]:
    """(old, new) for each recorded key that is not of today's form."""
    from assets.partitions import current_partition_key
    from lg_pipeline.errors import InputError

    for old in keys:
        try:
            new = current_partition_key(old, partitions_def)
        except InputError as exc:
            unreadable.append(f"{asset}: {old}: {exc}")
            continue
        if new != old:
            yield old, new


def _latest_by_partition(fetch: Any, asset_key: Any) -> dict[str, Any]:
    """{partition: its latest record} of one asset's materializations or observations (every page, newest first)."""
    import dagster as dg

    latest: dict[str, Any] = {}
    cursor = None
    while True:
        result = fetch(dg.AssetRecordsFilter(asset_key=asset_key), limit=1000, cursor=cursor, ascending=False)
        for record in result.records:
            partition = record.partition_key
            if partition is not None and partition not in latest:
                latest[partition] = record
        if not result.has_more:
            return latest
        cursor = result.cursor


class _Inputs:
    """The materializations moved so far, to re-aim the input pointers of the ones moved after them.

    A run's materialization records, per input, the storage id of the input's latest event when it ran
    (`dagster/input_event_pointer/<input>`); Dagster calls the partition stale when its input partition has a
    record after that id with another data version than the one before it. The moved input record is newer than any
    old pointer, so a pointer is moved to it when the run had read the input's latest (it is as fresh as it was),
    and left as it is when the input had changed since (it stays as stale as it was).
    """

    def __init__(self, keyed: dict[Any, Any]) -> None:
        self.keyed = keyed
        self.moved: dict[tuple[Any, str], tuple[int, int]] = {}  # (asset, new key) -> (old latest id, new id)

    def add(self, asset: Any, new: str, old_id: int, new_id: int) -> None:
        self.moved[asset, new] = (old_id, new_id)

    def pointer(self, tag: str, value: str, asset_dims: dict[str, str]) -> str:
        """The pointer of tag `dagster/input_event_pointer/<input>` of a partition whose new key has `asset_dims`."""
        import dagster as dg
        from dagster._core.definitions.data_version import INPUT_EVENT_POINTER_TAG_PREFIX

        from assets.partitions import dimensions

        upstream = dg.AssetKey.from_user_string(tag[len(INPUT_EVENT_POINTER_TAG_PREFIX) + 1 :])
        names = dimensions(self.keyed.get(upstream))
        if len(names) != 1 or names[0] not in asset_dims or not value.isdigit():
            return value  # an input not moved, or not read by one of this partition's dimensions
        old_id, new_id = self.moved.get((upstream, asset_dims[names[0]]), (None, None))
        return str(new_id) if old_id is not None and old_id <= int(value) else value


def _tags(tags: dict[str, str] | None, new: str, partitions_def: Any, inputs: _Inputs | None) -> dict[str, str]:
    """An event's tags for its new key: the dimension tags (`dagster/partition/<dimension>`, from which Dagster reads
    a multi-partition event's key) say the new key's parts, and pointers to moved inputs are re-aimed (`_Inputs`)."""
    import dagster as dg
    from dagster._core.definitions.data_version import INPUT_EVENT_POINTER_TAG_PREFIX
    from dagster._core.storage.tags import MULTIDIMENSIONAL_PARTITION_PREFIX

    from assets.partitions import dimensions

    out = dict(tags or {})
    names = dimensions(partitions_def)
    parts = new.split("|") if isinstance(partitions_def, dg.MultiPartitionsDefinition) else [new]
    dims = dict(zip(names, parts, strict=True)) if len(names) == len(parts) else {}
    for name, part in dims.items():
        if f"{MULTIDIMENSIONAL_PARTITION_PREFIX}{name}" in out:
            out[f"{MULTIDIMENSIONAL_PARTITION_PREFIX}{name}"] = part
    for tag, value in out.items():
        if inputs is not None and tag.startswith(f"{INPUT_EVENT_POINTER_TAG_PREFIX}/"):
            out[tag] = inputs.pointer(tag, value, dims)
    return out


def _events(instance, key, partitions_def, dry_run, unreadable, inputs: _Inputs | None) -> list[Moved]:
    """The latest materialization (`inputs` given: pointers to moved inputs re-aimed, and the moved event noted for
    the assets downstream) or observation (`inputs` None) of each old key, re-reported under its new key."""
    import dagster as dg

    materializations = inputs is not None
    kind = "materialization" if materializations else "observation"
    fetch = instance.fetch_materializations if materializations else instance.fetch_observations
    latest = _latest_by_partition(fetch, key)
    moved = []
    for old, new in _renamed(sorted(latest), partitions_def, unreadable, key.to_user_string()):
        if new in latest and latest[new].storage_id > latest[old].storage_id:
            continue  # moved before, or recorded under the new key since
        event = latest[old].asset_materialization if materializations else latest[old].asset_observation
        if not dry_run:
            instance.report_runless_asset_event(
                (dg.AssetMaterialization if materializations else dg.AssetObservation)(
                    asset_key=key, partition=new, description=event.description,
                    tags=_tags(event.tags, new, partitions_def, inputs),
                    metadata={**event.metadata, MIGRATED_FROM: dg.MetadataValue.text(old)},
                )
            )
            now = _latest_materialization(instance, key, new) if materializations else None
            if now is not None:
                inputs.add(key, new, latest[old].storage_id, now.storage_id)
        moved.append(Moved(key.to_user_string(), kind, old, new))
    return moved


def _check_evaluations(instance, check_key, partitions_def, dry_run, unreadable) -> list[Moved]:
    import dagster as dg
    from dagster._core.definitions.asset_checks.asset_check_evaluation import (
        AssetCheckEvaluationTargetMaterializationData,
    )

    storage = instance.event_log_storage
    latest = {
        info.partition_key: _latest_evaluation(storage, check_key, info.partition_key)
        for info in storage.get_asset_check_partition_info([check_key])
        if info.partition_key is not None
    }
    latest = {partition: record for partition, record in latest.items() if record is not None}
    name = f"{check_key.asset_key.to_user_string()}:{check_key.name}"
    moved = []
    for old, new in _renamed(sorted(latest), partitions_def, unreadable, name):
        if new in latest and latest[new].id > latest[old].id:
            continue
        evaluation = latest[old].event.dagster_event.event_specific_data
        target = None
        aimed = evaluation.target_materialization_data
        old_latest = _latest_materialization(instance, check_key.asset_key, old)
        if aimed is not None and old_latest is not None and aimed.storage_id == old_latest.storage_id:
            now = _latest_materialization(instance, check_key.asset_key, new)  # the one re-reported above
            if now is not None:
                target = AssetCheckEvaluationTargetMaterializationData(
                    storage_id=now.storage_id, run_id=now.run_id, timestamp=now.timestamp
                )
        if not dry_run:
            instance.report_runless_asset_event(
                dg.AssetCheckEvaluation(
                    asset_key=check_key.asset_key, check_name=check_key.name, passed=evaluation.passed,
                    metadata={**evaluation.metadata, MIGRATED_FROM: dg.MetadataValue.text(old)},
                    target_materialization_data=target, severity=evaluation.severity,
                    description=evaluation.description, blocking=evaluation.blocking, partition=new,
                )
            )
        moved.append(Moved(name, "check evaluation", old, new))
    return moved


def _latest_evaluation(storage: Any, check_key: Any, partition: str) -> Any:
    """The latest evaluation (passed or failed, not planned or skipped) of a check on one partition, or None."""
    from dagster._core.event_api import PartitionKeyFilter
    from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus as Status

    records = storage.get_asset_check_execution_history(
        check_key, limit=1, status={Status.SUCCEEDED, Status.FAILED}, partition_filter=PartitionKeyFilter(key=partition)
    )
    return records[0] if records and records[0].event is not None else None


def _latest_materialization(instance: Any, asset_key: Any, partition: str) -> Any:
    import dagster as dg

    found = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=asset_key, asset_partitions=[partition]), limit=1
    ).records
    return found[0] if found else None


def named_by_partition_keys(root: Path) -> list[Path]:
    """Files and folders under an output root named by a new partition key (a variant's or an ordering's short
    form) rather than in full: what would need renaming. None is expected: `OutputStore` names them in full."""
    from assets.partitions import ORDERING_CODES, variant_of
    from lg_pipeline.errors import InputError

    short = set(ORDERING_CODES.values())
    found = []
    for path in sorted(root.rglob("*")) if root.is_dir() else []:
        stem = path.name.split(".")[0]
        if stem in short:
            found.append(path)
            continue
        if "-" in stem and "__" not in stem:
            try:
                variant_of(stem)
            except InputError:
                continue
            found.append(path)
    return found


def _run(args: argparse.Namespace) -> int:
    import dagster as dg

    from assets.resources import PROJECT_ROOT, local_root, resources_for
    from lg_pipeline.definitions import defs
    from lg_pipeline.errors import InputError

    home = os.environ.setdefault("DAGSTER_HOME", str(PROJECT_ROOT / ".dagster_home"))  # as `demo`
    if not Path(home).is_dir():
        raise InputError(f"DAGSTER_HOME {home}: no such folder (no Dagster records to migrate)")
    with dg.DagsterInstance.get() as instance:
        moved, unreadable = migrate(instance, defs, dry_run=args.dry_run)
    for item in moved:
        print(("would move " if args.dry_run else "moved ") + item.line())
    for line in unreadable:
        print(f"left as it is (its key cannot be read): {line}")
    done = "would move" if args.dry_run else "moved"
    print(f"{done} {len(moved)} record(s) to the new partition keys" if moved else "nothing to migrate")
    root = resources_for()["store"].root
    local = local_root(root)
    if local is None:
        print(f"output root {root}: not checked (remote); its files are named by the variants in full")
        return 0
    stray = named_by_partition_keys(local)
    if stray:
        raise InputError(f"output root {local}: {len(stray)} file(s) named by a partition key, e.g. {stray[0]}")
    print(f"output root {local}: nothing to rename (files are named by the variants in full)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "migrate-partitions",
        help="once after upgrading: move the Dagster records of the old partition keys ($DAGSTER_HOME) to the short "
        "ones (champ__detailed__correct -> champ-d-c); a second run does nothing",
    )
    p.add_argument("--dry-run", action="store_true", help="list what would move, record nothing")
    p.set_defaults(func=_run)
