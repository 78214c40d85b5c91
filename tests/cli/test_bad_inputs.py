"""Every bad input: one line naming it, exit 2, the input and any finished output unchanged."""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path

import pandas as pd
import pytest

from lg_pipeline.cli import main
from lg_pipeline.io.atomic import write_parquet
from lg_pipeline.io.study_stats import export_study_tree
from tests.helpers.builders import make_tokenizer
from tests.helpers.planted import learning_folder
from tests.helpers.tiny_models import save_tiny_model
from tests.io.test_study_stats import our_stats, study_line

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
    exported = root / "grads_exp"
    export_study_tree(our_stats(), exported)
    learning = learning_folder(root / "learning")
    return {"model": model, "data": data, "finished": finished, "root": root, "t5": t5, "empty": empty, "torn": torn,
            "exported": exported, "learning": learning}


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
        **_validate_cases(w, text_out, other_parquet),
        **_export_cases(w, text_out),
        **_import_cases(w, text_out),
        **_models_cases(w),
        **_demo_cases(w),
    }


def _validate_cases(w, text_out: Path, other_parquet: Path) -> dict[str, tuple[list[str], str]]:
    r, finished = w["root"], w["finished"]
    torn = _file(r, "torn.parquet", finished.read_bytes()[:200])
    status = finished.with_name("finished.status.parquet")
    kernel = w["learning"] / "kernel.parquet"
    no_run = _dir(r / "no-run")
    (no_run / "notes.txt").write_text("not a run")

    def v(*args):
        return ["validate", *map(str, args)]

    return {
        "validate a 0-byte table": (v(_file(r, "zero.parquet", b"")), "not a readable Parquet table"),
        "validate a torn table": (v(torn), "not a readable Parquet table"),
        "validate a JSON file": (v(w["data"]), "not a readable Parquet table"),
        "validate another Parquet table": (v(other_parquet), "not a statistics table"),
        "validate an outcome log": (v(status), "is an outcome log"),
        "validate one table of a run folder": (v(kernel), f"validate its folder {w['learning']}"),
        "validate a folder that holds no run": (v(no_run), "not a learning-dynamics or zero-shot run folder"),
        "validate an empty folder": (v(_dir(r / "empty-folder")), "not a learning-dynamics or zero-shot"),
        "validate /dev/null": (v("/dev/null"), "not a file or folder"),
        "validate --data missing": (v(finished, "--data", r / "nope.json"), "not found"),
        "validate --data a folder": (v(finished, "--data", r), "is a directory"),
        "validate --data an empty list": (v(finished, "--data", r / "empty.json"), "no examples"),
        "validate --model unknown": (v(finished, "--model", "no-such-model"), "unknown model 'no-such-model'"),
        "validate --targets matching nothing": (v(finished, "--model", w["model"], "--targets", "fc9"),
                                                "no linear layer"),
        "validate --data on a run folder": (v(w["learning"], "--data", w["data"]), "are for a statistics table"),
        "validate a table whose manifest is of a summary": (
            v(write_parquet(pd.DataFrame({"example_id": ["a"], "loss": [1.0]}), r / "summary-like.parquet",
                            manifest={"kind": "summary.layers"})), "not a statistics table"),
    }


def _export_cases(w, text_out: Path) -> dict[str, tuple[list[str], str]]:
    r, exported = w["root"], w["exported"]
    stats = our_stats()
    good = r / "export-good.parquet"
    stats.to_parquet(good, index=False)

    def table(name, frame, manifest=None):
        return write_parquet(frame, r / name, manifest=manifest)

    def x(*tables, out=exported, extra=()):
        return ["export-study", *map(str, tables), "--out", str(out), *extra]

    bare = stats.drop(columns=["model", "dataset", "level", "correctness"])
    return {
        "export a text file": (x(text_out), "not a readable Parquet table"),
        "export a truncated table": (x(_file(r, "export-torn.parquet", good.read_bytes()[:300])),
                                     "not a readable Parquet table"),
        "export a 0-byte table": (x(_file(r, "export-zero.parquet", b"")), "is empty (0 bytes)"),
        "export a folder": (x(_dir(r / "export-dir.parquet")), "is a directory"),
        "export a missing table": (x(r / "export-missing.parquet"), "not found"),
        "export a table without variant columns or manifest": (x(table("bare.parquet", bare)),
                                                               "lacks column(s) model, dataset, level, correctness"),
        "export a table whose model is absolute": (x(table("abs.parquet", stats.assign(model="/tmp/ESCAPED_model"))),
                                                   "not a single path component"),
        "export a table whose model climbs out": (x(table("up.parquet", stats.assign(model="../../ESCAPED_model"))),
                                                  "not a single path component"),
        "export a table whose dataset has a separator": (x(table("sep.parquet", stats.assign(dataset="a/b"))),
                                                         "not a single path component"),
        "export a manifest whose model climbs out": (
            x(table("mup.parquet", bare, {"kind": "gradient_stats", "model": "../x", "dataset": "gsm8k",
                                          "level": "none", "correctness": "correct"})), "not a single path component"),
        "export an unknown level": (x(table("lvl.parquet", stats.assign(level="medium"))), "no study file name"),
        "export an unknown correctness": (x(table("cor.parquet", stats.assign(correctness="maybe"))),
                                          "correctness 'maybe' is not one of"),
        "export a string nuclear_norm": (x(table("str.parquet", stats.assign(nuclear_norm=stats.nuclear_norm.astype(
            str)))), "hold text, not numbers"),
        "export an outcome log": (x(w["finished"].with_name("finished.status.parquet")), "lacks column(s)"),
        "export an empty table": (x(table("none.parquet", stats.iloc[0:0])), "no rows to export"),
        "export two variants into one file": (
            x(good, table("clash.parquet", stats[stats.dataset == "wiki"].assign(dataset="wiki2"))),
            "would both be written"),
        "export --out a file": (x(good, out=text_out), "not a folder"),
        "export a good table then a torn one": (x(good, r / "export-torn.parquet"), "not a readable Parquet table"),
    }


