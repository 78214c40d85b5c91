"""Data-quality checks on curated tables (lg_pipeline.curation.checks) and their Dagster wiring (assets/curation.py).

Every check is shown to pass on good tables (built-in demo data, offline packs) and to fail on a table broken in the
way it guards against. The Dagster tests materialize curated tables in-process and show that a failing blocking
check stops the variant's gradient run.
"""

from __future__ import annotations

import copy
import json

import dagster as dg
import pandas as pd
import pytest

from assets.partitions import variant_partition_key
from data_sources.datasets.catalog import dataset_catalog
from lg_pipeline.curation import CurationSettings
from lg_pipeline.curation.checks import (
    CHECKS,
    Curated,
    check_curated,
    check_ids_unique,
    check_instructions_aligned,
    check_length_order,
    check_no_fixed_point,
    check_not_empty,
    check_row_count,
    check_wiki_cut_length,
    sibling_variants,
)
from lg_pipeline.vocabulary import StatsKey, VariantKey
from tests.helpers.curation import build_variant, curated
from tests.helpers.tiny_models import materialize, tiny_world

N = 4
DEMO = "commonsense_demo"


@pytest.fixture(scope="module")
def gx_context():
    import great_expectations as gx

    return gx.get_context(mode="ephemeral")


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    return CurationSettings(n_examples=N, cache_dir=str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="module")
def demo(settings):
    """Every variant of the built-in commonsense demo, as stored tables with their build records."""
    keys = [f"{DEMO}__{level}__{c}" for level in dataset_catalog()[DEMO].levels for c in ("correct", "wrong")]
    return {key: curated(key, *build_variant(key, settings)) for key in keys}


@pytest.fixture(scope="module")
def wiki(settings):
    keys = ["wiki__len100__correct", "wiki__len100__wrong", "wiki__longtail__correct"]
    return {key: curated(key, *build_variant(key, settings)) for key in keys}


def edited(table: Curated, **changes) -> Curated:
    """A copy of a table; `frame=` a function of the frame copy, `build=` a function of the build copy."""
    frame, build = table.frame.copy(), copy.deepcopy(table.build)
    if "frame" in changes:
        frame = changes["frame"](frame)
    if "build" in changes:
        build = changes["build"](build)
    return curated(table.variant, frame, build)


def siblings_of(tables: dict[str, Curated], variant: str) -> dict[str, Curated | None]:
    spec = dataset_catalog()[VariantKey.parse(variant).dataset]
    return {key: tables.get(key) for key in sibling_variants(spec, variant)}


def ids(report) -> list[str]:
    return list(report.failing_rows.example_id) if "example_id" in report.failing_rows else []


# ------------------------------------------------------------------------------------------------ good data
@pytest.mark.slow
def test_good_tables_pass_every_check(demo, wiki):
    tables = {**demo, **wiki}
    for key, table in tables.items():
        reports = check_curated(table, siblings_of(tables, key))
        assert list(reports) == list(CHECKS)
        assert {n: r.failures for n, r in reports.items() if not r.passed} == {}, key
    reports = check_curated(demo[f"{DEMO}__detailed__wrong"], siblings_of(demo, f"{DEMO}__detailed__wrong"))
    assert reports["curated_no_fixed_point"].notes["compared_with"] == f"{DEMO}__detailed__correct"
    assert len(reports["curated_instructions_aligned"].notes["compared_with"]) == 5  # every level, correct and wrong
    assert list(reports["curated_length_order"].tables["medians"].level) == ["none", "simplified", "detailed"]
    assert reports["curated_wiki_cut_length"].notes["applies"] is False
    cut = check_wiki_cut_length(wiki["wiki__len100__wrong"])
    assert cut.passed and cut.notes["applies"] and 95 <= cut.notes["tokens_min"] <= cut.notes["tokens_max"] <= 100


