"""Resources, configured once per environment (see `resources_for`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import dagster as dg

PROJECT_ROOT = Path(__file__).resolve().parents[1]
_LOADED: dict[tuple[str, str, str], Any] = {}  # one model kept per process: runs in one process reuse it


def _default_root(env: str, folder: str) -> str:
    return os.environ.get(env, str(PROJECT_ROOT / folder))


class OutputStore(dg.ConfigurableResource):
    """Where every table and figure goes; one root, one layout."""

    root: str = _default_root("LG_OUTPUT_ROOT", "outputs")

    def path(self, *parts: str) -> Path:
        return Path(self.root, *parts)

    def curated(self, variant: str) -> Path:
        return self.path("curated", f"{variant}.parquet")

    def gradients(self, model: str, variant: str) -> Path:
        return self.path("gradients", model, f"{variant}.parquet")

    def verdict(self, model: str, variant: str) -> Path:
        """The gradient check's last verdict: the gate that summaries and figures read."""
        return self.path("gradients", model, f"{variant}.check.json")

    def summary(self, model: str) -> Path:
        return self.path("summaries", model)

    def figures(self) -> Path:
        return self.path("figures")


class CurationResource(dg.ConfigurableResource):
    """How curated tables are sampled; `release_dir` switches the study's datasets to its release folder."""

    n_examples: int = 500  # study and hub sources
    n_offline_examples: int = int(os.environ.get("LG_N_OFFLINE_EXAMPLES", "4"))  # offline packs, CPU-sized
    seed: int = 0
    release_dir: str | None = os.environ.get("LG_RELEASE_DIR")
    tokenizer_model: str = "smollm2-135m-instruct"
    cache_dir: str = _default_root("LG_CACHE_DIR", ".cache")

    def settings(self, offline: bool, tokenizer: Any = None) -> Any:
        from lg_pipeline.curation import CurationSettings

        return CurationSettings(
            n_examples=self.n_offline_examples if offline and not self.release_dir else self.n_examples,
            seed=self.seed,
            release_dir=self.release_dir,
            cache_dir=str(Path(self.cache_dir, "curation")),
            tokenizer=tokenizer,
        )

    def tokenizer(self) -> Any:
        """The tokenizer the wiki cuts are counted in (the reference model family's)."""
        from data_sources.model_catalog import get_model_spec, resolve
        from lg_pipeline.models import load_tokenizer

        return load_tokenizer(resolve(get_model_spec(self.tokenizer_model), self.cache_dir), self.cache_dir)


class ComputeResource(dg.ConfigurableResource):
    """Device, dtype and engine settings for gradient steps (`cpu`, `cuda`, `cuda:N`; dtype empty = catalog's)."""

    device: str = os.environ.get("LG_DEVICE", "cpu")
    dtype: str = os.environ.get("LG_DTYPE", "")
    batch_size: int = 4
    max_length: int = 1024
    method: str = "core"
    targets: str = "q,k,v,o"
    cache_dir: str = _default_root("LG_CACHE_DIR", ".cache")

    def load(self, model_name: str) -> tuple[Any, Any, Any]:
        """(model, tokenizer, spec), reused across runs in one process."""
        from data_sources.model_catalog import open_model

        key = (model_name, self.device, self.dtype)
        if key not in _LOADED:
            _LOADED.clear()
            _LOADED[key] = open_model(model_name, self.device, self.dtype or None, self.cache_dir)
        return _LOADED[key]

    def engine_config(self, chat: bool) -> Any:
        from lg_pipeline.engine import EngineConfig
        from lg_pipeline.targets import parse_suffixes

        return EngineConfig(self.method, parse_suffixes(self.targets), self.batch_size, self.max_length, chat)


def resources_for(env: str | None = None) -> dict[str, Any]:
    """Resources per environment (`LG_ENV`): local CPU by default, `gpu` for a CUDA machine."""
    env = env or os.environ.get("LG_ENV", "local")
    compute = {
        "local": ComputeResource(),
        "gpu": ComputeResource(device="cuda", dtype="bfloat16", batch_size=8),
    }
    if env not in compute:
        raise ValueError(f"LG_ENV must be one of {sorted(compute)}, got '{env}'")
    return {"store": OutputStore(), "curation": CurationResource(), "compute": compute[env]}
