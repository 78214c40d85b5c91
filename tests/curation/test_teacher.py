"""The OpenAI-compatible teacher against a local HTTP server on 127.0.0.1 (started and stopped by the tests)."""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from lg_pipeline.curation import CurationSettings
from lg_pipeline.curation.teacher import PROMPT_VERSION, OpenAICompatibleTeacher, PrecomputedTeacher
from lg_pipeline.errors import InputError
from tests.helpers.curation import build_variant

SECRET = "sk-test-very-secret-value"


class FakeAPI:
    """Replies with a scripted list of statuses (then 200) and records every request it got."""

    def __init__(self):
        self.script: list[int] = []
        self.requests: list[dict] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's naming)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                api.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
                status = api.script.pop(0) if api.script else 200
                reply = {"error": {"message": f"bad key {self.headers.get('Authorization')}"}}
                if status == 200:
                    question = body["messages"][0]["content"]
                    reply = {"choices": [{"message": {"content": f"Step 1: think.\nAnswer for {len(question)}"}}]}
                payload = json.dumps(reply).encode()
                self.send_response(status)
                if status == 429:
                    self.send_header("Retry-After", "0.5")
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)


@pytest.fixture
def api():
    server = FakeAPI()
    server.thread.start()
    yield server
    server.server.shutdown()
    server.server.server_close()


@pytest.fixture
def teacher(api, tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_TEACHER_API_KEY", SECRET)
    waits: list[float] = []
    t = OpenAICompatibleTeacher(
        "test-model", api.url, cache_dir=tmp_path, api_key_env="TEST_TEACHER_API_KEY", max_retries=3, sleep=waits.append
    )
    t.waits = waits
    return t


def test_completion_is_requested_and_cached(api, teacher, tmp_path):
    text = teacher.respond("What is 2+2?")
    assert text.startswith("Step 1")
    (request,) = api.requests
    assert request["path"] == "/v1/chat/completions" and request["auth"] == f"Bearer {SECRET}"
    assert request["body"]["model"] == "test-model" and request["body"]["temperature"] == 0.0
    assert "What is 2+2?" in request["body"]["messages"][0]["content"]
    assert teacher.respond("What is 2+2?") == text and len(api.requests) == 1  # served from the disk cache
    assert len(list((tmp_path / "teacher").rglob("*.json"))) == 1
    teacher.respond("What is 3+3?")
    assert len(api.requests) == 2
    assert PROMPT_VERSION in teacher.name


def test_rate_limits_and_server_errors_are_retried_with_backoff(api, teacher):
    api.script = [429, 503, 500]
    assert teacher.respond("q").startswith("Step 1")
    assert len(api.requests) == 4
    assert teacher.waits == [0.5, 4.0, 8.0]  # Retry-After first, then exponential backoff (2 s base)


def test_persistent_failure_gives_up_with_one_line(api, teacher):
    api.script = [502] * 10
    with pytest.raises(InputError, match=r"HTTP 502 after 4 tries"):
        teacher.respond("q")
    assert len(api.requests) == 4


def test_auth_failure_is_immediate_and_never_shows_the_key(api, teacher):
    api.script = [401]
    with pytest.raises(InputError) as err:
        teacher.respond("q")
    message = str(err.value)
    assert "HTTP 401" in message and "TEST_TEACHER_API_KEY" in message
    assert SECRET not in message and SECRET not in repr(err.value.__cause__) and err.value.__suppress_context__
    assert len(api.requests) == 1 and teacher.waits == []


def test_connection_refused_is_reported(tmp_path):
    teacher = OpenAICompatibleTeacher(
        "m", "http://127.0.0.1:9/v1", cache_dir=tmp_path, max_retries=1, sleep=lambda s: None, timeout_seconds=2
    )
    with pytest.raises(InputError, match="connection failed"):
        teacher.respond("q")


def test_http_teacher_writes_detailed_cot_for_a_variant(api, teacher, tmp_path):
    settings = CurationSettings(n_examples=3, cache_dir=str(tmp_path), teacher=teacher)
    frame, meta = build_variant("gsm_symbolic__detailed__correct", settings)
    assert len(frame) == 3 and all(r.startswith("Step 1") for r in frame.response)
    assert meta["teacher"] == teacher.name and meta["detailed_vs_gold"]["agree"] <= 3
    wrong, _ = build_variant("gsm_symbolic__detailed__wrong", settings)
    assert len(api.requests) == 3  # the wrong set reuses the cached responses
    assert list(wrong.example_id) == list(frame.example_id)


def test_precomputed_teacher_from_study_json(tmp_path):
    path = tmp_path / "detailed.json"
    path.write_text(json.dumps([{"instruction": "q1", "input": "", "output": "long answer"}]), encoding="utf-8")
    teacher = PrecomputedTeacher.from_study_json(path)
    assert teacher.respond("q1") == "long answer" and teacher.respond("q2") is None
    assert teacher.name == "precomputed:detailed.json"


# ------------------------------------------------------------------------------------------------ transformers
@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    from tests.helpers.tiny_models import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("teacher") / "tiny", layers=1)