STUDY_FILE = "cot_500/llama3_8b/grads_gsm8k_train_no_cot.jsonl"


def _study_tree(root: Path, name: str, line: str | bytes, relpath: str = STUDY_FILE) -> Path:
    folder = root / name
    path = folder / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(line if isinstance(line, bytes) else line.encode())
    return folder


def _import_cases(w, text_out: Path) -> dict[str, tuple[list[str], str]]:
    r, exported, finished = w["root"], w["exported"], w["finished"]
    good = json.dumps(study_line("Q", "A"))

    def tree(name, line, **kw):
        return _study_tree(r / "trees", name, line, **kw)

    def i(root, out=None):
        return ["import-study", str(root), "--out", str(out or r / "imported.parquet")]

    huge = {**study_line("Q", "A"), "model.layers.99999999999999999999.self_attn.q_proj.weight": {"S_sum": 1.0}}
    return {
        "import a missing folder": (i(r / "no-grads"), "study folder not found"),
        "import a file as the folder": (i(w["data"]), "not a folder"),
        "import a folder without study files": (i(_dir(r / "no-study-files")), "no study files"),
        "import a JSON list on a line": (i(tree("list", json.dumps([study_line("Q", "A")]))), "a JSON list"),
        "import a JSON string on a line": (i(tree("string", '"just text"')), "a JSON str"),
        "import a line that is not JSON": (i(tree("notjson", good + "\n{oops\n")), "not valid JSON"),
        "import a string loss": (i(tree("strloss", json.dumps({**study_line("Q", "A"), "loss": "1.2"}))),
                                 "loss is not a number"),
        "import string statistics": (
            i(tree("strstat", json.dumps({**study_line("Q", "A"), "model.layers.0.self_attn.q_proj.weight": {
                "S_sum": "big", "S_max": "x"}}))), "is not a number"),
        "import a huge layer": (i(tree("huge", json.dumps(huge))), "out of range"),
        "import a string token count": (i(tree("strtok", json.dumps({**study_line("Q", "A"), "n_tokens": "40"}))),
                                        "not a token count"),
        "import latin-1 text": (i(tree("latin1", '{"instruction": "café"}'.encode("latin-1"))), "not UTF-8"),
        "import a badly named file": (i(tree("badname", good, relpath="cot_500/m/stats_gsm8k.jsonl")),
                                      "no study files"),
        "import an unknown variant": (i(tree("badvariant", good, relpath="cot_500/m/grads_gsm8k_train_cot.jsonl")),
                                      "does not end in one of"),
        "import an unknown task folder": (i(tree("badtask", good, relpath="other/m/grads_gsm8k_train_no_cot.jsonl")),
                                          "unknown study task folder"),
        "import lines without statistics": (i(tree("nostats", '{"instruction": "Q", "output": "A"}')),
                                            "hold no statistics"),
        "import over a finished table": (i(exported, finished), "refusing to replace it"),
        "import over a text file": (i(exported, text_out), "refusing to replace it"),
        "import --out a directory": (i(exported, _dir(r / "out-dir.parquet")), "is a directory"),
        "import --out not .parquet": (i(exported, r / "imported.json"), "must be a .parquet"),
        "import beside a run's key": (i(exported, _beside_run_key(r)), "of a computed run is beside it"),
    }