# ------------------------------------------------------------------------------------------------ within one table
@pytest.mark.parametrize("column", ["instruction", "response"])
def test_blank_instruction_or_response_fails(demo, gx_context, column):
    table = demo[f"{DEMO}__simplified__correct"]
    assert check_not_empty(table, gx_context).passed
    blank = edited(table, frame=lambda f: f.assign(**{column: [*f[column][:2], " \n ", None][: len(f)]}))
    report = check_not_empty(blank, gx_context)
    assert not report.passed and report.failures == [f"expect_column_values_to_be_between({column}_chars)"]
    assert ids(report) == list(table.frame.example_id[2:4])


def test_duplicate_id_fails(demo, gx_context):
    table = demo[f"{DEMO}__none__correct"]
    assert check_ids_unique(table, gx_context).passed
    first = table.frame.example_id[0]
    report = check_ids_unique(
        edited(table, frame=lambda f: f.assign(example_id=[first, *f.example_id[1:2], first, *f.example_id[3:]])),
        gx_context,
    )
    assert not report.passed and "expect_column_values_to_be_unique(example_id)" in report.failures
    assert ids(report) == [first, first] and report.notes["duplicated_ids"] == 1


def test_row_count_passes_on_counted_losses_and_an_exhausted_source(settings, gx_context, tmp_path):
    from lg_pipeline.curation.teacher import PrecomputedTeacher

    short = "gsm_symbolic__detailed__correct"  # a teacher with no response for one instruction: counted loss
    simplified, _ = build_variant("gsm_symbolic__simplified__correct", settings)
    written = {
        q: f"Step 1. Think.\nThe final answer is {a}"
        for q, a in zip(simplified.instruction, simplified.answer, strict=True)
    }
    del written[simplified.instruction[0]]
    teacher = PrecomputedTeacher(written, name="test-teacher")
    table = curated(short, *build_variant(short, CurationSettings(N, cache_dir=settings.cache_dir, teacher=teacher)))
    report = check_row_count(table, gx_context)
    assert report.passed and len(table.frame) == N - 1
    assert report.notes["shortfall"] == {"source_exhausted": 0, "teacher_no_response": 1}
    many = f"{DEMO}__none__correct"  # more rows requested than the demo pack holds: the source ran out
    table = curated(many, *build_variant(many, CurationSettings(n_examples=100, cache_dir=settings.cache_dir)))
    report = check_row_count(table, gx_context)
    assert report.passed and report.notes["shortfall"]["source_exhausted"] == 100 - len(table.frame) > 0


def _half_wrong_teacher(settings, n=N):
    """A precomputed teacher whose Detailed CoT reaches the gold answer on every other instruction only."""
    from lg_pipeline.curation.teacher import PrecomputedTeacher

    simplified, _ = build_variant(
        "gsm_symbolic__simplified__correct", CurationSettings(n, cache_dir=settings.cache_dir)
    )
    written = {
        q: f"Step 1. Think.\nThe final answer is {a if i % 2 == 0 else int(a) + 1}"
        for i, (q, a) in enumerate(zip(simplified.instruction, simplified.answer, strict=True))
    }
    return PrecomputedTeacher(written, name="half-wrong"), simplified


