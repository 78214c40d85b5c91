"""Teacher backends that need an adapter (a local model), and the factory the Dagster resource calls.

The teacher protocol, the answer cache and the HTTP and precomputed teachers are in `lg_pipeline.curation.teacher`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lg_pipeline.curation.teacher import (
    PROMPT_VERSION,
    CachedTeacher,
    OpenAICompatibleTeacher,
    PrecomputedTeacher,
    Teacher,
    check_endpoint,
    check_key_variable,
)
from lg_pipeline.errors import InputError

BACKENDS = ("none", "openai", "transformers", "precomputed")


class TransformersTeacher(CachedTeacher):
    """A local causal LM (a catalog name, or a transformers folder) writing the responses on `device` in `dtype`.

    Greedy at temperature 0 (sampling above it); at most `max_new_tokens` new tokens; the prompt goes through the
    tokenizer's chat template when it has one, else as plain text; only the new tokens are decoded. The model is
    loaded on the first cache miss, so a fully cached rerun never loads it. The device is not part of the cache key
    (a GPU of a lease today, another tomorrow); the dtype is.
    """

    def __init__(
        self,
        model: str,
        cache_dir: str | Path = ".cache/curation",
        device: str = "cpu",
        dtype: str | None = None,
        temperature: float = 0.0,
        max_new_tokens: int = 2048,
        model_cache_dir: str | Path = ".cache",
    ):
        from lg_pipeline.gradients.devices import DTYPES, check_device

        where = f"teacher model {model!r}"
        try:
            self.device = check_device(device)
        except InputError as exc:
            raise InputError(f"{where}: {exc}") from None
        if dtype and dtype not in DTYPES:
            raise InputError(f"{where}: dtype must be one of {DTYPES}, got {dtype!r}")
        if temperature < 0 or max_new_tokens < 1:
            raise InputError(f"{where}: need temperature >= 0 and max_new_tokens >= 1")
        self.model, self.dtype, self.model_cache_dir = model, dtype or None, model_cache_dir
        self.identity = ["transformers", _model_identity(model), self.dtype]
        self.name = f"{model} via transformers (prompt {PROMPT_VERSION})"
        self.cache_dir = Path(cache_dir) / "teacher"
        self.params = {"temperature": temperature, "max_new_tokens": max_new_tokens}
        self._loaded: tuple[Any, Any] | None = None

    def _load(self) -> tuple[Any, Any]:
        """(model, tokenizer) on the teacher's device, loaded once per instance."""
        if self._loaded is None:
            from data_sources.models.catalog import open_model

            model, tokenizer, _ = open_model(self.model, self.device, self.dtype, self.model_cache_dir)
            self._loaded = (model, tokenizer)
        return self._loaded

    def _generate(self, prompt: str) -> str:
        import torch

        model, tokenizer = self._load()
        if getattr(tokenizer, "chat_template", None):
            text = tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
            )
            encoded = tokenizer(text, add_special_tokens=False, return_tensors="pt")
        else:
            encoded = tokenizer(prompt, return_tensors="pt")
        encoded = encoded.to(model.device)
        temperature = self.params["temperature"]
        sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        with torch.inference_mode():
            out = model.generate(**encoded, max_new_tokens=self.params["max_new_tokens"], pad_token_id=pad, **sampling)
        new = out[0, encoded["input_ids"].shape[1] :]
        return tokenizer.decode(new, skip_special_tokens=True).strip()


def _model_identity(model: str) -> str:
    """What the cache key knows of the teacher model: its catalog entry (source and location), or the folder."""
    from data_sources.models.catalog import catalog_path, model_catalog

    catalog = model_catalog()
    if model in catalog:
        spec = catalog[model]
        return f"{spec.name}|{spec.source}|{spec.repo_id or spec.path or spec.package}|{spec.file or ''}"
    if Path(model).is_dir():
        return str(Path(model).resolve())
    raise InputError(f"teacher model {model!r}: not in the model catalog ({catalog_path()}) and not a local folder")


def make_teacher(
    backend: str,
    *,
    model: str = "",
    base_url: str = "",
    api_key_env: str = "OPENAI_API_KEY",
    device: str = "cpu",
    dtype: str = "",
    temperature: float = 0.0,
    max_tokens: int = 2048,
    file: str = "",
    cache_dir: str | Path = ".cache/curation",
    model_cache_dir: str | Path = ".cache",
) -> Teacher | None:
    """A teacher from plain options (None for backend "" or "none"); a bad option is an InputError naming it.

    openai: `model`, `base_url`, `api_key_env` (the NAME of the variable holding the key), `temperature`,
    `max_tokens`. transformers: `model` (catalog name or folder), `device`, `dtype` (empty: the catalog's),
    `temperature`, `max_tokens` (new tokens). precomputed: `file`, a study-format JSON of {instruction, output}.
    """
    backend = (backend or "none").strip().lower()
    if backend not in BACKENDS:
        raise InputError(f"teacher: unknown backend {backend!r} (one of {', '.join(BACKENDS)})")
    if backend == "none":
        return None
    if backend == "precomputed":
        if not file:
            raise InputError("teacher_file: the precomputed teacher needs a study-format JSON file")
        return PrecomputedTeacher.from_study_json(file)
    if not model:
        raise InputError(f"teacher_model: the {backend} teacher needs a model")
    if backend == "transformers":
        return TransformersTeacher(
            model, cache_dir, device, dtype or None, temperature, max_tokens, model_cache_dir=model_cache_dir
        )
    if not base_url:
        raise InputError("teacher_base_url: the openai teacher needs the endpoint's base URL (e.g. .../v1)")
    check_key_variable(api_key_env or "")  # the value is not echoed: it may be the key itself
    check_endpoint(base_url)
    return OpenAICompatibleTeacher(model, base_url, cache_dir, api_key_env, temperature, max_tokens)
