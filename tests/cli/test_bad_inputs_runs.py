"""Every bad input of the run commands (`dynamics`, `zero-shot`, and what `gradients` checks before loading): one line
naming it, exit 2, the inputs and every finished output unchanged, the message on its own line, no temp file named."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from lg_pipeline.cli import main
from tests.helpers.tiny_models import save_tiny_model

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("single_thread")]  # its fixture trains two tiny runs

ROWS = [
    {"instruction": "What is 2+2?", "output": "2+2 is four."},
    {"instruction": "Name a colour.", "output": "Blue, like the sky at noon."},
    {"instruction": "Say hi.", "output": "Hi there!"},
]
ZERO_SHOT = {
    "--train-tasks": "gcd,lcm", "--test-tasks": "chain_sum", "--per-task": "1", "--per-test-task": "1",
    "--batch-size": "2", "--eval-every": "1", "--embedder": "model", "--orderings": "rt",
}


def _write(path: Path, content: bytes | str) -> Path:
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    """A tiny model, good data files, and a finished dynamics run and zero-shot run made from them."""
    root = tmp_path_factory.mktemp("bad-run-inputs")
    model = save_tiny_model(root / "tiny", layers=2)
    data = _write(root / "data.json", json.dumps(ROWS))
    dynamics, zero_shot = root / "dynamics", root / "zero-shot"
    assert main(["dynamics", "--model", str(model), "--data", str(data), "--out", str(dynamics), "--steps", "1",
                 "--eval-every", "1", "--n-probes", "1"]) == 0
    flags = [x for kv in ZERO_SHOT.items() for x in kv]
    assert main(["zero-shot", "--model", str(model), *flags, "--out", str(zero_shot)]) == 0
    t5 = root / "t5"
    t5.mkdir()
    _write(t5 / "config.json", json.dumps({"model_type": "t5"}))
    return {"root": root, "model": model, "data": data, "dynamics": dynamics, "zero_shot": zero_shot, "t5": t5}


def _cases(w: dict[str, Path]) -> dict[str, tuple[list[str], str]]:
    r, model, data, finished_d, finished_z = w["root"], w["model"], w["data"], w["dynamics"], w["zero_shot"]
    latin1 = _write(r / "latin1.json", '[{"instruction": "café", "output": "thé"}]'.encode("latin-1"))
    nested = _write(r / "nested.json", b"[" * 100_000 + b"]" * 100_000)
    empty = _write(r / "empty.json", "[]")
    a_dict = _write(r / "dict.json", json.dumps(ROWS[0]))
    no_output = _write(r / "no-output.json", json.dumps([ROWS[0], {"instruction": "x"}]))
    blank = _write(r / "blank.json", json.dumps([{"instruction": "x", "output": "  "}]))
    broken = _write(r / "broken.json", '[{"instruction": ')
    other_rows = _write(r / "other-rows.json", json.dumps([{"instruction": f"q{i}", "output": "a"} for i in range(3)]))
    notes = _write(r / "notes.txt", "my notes")
    crowded = r / "crowded"
    crowded.mkdir(exist_ok=True)
    _write(crowded / "thesis.tex", "mine")
    probes_dict = _write(r / "probes-dict.json", json.dumps({"prompt_id": "x", "type": "t", "response": "r"}))
    probes_no_response = _write(r / "probes-no-response.json", json.dumps([{"prompt_id": "x", "type": "t"}]))
    probes_unknown_prompt = _write(
        r / "probes-unknown-prompt.json", json.dumps([{"prompt_id": "no-such-row", "type": "t", "response": "r"}])
    )
    three = _write(r / "three.json", json.dumps([{"instruction": f"q{i}", "output": f"a{i}"} for i in range(3)]))
    link = r / "link-to-notes"
    if not link.is_symlink():
        link.symlink_to(notes)

    def d(*extra: str, out: Path = finished_d, data_file: Path = data) -> list[str]:
        return ["dynamics", "--model", str(model), "--data", str(data_file), "--out", str(out), "--n-probes", "1",
                *extra]

    def z(*extra: str, out: Path = finished_z, **overrides: str) -> list[str]:
        flags = {"--model": str(model), **ZERO_SHOT, "--out": str(out), **overrides}
        return ["zero-shot", *(x for kv in flags.items() for x in kv), *extra]

    def g(*extra: str) -> list[str]:
        return ["gradients", "--model", str(model), "--data", str(data), "--out", str(r / "new.parquet"), *extra]

    return {
        # dynamics: the data files
        "dynamics data missing": (d(data_file=r / "nope.json"), f"not found: {r / 'nope.json'}"),
        "dynamics data a directory": (d(data_file=r), f"{r}: is a directory"),
        "dynamics data latin-1": (d(data_file=latin1), f"{latin1}: not UTF-8"),
        "dynamics data nested 100000 deep": (d(data_file=nested), f"{nested}: JSON nested too deeply"),
        "dynamics data an empty list": (d(data_file=empty), f"{empty}: no examples"),
        "dynamics data an object": (d(data_file=a_dict), f"{a_dict}: expected a JSON list of objects, got dict"),
        "dynamics data a row without output": (d(data_file=no_output), f"{no_output} row 1: missing field 'output'"),
        "dynamics data an empty response": (d(data_file=blank), f"{blank} row 0: empty response"),
        "dynamics data broken JSON": (d(data_file=broken), f"{broken}: not valid JSON"),
        "dynamics --also without a level": (d("--also", str(data)), f"--also: '{data}' is not LEVEL=FILE.json"),
        "dynamics --also with an empty level": (d("--also", f"={data}"), "is not LEVEL=FILE.json"),
        "dynamics --also a missing file": (d("--also", f"detailed={r / 'gone.json'}"), f"not found: {r / 'gone.json'}"),
        "dynamics --also a directory": (d("--also", f"detailed={r}"), f"{r}: is a directory"),
        "dynamics --also broken JSON": (d("--also", f"detailed={broken}"), f"{broken}: not valid JSON"),
        "dynamics --wrong missing": (d("--wrong", str(r / "gone.json")), f"not found: {r / 'gone.json'}"),
        "dynamics --wrong latin-1": (d("--wrong", str(latin1)), f"{latin1}: not UTF-8"),
        "dynamics --objective dpo without --wrong": (d("--objective", "dpo"), "--objective dpo needs --wrong"),
        "dynamics --objective dpo with another rows' --wrong": (
            d("--objective", "dpo", "--wrong", str(other_rows)), "--objective dpo needs --wrong"
        ),
        "dynamics --probes missing": (d("--probes", str(r / "gone.json")), f"probe file not found: {r / 'gone.json'}"),
        "dynamics --probes broken JSON": (d("--probes", str(broken)), f"{broken}: not valid JSON"),
        "dynamics --probes an object": (
            d("--probes", str(probes_dict)), f"--probes {probes_dict}: expected a JSON list of {{prompt_id, type"
        ),
        "dynamics --probes a row without response": (
            d("--probes", str(probes_no_response)), f"--probes {probes_no_response} row 0: missing field 'response'"
        ),
        "dynamics --probes an unknown prompt_id": (
            d("--probes", str(probes_unknown_prompt)),
            f"--probes {probes_unknown_prompt} row 0: prompt_id 'no-such-row' is not an example_id",
        ),
        "dynamics --rejected sometimes": (d("--rejected", "sometimes"), "argument --rejected: invalid choice"),
        "dynamics --teacher openai without a model": (d("--teacher", "openai"), "the openai teacher needs a model"),
        "dynamics --teacher openai over plain http": (
            d("--teacher", "openai", "--teacher-model", "m", "--teacher-base-url", "http://example.com/v1"),
            "must use https (plain http only for localhost)",
        ),
        # dynamics: the settings
        "dynamics --steps 0": (d("--steps", "0"), "--steps: give a positive number of steps"),
        "dynamics --steps -3": (d("--steps", "-3"), "--steps: give a positive number of steps"),
        "dynamics --steps abc": (d("--steps", "abc"), "argument --steps: invalid int value: 'abc'"),
        "dynamics --eval-every 0": (d("--eval-every", "0"), "--eval-every: must be an integer at least 1, got 0"),
        "dynamics --eval-every -1": (d("--eval-every", "-1"), "--eval-every: must be an integer at least 1, got -1"),
        "dynamics --lr 0": (d("--lr", "0"), "--lr: must be a finite number above 0, got 0.0"),
        "dynamics --lr -1": (d("--lr", "-1"), "--lr: must be a finite number above 0, got -1.0"),
        "dynamics --lr inf": (d("--lr", "inf"), "--lr: must be a finite number above 0, got inf"),
        "dynamics --lr nan": (d("--lr", "nan"), "--lr: must be a finite number above 0, got nan"),
        "dynamics --lr abc": (d("--lr", "abc"), "argument --lr: invalid float value: 'abc'"),
        "dynamics --batch-size 0": (d("--batch-size", "0"), "--batch-size: must be an integer at least 1, got 0"),
        "dynamics --batch-size -2": (d("--batch-size", "-2"), "--batch-size: must be an integer at least 1, got -2"),
        "dynamics --n-probes 0": (d("--n-probes", "0"), "--n-probes: must be an integer at least 1, got 0"),
        "dynamics --n-probes 7": (d("--n-probes", "7"), "--n-probes: 7 probes but the training data has 3 rows"),
        "dynamics --max-length 1": (d("--max-length", "1"), "--max-length: must be an integer at least 2, got 1"),
        "dynamics --max-length -5": (d("--max-length", "-5"), "--max-length: must be an integer at least 2, got -5"),
        "dynamics --seed -1": (d("--seed", "-1"), "--seed: must be an integer from 0 to 4294967295, got -1"),
        "dynamics --seed 2^32": (d("--seed", str(2**32)), "--seed: must be an integer from 0 to 4294967295"),
        "dynamics --optimizer lion": (d("--optimizer", "lion"), "argument --optimizer: invalid choice: 'lion'"),
        "dynamics --objective ppo": (d("--objective", "ppo"), "argument --objective: invalid choice: 'ppo'"),
        "dynamics --trainable some": (d("--trainable", "some"), "argument --trainable: invalid choice: 'some'"),
        "dynamics two bad settings at once": (d("--lr", "-1", "--steps", "0"), "--lr: must be a finite number above "
                                              "0, got -1.0; --steps: give a positive number of steps"),
        "dynamics --dtype float16": (d("--dtype", "float16"), "--dtype float16: gradients underflow"),
        "dynamics --dtype int8": (d("--dtype", "int8"), "--dtype: must be one of float32, bfloat16, float16"),
        "dynamics --device cuda without CUDA": (d("--device", "cuda"), "CUDA is not available"),
        "dynamics --device tpu": (d("--device", "tpu"), "device must be cpu, cuda or cuda:N, got 'tpu'"),
        # dynamics: the output and the model
        "dynamics --out a text file": (d(out=notes), f"{notes}: is a file, not a folder for a dynamics run"),
        "dynamics --out the data file": (d(out=data), f"{data}: is a file, not a folder for a dynamics run"),
        "dynamics --out /dev/null": (d(out=Path("/dev/null")), "/dev/null: is a file, not a folder"),
        "dynamics --out a symlink to a file": (d(out=link), f"{link}: is a symlink to something that is not a folder"),
        "dynamics --out under a file": (d(out=notes / "run"), f"{notes / 'run'}: {notes} is not a folder"),
        "dynamics --out a folder of other files": (
            d(out=crowded), f"{crowded}: holds 'thesis.tex', which is not a file of a dynamics run"
        ),
        "dynamics --out a zero-shot run": (d(out=finished_z), "which is not a file of a dynamics run"),
        "dynamics --model unknown": (d()[:2] + ["no-such-model-7b"] + d()[3:], "unknown model 'no-such-model-7b'"),
        "dynamics --model a file": (d()[:2] + [str(data)] + d()[3:], "is a file, not a transformers folder"),
        "dynamics --model a t5 folder": (d()[:2] + [str(w["t5"])] + d()[3:], "unknown architecture 't5'"),
        # zero-shot: the split
        "zero-shot without --model": (z()[:1] + z()[3:], "--model is required (or --list-tasks)"),
        "zero-shot without --out": (z()[:-2], "--out is required (or --list-tasks)"),
        "zero-shot --train-tasks ','": (z(**{"--train-tasks": ","}), "--train-tasks: no task given"),
        "zero-shot --test-tasks ','": (z(**{"--test-tasks": ","}), "--test-tasks: no task given"),
        "zero-shot a task in both lists": (
            z(**{"--test-tasks": "gcd"}), "task 'gcd' is in both --train-tasks and --test-tasks"
        ),
        "zero-shot a task given twice": (z(**{"--train-tasks": "gcd,gcd"}), "--train-tasks: task 'gcd' is given twice"),
        "zero-shot an unknown training task": (
            z(**{"--train-tasks": "gcd,no_such_task"}), "--train-tasks: unknown task 'no_such_task'"
        ),
        "zero-shot an unknown test task": (z(**{"--test-tasks": "nope"}), "--test-tasks: unknown task 'nope'"),
        "zero-shot a task file missing": (
            z(**{"--train-tasks": f"gcd,mine={r / 'gone.json'}"}), f"not found: {r / 'gone.json'}"
        ),
        "zero-shot a task file of broken JSON": (z(**{"--train-tasks": f"gcd,mine={broken}"}), f"{broken}: not valid"),
        "zero-shot a task file too short": (
            z(**{"--train-tasks": f"gcd,three={three}", "--per-task": "4"}), "task 'three' has 3 item(s), 4 asked"
        ),
        "zero-shot a task with an empty file name": (z(**{"--train-tasks": "gcd,mine="}), "expected a task name or"),
        "zero-shot --per-task 0": (z(**{"--per-task": "0"}), "--per-task: must be an integer at least 1, got 0"),
        "zero-shot --per-test-task 0": (z(**{"--per-test-task": "0"}), "--per-test-task: must be an integer at least"),
        "zero-shot --per-task abc": (z(**{"--per-task": "abc"}), "argument --per-task: invalid int value: 'abc'"),
        "zero-shot --level expert": (z("--level", "expert"), "argument --level: invalid choice: 'expert'"),
        # zero-shot: the settings
        "zero-shot an unknown ordering": (z(**{"--orderings": "rt,backwards"}), "--orderings: unknown ordering"),
        "zero-shot no ordering": (z(**{"--orderings": ","}), "--orderings: no ordering given"),
        "zero-shot --eval-every 0": (z(**{"--eval-every": "0"}), "--eval-every: must be an integer at least 1, got 0"),
        "zero-shot --eval-every -2": (z(**{"--eval-every": "-2"}), "--eval-every: must be an integer at least 1"),
        "zero-shot --lr 0": (z("--lr", "0"), "--lr: must be a finite number above 0, got 0.0"),
        "zero-shot --lr -1": (z("--lr", "-1"), "--lr: must be a finite number above 0, got -1.0"),
        "zero-shot --lr inf": (z("--lr", "inf"), "--lr: must be a finite number above 0, got inf"),
        "zero-shot --lr nan": (z("--lr", "nan"), "--lr: must be a finite number above 0, got nan"),
        "zero-shot --batch-size 0": (z(**{"--batch-size": "0"}), "--batch-size: must be an integer at least 1"),
        "zero-shot --embedder bert": (z(**{"--embedder": "bert"}), "--embedder: must be one of minilm, model"),
        "zero-shot --optimizer lion": (z("--optimizer", "lion"), "--optimizer: must be one of sgd, adamw"),
        "zero-shot --trainable some": (z("--trainable", "some"), "argument --trainable: invalid choice: 'some'"),
        "zero-shot --targets ''": (z("--targets", ""), "--targets: no module suffix given"),
        "zero-shot --max-length 1": (z("--max-length", "1"), "--max-length: must be an integer at least 2, got 1"),
        "zero-shot --seed -1": (z("--seed", "-1"), "--seed: must be an integer from 0 to 4294967295, got -1"),
        "zero-shot two bad settings at once": (
            z("--lr", "0", **{"--eval-every": "0"}), "--lr: must be a finite number above 0, got 0.0; "
        ),
        "zero-shot --dtype float16": (z("--dtype", "float16"), "--dtype float16: gradients underflow"),
        "zero-shot --device cuda without CUDA": (z("--device", "cuda"), "CUDA is not available"),
        # zero-shot: the output and the model
        "zero-shot --out a text file": (z(out=notes), f"{notes}: is a file, not a folder for a zero_shot run"),
        "zero-shot --out /dev/null": (z(out=Path("/dev/null")), "/dev/null: is a file, not a folder"),
        "zero-shot --out under a file": (z(out=notes / "run"), f"{notes / 'run'}: {notes} is not a folder"),
        "zero-shot --out a folder of other files": (z(out=crowded), f"{crowded}: holds 'thesis.tex'"),
        "zero-shot --out a dynamics run": (z(out=finished_d), "which is not a file of a zero_shot run"),
        "zero-shot --model unknown": (z(**{"--model": "no-such-model-7b"}), "unknown model 'no-such-model-7b'"),
        # gradients: checked before the model loads
        "gradients --dtype float16": (g("--dtype", "float16"), "--dtype float16: gradients underflow"),
        "gradients --dtype int8": (g("--dtype", "int8"), "--dtype: must be one of float32, bfloat16, float16"),
        "gradients --batch-size abc": (g("--batch-size", "abc"), "argument --batch-size: invalid int value: 'abc'"),
        "gradients two bad settings at once": (
            g("--batch-size", "0", "--max-length", "1"), "--batch-size must be at least 1, got 0; --max-length must"
        ),
    }


CASE_IDS = [
    "dynamics data missing", "dynamics data a directory", "dynamics data latin-1", "dynamics data nested 100000 deep",
    "dynamics data an empty list", "dynamics data an object", "dynamics data a row without output",
    "dynamics data an empty response", "dynamics data broken JSON", "dynamics --also without a level",
    "dynamics --also with an empty level", "dynamics --also a missing file", "dynamics --also a directory",
    "dynamics --also broken JSON", "dynamics --wrong missing", "dynamics --wrong latin-1",
    "dynamics --objective dpo without --wrong", "dynamics --objective dpo with another rows' --wrong",
    "dynamics --probes missing", "dynamics --probes broken JSON", "dynamics --probes an object",
    "dynamics --probes a row without response", "dynamics --probes an unknown prompt_id",
    "dynamics --rejected sometimes", "dynamics --teacher openai without a model",
    "dynamics --teacher openai over plain http",
    "dynamics --steps 0", "dynamics --steps -3", "dynamics --steps abc", "dynamics --eval-every 0",
    "dynamics --eval-every -1", "dynamics --lr 0", "dynamics --lr -1", "dynamics --lr inf", "dynamics --lr nan",
    "dynamics --lr abc", "dynamics --batch-size 0", "dynamics --batch-size -2", "dynamics --n-probes 0",
    "dynamics --n-probes 7", "dynamics --max-length 1", "dynamics --max-length -5", "dynamics --seed -1",
    "dynamics --seed 2^32", "dynamics --optimizer lion", "dynamics --objective ppo", "dynamics --trainable some",
    "dynamics two bad settings at once", "dynamics --dtype float16", "dynamics --dtype int8",
    "dynamics --device cuda without CUDA", "dynamics --device tpu", "dynamics --out a text file",
    "dynamics --out the data file", "dynamics --out /dev/null", "dynamics --out a symlink to a file",
    "dynamics --out under a file", "dynamics --out a folder of other files", "dynamics --out a zero-shot run",
    "dynamics --model unknown", "dynamics --model a file", "dynamics --model a t5 folder",
    "zero-shot without --model", "zero-shot without --out", "zero-shot --train-tasks ','",
    "zero-shot --test-tasks ','", "zero-shot a task in both lists", "zero-shot a task given twice",
    "zero-shot an unknown training task", "zero-shot an unknown test task", "zero-shot a task file missing",
    "zero-shot a task file of broken JSON", "zero-shot a task file too short",
    "zero-shot a task with an empty file name", "zero-shot --per-task 0", "zero-shot --per-test-task 0",
    "zero-shot --per-task abc", "zero-shot --level expert", "zero-shot an unknown ordering", "zero-shot no ordering",
    "zero-shot --eval-every 0", "zero-shot --eval-every -2", "zero-shot --lr 0", "zero-shot --lr -1",
    "zero-shot --lr inf", "zero-shot --lr nan", "zero-shot --batch-size 0", "zero-shot --embedder bert",
    "zero-shot --optimizer lion", "zero-shot --trainable some", "zero-shot --targets ''", "zero-shot --max-length 1",
    "zero-shot --seed -1", "zero-shot two bad settings at once", "zero-shot --dtype float16",
    "zero-shot --device cuda without CUDA", "zero-shot --out a text file", "zero-shot --out /dev/null",
    "zero-shot --out under a file", "zero-shot --out a folder of other files", "zero-shot --out a dynamics run",
    "zero-shot --model unknown", "gradients --dtype float16", "gradients --dtype int8", "gradients --batch-size abc",
    "gradients two bad settings at once",
]


def _digests(paths: list[Path]) -> dict[Path, str | None]:
    """Every file under each path (a folder: all its files), hashed; None for a missing path."""
    out: dict[Path, str | None] = {}
    for path in paths:
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            out[file] = hashlib.sha256(file.read_bytes()).hexdigest() if file.is_file() else None
    return out


def _paths(args: list[str]) -> list[Path]:
    found = []
    for arg in args:
        for part in arg.replace("=", ",").split(","):
            if os.sep in part and not part.startswith("-") and (Path(part).exists() or Path(part).is_symlink()):
                found.append(Path(part))
    return [p for p in found if p != Path("/dev/null")]


def test_the_cases_are_listed_once_and_at_least_fifty():
    assert len(CASE_IDS) == len(set(CASE_IDS)) >= 50


@pytest.mark.parametrize("case", CASE_IDS)
def test_bad_input_is_one_line_exit_2_and_nothing_touched(world, capsys, case):
    args, fragment = _cases(world)[case]
    watched = [*_paths(args), world["dynamics"], world["zero_shot"], world["data"]]
    before = _digests(watched)
    listed = {p: sorted(q.name for q in p.iterdir()) for p in watched if p.is_dir() and not p.is_symlink()}
    assert main(args) == 2
    captured = capsys.readouterr()
    lines = (captured.out + captured.err).replace("\r", "\n").splitlines()
    errors = [line for line in lines if "error" in line]
    assert len(errors) == 1 and errors[0].startswith("lg-pipeline: error: "), errors  # on a line of its own
    assert fragment in errors[0], errors[0]
    assert ".tmp" not in errors[0] and "Traceback" not in captured.err
    assert _digests(watched) == before
    assert {p: sorted(q.name for q in p.iterdir()) for p in listed} == listed, "a file was created or removed"
