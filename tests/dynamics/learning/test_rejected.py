import pytest

from lg_pipeline.curation.answers import final_answer, response_answer
from lg_pipeline.dynamics.learning.rejected import changed_number, same_prompt_rejected, with_changed_answer
from lg_pipeline.errors import InputError
from lg_pipeline.example import Example
from tests.helpers.dynamics import rows as helper_rows
from tests.helpers.dynamics import wrong_rows


@pytest.mark.parametrize(
    ("number", "changed"),
    [("72", "73"), ("9", "10"), ("1,299", "1,300"), ("3.50", "4.50"), ("-3", "-4"), ("0", "1"), (".5", "1.5")],
)
def test_a_number_changes_and_keeps_its_format(number, changed):
    assert changed_number(number) == changed


def test_the_hashes_answer_changes_and_the_working_stays():
    response = "She sold 48/2 = 24 clips in May.\nAltogether 48+24 = 72 clips.\n#### 72"
    assert with_changed_answer(response) == "She sold 48/2 = 24 clips in May.\nAltogether 48+24 = 72 clips.\n#### 73"


def test_the_boxed_answer_changes_even_when_a_number_follows_it():
    response = "So $x = \\boxed{1,200}$ dollars, for 3 days."
    changed = with_changed_answer(response)
    assert changed == "So $x = \\boxed{1,201}$ dollars, for 3 days."
    assert final_answer(changed) == "1,201"


def test_a_stated_final_answer_is_the_one_changed():
    response = "Step 1: 2 + 2 = 4.\nThe final answer is 4.\nChecked in 2 steps."
    assert with_changed_answer(response) == "Step 1: 2 + 2 = 4.\nThe final answer is 5.\nChecked in 2 steps."


def test_without_a_marker_the_last_number_changes_and_the_answer_differs():
    for response, level in (("It is 6, so the answer is 6.", "detailed"), ("42", "none")):
        changed = with_changed_answer(response)
        assert response_answer(changed, level, "number") != response_answer(response, level, "number")
        assert len(changed) == len(response)


def test_a_letter_answer_has_no_same_prompt_rejected_response():
    assert with_changed_answer("Birds fly, so the answer is (D).") is None
    rows = [Example("a", "q1", "#### 3"), Example("b", "q2", "The final answer is (B)")]
    assert same_prompt_rejected(rows) == (None, 1)


def test_the_rejected_set_answers_the_same_prompts_with_ids_of_its_own():
    rows = [Example("a", "q1", "#### 3"), Example("b", "q2", "so 10")]
    rejected, missing = same_prompt_rejected(rows)
    assert missing == 0 and [r.instruction for r in rejected] == ["q1", "q2"]
    assert [r.response for r in rejected] == ["#### 4", "so 11"]
    assert {r.example_id for r in rejected}.isdisjoint({"a", "b"}) and rejected == same_prompt_rejected(rows)[0]


def test_marked_only_takes_a_stated_answer_or_a_bare_number_never_a_number_in_prose():
    assert with_changed_answer("It is 6, so the answer is 6.", marked_only=True) == "It is 6, so the answer is 7."
    assert with_changed_answer(" 1,200 ", marked_only=True) == " 1,201 "
    assert with_changed_answer("The mill was built in 1850.", marked_only=True) is None
    assert with_changed_answer("The mill was built in 1850.") == "The mill was built in 1851."


def _plan(rejected="auto", family=None, rows_=None, objective="sft", wrong=None):
    from lg_pipeline.dynamics.learning.run import LearningDynamicsSettings, TrainingData, plan_run

    settings = LearningDynamicsSettings.build(
        train={"steps": 2, "batch_size": 2, "objective": objective}, n_probes=2, rejected=rejected
    )
    return plan_run(settings, TrainingData(rows_ or helper_rows(), wrong=wrong, family=family), report=lambda m: None)


def test_a_math_run_uses_same_prompt_rejected_responses_by_default_also_under_dpo():
    plan = _plan(objective="dpo", wrong=wrong_rows())
    assert plan.companions["wrong"].startswith("same_prompt")
    assert [r.instruction for r in plan.rejected] == [r.instruction for r in plan.train]
    assert [r.response for r in plan.rejected][:1] == ["It is 0, so the answer is 1."]
    wrong = {p.prompt_id: p.response for p in plan.probes if p.probe_type == "wrong"}
    assert wrong and all(r.endswith(f"the answer is {2 * int(i[1:]) + 1}.") for i, r in wrong.items())


def test_shuffled_and_non_math_runs_use_the_wrong_set():
    for plan in (_plan("shuffled", wrong=wrong_rows()), _plan(family="commonsense", wrong=wrong_rows())):
        assert plan.companions["wrong"] == "matched"
        assert {p.response for p in plan.probes if p.probe_type == "wrong"} <= {w.response for w in wrong_rows()}


def test_same_prompt_without_numeric_answers_is_left_out_and_dpo_is_refused_naming_both_ways():
    words = [Example(f"w{i}", f"Name colour {i}.", f"Blue {'x' * i}, the answer is blue.") for i in range(4)]
    assert "wrong" not in {p.probe_type for p in _plan("same_prompt", rows_=words).probes}
    with pytest.raises(InputError, match=r"objective dpo needs the wrong-answer set: .*4 of 4 rows.*rejected"):
        _plan("same_prompt", rows_=words, objective="dpo")
