"""Model folders and the GGUF-conversion cache: bad folders in one line; one converter at a time, keyed by version."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from data_sources.models import loading
from data_sources.models.catalog import is_safe_name, model_catalog
from data_sources.models.loading import ModelLocation, converted_folder_for
from lg_pipeline.errors import InputError


@pytest.fixture(autouse=True)
def own_lock_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("LG_LOCK_DIR", str(tmp_path / "locks"))


def test_a_new_package_version_gets_a_converted_folder_of_its_own(tmp_path):
    old = ModelLocation("m", "/pkg", "m.gguf", version="0.1.2")
    new = ModelLocation("m", "/pkg", "m.gguf", version="0.1.3")
    assert converted_folder_for(old, tmp_path) != converted_folder_for(new, tmp_path)
    odd = ModelLocation("m", "/p", "m.gguf", version="../x")
    assert converted_folder_for(odd, tmp_path).parent == tmp_path / "models"


@pytest.mark.slow
def test_concurrent_loaders_convert_once_and_never_see_a_half_written_folder(tmp_path, monkeypatch):
    converted: list[int] = []

    def slow_convert(location, target: Path) -> None:
        tmp = target.with_name(target.name + f".tmp{os.getpid()}")
        tmp.mkdir(parents=True)
        time.sleep(0.5)
        (tmp / "config.json").write_text("{}")
        os.replace(tmp, target)
        converted.append(os.getpid())
        with open(tmp_path / "conversions", "a") as fh:
            fh.write(f"{os.getpid()}\n")

    monkeypatch.setattr(loading, "_convert", slow_convert)
    location = ModelLocation("m", "/pkg", "m.gguf", version="1")
    pid = os.fork()
    if pid == 0:
        try:
            loading._converted_folder(location, tmp_path)
        finally:
            os._exit(0)
    time.sleep(0.1)
    folder = loading._converted_folder(location, tmp_path)
    os.waitpid(pid, 0)
    assert (Path(folder) / "config.json").is_file()
    assert len((tmp_path / "conversions").read_text().split()) == 1


@pytest.mark.parametrize("name", ["../../etc/passwd", "a/b.gguf", "..", ".hidden", "", "x\x00y", "a\\b"])
def test_unsafe_path_components_are_refused(name):
    assert not is_safe_name(name)


def test_a_catalog_entry_with_an_unsafe_file_name_names_the_catalog(tmp_path):
    catalog = tmp_path / "models.yaml"
    catalog.write_text("models:\n  m:\n    source: packaged_gguf\n    kind: base\n    package: p\n"
                       "    file: ../../../../etc/passwd\n")
    with pytest.raises(InputError, match=f"{catalog}: model 'm': file '../../../../etc/passwd' must be a plain"):
        model_catalog(catalog)


@pytest.mark.parametrize("text", ["models: [unclosed\n", "models:\n  - a\n  - b\n", "models:\n  m: 3\n"])
def test_a_malformed_catalog_is_one_line_naming_the_file(tmp_path, text):
    catalog = tmp_path / "models.yaml"
    catalog.write_text(text)
    with pytest.raises(InputError) as err:
        model_catalog(catalog)
    assert str(catalog) in str(err.value) and "\n" not in str(err.value)


def test_a_tied_output_matrix_left_on_meta_is_tied_and_other_unloaded_weights_are_refused():
    import torch

    from tests.helpers.builders import make_model

    model = make_model("llama-gqa")
    model.config.tie_word_embeddings = True
    model.lm_head.weight = torch.nn.Parameter(torch.empty(model.lm_head.weight.shape, device="meta"))
    location = ModelLocation("tiny", "folder", None)
    loading._require_loaded(location, model, "folder")
    assert model.lm_head.weight is model.get_input_embeddings().weight
    layer = model.model.layers[0].self_attn.q_proj
    layer.weight = torch.nn.Parameter(torch.empty(layer.weight.shape, device="meta"))
    with pytest.raises(InputError, match=r"model 'tiny': folder left model\.layers\.0\.self_attn\.q_proj\.weight"):
        loading._require_loaded(location, model, "folder")


def test_one_gguf_parse_shares_a_reader_per_file_and_puts_the_class_back(monkeypatch):
    import gguf

    built: list[str] = []

    class CountingReader:
        def __init__(self, path, mode="r"):
            built.append(str(path))

    monkeypatch.setattr(gguf, "GGUFReader", CountingReader)
    with loading.one_gguf_parse():
        first, again, other = gguf.GGUFReader("a.gguf"), gguf.GGUFReader(Path("a.gguf")), gguf.GGUFReader("b.gguf")
    assert first is again and other is not first and built == ["a.gguf", "b.gguf"]
    assert gguf.GGUFReader is CountingReader  # restored
    gguf.GGUFReader("a.gguf")
    assert built == ["a.gguf", "b.gguf", "a.gguf"]


@pytest.mark.slow
def test_converting_a_packaged_gguf_parses_it_once_and_gives_the_plain_loaders_weights(tmp_path, monkeypatch):
    """SmolLM2's GGUF converted under `one_gguf_parse` equals what transformers' own GGUF loading gives."""
    import gguf
    import torch
    from transformers import AutoModelForCausalLM

    from data_sources.models.catalog import get_model_spec, resolve

    location = resolve(get_model_spec("smollm2-135m-instruct"), tmp_path)
    original, built = gguf.GGUFReader, []
    monkeypatch.setattr(gguf, "GGUFReader", lambda *a, **k: built.append(a[0]) or original(*a, **k))
    target = tmp_path / "converted"
    loading._convert(location, target)
    assert len(built) == 1  # transformers asked for a reader three times (config, weights, tokenizer)
    plain = AutoModelForCausalLM.from_pretrained(location.folder, gguf_file=location.gguf_file).state_dict()
    converted = AutoModelForCausalLM.from_pretrained(target).state_dict()
    assert plain.keys() - {"lm_head.weight"} <= converted.keys()
    assert all(torch.equal(converted[k], plain[k]) for k in converted)
