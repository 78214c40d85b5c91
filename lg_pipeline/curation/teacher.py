"""Teachers write Detailed CoT when a source carries none (the study used GPT-4o).

- `PrecomputedTeacher`: responses already written (a mapping, or a study-format JSON of {instruction, output}).
- `OpenAICompatibleTeacher`: any OpenAI-compatible chat-completions endpoint, over urllib. Retries with backoff on
  429/5xx and connection errors; a 401/403 fails at once with a message that never contains the key.
- `TransformersTeacher`: a local causal LM (catalog name or transformers folder) generating on the configured
  device and dtype; greedy at temperature 0; the model is loaded on the first cache miss only.

Both generating teachers share `CachedTeacher`: every response is cached on disk under a hash of (teacher,
PROMPT_VERSION, prompt, generation params), so reruns cost nothing and stay identical. `make_teacher` builds any of
the three from plain options (what the Dagster resource passes).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from lg_pipeline.examples import InputError, load_study_json

PROMPT_VERSION = "detailed-cot-v1"
PROMPT_TEMPLATE = (
    "Answer the following question. Think through it step by step and explain each step of your reasoning in "
    "detail before you state the final answer.\n\n{question}"
)


class Teacher(Protocol):
    """Writes a detailed step-by-step response for an instruction; None when it has none for it."""

    name: str

    def respond(self, instruction: str) -> str | None: ...


class PrecomputedTeacher:
    """Responses written beforehand, keyed by instruction text."""

    def __init__(self, responses: Mapping[str, str], name: str):
        self.responses = dict(responses)
        self.name = name

    @classmethod
    def from_study_json(cls, path: str | Path, name: str | None = None) -> PrecomputedTeacher:
        """A study-format file (e.g. a `*_with_cot_gpt4o.json`) as a teacher; its rows are validated on load."""
        examples = load_study_json(path)
        return cls({ex.instruction: ex.response for ex in examples}, name or f"precomputed:{Path(path).name}")

    def respond(self, instruction: str) -> str | None:
        return self.responses.get(instruction)


def _retry_after(error: urllib.error.HTTPError) -> float | None:
    value = error.headers.get("Retry-After") if error.headers else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


class CachedTeacher:
    """A teacher that generates, with every response on disk under a hash of (identity, PROMPT_VERSION, prompt,
    params): a second run, or a second instance with the same settings, answers from the cache without generating.

    Subclasses set `name` (shown in metadata), `identity` (what tells teachers apart; never a secret), `params`
    (generation parameters) and `cache_dir`, and implement `_generate(prompt)`.
    """

    name: str
    identity: list[Any]
    params: dict[str, Any]
    cache_dir: Path

    def _cache_path(self, prompt: str) -> Path:
        key = json.dumps([*self.identity, PROMPT_VERSION, prompt, self.params], sort_keys=True)
        digest = hashlib.sha256(key.encode("utf-8")).hexdigest()
        return self.cache_dir / digest[:2] / f"{digest}.json"

    def respond(self, instruction: str) -> str | None:
        prompt = PROMPT_TEMPLATE.format(question=instruction)
        path = self._cache_path(prompt)
        if path.is_file():
            return json.loads(path.read_text(encoding="utf-8"))["response"]
        text = self._generate(prompt)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"teacher": self.name, "prompt": prompt, "response": text}), encoding="utf-8")
        tmp.replace(path)
        return text

    def _generate(self, prompt: str) -> str:
        raise NotImplementedError


def _public_url(url: str) -> str:
    """The URL without user info, query or fragment: what may be shown (a key can hide in any of them)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class OpenAICompatibleTeacher(CachedTeacher):
    """Chat completions at `base_url` (e.g. https://api.openai.com/v1); the key is read from `api_key_env`."""

    def __init__(
        self,
        model: str,
        base_url: str,
        cache_dir: str | Path = ".cache/curation",
        api_key_env: str = "OPENAI_API_KEY",
        temperature: float = 0.0,
        max_tokens: int = 2048,
        max_retries: int = 5,
        backoff_seconds: float = 2.0,
        timeout_seconds: float = 120.0,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.model, self.base_url = model, base_url.rstrip("/")
        self.public_url = _public_url(self.base_url)
        self.name = f"{model} via {self.public_url} (prompt {PROMPT_VERSION})"
        self.identity = [self.model, self.base_url]  # hashed only, never shown
        self.cache_dir = Path(cache_dir) / "teacher"
        self.api_key_env = api_key_env
        self.params = {"temperature": temperature, "max_tokens": max_tokens}
        self.max_retries, self.backoff, self.timeout, self.sleep = max_retries, backoff_seconds, timeout_seconds, sleep

    def _request(self, prompt: str) -> urllib.request.Request:
        body = {"model": self.model, "messages": [{"role": "user", "content": prompt}], **self.params}
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return urllib.request.Request(
            f"{self.base_url}/chat/completions", data=json.dumps(body).encode("utf-8"), headers=headers
        )

    def _generate(self, prompt: str) -> str:
        where = f"teacher {self.model} at {self.public_url}"
        last = ""
        for attempt in range(self.max_retries + 1):
            try:
                with urllib.request.urlopen(self._request(prompt), timeout=self.timeout) as reply:
                    return _content(json.loads(reply.read().decode("utf-8")), where)
            except urllib.error.HTTPError as exc:
                if exc.code in (401, 403):
                    raise InputError(
                        f"{where}: authentication failed (HTTP {exc.code}); check the key in ${self.api_key_env}"
                    ) from None
                if exc.code != 429 and exc.code < 500:
                    raise InputError(f"{where}: request rejected (HTTP {exc.code})") from None
                last, wait = f"HTTP {exc.code}", _retry_after(exc)
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                last, wait = f"connection failed ({getattr(exc, 'reason', exc)})", None
            if attempt < self.max_retries:
                self.sleep(min(wait if wait is not None else self.backoff * 2**attempt, 60.0))
        raise InputError(f"{where}: {last} after {self.max_retries + 1} tries")


def _content(payload: dict, where: str) -> str:
    try:
        text = payload["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise InputError(f"{where}: reply is not a chat completion") from None
    if not isinstance(text, str) or not text.strip():
        raise InputError(f"{where}: empty completion")
    return text.strip()


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
        from lg_pipeline.models import DTYPES, check_device

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
            from data_sources.model_catalog import open_model

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
    from data_sources.model_catalog import catalog_path, model_catalog

    catalog = model_catalog()
    if model in catalog:
        spec = catalog[model]
        return f"{spec.name}|{spec.source}|{spec.repo_id or spec.path or spec.package}|{spec.file or ''}"
    if Path(model).is_dir():
        return str(Path(model).resolve())
    raise InputError(f"teacher model {model!r}: not in the model catalog ({catalog_path()}) and not a local folder")


BACKENDS = ("none", "openai", "transformers", "precomputed")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


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
    if not _ENV_NAME.fullmatch(api_key_env or ""):  # the value is not echoed: it may be the key itself
        raise InputError("teacher_api_key_env: must be the NAME of an environment variable, not the key")
    return OpenAICompatibleTeacher(model, base_url, cache_dir, api_key_env, temperature, max_tokens)