def _no_model(*args, **kwargs):
    raise AssertionError("the model was loaded, but every answer is cached")


def test_transformers_teacher_generates_greedily_and_caches(tiny_folder, tmp_path, monkeypatch, single_thread):
    from data_sources.teachers import TransformersTeacher

    teacher = TransformersTeacher(str(tiny_folder), cache_dir=tmp_path / "a", max_new_tokens=12)
    seen: list[list[int]] = []
    model, tokenizer = teacher._load()
    generate = model.generate
    monkeypatch.setattr(model, "generate", lambda **kw: seen.append(kw["input_ids"][0].tolist()) or generate(**kw))
    text = teacher.respond("What is 2+2?")
    assert isinstance(text, str) and text.strip()
    prompt = tokenizer.decode(seen[0])
    assert prompt.startswith("<user>") and prompt.endswith("<assistant>") and "What is 2+2?" in prompt  # chat template
    assert "step by step" not in text  # only the new tokens are decoded
    assert PROMPT_VERSION in teacher.name and str(tiny_folder) in teacher.name

    fresh = TransformersTeacher(str(tiny_folder), cache_dir=tmp_path / "b", max_new_tokens=12)
    assert fresh.respond("What is 2+2?") == text  # greedy: the same answer without the cache

    monkeypatch.setattr(TransformersTeacher, "_load", _no_model)
    again = TransformersTeacher(str(tiny_folder), cache_dir=tmp_path / "a", max_new_tokens=12)
    assert again.respond("What is 2+2?") == text  # the second instance answers from the disk cache
    with pytest.raises(AssertionError, match="was loaded"):  # another generation parameter: a cache miss
        TransformersTeacher(str(tiny_folder), cache_dir=tmp_path / "a", max_new_tokens=11).respond("What is 2+2?")
    with pytest.raises(AssertionError, match="was loaded"):
        TransformersTeacher(str(tiny_folder), cache_dir=tmp_path / "a", max_new_tokens=12, dtype="bfloat16").respond(
            "What is 2+2?"
        )


def test_transformers_teacher_without_chat_template_and_by_catalog_name(tmp_path, monkeypatch, single_thread):
    from data_sources.teachers import TransformersTeacher
    from tests.helpers.tiny_models import save_tiny_model, write_catalog

    folder = save_tiny_model(tmp_path / "plain", layers=1, chat=False)
    monkeypatch.setenv("LG_MODEL_CATALOG", str(write_catalog(tmp_path / "models.yaml", {"tiny": folder}, "base")))
    teacher = TransformersTeacher("tiny", cache_dir=tmp_path, max_new_tokens=6)
    _, tokenizer = teacher._load()
    assert not tokenizer.chat_template
    assert teacher.respond("q") == TransformersTeacher(str(folder), cache_dir=tmp_path / "b", max_new_tokens=6).respond(
        "q"
    )  # plain prompt; the catalog entry and its folder are the same model


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"device": "gpu0"}, "gpu0"),
        ({"device": "cuda:x"}, "cuda:x"),
        ({"dtype": "int8"}, "int8"),
        ({"model": "no-such-teacher"}, "no-such-teacher"),
    ],
)
def test_transformers_teacher_bad_options_are_named(tiny_folder, tmp_path, options, named):
    from data_sources.teachers import TransformersTeacher

    options = {"model": str(tiny_folder), **options}
    with pytest.raises(InputError, match=named) as err:
        TransformersTeacher(cache_dir=tmp_path, **options)
    assert "teacher model" in str(err.value)