def test_disagreeing_detailed_rows_are_kept_or_dropped_and_counted(settings, gx_context):
    teacher, simplified = _half_wrong_teacher(settings)
    key = "gsm_symbolic__detailed__correct"
    kept = curated(key, *build_variant(key, CurationSettings(N, cache_dir=settings.cache_dir, teacher=teacher)))
    assert len(kept.frame) == N and kept.build["row_accounting"]["lost"] == {}
    assert kept.build["detailed_vs_gold"] | {"disagree_ids": None} == {
        "agree": N // 2,
        "disagree": N // 2,
        "unchecked": 0,
        "disagree_ids": None,
        "disagreeing_rows": "kept",
    }
    strict = CurationSettings(N, cache_dir=settings.cache_dir, teacher=teacher, keep_disagreeing=False)
    dropped = curated(key, *build_variant(key, strict))
    check = dropped.build["detailed_vs_gold"]
    assert check["disagree"] == N // 2 and check["disagreeing_rows"] == "dropped"
    assert list(dropped.frame.instruction) == list(simplified.instruction[::2])
    assert dropped.build["row_accounting"]["lost"] == {"detailed_disagrees_with_gold": N // 2}
    assert dropped.build["shortfall"] == N // 2 and set(check["disagree_ids"]).isdisjoint(dropped.frame.example_id)
    report = check_row_count(dropped, gx_context)
    assert report.passed and report.notes["shortfall"]["detailed_disagrees_with_gold"] == N // 2
    wrong_key = "gsm_symbolic__detailed__wrong"
    wrong = curated(wrong_key, *build_variant(wrong_key, strict))  # built from the dropped correct set
    assert list(wrong.frame.example_id) == list(dropped.frame.example_id)
    assert wrong.build["row_accounting"]["lost"] == {"detailed_disagrees_with_gold": N // 2}
    simplified_key = "gsm_symbolic__simplified__correct"
    siblings = {
        simplified_key: curated(simplified_key, *build_variant(simplified_key, strict)),
        wrong_key: wrong,
        key: dropped,
    }
    for table in siblings.values():  # the other levels and the wrong set line up with the counted losses
        assert check_instructions_aligned(table, siblings, gx_context).passed
    assert check_no_fixed_point(wrong, siblings, gx_context).passed


def test_row_count_fails_on_a_silent_shrink(demo, settings, gx_context, monkeypatch):
    good = demo[f"{DEMO}__none__wrong"]
    assert check_row_count(good, gx_context).passed
    truncated = edited(good, frame=lambda f: f.iloc[:-1])  # the stored table lost a row after its build
    report = check_row_count(truncated, gx_context)
    assert not report.passed and "expect_table_row_count_to_equal" in report.failures
    assert any("example ids differ" in f for f in report.failures)

    import lg_pipeline.curation.from_source as build
    from lg_pipeline.curation.derange import Derangement

    real = build.derange

    def forgetful(*args, **kwargs):  # a builder bug: one recipient silently dropped, not reported as unpaired
        result = real(*args, **kwargs)
        return Derangement(dict(list(result.donor.items())[1:]), result.unpaired)

    monkeypatch.setattr(build, "derange", forgetful)
    key = f"{DEMO}__none__wrong"
    frame, meta = build_variant(key, settings)
    assert len(frame) == N - 1 and meta["drops"] == {}
    report = check_row_count(curated(key, frame, meta), gx_context)
    assert not report.passed and any("rows lost without being counted" in f for f in report.failures)

    early = edited(good, build=lambda b: {**b, "row_accounting": {**b["row_accounting"], "selected": N - 1}})
    assert any("silent shortfall" in f for f in check_row_count(early, gx_context).failures)
    assert not check_row_count(curated(good.variant, good.frame, None), gx_context).passed  # no build record


def test_wiki_cuts_outside_5_percent_fail(wiki, gx_context):
    table = wiki["wiki__len100__correct"]
    assert check_wiki_cut_length(table, gx_context).passed

    def shorten(frame):  # the first response cut to 80 tokens, as the old 80% policy allowed
        from lg_pipeline.curation.wiki import TokenCounter

        text = TokenCounter().prefix(frame.response[0], 80)
        frame.loc[0, ["response", "cut_token_count"]] = [text, 80]
        return frame

    report = check_wiki_cut_length(edited(table, frame=shorten), gx_context)
    assert not report.passed and report.failures == ["expect_column_values_to_be_between(fraction_of_budget)"]
    assert ids(report) == [table.frame.example_id[0]]
    unrecorded = edited(table, frame=lambda f: f.assign(cut_token_count=pd.array([None] * len(f), dtype="Int64")))
    assert "expect_column_values_to_not_be_null(cut_token_count)" in check_wiki_cut_length(unrecorded).failures
    miscounted = edited(table, frame=lambda f: f.assign(response=f.response + " And more words here."))
    assert "expect_column_values_to_be_in_set(count_matches)" in check_wiki_cut_length(miscounted).failures
    # Rows we did not cut are exempt: whole long-tail articles, and the study's own release files.
    assert check_wiki_cut_length(wiki["wiki__longtail__correct"]).notes["applies"] is False
    released = edited(table, frame=lambda f: shorten(f).assign(source="release"))
    assert check_wiki_cut_length(released).passed


# ------------------------------------------------------------------------------------------------ across variants
def test_instructions_out_of_order_or_different_fail(demo, gx_context):
    key = f"{DEMO}__detailed__correct"
    swapped = edited(demo[f"{DEMO}__none__correct"], frame=lambda f: f.iloc[[1, 0, 2, 3]].reset_index(drop=True))
    report = check_instructions_aligned(demo[key], {**siblings_of(demo, key), swapped.variant: swapped}, gx_context)
    assert not report.passed and report.failures == ["expect_column_values_to_be_in_set(order_matches)"]
    assert ids(report) == list(demo[key].frame.example_id[:2])

    def other_question(frame):  # a level-dependent selection: one instruction that the other levels do not have
        frame.loc[3, ["example_id", "instruction"]] = ["other-id", "A question the other levels never asked?"]
        return frame

    changed = edited(demo[f"{DEMO}__simplified__correct"], frame=other_question)
    report = check_instructions_aligned(demo[key], {**siblings_of(demo, key), changed.variant: changed}, gx_context)
    assert not report.passed
    assert "expect_column_pair_values_a_to_be_greater_than_b(lost_there)" in report.failures
    assert ids(report) == [demo[key].frame.example_id[3]]
    siblings = report.tables["siblings"].set_index("sibling")
    assert siblings.loc[changed.variant, "only_here"] == siblings.loc[changed.variant, "only_there"] == 1


def test_counted_losses_and_missing_siblings_do_not_fail_alignment(demo, gx_context):
    key = f"{DEMO}__none__wrong"

    def lose_last(build):  # the wrong set could not pair its last instruction, and says so
        build["row_accounting"]["lost"] = {"no_wrong_response_available": 1}
        return build

    wrong = edited(demo[key], frame=lambda f: f.iloc[:-1], build=lose_last)
    assert check_instructions_aligned(wrong, siblings_of(demo, key), gx_context).passed
    correct = demo[f"{DEMO}__none__correct"]
    assert check_instructions_aligned(correct, {**siblings_of(demo, correct.variant), key: wrong}, gx_context).passed
    silent = edited(demo[key], frame=lambda f: f.iloc[:-1])  # the same row gone without being counted
    assert not check_instructions_aligned(correct, {**siblings_of(demo, correct.variant), key: silent}).passed

    alone = check_instructions_aligned(demo[key], dict.fromkeys(sibling_variants(demo[key].spec, key)), gx_context)
    assert alone.passed and len(alone.skipped) == 5 and all("not materialized yet" in s for s in alone.skipped)
    other_n = edited(correct, build=lambda b: {**b, "n_requested": 10})
    report = check_instructions_aligned(demo[key], {**siblings_of(demo, key), correct.variant: other_n}, gx_context)
    assert report.passed and any("n_requested 10 vs 4" in s for s in report.skipped)


def test_wrong_set_with_a_fixed_point_fails(demo, gx_context):
    key = f"{DEMO}__simplified__wrong"
    correct = demo[f"{DEMO}__simplified__correct"].frame
    assert check_no_fixed_point(demo[key], siblings_of(demo, key), gx_context).passed

    def own_answer(frame):  # row 2 given its own correct response back
        frame.loc[2, "response"] = correct.set_index("example_id").response[frame.example_id[2]] + "\n"
        return frame

    report = check_no_fixed_point(edited(demo[key], frame=own_answer), siblings_of(demo, key), gx_context)
    assert not report.passed and report.failures == ["expect_column_values_to_be_in_set(fixed_point)"]
    assert ids(report) == [demo[key].frame.example_id[2]] and report.notes["fixed_points"] == 1
    assert not report.warn_only
    released = edited(demo[key], frame=lambda f: own_answer(f).assign(source="release"))
    release_siblings = {
        **siblings_of(demo, key),
        f"{DEMO}__simplified__correct": edited(
            demo[f"{DEMO}__simplified__correct"], frame=lambda f: f.assign(source="release")
        ),
    }
    report = check_no_fixed_point(released, release_siblings, gx_context)
    assert not report.passed and report.warn_only  # the study's shuffle, kept as released: a warning
    alone = dict.fromkeys(sibling_variants(demo[key].spec, key))
    missing = check_no_fixed_point(edited(demo[key], frame=own_answer), alone)
    assert missing.passed and missing.skipped == [f"{DEMO}__simplified__correct: not materialized yet"]
    assert check_no_fixed_point(demo[f"{DEMO}__simplified__correct"], siblings_of(demo, key)).notes["applies"] is False


def test_length_order_fails_when_none_cot_is_longest(demo, gx_context):
    key = f"{DEMO}__simplified__correct"
    assert check_length_order(demo[key], siblings_of(demo, key), gx_context).passed
    detailed = demo[f"{DEMO}__detailed__correct"].frame.response
    padded = edited(demo[f"{DEMO}__none__correct"], frame=lambda f: f.assign(response=list(detailed + " and more")))
    report = check_length_order(demo[key], {**siblings_of(demo, key), padded.variant: padded}, gx_context)
    assert not report.passed and report.failures == ["expect_column_values_to_be_increasing(median_tokens)"]
    assert list(report.failing_rows.level) == ["none", "simplified", "detailed"]
    alone = check_length_order(demo[key], dict.fromkeys(sibling_variants(demo[key].spec, key)), gx_context)
    assert alone.passed and len(alone.skipped) == 2
    assert check_length_order(curated("wiki__len100__correct", demo[key].frame), {}).notes["applies"] is False


# ------------------------------------------------------------------------------------------------ Dagster
VARIANT = "champ__none__correct"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    with tiny_world(tmp_path_factory.mktemp("quality"), 2, 2) as world:
        yield world


def run(world, asset, partition_key) -> dg.ExecuteInProcessResult:
    return materialize(world, [asset], partition_key)


def evaluations(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def test_definitions_carry_the_curated_checks():
    from lg_pipeline.definitions import defs

    graph = defs.resolve_asset_graph()
    checks = {k.name: graph.get(k).blocking for k in graph.asset_check_keys if k.asset_key.path == ["curated_dataset"]}
    assert checks == {name: name != "curated_length_order" for name in CHECKS}
    curate = defs.resolve_job_def("curate")
    assert {k.name for k in curate.asset_layer.asset_graph.asset_check_keys} >= set(CHECKS)


@pytest.mark.slow
def test_a_failing_blocking_check_stops_the_gradient_run(world, monkeypatch):
    import lg_pipeline.curation as curation
    from assets.curation.assets import curated_dataset
    from assets.gradients.assets import gradient_stats
    from assets.partitions import multi_key

    instance, resources = world
    store = resources["store"]
    real = curation.build_variant

    def duplicating(spec, key, settings):  # a builder bug: the second row repeats the first one's id
        from lg_pipeline.curation.table import ids_digest

        frame, meta = real(spec, key, settings)
        frame.loc[1, "example_id"] = frame.example_id[0]
        return frame, {**meta, "ids_digest": ids_digest(list(frame.example_id))}

    monkeypatch.setattr(curation, "build_variant", duplicating)
    curated = run(world, curated_dataset, variant_partition_key(VARIANT))
    assert not curated.success  # the blocking check fails its step, so the run
    checks = evaluations(curated)
    assert set(checks) == set(CHECKS)
    assert not checks["curated_ids_unique"].passed and checks["curated_ids_unique"].blocking
    assert (
        "expect_column_values_to_be_unique(example_id)"
        in checks["curated_ids_unique"].metadata["failed_expectations"].value
    )
    duplicate = pd.read_parquet(store.curated(VARIANT)).example_id[0]
    assert duplicate in checks["curated_ids_unique"].metadata["failing_rows"].value
    assert all(checks[n].passed for n in ("curated_not_empty", "curated_no_fixed_point", "curated_wiki_cut_length"))
    assert json.loads(store.curated_verdict(VARIANT).read_text())["failures"] == ["curated_ids_unique"]

    # curated_dataset and gradient_stats are partitioned differently, so they never share a run: a gradient run
    # launched later (by the sensor, a schedule, the UI) is stopped by the verdict, before any model is loaded.
    gradients = run(world, gradient_stats, multi_key("tiny", VARIANT))
    assert not gradients.success
    message = " ".join(e.step_failure_data.error.message for e in gradients.all_events if e.is_step_failure)
    assert "failed its blocking check(s) curated_ids_unique" in message
    assert not store.gradients(StatsKey.of("tiny", VARIANT)).exists()
    assert not gradients.get_asset_materialization_events()

    monkeypatch.setattr(curation, "build_variant", real)  # fixed: the checks pass, the gate opens
    curated = run(world, curated_dataset, variant_partition_key(VARIANT))
    assert curated.success and all(e.passed for e in evaluations(curated).values())
    assert json.loads(store.curated_verdict(VARIANT).read_text())["passed"]
    gradients = run(world, gradient_stats, multi_key("tiny", VARIANT))
    assert gradients.success and store.gradients(StatsKey.of("tiny", VARIANT)).is_file()


@pytest.mark.slow
def test_cross_variant_checks_skip_missing_siblings_and_warnings_do_not_block(world, monkeypatch):
    import lg_pipeline.curation as curation
    from assets.curation.assets import curated_dataset

    store = world[1]["store"]
    wrong = "commonsense_demo__none__wrong"
    result = run(world, curated_dataset, variant_partition_key(wrong))  # before its correct set exists
    assert result.success
    fixed = evaluations(result)["curated_no_fixed_point"]
    assert fixed.passed
    assert fixed.metadata["skipped_comparisons"].value == ["commonsense_demo__none__correct: not materialized yet"]

    real = curation.build_variant

    def verbose_none(spec, key, settings):  # None CoT responses longer than the Detailed ones: a warning only
        frame, meta = real(spec, key, settings)
        frame["response"] = frame.response + " because" * 400
        return frame, meta

    assert run(world, curated_dataset, variant_partition_key("commonsense_demo__detailed__correct")).success
    monkeypatch.setattr(curation, "build_variant", verbose_none)
    result = run(world, curated_dataset, variant_partition_key("commonsense_demo__none__correct"))
    assert result.success
    order = evaluations(result)["curated_length_order"]
    assert not order.passed and order.severity == dg.AssetCheckSeverity.WARN and not order.blocking
    assert json.loads(store.curated_verdict("commonsense_demo__none__correct").read_text())["passed"]


@pytest.mark.slow
def test_a_teacher_configured_on_the_resource_builds_detailed_cot(world, tmp_path):
    """The Dagster layer passes the teacher and keep_disagreeing (launchpad config) into the build."""
    from assets.curation.assets import curated_dataset
    from assets.resources import CurationResource

    instance, resources = world
    teacher, _ = _half_wrong_teacher(CurationSettings(cache_dir=str(tmp_path)), n=2)
    path = tmp_path / "detailed.json"
    rows = [{"instruction": q, "input": "", "output": r} for q, r in teacher.responses.items()]
    path.write_text(json.dumps(rows), encoding="utf-8")
    curation = CurationResource(
        n_offline_examples=2,
        cache_dir=str(tmp_path / "cache"),
        teacher="precomputed",
        teacher_file=str(path),
        keep_disagreeing=False,
    )
    key = "gsm_symbolic__detailed__correct"
    result = materialize((instance, {**resources, "curation": curation}), [curated_dataset], variant_partition_key(key))
    assert result.success and all(e.passed for e in evaluations(result).values())
    build = json.loads(resources["store"].curated_build(key).read_text())
    assert build["teacher"] == "precomputed:detailed.json" and build["n_rows"] == 1
    assert build["row_accounting"]["lost"] == {"detailed_disagrees_with_gold": 1}
