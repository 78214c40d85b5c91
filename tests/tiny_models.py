"""Tiny local model folders and catalogs for pipeline tests (builders: tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import yaml


def save_tiny_model(folder: Path, layers: int = 3, chat: bool = True) -> Path:
    """A local transformers folder (config.json, weights, tokenizer) holding a tiny random Llama."""
    from tests.conftest import CHAT_TEMPLATE, make_model, make_tokenizer

    make_model("llama-gqa", layers=layers).save_pretrained(folder)
    make_tokenizer(CHAT_TEMPLATE if chat else None).save_pretrained(folder)
    return folder


def write_catalog(path: Path, models: dict[str, Path], kind: str = "instruct") -> Path:
    """A model catalog with only local tiny models (point LG_MODEL_CATALOG at it)."""
    entries = {
        name: {"display_name": f"Tiny {name}", "source": "local", "path": str(folder), "kind": kind, "family": "tiny"}
        for name, folder in models.items()
    }
    path.write_text(yaml.safe_dump({"models": entries}))
    return path
