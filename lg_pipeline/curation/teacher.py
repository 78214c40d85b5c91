"""Teachers write Detailed CoT when a source carries none (the study used GPT-4o).

- `PrecomputedTeacher`: responses already written (a mapping, or a study-format JSON of {instruction, output}).
- `OpenAICompatibleTeacher`: any OpenAI-compatible chat-completions endpoint, over urllib. Retries with backoff on
  429/5xx and connection errors; a 401/403 fails at once with a message that never contains the key.
- `data_sources.teachers.TransformersTeacher`: a local causal LM (it loads a model, so it lives with the model
  adapters), built on the same `CachedTeacher`.

Generating teachers share `CachedTeacher`: every response is cached on disk under a hash of (teacher,
PROMPT_VERSION, prompt, generation params), so reruns cost nothing and stay identical.
`data_sources.teachers.make_teacher` builds any of them from plain options (what the Dagster resource passes).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from lg_pipeline.errors import InputError
from lg_pipeline.io.atomic import atomic_write_text
from lg_pipeline.io.study_json import load_study_json

PROMPT_VERSION = "detailed-cot-v1"
CACHE_MODE = 0o600  # a cached answer is the user's data: readable by its owner only
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
        return self.complete(PROMPT_TEMPLATE.format(question=instruction))

    def complete(self, prompt: str) -> str:
        """The teacher's reply to `prompt` as written (other tasks than Detailed CoT, e.g. the dynamics' rephrases,
        bring their own prompt), cached like every response."""
        path = self._cache_path(prompt)
        if path.is_file():
            if path.stat().st_mode & 0o077:
                os.chmod(path, CACHE_MODE)  # written by an older version, readable by others
            return json.loads(path.read_text(encoding="utf-8"))["response"]
        text = self._generate(prompt)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        record = json.dumps({"teacher": self.name, "prompt": prompt, "response": text})
        atomic_write_text(path, record)  # a temp file made by mkstemp: 0600 from its creation
        os.chmod(path, CACHE_MODE)
        return text

    def _generate(self, prompt: str) -> str:
        raise NotImplementedError


def _public_url(url: str) -> str:
    """The URL without user info, query or fragment: what may be shown (a key can hide in any of them)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")


def check_key_variable(name: str) -> str:
    """Only a variable meant to hold an API key may be read: `*_API_KEY`, or one listed in `LG_TEACHER_KEY_VARS`.

    Otherwise a launchpad setting could send any secret of the run's environment (a database password, an
    HF token) to any endpoint as a bearer token.
    """
    allowed = {v.strip() for v in os.environ.get("LG_TEACHER_KEY_VARS", "").split(",") if v.strip()}
    if not name or not (name.isidentifier() and name.isascii()):
        raise InputError("teacher_api_key_env: must be the NAME of an environment variable, not the key")
    if not name.endswith("_API_KEY") and name not in allowed:
        raise InputError(
            f"teacher_api_key_env: {name} is not a key variable (use a name ending in _API_KEY, "
            "or list it in LG_TEACHER_KEY_VARS)"
        )
    return name


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """Redirects are reported, never followed: urllib would resend the request, `Authorization` included, to
    whatever host `Location` names, one the endpoint check never saw (a 301/302/303 even turns the POST into a GET
    with the same headers)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None  # urllib then raises the redirect as an HTTPError


def check_endpoint(base_url: str) -> str:
    """https only, except on this machine (a local server over plain http never leaves it)."""
    parts = urllib.parse.urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InputError(f"teacher_base_url: {_public_url(base_url)} is not an http(s) URL")
    if parts.scheme == "http" and parts.hostname not in LOOPBACK_HOSTS:
        raise InputError(f"teacher_base_url: {_public_url(base_url)} must use https (plain http only for localhost)")
    return base_url


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
        self.model, self.base_url = model, check_endpoint(base_url).rstrip("/")
        self.public_url = _public_url(self.base_url)
        self.name = f"{model} via {self.public_url} (prompt {PROMPT_VERSION})"
        self.identity = [self.model, self.base_url]  # hashed only, never shown
        self.cache_dir = Path(cache_dir) / "teacher"
        self.api_key_env = check_key_variable(api_key_env)
        self.params = {"temperature": temperature, "max_tokens": max_tokens}
        self.max_retries, self.backoff, self.timeout, self.sleep = max_retries, backoff_seconds, timeout_seconds, sleep
        self._opener = urllib.request.build_opener(_NoRedirects)

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
                with self._opener.open(self._request(prompt), timeout=self.timeout) as reply:
                    return _content(json.loads(reply.read().decode("utf-8")), where)
            except urllib.error.HTTPError as exc:
                if 300 <= exc.code < 400:
                    target = _public_url(exc.headers.get("Location", "") if exc.headers else "") or "elsewhere"
                    raise InputError(
                        f"{where}: the endpoint redirects (HTTP {exc.code} to {target}); redirects are not followed "
                        "with the key: set teacher_base_url to the endpoint itself"
                    ) from None
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