def test_cuda_teacher_on_a_machine_without_cuda_fails_clearly(tiny_folder, tmp_path):
    import torch

    from data_sources.teachers import TransformersTeacher

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(InputError, match=r"'cuda:1'.*CUDA is not available"):
        TransformersTeacher(str(tiny_folder), cache_dir=tmp_path, device="cuda:1")


# ------------------------------------------------------------------------------------------------ configuration
@pytest.mark.parametrize(
    ("backend", "options", "named"),
    [
        ("gpt", {}, "unknown backend 'gpt'"),
        ("openai", {"base_url": "http://x/v1"}, "teacher_model"),
        ("openai", {"model": "m"}, "teacher_base_url"),
        ("openai", {"model": "m", "base_url": "http://x/v1", "api_key_env": SECRET}, "teacher_api_key_env"),
        ("transformers", {}, "teacher_model"),
        ("precomputed", {}, "teacher_file"),
        ("precomputed", {"file": "/nonexistent/cot.json"}, "cot.json"),
    ],
)
def test_make_teacher_names_the_bad_option(backend, options, named, tmp_path):
    from data_sources.teachers import make_teacher

    with pytest.raises(InputError, match=named) as err:
        make_teacher(backend, cache_dir=tmp_path, **options)
    assert SECRET not in str(err.value)


def test_make_teacher_builds_each_backend(tiny_folder, tmp_path):
    from data_sources.teachers import TransformersTeacher, make_teacher

    assert make_teacher("") is None and make_teacher("none") is None
    local = make_teacher("transformers", model=str(tiny_folder), max_tokens=7, cache_dir=tmp_path)
    assert isinstance(local, TransformersTeacher) and local.params == {"temperature": 0.0, "max_new_tokens": 7}
    assert local._loaded is None  # lazy: nothing loaded until the first cache miss
    path = tmp_path / "cot.json"
    path.write_text(json.dumps([{"instruction": "q1", "input": "", "output": "long answer"}]), encoding="utf-8")
    assert make_teacher("precomputed", file=str(path)).respond("q1") == "long answer"


def test_the_key_never_reaches_names_metadata_or_cache(api, tmp_path, monkeypatch):
    from assets.resources import CurationResource

    monkeypatch.setenv("TEST_TEACHER_API_KEY", SECRET)
    resource = CurationResource(
        teacher="openai",
        teacher_model="test-model",
        teacher_base_url=api.url,
        teacher_api_key_env="TEST_TEACHER_API_KEY",
        n_offline_examples=2,
        cache_dir=str(tmp_path),
    )
    settings = resource.settings(offline=True)
    assert isinstance(settings.teacher, OpenAICompatibleTeacher) and settings.keep_disagreeing
    frame, meta = build_variant("gsm_symbolic__detailed__correct", settings)
    assert len(frame) == 2 and api.requests[0]["auth"] == f"Bearer {SECRET}"  # the key is used...
    assert meta["teacher"] == settings.teacher.name and SECRET not in json.dumps(meta, default=str)  # ...not shown
    cached = list((tmp_path / "curation" / "teacher").rglob("*.json"))
    assert len(cached) == 2 and all(SECRET not in p.read_text() for p in cached)

    # a key written into the URL (user info or query) is not shown either
    leaky = OpenAICompatibleTeacher("m", f"https://user:{SECRET}@api.example.com:8443/v1?key={SECRET}", tmp_path)
    assert SECRET not in leaky.name and "https://api.example.com:8443/v1" in leaky.name


