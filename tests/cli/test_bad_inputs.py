"""Every bad input: one line naming it, exit 2, the input and any finished output unchanged."""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path

import pytest

from lg_pipeline.cli import main
from tests.helpers.builders import make_tokenizer
from tests.helpers.tiny_models import save_tiny_model

pytestmark = pytest.mark.usefixtures("single_thread")

ROWS = [
    {"instruction": "What is 2+2?", "output": "2+2 is four."},
    {"instruction": "Name a colour.", "output": "Blue, like the sky at noon."},
]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    """A tiny model, a good data file and a finished statistics table computed from them."""
    root = tmp_path_factory.mktemp("bad-inputs")
    model = save_tiny_model(root / "tiny", layers=2)
    data = root / "data.json"
    data.write_text(json.dumps(ROWS))
    finished = root / "finished.parquet"
    assert main(["gradients", "--model", str(model), "--data", str(data), "--out", str(finished)]) == 0
    t5 = root / "t5"
    t5.mkdir()
    (t5 / "config.json").write_text(json.dumps({"model_type": "t5"}))
    empty = root / "empty-weights"
    make_tokenizer().save_pretrained(empty)
    (empty / "config.json").write_text((model / "config.json").read_text())
    (empty / "model.safetensors").write_bytes(b"")
    torn = root / "torn-weights"
    make_tokenizer().save_pretrained(torn)
    (torn / "config.json").write_text((model / "config.json").read_text())
    (torn / "model.safetensors").write_bytes(struct.pack("<Q", 10_000) + b"{")
    return {"model": model, "data": data, "finished": finished, "root": root, "t5": t5, "empty": empty, "torn": torn}


def _file(root: Path, name: str, content: bytes) -> Path:
    path = root / name
    path.write_bytes(content)
    return path


# (case id, how to build --data/--out/--model and extra args, expected message fragment)
def _cases(w: dict[str, Path]) -> dict[str, tuple[list[str], str]]:
    r, model, data, finished = w["root"], w["model"], w["data"], w["finished"]
    new = r / "new.parquet"
    latin1 = _file(r, "latin1.json", '[{"instruction": "café", "output": "thé"}]'.encode("latin-1"))
    nested = _file(r, "nested.json", b"[" * 100_000 + b"]" * 100_000)
    empty_list = _file(r, "empty.json", b"[]")
    text_out = _file(r, "notes.parquet", b"my notes, not a table\n")
    other_parquet = r / "other.parquet"
    import pandas as pd

    pd.DataFrame({"a": [1]}).to_parquet(other_parquet)

    def g(d=data, o=finished, m=model, *extra):
        return ["gradients", "--model", str(m), "--data", str(d), "--out", str(o), *extra]

    return {
        "data latin-1": (g(latin1, new), "not UTF-8"),
        "data nested 100000 deep": (g(nested, new), "nested too deeply"),
        "data a directory": (g(r, new), "is a directory"),
        "data an empty list": (g(empty_list, new), "no examples"),
        "data missing": (g(r / "nope.json", new), "not found"),
        "limit 0 on a new output": (g(data, new, model, "--limit", "0"), "--limit must be at least 1"),
        "limit 0 on a finished output": (g(data, finished, model, "--limit", "0"), "--limit must be at least 1"),
        "limit -1": (g(data, finished, model, "--limit", "-1"), "--limit must be at least 1"),
        "max-length -1": (g(data, finished, model, "--max-length", "-1"), "--max-length must be at least 2"),
        "batch-size 0": (g(data, finished, model, "--batch-size", "0"), "--batch-size must be at least 1"),
        "batch-size -3": (g(data, finished, model, "--batch-size", "-3"), "--batch-size must be at least 1"),
        "max-batch-tokens 0": (
            g(data, finished, model, "--max-batch-tokens", "0"), "--max-batch-tokens must be at least 1"
        ),
        "out an existing text file": (g(data, text_out), "not a Parquet table"),
        "out another parquet table": (g(data, other_parquet), "not a statistics table"),
        "out the data file": (g(data, data), "must be a .parquet"),
        "out the data file named .parquet": (g(_file(r, "data.parquet", data.read_bytes()), r / "data.parquet"),
                                             "is the input file"),
        "out a directory": (g(data, _dir(r / "dir.parquet")), "is a directory"),
        "out /dev/null": (g(data, Path("/dev/null")), "must be a .parquet"),
        "out a device named .parquet": (g(data, _link(r / "dev.parquet", "/dev/null")), "not a regular file"),
        "model a t5 folder": (g(data, new, w["t5"]), "unknown architecture 't5'"),
        "model with 0-byte weights": (g(data, new, w["empty"]), "is empty (0 bytes)"),
        "model with torn weights": (g(data, new, w["torn"]), "not a complete safetensors file"),
        "model a file": (g(data, new, data), "is a file, not a transformers folder"),
        "device cuda without CUDA": (g(data, new, model, "--device", "cuda"), "CUDA is not available"),
        "targets matching nothing": (g(data, new, model, "--targets", "fc9"), "no linear layer"),
        "models add 0-byte weights": (["models", "add", "x", "--source", "local", "--path", str(w["empty"]),
                                       "--catalog", str(_catalog(r))], "is empty (0 bytes)"),
        "models add --path a file": (["models", "add", "x", "--source", "local", "--path", str(data),
                                      "--catalog", str(_catalog(r))], "is a file, not a transformers folder"),
        "models add --file ../../etc/passwd": (["models", "add", "x", "--source", "packaged_gguf", "--package",
                                                "json", "--file", "../../../../../../../../etc/passwd",
                                                "--catalog", str(_catalog(r))], "must be a plain .gguf file name"),
        "models add --catalog malformed YAML": (["models", "add", "x", "--source", "local", "--path", str(model),
                                                 "--catalog", str(_file(r, "bad.yaml", b"models: [unclosed\n"))],
                                                "not valid YAML"),
        "validate a missing table": (["validate", str(r / "missing.parquet")], "not found"),
        "validate a text file": (["validate", str(text_out)], "not a readable Parquet table"),
    }


