"""The one owner of run folders: names, commit order, run keys (beside or refused, never mixed), clean-up, locks."""

from __future__ import annotations

import errno
import json
import os
import threading

import pandas as pd
import pytest

from lg_pipeline.errors import InputError
from lg_pipeline.io import atomic
from lg_pipeline.io.locks import output_lock
from lg_pipeline.io.manifest import read_manifest
from lg_pipeline.io.run_folder import RunFiles, TableSpec, run_key

FILES = RunFiles("demo", {"steps": TableSpec(("step",), ("step", "value")), "notes": TableSpec(("id",), order=())},
                 others=("figure.png",))
QUIET = {"wait": False, "report": lambda m: None}


def frame(*steps: int, value: float = 1.0) -> pd.DataFrame:
    return pd.DataFrame({"step": list(steps), "value": [value * s for s in steps]})


def finished_run(folder, fields=None):
    with FILES.at(folder).writing(fields or {"lr": 1}, **QUIET) as writer:
        writer.commit("step-0", {"steps": frame(0)})
        writer.commit("step-1", {"steps": frame(1), "notes": pd.DataFrame({"id": ["a"]})})
        writer.finish({"steps": writer.table("steps"), "notes": writer.table("notes")}, {"model": "m"})
    return writer


def test_names_come_from_the_layout():
    folder = FILES.at("/o/run")
    assert folder.table("steps") == folder.folder / "steps.parquet" and folder.settings_file.name == "run.json"
    assert folder.summary_file.name == "summary.json" and folder.staging("0123456789ab").name == "0123456789ab.parts"
    beside = RunFiles("table", {"stats": TableSpec(("id",)), "status": TableSpec(("id",))}, main="stats").beside(
        "/o/v.parquet"
    )
    assert beside.table("stats").name == "v.parquet" and beside.table("status").name == "v.status.parquet"
    assert beside.settings_file.name == "v.run.json" and beside.staging("0123456789ab").name == "v.0123456789ab.parts"
    with pytest.raises(ValueError, match="not a table of a demo run"):
        folder.table("kernel")


