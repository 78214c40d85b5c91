"""Partition keys that stay apart where the UI cuts them; partitions that cannot build say why: in the descriptions,
and as the first line of every run that needs them."""

from __future__ import annotations

import dagster as dg
import pytest

from assets.backlog import TEACHER_NEEDED, variant_availability, why_unbuildable
from assets.partitions import (
    AVAILABILITY,
    MODEL,
    ORDERING,
    VARIANT,
    availability_note,
    curated_missing,
    dimensions,
    multi_key,
    ordering_partitions,
    refuse_unbuildable,
    unbuildable_partitions,
    variant_partition_key,
)
from lg_pipeline.errors import InputError

TEACHER_LEVEL = "gsm_symbolic__detailed__correct"  # offline records, Detailed CoT from a teacher
OFFLINE = "champ__none__correct"


# ------------------------------------------------------------------------------------------------ short keys
def _asset_keys(partitions_def, by_dimension: dict[str, list[str]]) -> list[str]:
    """Every key of one asset's partitions, each dimension over `by_dimension`'s keys."""
    import itertools

    names = dimensions(partitions_def)
    assert names, f"a partitions definition of no known dimension: {partitions_def}"
    if not isinstance(partitions_def, dg.MultiPartitionsDefinition):
        return list(by_dimension[names[0]])
    combos = itertools.product(*(by_dimension[n] for n in names))
    return [str(dg.MultiPartitionKey(dict(zip(names, combo, strict=True)))) for combo in combos]


def _partitioned() -> dict[str, dg.PartitionsDefinition]:
    from lg_pipeline.definitions import defs

    return {k.to_user_string(): a.partitions_def for a in defs.assets for k in a.keys if a.partitions_def}


def _every_key() -> dict[str, list[str]]:
    """The catalog's models, every variant of the dataset catalog (not only those buildable here), the orderings."""
    from data_sources.datasets.catalog import variant_keys
    from data_sources.models.catalog import model_catalog

    return {
        MODEL: list(model_catalog()),
        VARIANT: [variant_partition_key(v) for v in variant_keys()],
        ORDERING: ordering_partitions.get_partition_keys(),
    }


def test_no_two_partition_keys_of_one_asset_look_alike_where_the_ui_cuts_them():
    from lg_pipeline.vocabulary import look_alikes

    partitioned = _partitioned()
    assert {"curated_dataset", "gradient_stats", "layer_summary", "training_dynamics", "training_dynamics_dpo",
            "zero_shot_dynamics", "zero_shot_dynamics_detailed"} <= set(partitioned)
    every = _every_key()
    for by_dimension in (every, {**every, VARIANT: _buildable()}):
        for asset, partitions_def in partitioned.items():
            keys = _asset_keys(partitions_def, by_dimension)
            assert len(set(keys)) == len(keys) and look_alikes(keys) == [], asset


def _buildable() -> list[str]:
    from assets.partitions import variant_partitions

    return variant_partitions.get_partition_keys()


def test_the_long_variant_keys_looked_alike_and_the_short_ones_do_not():
    """What the short keys fix: the UI showed `commonsense…ed__correct` for two variants (and 178 of 208
    `model|variant` keys of the offline default in 47 look-alike groups)."""
    from data_sources.models.catalog import model_catalog
    from lg_pipeline.vocabulary import look_alikes

    long = list(AVAILABILITY.buildable)
    assert len(look_alikes(long)) == 2
    pairs = [f"{m}|{v}" for m in model_catalog() for v in long]
    assert sum(map(len, look_alikes(pairs))) > len(pairs) // 2
    assert look_alikes([variant_partition_key(v) for v in long]) == []
    assert look_alikes([str(multi_key(m, v)) for m in model_catalog() for v in long]) == []