def _beside_run_key(root: Path) -> Path:
    """A new table name whose `.run.json` (left by a computed run) is still there."""
    (root / "fresh.run.json").write_text('{"run_key": "abc"}')
    return root / "fresh.parquet"


def _models_cases(w) -> dict[str, tuple[list[str], str]]:
    r, model = w["root"], w["model"]
    catalog = _catalog(r)

    def add(name, *args, cat=catalog):
        return ["models", "add", name, *map(str, args), "--catalog", str(cat)]

    no_tokenizer = _dir(r / "no-tokenizer")
    for f in ("config.json", "model.safetensors"):
        (no_tokenizer / f).write_bytes((model / f).read_bytes())
    return {
        "models add an upper-case name": (add("Tiny", "--source", "local", "--path", model), "model name 'Tiny'"),
        "models add a name with a slash": (add("a/b", "--source", "local", "--path", model), "model name 'a/b'"),
        "models add an empty name": (add("", "--source", "local", "--path", model), "model name ''"),
        "models add local without --path": (add("x", "--source", "local"), "need --path"),
        "models add --path missing": (add("x", "--source", "local", "--path", r / "nowhere"), "folder not found"),
        "models add --path without a tokenizer": (add("x", "--source", "local", "--path", no_tokenizer),
                                                  "no tokenizer"),
        "models add --path a t5 folder": (add("x", "--source", "local", "--path", w["t5"]),
                                          "unknown architecture 't5'"),
        "models add hub without --repo-id": (add("x", "--source", "hub"), "need --repo-id"),
        "models add hub with a bad --repo-id": (add("x", "--source", "hub", "--repo-id", "../../x"), "need --repo-id"),
        "models add packaged_gguf without --file": (add("x", "--source", "packaged_gguf", "--package", "json"),
                                                    "needs --package"),
        "models add a package not installed": (add("x", "--source", "packaged_gguf", "--package", "no_such_pkg_x",
                                                   "--file", "m.gguf"), "is not installed"),
        "models add --catalog missing": (add("x", "--source", "local", "--path", model, cat=r / "nope.yaml"),
                                         "model catalog not found"),
        "models add --catalog a folder": (add("x", "--source", "local", "--path", model, cat=_dir(r / "cat-dir")),
                                          "is a directory"),
        "models add a name already there": (add("tiny", "--source", "local", "--path", model,
                                                cat=_catalog_with_tiny(r, model)), "already in"),
        # qwen2-1.5b-chat-instruct|champ-d-c and qwen2-1.5b-instruct|champ-d-c both read "qwen2-1.5b-…t|champ-d-c"
        "models add a name whose keys look alike": (add("qwen2-1.5b-chat-instruct", "--source", "hub", "--repo-id",
                                                        "Qwen/Qwen2-1.5B-Chat", cat=_catalog_with_qwen(r)),
                                                    "model name 'qwen2-1.5b-chat-instruct': its partition key"),
    }


def _catalog_with_qwen(root: Path) -> Path:
    path = root / "catalog-qwen.yaml"
    if not path.exists():
        path.write_text("models:\n  qwen2-1.5b-instruct:\n    source: hub\n    repo_id: Qwen/Qwen2-1.5B-Instruct\n"
                        "    kind: instruct\n")
    return path


def _catalog_with_tiny(root: Path, model: Path) -> Path:
    path = root / "catalog-tiny.yaml"
    if not path.exists():
        path.write_text(f"models:\n  tiny:\n    source: local\n    path: {model}\n    kind: instruct\n")
    return path


