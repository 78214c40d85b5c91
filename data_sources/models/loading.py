"""Load a causal LM and its tokenizer on the configured device and dtype.

GGUF weights are dequantized on every load (10-70 s), so the first load converts
them once into a transformers folder in the cache; later loads take about a second.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lg_pipeline.errors import InputError
from lg_pipeline.gradients.devices import check_device, torch_dtype


@dataclass(frozen=True)
class ModelLocation:
    """Where weights are: a folder (or hub id), with the GGUF file name when they are quantized."""

    name: str
    folder: str
    gguf_file: str | None
    from_hub: bool = False
    gguf_builder: Callable[[], Any] | None = None


def load_model(
    location: ModelLocation, device: str = "cpu", dtype: str = "float32", cache_dir: str | Path = ".cache"
) -> tuple[Any, Any]:
    """(model, tokenizer), in eval mode on `device` with weights in `dtype`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = _converted_folder(location, Path(cache_dir)) if location.gguf_file else location.folder
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch_dtype(dtype))
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except OSError as exc:
        where = "the Hugging Face hub (no network here?)" if location.from_hub else folder
        raise InputError(f"model '{location.name}': cannot load from {where}: {str(exc).splitlines()[0]}") from None
    return model.to(check_device(device)).eval(), tokenizer


def load_tokenizer(location: ModelLocation, cache_dir: str | Path = ".cache") -> Any:
    """The tokenizer alone (converting a GGUF once, like `load_model`)."""
    from transformers import AutoTokenizer

    folder = _converted_folder(location, Path(cache_dir)) if location.gguf_file else location.folder
    return AutoTokenizer.from_pretrained(folder)


def _converted_folder(location: ModelLocation, cache_dir: Path) -> str:
    """Dequantize a GGUF once into a transformers folder (written atomically)."""
    target = cache_dir / "models" / location.name
    if (target / "config.json").is_file():
        return str(target)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if location.gguf_builder is not None:
        location.gguf_builder()
    model = AutoModelForCausalLM.from_pretrained(location.folder, gguf_file=location.gguf_file)
    tokenizer = AutoTokenizer.from_pretrained(location.folder, gguf_file=location.gguf_file)
    # save_pretrained refuses a quantizer-loaded model; the weights are already dequantized.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    return str(target)