def test_models_add_checks_every_key_an_asset_gives_a_model():
    """The look-alike check of `lg-pipeline models add` covers every partitioned asset's keys of the model."""
    from data_sources.models.registry import partition_keys

    every = _every_key()
    for model in every[MODEL]:
        checked = {k for keys in partition_keys(model).values() for k in keys}
        for asset, partitions_def in _partitioned().items():
            if MODEL in dimensions(partitions_def):
                keys = _asset_keys(partitions_def, {**every, MODEL: [model]})
                assert set(keys) <= checked, asset


def test_a_partition_key_and_the_variant_it_stands_for_translate_both_ways():
    from assets.partitions import (
        current_partition_key,
        model_ordering_partitions,
        model_variant_partitions,
        stats_key,
        variant_label,
        variant_of,
        variant_partitions,
        zero_shot_dims,
        zero_shot_key,
    )

    assert variant_partition_key("champ__detailed__correct") == "champ-d-c" == variant_partition_key("champ-d-c")
    assert variant_of("champ-d-c") == "champ__detailed__correct" == variant_of("champ__detailed__correct")
    assert variant_label("champ-d-c") == "champ-d-c = champ__detailed__correct (CHAMP (competition math), Detailed " \
        "CoT, correct)"
    key = multi_key("smollm2-135m-instruct", "wiki__len1000__wrong")
    assert key == "smollm2-135m-instruct|wiki-1k-w" and key.keys_by_dimension == {MODEL: "smollm2-135m-instruct",
                                                                                   VARIANT: "wiki-1k-w"}
    assert stats_key(key) == stats_key(str(key)) == "smollm2-135m-instruct|wiki__len1000__wrong"
    assert stats_key(key).variant.level == "len1000"
    assert zero_shot_key("m", "cluster_shuffled") == "m|cl_shuffled" and zero_shot_dims("m|cl_shuffled") == (
        "m", "cluster_shuffled")
    assert current_partition_key("champ__none__wrong", variant_partitions) == "champ-n-w"
    assert current_partition_key("m|champ__none__wrong", model_variant_partitions) == "m|champ-n-w"
    assert current_partition_key("m|champ-n-w", model_variant_partitions) == "m|champ-n-w"
    assert current_partition_key("m|cluster_shuffled", model_ordering_partitions) == "m|cl_shuffled"
    assert current_partition_key("m|rt", model_ordering_partitions) == "m|rt"
    with pytest.raises(InputError, match="unknown_set"):
        current_partition_key("m|unknown_set__none__correct", model_variant_partitions)


def test_every_variant_partitioned_description_says_how_to_read_its_keys():
    from lg_pipeline.definitions import defs

    for asset in ("curated_dataset", "gradient_stats", "training_dynamics"):
        description = defs.get_assets_def(asset).specs_by_key[dg.AssetKey(asset)].description
        assert "Variant partition keys are `<dataset>-<level>-<c|w>`" in description
        assert "`champ` CHAMP (competition math)" in description and "`d` Detailed CoT" in description
    zero_shot = defs.get_assets_def("zero_shot_dynamics").specs_by_key[dg.AssetKey("zero_shot_dynamics")]
    assert "`cl_shuffled` = `cluster_shuffled`" in zero_shot.description


def test_the_legend_in_the_module_docstring_and_the_readme_names_every_dataset_code():
    from pathlib import Path

    import assets.partitions
    from data_sources.datasets.catalog import dataset_codes

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for code in dataset_codes().values():
        assert f"`{code}`" in assets.partitions.__doc__ and f"`{code}`" in readme, code


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

    partition = variant_partition_key(TEACHER_LEVEL) if asset == "curated_dataset" else multi_key("tiny", TEACHER_LEVEL)
    result = materialize(world, [asset], partition)
    assert not result.success
    first = _first_failure(result)
    assert TEACHER_LEVEL in first and TEACHER_NEEDED in first, first
    assert "materialize curated_dataset first" not in first
    instance, _ = world
    logs = [e.user_message for e in instance.all_logs(result.run_id)]
    assert not [m for m in logs if "loading model" in m or "loaded model" in m]  # refused before the model load
