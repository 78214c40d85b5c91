"""Partitions that cannot build say why: in the descriptions, and as the first line of every run that needs them."""

from __future__ import annotations

import dagster as dg
import pytest

from assets.backlog import TEACHER_NEEDED, variant_availability, why_unbuildable
from assets.partitions import (
    AVAILABILITY,
    availability_note,
    curated_missing,
    multi_key,
    refuse_unbuildable,
    unbuildable_partitions,
)
from lg_pipeline.errors import InputError

TEACHER_LEVEL = "gsm_symbolic__detailed__correct"  # offline records, Detailed CoT from a teacher
OFFLINE = "champ__none__correct"


@pytest.fixture
def no_teacher(monkeypatch):
    monkeypatch.delenv("LG_TEACHER", raising=False)


def test_a_teacher_level_is_a_partition_that_cannot_build_without_a_teacher(no_teacher, monkeypatch):
    assert TEACHER_LEVEL in AVAILABILITY.buildable  # a teacher may come with the launchpad's config
    assert why_unbuildable(TEACHER_LEVEL) == TEACHER_NEEDED
    assert why_unbuildable(OFFLINE) is None
    assert unbuildable_partitions()[TEACHER_LEVEL] == TEACHER_NEEDED
    assert set(unbuildable_partitions()) <= set(AVAILABILITY.buildable)  # the partitions only, not the left-out
    assert why_unbuildable(TEACHER_LEVEL, teacher=True) is None  # a curation resource with a teacher
    monkeypatch.setenv("LG_TEACHER", "precomputed")
    assert why_unbuildable(TEACHER_LEVEL) is None and TEACHER_LEVEL not in unbuildable_partitions()
    monkeypatch.setenv("LG_TEACHER", "none")
    assert why_unbuildable(TEACHER_LEVEL) == TEACHER_NEEDED


def test_availability_and_the_partitions_share_one_answer(no_teacher):
    """The variants left out and the partitions that cannot build come from the same function."""
    here = variant_availability("")
    assert here.reasons == {v: why for v in [*here.reasons, *here.buildable] if (why := why_unbuildable(v, ""))}
    assert unbuildable_partitions() == {v: why for v, why in here.reasons.items() if v in AVAILABILITY.buildable}


def test_the_description_lists_each_partition_that_needs_a_teacher(no_teacher):
    note = availability_note()
    section = note.split("Partitions that cannot build here as configured:")[1]
    for variant in unbuildable_partitions():
        assert f"`{variant}`" in section
    assert TEACHER_NEEDED in section and section.count(TEACHER_NEEDED) == 1  # one line per reason
    if AVAILABILITY.reasons:
        assert note.startswith(AVAILABILITY.note())


def test_nothing_is_listed_once_a_teacher_is_set(monkeypatch):
    monkeypatch.setenv("LG_TEACHER", "precomputed")
    assert "Partitions that cannot build" not in availability_note()


def test_the_first_line_names_the_missing_teacher_not_the_missing_table(no_teacher, tmp_path, monkeypatch):
    table = tmp_path / f"{TEACHER_LEVEL}.parquet"
    message = curated_missing(TEACHER_LEVEL, table)
    assert message.startswith(f"'{TEACHER_LEVEL}' {TEACHER_NEEDED}")
    assert TEACHER_NEEDED == "needs a teacher: set `teacher` on the curation resource or LG_TEACHER"
    assert "materialize curated_dataset first" not in message
    assert "materialize curated_dataset first" in curated_missing(OFFLINE, tmp_path / "x.parquet")
    monkeypatch.setenv("LG_TEACHER", "precomputed")  # a teacher is set: the table is only still to be built
    assert "materialize curated_dataset first" in curated_missing(TEACHER_LEVEL, table)


def test_a_curation_run_is_refused_by_its_own_resource_settings(no_teacher):
    with pytest.raises(InputError, match=f"^'{TEACHER_LEVEL}' needs a teacher"):
        refuse_unbuildable(TEACHER_LEVEL, teacher="", release_dir=None)
    with pytest.raises(InputError, match="needs a teacher"):
        refuse_unbuildable(TEACHER_LEVEL, teacher="none", release_dir=None)
    refuse_unbuildable(TEACHER_LEVEL, teacher="precomputed", release_dir=None)  # the launchpad's teacher
    refuse_unbuildable(OFFLINE, teacher="", release_dir=None)


# ------------------------------------------------------------------------------------------------ runs
@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from tests.helpers.tiny_models import tiny_world

    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("LG_TEACHER", raising=False)
        with tiny_world(tmp_path_factory.mktemp("partitions"), 1, 2) as world:
            yield world


def _first_failure(result: dg.ExecuteInProcessResult) -> str:
    failures = [e.step_failure_data.error.message for e in result.all_events if e.is_step_failure]
    assert failures, "the run did not fail"
    return failures[0].splitlines()[0]


@pytest.mark.slow  # materializes through Dagster (fails before any model is loaded)
@pytest.mark.parametrize("asset", ["curated_dataset", "gradient_stats", "training_dynamics"])
def test_a_run_of_a_teacher_level_fails_first_with_the_real_reason(world, asset):
    from tests.helpers.tiny_models import materialize

    partition = TEACHER_LEVEL if asset == "curated_dataset" else multi_key("tiny", TEACHER_LEVEL)
    result = materialize(world, [asset], partition)
    assert not result.success
    first = _first_failure(result)
    assert TEACHER_LEVEL in first and TEACHER_NEEDED in first, first
    assert "materialize curated_dataset first" not in first
    instance, _ = world
    logs = [e.user_message for e in instance.all_logs(result.run_id)]
    assert not [m for m in logs if "loading model" in m or "loaded model" in m]  # refused before the model load
