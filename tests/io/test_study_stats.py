"""The study's grads_*.jsonl layout: path names, line format, and round trips both ways."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from lg_pipeline.example import stable_id
from lg_pipeline.io.study_stats import (
    LONG_COLUMNS,
    StudyFile,
    export_study_tree,
    import_study_tree,
    parse_parameter,
    parse_study_path,
    read_study_jsonl,
    write_study_jsonl,
)
from lg_pipeline.schema import MATRIX_STATS, STUDY_EXTRAS, STUDY_NAMES

STUDY_KEYS = ("M_mean", "M_max", "M_min", "frobenius_norm", "S_sum", "S_max", "S_min")


@pytest.mark.parametrize(
    ("relpath", "expected"),
    [
        ("cot_500/llama3_8b/grads_aqua_train_no_cot.jsonl", ("llama-3.1-8b", "aqua", "none", "correct")),
        ("cot_500/qwen2_1_5b_it_new/grads_gsm8k_train_with_cot.jsonl",
         ("qwen2-1.5b-instruct", "gsm8k", "simplified", "correct")),
        ("cot_500_wrong_answer_shuffle/gemma2_2b/grads_creak_train_with_cot_gpt4o.jsonl",
         ("gemma-2-2b", "creak", "detailed", "wrong")),
        ("lighteval_math/llama3_8b/grads_counting_probability_with_cot.jsonl",
         ("llama-3.1-8b", "math_counting_probability", "simplified", "correct")),
        ("wiki_popularity_wrong_answer_shuffle/smollm2-135m-instruct/grads_long_tail_wikipedia.jsonl",
         ("smollm2-135m-instruct", "wiki", "longtail", "wrong")),
        ("wiki_popularity/llama2_7b/grads_popular_wikipedia_500.jsonl", ("llama-2-7b", "wiki", "len500", "correct")),
    ],
)  # fmt: skip
def test_paths_parse_and_rebuild(relpath, expected):
    file = parse_study_path(Path("/x/grads_exp") / relpath)
    assert (file.model, file.dataset, file.level, file.correctness) == expected
    assert file.relpath() == Path(relpath)


@pytest.mark.parametrize(
    "bad",
    ["cot_500/m/grads_aqua_train_cot.jsonl", "other_task/m/grads_a_no_cot.jsonl", "wiki_popularity/m/grads_x.jsonl"],
)
def test_bad_paths_are_rejected(bad):
    with pytest.raises(ValueError):
        parse_study_path(Path(bad))


def test_parse_parameter():
    assert parse_parameter("model.layers.12.self_attn.q_proj.weight") == (12, "q_proj")
    assert parse_parameter("model.layers.0.mlp.down_proj.weight") == (0, "down_proj")
    assert parse_parameter("lm_head.weight") is None


def study_line(instruction: str, output: str, n_layers: int = 2) -> dict:
    """A line as the study's gradient script writes it."""
    record = {"instruction": instruction, "output": output, "loss": 1.25}
    for layer in range(n_layers):
        for i, module in enumerate(("q_proj", "k_proj", "v_proj", "o_proj")):
            name = f"model.layers.{layer}.self_attn.{module}.weight"
            record[name] = {k: (layer + 1) * (i + 1) * (j + 0.5) for j, k in enumerate(STUDY_KEYS)}
    return record


def test_import_study_lines(tmp_path):
    path = tmp_path / "cot_500" / "llama3_8b" / "grads_gsm8k_train_with_cot_gpt4o.jsonl"
    path.parent.mkdir(parents=True)
    lines = [study_line("Q1", "A1"), study_line("Q2", "A2"), study_line("Q1", "A1")]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    frame = read_study_jsonl(path)
    assert len(frame) == 3 * 2 * 4
    assert set(frame["level"]) == {"detailed"} and set(frame["model"]) == {"llama-3.1-8b"}
    ids = list(dict.fromkeys(frame["example_id"]))
    assert ids == [stable_id("Q1", "A1"), stable_id("Q2", "A2"), stable_id("Q1", "A1") + "-1"]
    row = frame[(frame.layer == 1) & (frame.module == "k_proj")].iloc[0]
    assert row["nuclear_norm"] == lines[0]["model.layers.1.self_attn.k_proj.weight"]["S_sum"]
    assert row["grad_mean"] == lines[0]["model.layers.1.self_attn.k_proj.weight"]["M_mean"]
    assert row["loss"] == 1.25 and pd.isna(row["n_tokens"])


def test_study_line_survives_import_and_export(tmp_path):
    source = tmp_path / "in" / "lighteval_math" / "gemma2_2b" / "grads_geometry_with_cot.jsonl"
    source.parent.mkdir(parents=True)
    original = study_line("What is 2+2?", "4")
    source.write_text(json.dumps(original) + "\n")
    target = write_study_jsonl(read_study_jsonl(source), tmp_path / "out.jsonl")
    (again,) = [json.loads(line) for line in target.read_text().splitlines()]
    params = [k for k in original if isinstance(original[k], dict)]
    assert [k for k in again if isinstance(again[k], dict)] == params
    assert all(again[k] == original[k] for k in params)
    assert list(again[params[0]]) == list(STUDY_KEYS)  # the study's key order
    assert again["loss"] == original["loss"]


