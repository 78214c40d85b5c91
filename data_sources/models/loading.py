"""Load a causal LM and its tokenizer on the configured device and dtype.

GGUF weights are dequantized on every load (10-70 s), so the first load converts
them once into a transformers folder in the cache; later loads take about a second.
The converted folder is keyed by the package's version (a new version is converted
again), written beside under a lock and swapped in whole: a concurrent loader sees
the old folder or the new one, never a half-written or removed one.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lg_pipeline.errors import InputError
from lg_pipeline.gradients.devices import check_device, torch_dtype
from lg_pipeline.io.locks import output_lock

WEIGHT_PATTERNS = ("*.safetensors", "model.safetensors.index.json", "pytorch_model*.bin")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")


@dataclass(frozen=True)
class ModelLocation:
    """Where weights are: a folder (or hub id), with the GGUF file name when they are quantized."""

    name: str
    folder: str
    gguf_file: str | None
    from_hub: bool = False
    gguf_builder: Callable[[], Any] | None = None
    version: str = ""  # of the package holding the GGUF: part of the converted folder's name


def load_model(
    location: ModelLocation, device: str = "cpu", dtype: str = "float32", cache_dir: str | Path = ".cache"
) -> tuple[Any, Any]:
    """(model, tokenizer), in eval mode on `device` with weights in `dtype`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    check_device(device)  # before minutes of loading
    if location.gguf_file:
        folder = _converted_folder(location, Path(cache_dir))
    else:
        folder = location.folder
        if not location.from_hub:
            check_model_folder(location.name, Path(folder))
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch_dtype(dtype))
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except InputError:
        raise
    except Exception as exc:  # OSError, ValueError, SafetensorError...: one line naming the folder
        where = "the Hugging Face hub (no network here?)" if location.from_hub else folder
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        raise InputError(f"model '{location.name}': cannot load from {where}: {first}") from None
    _require_loaded(location, model, folder)
    return model.to(device).eval(), tokenizer


def _require_loaded(location: ModelLocation, model: Any, source: str) -> None:
    """Every weight read (a tied output matrix tied); else one line naming what was left unloaded."""
    _tie_output_embeddings(model)
    unloaded = [name for name, param in model.named_parameters() if param.device.type == "meta"]
    if unloaded:  # never compute with, or save, weights that were not all read
        raise InputError(f"model '{location.name}': {source} left {', '.join(unloaded[:3])} unloaded")


def check_model_folder(name: str, folder: Path) -> dict[str, Any]:
    """A transformers folder of a causal LM with non-empty weights; its config. One line naming what is wrong."""
    if folder.is_file():
        raise InputError(f"model '{name}': {folder} is a file, not a transformers folder")
    if not folder.is_dir():
        raise InputError(f"model '{name}': folder not found: {folder}")
    config = read_config(name, folder)
    model_type = config.get("model_type")
    if model_type not in causal_lm_types():
        raise InputError(
            f"model '{name}': unknown architecture '{model_type}' in {folder / 'config.json'} (not a causal LM "
            "transformers knows, e.g. llama, qwen2, gemma3)"
        )
    weights = sorted({p for pattern in WEIGHT_PATTERNS for p in folder.glob(pattern)})
    if not weights:
        raise InputError(f"model '{name}': no weights in {folder} (expected *.safetensors or pytorch_model*.bin)")
    for path in weights:
        _check_weights_file(name, path)
    return config


def _check_weights_file(name: str, path: Path) -> None:
    size = path.stat().st_size
    if size == 0:
        raise InputError(f"model '{name}': weights file {path} is empty (0 bytes)")
    if path.suffix == ".safetensors":  # 8-byte little-endian header length, then the JSON header
        with open(path, "rb") as fh:
            head = fh.read(8)
        if len(head) < 8 or struct.unpack("<Q", head)[0] + 8 > size:
            raise InputError(f"model '{name}': weights file {path} is not a complete safetensors file")