# ------------------------------------------------------------------------------------------------ security
@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"api_key_env": "DATABASE_PASSWORD"}, "is not a key variable"),
        ({"api_key_env": "HF_TOKEN"}, "is not a key variable"),
        ({"base_url": "http://api.example.com/v1"}, "must use https"),
        ({"base_url": "ftp://api.example.com/v1"}, "not an http(s) URL"),
        ({"base_url": "https://user:pw@api.example.com/v1", "api_key_env": "PGPASSWORD"}, "is not a key variable"),
    ],
)
def test_the_openai_teacher_reads_only_key_variables_and_talks_https(options, named, tmp_path, monkeypatch):
    from data_sources.teachers import make_teacher

    monkeypatch.delenv("LG_TEACHER_KEY_VARS", raising=False)
    settings = {"model": "m", "base_url": "https://api.example.com/v1", **options}
    with pytest.raises(InputError, match=re.escape(named)) as err:
        make_teacher("openai", cache_dir=tmp_path, **settings)
    assert "pw@" not in str(err.value)


def test_a_deployment_may_list_other_key_variables_and_loopback_may_use_http(tmp_path, monkeypatch):
    from data_sources.teachers import make_teacher

    monkeypatch.setenv("LG_TEACHER_KEY_VARS", "AZURE_OPENAI_KEY, OTHER")
    teacher = make_teacher("openai", model="m", base_url="http://127.0.0.1:8000/v1", api_key_env="AZURE_OPENAI_KEY",
                           cache_dir=tmp_path)
    assert teacher.api_key_env == "AZURE_OPENAI_KEY"


class Redirector:
    """An endpoint on 127.0.0.1 that answers every request with `status` and a Location on another host, where a
    second server records whatever reaches it."""

    def __init__(self, status: int):
        self.landed: list[dict] = []
        self.seen: list[dict] = []
        landed, seen = self.landed, self.seen

        class Elsewhere(BaseHTTPRequestHandler):
            def _record(self):
                landed.append({"path": self.path, "auth": self.headers.get("Authorization")})
                self.send_response(200)
                self.end_headers()
                self.wfile.write(json.dumps({"choices": [{"message": {"content": "stolen"}}]}).encode())

            do_GET = do_POST = _record  # noqa: N815 (http.server's naming)

            def log_message(self, *args):
                pass

        self.other = _server_on_another_host(Elsewhere)
        other_host, other_port = self.other.server_address[:2]
        location = f"http://{other_host}:{other_port}/v1/chat/completions"

        class Redirect(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                seen.append({"auth": self.headers.get("Authorization")})
                self.send_response(status)
                self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        for s in (self.server, self.other):
            threading.Thread(target=s.serve_forever, daemon=True).start()

    def close(self):
        for s in (self.server, self.other):
            s.shutdown()
            s.server_close()


def _server_on_another_host(handler) -> ThreadingHTTPServer:
    """127.0.0.2 (another loopback address: another host to urllib); where it cannot be bound, `localhost` by name."""
    try:
        return ThreadingHTTPServer(("127.0.0.2", 0), handler)
    except OSError:
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.server_address = ("localhost", server.server_address[1])
        return server


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_to_another_host_is_refused_and_the_key_never_leaves(status, tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_TEACHER_API_KEY", SECRET)
    endpoint = Redirector(status)
    try:
        teacher = OpenAICompatibleTeacher("m", endpoint.url, cache_dir=tmp_path, api_key_env="TEST_TEACHER_API_KEY",
                                          max_retries=2, sleep=lambda s: None)
        with pytest.raises(InputError, match=f"redirects \\(HTTP {status} to http://") as raised:
            teacher.respond("What is 2+2?")
    finally:
        endpoint.close()
    assert endpoint.seen == [{"auth": f"Bearer {SECRET}"}]  # asked once, not retried
    assert endpoint.landed == [] and SECRET not in str(raised.value)
    assert not list((tmp_path / "teacher").rglob("*.json"))


def test_cached_answers_are_readable_by_their_owner_only(api, teacher, tmp_path):
    import os
    import stat

    teacher.respond("What is 2+2?")
    (cached,) = (tmp_path / "teacher").rglob("*.json")
    assert stat.S_IMODE(cached.stat().st_mode) == 0o600
    os.chmod(cached, 0o644)  # a cache an older version wrote
    teacher.respond("What is 2+2?")
    assert stat.S_IMODE(cached.stat().st_mode) == 0o600 and len(api.requests) == 1