def _dir(path: Path) -> Path:
    path.mkdir(exist_ok=True)
    return path


def _link(path: Path, target: str) -> Path:
    if not path.is_symlink():
        path.symlink_to(target)
    return path


def _catalog(root: Path) -> Path:
    path = root / "catalog.yaml"
    if not path.exists():
        path.write_text("# models\nmodels: {}\n")
    return path


CASE_IDS = [
    "data latin-1", "data nested 100000 deep", "data a directory", "data an empty list", "data missing",
    "limit 0 on a new output", "limit 0 on a finished output", "limit -1", "max-length -1", "batch-size 0",
    "batch-size -3", "max-batch-tokens 0", "out an existing text file", "out another parquet table",
    "out the data file", "out the data file named .parquet", "out a directory", "out /dev/null",
    "out a device named .parquet",
    "model a t5 folder", "model with 0-byte weights", "model with torn weights", "model a file",
    "device cuda without CUDA", "targets matching nothing", "models add 0-byte weights", "models add --path a file",
    "models add --file ../../etc/passwd", "models add --catalog malformed YAML", "validate a missing table",
    "validate a text file",
]


def _digest(path: Path) -> str | None:
    if not path.exists() or not path.is_file():
        return None
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _files_touched(args: list[str]) -> list[Path]:
    return [Path(a) for a in args if not a.startswith("-") and os.sep in a]


@pytest.mark.parametrize("case", CASE_IDS)
def test_bad_input_is_one_line_exit_2_and_nothing_touched(world, capsys, case):
    args, fragment = _cases(world)[case]
    files = [*_files_touched(args), world["finished"], world["finished"].with_name("finished.status.parquet")]
    before = {p: _digest(p) for p in files}
    existed = {p: p.exists() or p.is_symlink() for p in files}
    assert main(args) == 2
    lines = capsys.readouterr().err.replace("\r", "\n").splitlines()
    err = [line for line in lines if line.strip() and not line.startswith("Loading weights")]  # transformers' bar
    assert len(err) == 1 and err[0].startswith("lg-pipeline: error: "), err
    assert fragment in err[0], err[0]
    for path in files:
        assert (path.exists() or path.is_symlink()) == existed[path], f"{path} created or deleted"
        assert _digest(path) == before[path], f"{path} changed"


def test_explicit_ids_colliding_with_the_repeat_suffix_stay_three_examples(world, tmp_path):
    from lg_pipeline.io.study_json import load_study_json

    rows = [{"example_id": i, "instruction": f"q{n}", "output": f"a{n}"} for n, i in enumerate(["X", "X", "X-1"])]
    data = tmp_path / "ids.json"
    data.write_text(json.dumps(rows))
    assert len({e.example_id for e in load_study_json(data)}) == 3