def test_only_committed_parts_count_and_the_finished_tables_carry_the_run_key(tmp_path):
    writer = finished_run(tmp_path)
    for name in ("steps", "notes"):
        manifest = read_manifest(tmp_path / f"{name}.parquet")
        assert manifest["kind"] == f"demo.{name}" and manifest["run_key"] == writer.key == run_key({"lr": 1})
    assert json.loads((tmp_path / "run.json").read_text()) == {"run_key": writer.key, "lr": 1}
    assert list(pd.read_parquet(tmp_path / "steps.parquet").step) == [0, 1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.parquet", "run.json", "steps.parquet"]


def test_a_chunk_without_its_marker_is_not_done_and_is_cleaned_up(tmp_path):
    with FILES.at(tmp_path).writing({"lr": 1}, **QUIET) as writer:
        writer.commit("step-0", {"steps": frame(0)})
        writer.chunked["steps"].append(frame(1))  # a part killed before its marker
        (writer.staging / "steps" / ".chunk-x.parquet.abc.tmp").write_text("half")
    with FILES.at(tmp_path).writing({"lr": 1}, **QUIET) as again:
        assert again.done_parts() == {"step-0"} and list(again.committed("steps").step) == [0]
        assert len(again.chunked["steps"].chunks()) == 1 and not list((again.staging / "steps").glob("*.tmp"))


def test_a_rerun_with_the_same_key_resumes_from_the_finished_tables(tmp_path):
    finished_run(tmp_path)
    with FILES.at(tmp_path).writing({"lr": 1}, **QUIET) as writer:
        assert writer.finished() is not None
        writer.commit("step-2", {"steps": frame(2)})
        assert list(writer.table("steps").step) == [0, 1, 2]


def test_another_key_computes_beside_and_the_old_tables_stay_until_it_finishes(tmp_path):
    finished_run(tmp_path)
    before = (tmp_path / "steps.parquet").read_bytes()
    said: list[str] = []
    with FILES.at(tmp_path).writing({"lr": 2}, wait=False, report=said.append) as writer:
        assert writer.finished() is None and writer.table("steps").empty
        writer.commit("step-0", {"steps": frame(0, value=2.0)})
    assert said == [f"{tmp_path} was computed another way (lr: 1 -> 2): computing beside it; it is replaced when "
                    "this run finishes"]
    assert (tmp_path / "steps.parquet").read_bytes() == before


def test_tables_of_two_keys_are_never_resumed_from(tmp_path):
    finished_run(tmp_path)
    atomic.write_parquet(frame(0), tmp_path / "notes.parquet", {"kind": "demo.notes", "run_key": "other"})
    with FILES.at(tmp_path).writing({"lr": 1}, **QUIET) as writer:
        assert writer.finished() is None


def test_refuse_names_what_changed_and_touches_nothing(tmp_path):
    finished_run(tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(InputError, match=r"holds a run with other settings \(lr: 1 -> 3\); use another folder"):
        with FILES.at(tmp_path).writing({"lr": 3}, on_change="refuse", **QUIET):
            pass
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    other = tmp_path / "unfinished"
    with FILES.at(other).writing({"lr": 1}, **QUIET) as writer:
        writer.commit("step-0", {"steps": frame(0)})
    with pytest.raises(InputError, match="holds an unfinished run with other settings"):
        with FILES.at(other).writing({"lr": 3}, on_change="refuse", **QUIET):
            pass


def test_a_torn_table_is_recomputed_and_said(tmp_path):
    finished_run(tmp_path)
    data = (tmp_path / "steps.parquet").read_bytes()
    (tmp_path / "steps.parquet").write_bytes(data[: len(data) // 2])
    said: list[str] = []
    with FILES.at(tmp_path).writing({"lr": 1}, wait=False, report=said.append) as writer:
        assert writer.finished() is None
    assert any("cannot read the finished table" in line for line in said)


def test_clean_up_removes_only_this_runs_temp_files(tmp_path):
    table_files = RunFiles("t", {"stats": TableSpec(("id",)), "status": TableSpec(("id",))}, main="stats")
    for name in (".v.parquet.x1.tmp", ".v.status.parquet.x2.tmp", ".w.parquet.x3.tmp"):
        (tmp_path / name).write_text("half")
    with table_files.beside(tmp_path / "v.parquet").writing({"a": 1}, **QUIET):
        pass
    assert [p.name for p in tmp_path.iterdir()] == [".w.parquet.x3.tmp"]  # another table's writer is untouched


def test_a_folder_holding_something_else_is_refused(tmp_path):
    FILES.at(tmp_path / "new").check_target()
    finished_run(tmp_path / "ours")
    (tmp_path / "ours" / "figure.png").write_bytes(b"png")
    FILES.at(tmp_path / "ours").check_target()
    (tmp_path / "ours" / "thesis.tex").write_text("mine")
    with pytest.raises(InputError, match="holds 'thesis.tex', which is not a file of a demo run"):
        FILES.at(tmp_path / "ours").check_target()
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="is a file, not a folder for a demo run"):
        FILES.at(tmp_path / "file").check_target()
    with pytest.raises(InputError, match="is not a folder"):
        FILES.at(tmp_path / "file" / "run").check_target()


def test_a_failed_write_is_one_line_naming_the_output(tmp_path, monkeypatch):
    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    with pytest.raises(InputError) as caught:
        with FILES.at(tmp_path).writing({"lr": 1}, kept=lambda: "2 finished steps are kept", **QUIET) as writer:
            monkeypatch.setattr(atomic, "atomic_write_bytes", full)
            writer.commit("step-0", {"steps": frame(0)})
    assert str(caught.value) == (
        f"{tmp_path}: cannot write (No space left on device); 2 finished steps are kept, rerun to resume"
    )


def test_a_second_writer_is_refused_naming_the_holder_or_waits_saying_so(tmp_path):
    caught, said = [], []

    def second(wait: bool) -> None:
        try:
            with FILES.at(tmp_path).writing({"lr": 1}, wait=wait, report=said.append):
                pass
        except InputError as exc:
            caught.append(str(exc))

    with output_lock(tmp_path):
        refused = threading.Thread(target=second, args=(False,))
        refused.start()
        refused.join()
        waiting = threading.Thread(target=second, args=(True,))
        waiting.start()
        waiting.join(0.5)
        assert waiting.is_alive()
    waiting.join()
    assert caught == [f"{tmp_path} is being written by pid {os.getpid()} " + caught[0].split(f"pid {os.getpid()} ")[1]]
    assert said and said[0].startswith(f"waiting for {tmp_path}: it is being written by pid {os.getpid()}")
