"""Examples and their ids: content ids, and repeated ids numbered without collisions."""

from __future__ import annotations

import pytest

from lg_pipeline.errors import InputError
from lg_pipeline.example import Example, dedupe_ids, example_from_row, number_repeats, stable_id


def test_repeats_are_numbered_and_never_collide_with_an_explicit_id():
    assert number_repeats(["x", "y", "x", "x"]) == ["x", "y", "x-1", "x-2"]
    assert number_repeats(["X", "X", "X-1"]) == ["X", "X-2", "X-1"]  # three rows stay three examples


def test_identical_rows_stay_separate_examples():
    rows = [Example("a", "q", "r"), Example("a", "q", "r")]
    assert [e.example_id for e in dedupe_ids(rows)] == ["a", "a-1"]


def test_ids_depend_on_content_only():
    one = example_from_row({"instruction": "q", "input": "", "output": "r"}, "f row 0")
    assert one.example_id == stable_id("q", "r") and one == example_from_row({"instruction": "q", "output": "r"}, "x")


@pytest.mark.parametrize(
    "row, fragment",
    [
        ([], "expected an object"),
        ({"output": "r"}, "missing field 'instruction'"),
        ({"instruction": "q", "output": " "}, "empty"),
    ],
)
def test_bad_rows_are_named(row, fragment):
    with pytest.raises(InputError, match=fragment):
        example_from_row(row, "data.json row 3")