def read_config(name: str, folder: Path) -> dict[str, Any]:
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"model '{name}': no config.json in {folder} (not a transformers folder)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"model '{name}': {folder / 'config.json'} is not valid JSON ({exc})") from None
    if not isinstance(config, dict):
        raise InputError(f"model '{name}': {folder / 'config.json'} is not a JSON object")
    return config


def causal_lm_types() -> set[str]:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)


def load_tokenizer(location: ModelLocation, cache_dir: str | Path = ".cache") -> Any:
    """The tokenizer alone (converting a GGUF once, like `load_model`)."""
    from transformers import AutoTokenizer

    folder = _converted_folder(location, Path(cache_dir)) if location.gguf_file else location.folder
    return AutoTokenizer.from_pretrained(folder)


def converted_folder_for(location: ModelLocation, cache_dir: Path) -> Path:
    """The converted folder of this GGUF and package version (a new version gets a folder of its own)."""
    version = "".join(c if c.isalnum() or c in "._-" else "_" for c in location.version)
    return cache_dir / "models" / (f"{location.name}@{version}" if version else location.name)


def _converted_folder(location: ModelLocation, cache_dir: Path) -> str:
    """Dequantize a GGUF once into a transformers folder: under the folder's lock, beside it, then renamed in."""
    target = converted_folder_for(location, cache_dir)
    if (target / "config.json").is_file():
        return str(target)
    with output_lock(target, wait=True, report=lambda line: None):
        if (target / "config.json").is_file():  # converted by the writer we waited for
            return str(target)
        _convert(location, target)
    return str(target)


def _tie_output_embeddings(model: Any) -> None:
    """A tied model's files have no output matrix: in some processes transformers leaves it on the meta device
    instead of tying it (seen in the test suite, after other models had loaded, both converting a GGUF and
    loading the converted folder; root cause not found); tie it here."""
    output, inputs = model.get_output_embeddings(), model.get_input_embeddings()
    tied = getattr(model.config, "tie_word_embeddings", False)
    if tied and output is not None and output.weight.device.type == "meta" and inputs is not None:
        output.weight = inputs.weight


@contextmanager
def one_gguf_parse() -> Iterator[None]:
    """While converting, one `gguf.GGUFReader` per file instead of one per transformers call.

    Why: transformers (5.x, `load_gguf_checkpoint`) builds a new reader for the config, again for the weights and
    again for the tokenizer, and a reader parses every metadata field in Python on construction — for Gemma-3-270M's
    262k-token vocabulary that parse was over half of the whole first load (profiled). The readers only read the
    memory-mapped file, so one can serve all three; the original class is back when the block ends.
    """
    import gguf

    original = gguf.GGUFReader
    readers: dict[tuple, Any] = {}

    def shared_reader(path: Any, *args: Any, **kwargs: Any) -> Any:
        key = (os.fspath(path), args, tuple(sorted(kwargs.items())))
        if key not in readers:
            readers[key] = original(path, *args, **kwargs)
        return readers[key]

    gguf.GGUFReader = shared_reader
    try:
        yield
    finally:
        gguf.GGUFReader = original


def _convert(location: ModelLocation, target: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if location.gguf_builder is not None:
        location.gguf_builder()
    with one_gguf_parse():
        model = AutoModelForCausalLM.from_pretrained(location.folder, gguf_file=location.gguf_file)
        tokenizer = AutoTokenizer.from_pretrained(location.folder, gguf_file=location.gguf_file)
    _require_loaded(location, model, location.gguf_file)
    # save_pretrained refuses a quantizer-loaded model; the weights are already dequantized.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if target.exists():  # an incomplete folder (no config.json) of an older layout: moved aside, then removed
        aside = target.with_name(target.name + f".old{os.getpid()}")
        os.replace(target, aside)
        os.replace(tmp, target)
        shutil.rmtree(aside, ignore_errors=True)
    else:
        os.replace(tmp, target)
