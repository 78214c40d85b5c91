"""Tiny local model folders and catalogs for pipeline tests (builders: tests/conftest.py)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml


def save_tiny_model(folder: Path, layers: int = 3, chat: bool = True) -> Path:
    """A local transformers folder (config.json, weights, tokenizer) holding a tiny random Llama."""
    from tests.helpers.builders import CHAT_TEMPLATE, make_model, make_tokenizer

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


@contextlib.contextmanager
def tiny_world(tmp: Path, layers: int, n_examples: int) -> Iterator[tuple[Any, dict[str, Any]]]:
    """(instance, resources): a catalog with one tiny model `tiny`, outputs in tmp, an ephemeral instance."""
    import dagster as dg
    import pytest

    from assets.resources import ComputeResource, CurationResource, OutputStore

    catalog = write_catalog(tmp / "models.yaml", {"tiny": save_tiny_model(tmp / "tiny", layers)})
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LG_MODEL_CATALOG", str(catalog))
        instance = dg.DagsterInstance.ephemeral()
        instance.add_dynamic_partitions("model", ["tiny"])
        yield instance, {
            "store": OutputStore(root=str(tmp / "out")),
            "curation": CurationResource(n_offline_examples=n_examples, cache_dir=str(tmp / "cache")),
            "compute": ComputeResource(cache_dir=str(tmp / "cache"), batch_size=2),
        }


def materialize(
    world: tuple[Any, dict[str, Any]],
    selection: list[Any],
    partition_key: Any = None,
    run_config: dict[str, Any] | None = None,
) -> Any:
    """One in-process run of the project's definitions on a tiny_world, failures returned rather than raised."""
    import dagster as dg

    from lg_pipeline.definitions import defs

    instance, resources = world
    return dg.materialize(
        [*defs.assets, *defs.asset_checks],
        selection=selection,
        partition_key=partition_key,
        instance=instance,
        resources=resources,
        run_config=run_config,
        raise_on_error=False,
    )