def _demo_cases(w) -> dict[str, tuple[list[str], str]]:
    return {
        "demo --n-examples 0": (["demo", "--n-examples", "0"], "--n-examples must be at least 1"),
        "demo --n-examples -3": (["demo", "--n-examples", "-3"], "--n-examples must be at least 1"),
        "demo an unknown model": (["demo", "--models", "no-such-model"], "unknown model 'no-such-model'"),
        "demo an unknown dataset": (["demo", "--datasets", "no-such-data"], "unknown dataset(s) ['no-such-data']"),
        "demo no models": (["demo", "--models"], "--models: no model named"),
        "demo no datasets": (["demo", "--datasets"], "--datasets: no dataset named"),
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
NEW_CASE_IDS = [
    "validate a 0-byte table", "validate a torn table", "validate a JSON file", "validate another Parquet table",
    "validate an outcome log", "validate one table of a run folder", "validate a folder that holds no run",
    "validate an empty folder", "validate /dev/null", "validate --data missing", "validate --data a folder",
    "validate --data an empty list", "validate --model unknown", "validate --targets matching nothing",
    "validate --data on a run folder", "validate a table whose manifest is of a summary", "export a text file",
    "export a truncated table", "export a 0-byte table", "export a folder", "export a missing table",
    "export a table without variant columns or manifest", "export a table whose model is absolute",
    "export a table whose model climbs out", "export a table whose dataset has a separator",
    "export a manifest whose model climbs out", "export an unknown level", "export an unknown correctness",
    "export a string nuclear_norm", "export an outcome log", "export an empty table",
    "export two variants into one file", "export --out a file", "export a good table then a torn one",
    "import a missing folder", "import a file as the folder", "import a folder without study files",
    "import a JSON list on a line", "import a JSON string on a line", "import a line that is not JSON",
    "import a string loss", "import string statistics", "import a huge layer", "import a string token count",
    "import latin-1 text", "import a badly named file", "import an unknown variant", "import an unknown task folder",
    "import lines without statistics", "import over a finished table", "import over a text file",
    "import --out a directory", "import --out not .parquet", "import beside a run's key",
    "models add an upper-case name", "models add a name with a slash", "models add an empty name",
    "models add local without --path", "models add --path missing", "models add --path without a tokenizer",
    "models add --path a t5 folder", "models add hub without --repo-id", "models add hub with a bad --repo-id",
    "models add packaged_gguf without --file", "models add a package not installed", "models add --catalog missing",
    "models add --catalog a folder", "models add a name already there", "models add a name whose keys look alike",
    "demo --n-examples 0", "demo --n-examples -3", "demo an unknown model", "demo an unknown dataset",
    "demo no models", "demo no datasets",
]


# New cases whose target is a flag or a name, not a path: their message names that.
NAMED_BY_FLAG_OR_NAME = {
    "validate --model unknown", "models add an upper-case name", "models add a name with a slash",
    "models add an empty name", "models add local without --path", "models add hub without --repo-id",
    "models add hub with a bad --repo-id", "models add packaged_gguf without --file",
    "models add a package not installed", "models add a name whose keys look alike",
}


def _digest(path: Path) -> str | None:
    """A file's hash; a folder's: every file under it (names and contents)."""
    if path.is_dir() and not path.is_symlink():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        return hashlib.sha256(b"".join(str(p.relative_to(path)).encode() + p.read_bytes() for p in files)).hexdigest()
    if not path.exists() or not path.is_file():
        return None
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _files_touched(args: list[str]) -> list[Path]:
    return [Path(a) for a in args if not a.startswith("-") and os.sep in a]


def _watched(world, args: list[str]) -> list[Path]:
    """What a bad input must leave as it was: every path it names, the finished table and its run's files."""
    finished = world["finished"]
    return [*_files_touched(args), finished, finished.with_name("finished.status.parquet"),
            finished.with_name("finished.run.json"), world["exported"], world["learning"]]


@pytest.fixture(scope="module")
def cases(world) -> dict[str, tuple[list[str], str]]:
    """Every case's inputs, made once: a bad input changes nothing, so the cases can share them."""
    return _cases(world)


@pytest.mark.parametrize("case", [*CASE_IDS, *NEW_CASE_IDS])
def test_bad_input_is_one_line_exit_2_and_nothing_touched(world, cases, capsys, case):
    args, fragment = cases[case]
    files = _watched(world, args)
    before = {p: _digest(p) for p in files}
    existed = {p: p.exists() or p.is_symlink() for p in files}
    assert main(args) == 2
    lines = capsys.readouterr().err.replace("\r", "\n").splitlines()
    err = [line for line in lines if line.strip() and not line.startswith("Loading weights")]  # transformers' bar
    assert len(err) == 1 and err[0].startswith("lg-pipeline: error: "), err
    assert fragment in err[0], err[0]
    paths = [a for a in args if os.sep in a]
    if case in NEW_CASE_IDS and case not in NAMED_BY_FLAG_OR_NAME and paths:
        assert any(p in err[0] for p in paths), f"the line names none of {paths}: {err[0]}"
    for path in files:
        assert (path.exists() or path.is_symlink()) == existed[path], f"{path} created or deleted"
        assert _digest(path) == before[path], f"{path} changed"


def test_the_case_table_lists_every_case(cases):
    assert [*CASE_IDS, *NEW_CASE_IDS] == list(cases)
    assert len(CASE_IDS) + len(NEW_CASE_IDS) >= 70


def test_explicit_ids_colliding_with_the_repeat_suffix_stay_three_examples(world, tmp_path):
    from lg_pipeline.io.study_json import load_study_json

    rows = [{"example_id": i, "instruction": f"q{n}", "output": f"a{n}"} for n, i in enumerate(["X", "X", "X-1"])]
    data = tmp_path / "ids.json"
    data.write_text(json.dumps(rows))
    assert len({e.example_id for e in load_study_json(data)}) == 3