def our_stats() -> pd.DataFrame:
    rows = []
    variants = [
        ("smollm2-135m-instruct", "gsm8k", "none", "correct"),
        ("smollm2-135m-instruct", "gsm8k", "detailed", "wrong"),
        ("qwen2-1.5b", "math_algebra", "simplified", "correct"),
        ("qwen2-1.5b", "wiki", "len1000", "wrong"),
    ]
    for v, (model, dataset, level, correctness) in enumerate(variants):
        for e in range(3):
            for layer in range(3):
                for m, module in enumerate(("q_proj", "o_proj", "gate_proj")):
                    kind = "mlp" if module == "gate_proj" else "self_attn"
                    stats = {s: v + e / 3 + layer / 7 + m / 11 + k / 13 for k, s in enumerate(MATRIX_STATS)}
                    rows.append({
                        "example_id": f"ex{v}-{e}", "layer": layer, "module": module,
                        "parameter": f"model.layers.{layer}.{kind}.{module}.weight", "loss": 0.5 + e,
                        "n_tokens": 40 + e, "n_response_tokens": 10 + e, **stats,
                        "model": model, "dataset": dataset, "level": level, "correctness": correctness,
                    })  # fmt: skip
    stats = pd.DataFrame(rows)[list(LONG_COLUMNS)]
    stats.loc[0, "sigma_min"] = float("nan")
    return stats


@pytest.mark.slow
def test_our_table_round_trips_through_the_study_layout(tmp_path):
    stats = our_stats()
    paths = export_study_tree(stats, tmp_path / "grads_exp")
    rel = sorted(str(p.relative_to(tmp_path / "grads_exp")) for p in paths)
    assert rel == [
        "cot_500/smollm2-135m-instruct/grads_gsm8k_train_no_cot.jsonl",
        "cot_500_wrong_answer_shuffle/smollm2-135m-instruct/grads_gsm8k_train_with_cot_gpt4o.jsonl",
        "lighteval_math/qwen2_1_5b/grads_algebra_with_cot.jsonl",
        "wiki_popularity_wrong_answer_shuffle/qwen2_1_5b/grads_popular_wikipedia_1000.jsonl",
    ]
    back = import_study_tree(tmp_path / "grads_exp")
    order = ["model", "dataset", "level", "correctness", "example_id", "layer", "module"]
    expected = stats.assign(**dict.fromkeys(STUDY_EXTRAS, float("nan"))).sort_values(order).reset_index(drop=True)
    got = back.sort_values(order).reset_index(drop=True)
    pd.testing.assert_frame_equal(got, expected, check_dtype=False, check_exact=True)


def test_every_statistic_has_a_study_name_or_is_a_named_extra():
    assert set(STUDY_NAMES) | set(STUDY_EXTRAS) == set(MATRIX_STATS) and not set(STUDY_NAMES) & set(STUDY_EXTRAS)
    assert set(STUDY_EXTRAS) == {"effective_rank", "stable_rank"}


def test_export_writes_exactly_the_studys_keys_per_matrix(tmp_path):
    (path, *_) = export_study_tree(our_stats(), tmp_path)
    record = json.loads(path.read_text().splitlines()[0])
    matrices = [v for v in record.values() if isinstance(v, dict)]
    assert matrices and all(list(m) == list(STUDY_KEYS) for m in matrices)


def test_export_refuses_two_variants_in_one_file(tmp_path):
    stats = our_stats()
    clash = stats[stats["dataset"] == "wiki"].assign(dataset="wiki2")
    with pytest.raises(ValueError, match="would both be written"):
        export_study_tree(pd.concat([stats, clash]), tmp_path)


def test_unknown_level_has_no_study_name():
    with pytest.raises(ValueError, match="no study file name"):
        StudyFile("m", "d", "medium", "correct").relpath()


@pytest.mark.parametrize("value", ["", ".", "..", "a/b", "../x", "/abs", "a\\b", "tab\there"])
def test_a_name_that_is_not_one_path_component_is_refused(value):
    from lg_pipeline.io.study_stats import path_component

    with pytest.raises(ValueError, match="path component"):
        path_component(value, "model")
    assert path_component("qwen2-1.5b", "model") == "qwen2-1.5b"


@pytest.mark.parametrize("change, named", [
    (lambda r: {**r, "loss": "1.25"}, "loss is not a number"),
    (lambda r: {**r, "loss": True}, "loss is not a number"),
    (lambda r: {**r, "model.layers.0.self_attn.q_proj.weight": {"S_sum": "big"}}, "S_sum is not a number"),
    (lambda r: {**r, "model.layers.99999999999999999999.self_attn.q_proj.weight": {"S_sum": 1.0}}, "out of range"),
    (lambda r: {**r, "n_tokens": "40"}, "n_tokens is not a token count"),
    (lambda r: [r], "a JSON list, not an object"),
])
def test_a_study_line_with_values_the_study_never_writes_is_named(tmp_path, change, named):
    from lg_pipeline.errors import InputError

    path = tmp_path / "cot_500" / "llama3_8b" / "grads_gsm8k_train_no_cot.jsonl"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(study_line("Q", "A")) + "\n" + json.dumps(change(study_line("Q2", "A2"))) + "\n")
    with pytest.raises(InputError, match=named) as raised:
        read_study_jsonl(path)
    assert f"{path} line 2" in str(raised.value)
