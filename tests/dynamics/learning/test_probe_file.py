import json

import pytest

from lg_pipeline.dynamics.learning.probe_file import load_probe_file, merged
from lg_pipeline.dynamics.learning.probes import build_probes
from lg_pipeline.errors import InputError
from tests.helpers.dynamics import rows


def _file(tmp_path, content) -> str:
    path = tmp_path / "probes.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return str(path)


def test_own_probes_take_the_rows_prompt_and_keep_their_type(tmp_path):
    data = rows()
    own = [{"prompt_id": "e3", "type": "chosen_rephrase:semantic", "response": "Six, since 3 and 3 make 6."}]
    (probe,) = load_probe_file(_file(tmp_path, own), data)
    assert (probe.prompt_id, probe.probe_type, probe.instruction) == ("e3", own[0]["type"], data[3].instruction)
    assert probe.response == "Six, since 3 and 3 make 6."


def test_a_probe_the_run_draws_anyway_is_followed_once(tmp_path):
    data = rows()
    drawn = build_probes(data, 2, 2, seed=0)
    trained = next(p for p in drawn if p.probe_type == "trained")
    own = load_probe_file(_file(tmp_path, [
        {"prompt_id": trained.prompt_id, "type": "trained", "response": trained.response},
        {"prompt_id": "e7", "type": "mine", "response": "fourteen"},
    ]), data)
    together = merged(drawn, own)
    assert len(together) == len(drawn) + 1 and together[-1].probe_type == "mine"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ({"prompt_id": "e1"}, "expected a JSON list of {prompt_id, type, response} objects, got dict"),
        ([], "no probes (an empty list)"),
        (["e1"], "row 0: expected an object with prompt_id, type, response, got str"),
        ([{"prompt_id": "e1", "type": "t"}], "row 0: missing field 'response'"),
        ([{"prompt_id": "e1", "type": " ", "response": "r"}], "row 0: 'type' must be a non-empty string"),
        ([{"prompt_id": "e1", "type": "t", "response": 3}], "row 0: 'response' must be a non-empty string"),
        ([{"prompt_id": "e1", "type": "t", "response": "r", "note": 1}], "row 0: unknown field 'note'"),
        (
            [{"prompt_id": "e1", "type": "t", "response": "r"}, {"prompt_id": "zz", "type": "t", "response": "r"}],
            "row 1: prompt_id 'zz' is not an example_id of the training data",
        ),
        ([{"prompt_id": "e1", "type": "t", "response": "r"}] * 2, "row 1: the same probe as row 0"),
        ('[{"prompt_id": ', "not valid JSON"),
    ],
)
def test_a_bad_probe_file_is_one_line_naming_the_file_and_the_row(tmp_path, content, expected):
    path = _file(tmp_path, content)
    with pytest.raises(InputError) as caught:
        load_probe_file(path, rows(), f"--probes {path}")
    message = str(caught.value)
    assert "\n" not in message and expected in message and path in message


def test_a_missing_probe_file_is_named(tmp_path):
    with pytest.raises(InputError, match="probe file not found"):
        load_probe_file(tmp_path / "nope.json", rows())
