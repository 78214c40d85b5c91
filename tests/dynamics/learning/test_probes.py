import pytest

from lg_pipeline.dynamics.learning.probes import (
    IRRELEVANT_TEXT,
    build_probes,
    matched,
    missing_instructions,
    trained_rows,
)
from lg_pipeline.errors import InputError
from lg_pipeline.example import Example
from tests.helpers.dynamics import rows, wrong_rows


def test_trained_prompts_get_every_probe_type_and_held_out_prompts_their_own_response():
    detailed = [Example(e.example_id, e.instruction, "Step by step: " + e.response) for e in rows()]
    probes = build_probes(rows(), 4, 4, seed=3, other_levels={"detailed": detailed}, wrong=wrong_rows())
    trained = [p for p in probes if p.probe_type == "trained"]
    held = [p for p in probes if p.probe_type == "held_out"]
    assert len(trained) == 2 and len(held) == 2
    assert all(int(p.prompt_id[1:]) < 4 for p in trained) and all(int(p.prompt_id[1:]) >= 4 for p in held)
    for t in trained:
        mine = {p.probe_type: p for p in probes if p.prompt_id == t.prompt_id}
        assert set(mine) == {"trained", "other_level:detailed", "wrong", "other_prompt", "shuffled_words", "irrelevant"}
        assert mine["other_level:detailed"].response.startswith("Step by step")
        assert mine["irrelevant"].response == IRRELEVANT_TEXT
        assert sorted(mine["shuffled_words"].response.split()) == sorted(t.response.split())
        assert mine["other_prompt"].response != t.response and all(
            p.instruction == t.instruction for p in mine.values()
        )
    assert len({p.probe_id for p in probes}) == len(probes)
    assert build_probes(rows(), 4, 4, seed=3, wrong=wrong_rows()) == build_probes(
        rows(), 4, 4, seed=3, wrong=wrong_rows()
    )


def test_a_one_word_answer_gets_no_shuffled_probe():
    data = [Example(f"e{i}", f"q{i}", str(i)) for i in range(4)]
    assert "shuffled_words" not in {p.probe_type for p in build_probes(data, 2, 2)}


def test_more_probes_than_rows_name_the_setting():
    with pytest.raises(InputError, match="n_probes: 9 probes but the training data has 8 rows"):
        build_probes(rows(), 9, 4)


def test_companion_sets_are_matched_by_instruction_in_any_order():
    shifted = rows()[1:] + rows()[:1]
    assert matched(rows(), shifted) == rows()
    assert matched(rows(4), wrong_rows(8)) == wrong_rows(4)  # rows of other instructions are ignored
    assert matched(rows(), rows(7)) is None and missing_instructions(rows(), rows(7)) == 1


def test_trained_rows_counts_the_rows_an_in_order_run_sees():
    assert trained_rows(10, 3, 2) == 6 and trained_rows(4, 3, 2) == 4


def test_a_short_run_holds_out_more_prompts():
    probes = build_probes(rows(), 6, 2)
    assert sum(p.probe_type == "trained" for p in probes) == 2
    assert sum(p.probe_type == "held_out" for p in probes) == 4


def test_a_small_table_keeps_rows_back_for_held_out_probes():
    from lg_pipeline.dynamics.learning.probes import rows_to_train

    assert rows_to_train(4, 2, 10, 1) == 3  # the demo's 4 curated rows: 3 trained, 1 held out
    assert rows_to_train(500, 6, 10, 2) == 20
    probes = build_probes(rows(4), 2, rows_to_train(4, 2, 10, 1))
    assert {p.probe_type for p in probes} >= {"trained", "held_out"}
