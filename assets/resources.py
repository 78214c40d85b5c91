"""Resources and the executor, configured once per environment (`LG_ENV`, see `resources_for`/`executor_for`)."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import dagster as dg
from pydantic import Field, PrivateAttr

from lg_pipeline.vocabulary import StatsKey, VariantKey

PROJECT_ROOT = Path(__file__).resolve().parents[1]
_LOADED: dict[tuple[str, str, str], Any] = {}  # one model kept per process: runs in one process reuse it


DEFAULT_OUTPUT_ROOT = str(PROJECT_ROOT / "outputs")
DEFAULT_CACHE_DIR = str(PROJECT_ROOT / ".cache")


LOCAL_PROTOCOLS = ("", "file", "local")
SUMMARY_TABLES = ("curves", "mad", "variants")  # a model's layer summary (assets.analysis.summaries)


def local_root(root: str) -> Path | None:
    """A local path or `file://` URL as a Path; None for a remote fsspec URL (s3://, gs://, memory://, ...)."""
    from upath import UPath

    path = UPath(root)
    return Path(path.path).expanduser() if path.protocol in LOCAL_PROTOCOLS else None


class OutputStore(dg.ConfigurableResource):
    """Where every table and figure goes: one root, one layout.

    The root is a local path, a `file://` URL, or any fsspec URL. With a remote root a run works in a local
    staging copy (`lg_pipeline.io.remote`): what it reads is pulled on first use, and what it wrote is pushed
    back, file by file, when the run ends (also when it fails, so a gradient run resumes from its chunks).
    """

    root: str = DEFAULT_OUTPUT_ROOT
    staging_dir: str = ""

    _mirror: Any = PrivateAttr(default=None)

    def path(self, *parts: str) -> Path:
        local = local_root(self.root)
        if local is not None:
            return Path(local, *parts)
        return self._remote_mirror().local("/".join(parts))

    def _remote_mirror(self) -> Any:
        from lg_pipeline.io.remote import RemoteMirror, staging_dir

        if self._mirror is None:
            self._mirror = RemoteMirror(self.root, staging_dir(self.root, self.staging_dir or None))
        return self._mirror

    @contextlib.contextmanager
    def yield_for_execution(self, context: dg.InitResourceContext) -> Iterator[OutputStore]:
        """Remote roots: push what the run wrote when it ends, whatever its outcome; then drop the staging copy."""
        try:
            yield self
        finally:
            if self._mirror is not None:
                mirror, self._mirror = self._mirror, None
                uploaded, deleted = mirror.push()
                if context.log:
                    context.log.info(f"{mirror.public_url}: {len(uploaded)} file(s) uploaded, {len(deleted)} deleted")
                mirror.close()

    def curated(self, variant: str | VariantKey) -> Path:
        return self.path("curated", f"{variant}.parquet")

    def curated_build(self, variant: str | VariantKey) -> Path:
        """The curated table's build record (row accounting, drops, cut policy): what its checks verify against."""
        return self.path("curated", f"{variant}.build.json")

    def curated_verdict(self, variant: str | VariantKey) -> Path:
        """The curated checks' last verdict (`assets.gates`): gradient runs of that variant read it."""
        return self.path("curated", f"{variant}.check.json")

    def gradients(self, key: StatsKey) -> Path:
        return self.path("gradients", key.model, f"{key.variant}.parquet")

    def gradient_files(self, model: str) -> dict[VariantKey, Path]:
        """The statistics tables written for a model, by variant."""
        folder = self.path("gradients", model)
        files = sorted(p for p in folder.glob("*.parquet") if not p.name.endswith(".status.parquet"))
        return {VariantKey.parse(p.stem): p for p in files}

    def stats_verdict(self, key: StatsKey) -> Path:
        """The gradient check's last verdict (`assets.gates`): what summaries and figures read."""
        return self.path("gradients", key.model, f"{key.variant}.check.json")

    def summary(self, model: str) -> Path:
        return self.path("summaries", model)

    def summary_verdict(self, model: str) -> Path:
        """The variants that blocked the model's summary, and why (`assets.gates`)."""
        return self.path("summaries", model, "blocked.json")

    def summary_table(self, model: str, table: str) -> Path:
        """One table of a model's summary (`SUMMARY_TABLES`)."""
        if table not in SUMMARY_TABLES:
            raise ValueError(f"{table!r} is not a summary table ({', '.join(SUMMARY_TABLES)})")
        return self.path("summaries", model, f"{table}.parquet")

    def summary_models(self) -> list[str]:
        root = self.path("summaries")
        return sorted(p.name for p in root.glob("*") if p.is_dir()) if root.is_dir() else []

    def figures(self) -> Path:
        return self.path("figures")

    def zero_shot(self, model: str, level: str, ordering: str) -> Path:
        """A zero-shot dynamics run's folder (`lg_pipeline.dynamics.zero_shot.run`): one per model, level, ordering."""
        return self.path("zero_shot", model, level, ordering)

    def zero_shot_verdict(self, model: str, level: str, ordering: str) -> Path:
        """The zero-shot check's last verdict on that run (`assets.gates`), beside its folder (which holds only what
        the run writes)."""
        return self.path("zero_shot", model, level, f"{ordering}.check.json")

    def zero_shot_table(self, model: str, level: str, ordering: str, table: str) -> Path:
        """One table of a zero-shot run's folder (its names: `lg_pipeline.dynamics.zero_shot.run`)."""
        from lg_pipeline.dynamics.zero_shot.run import zero_shot_run

        return zero_shot_run(self.zero_shot(model, level, ordering)).table(table)

    def zero_shot_runs(self) -> list[tuple[str, str, str]]:
        """(model, level, ordering) of every finished zero-shot run folder (one with its settings file)."""
        from lg_pipeline.io.run_folder import SETTINGS_FILE

        root = self.path("zero_shot")
        found = sorted(root.glob(f"*/*/*/{SETTINGS_FILE}")) if root.is_dir() else []
        return [(p.parts[-4], p.parts[-3], p.parts[-2]) for p in found]

    def zero_shot_seeds(self, model: str, level: str, ordering: str) -> Path:
        """The folder of a multi-seed zero-shot run (config `seeds`), apart from the single-seed folders:
        `zero_shot_seeds/<model>/<level>/<ordering>/`, holding `seed-<seed>/` run folders (`dynamics.seeds`)."""
        return self.path("zero_shot_seeds", model, level, ordering)

    def zero_shot_seed_runs(self) -> list[tuple[str, str, str, int, Path]]:
        """(model, level, ordering, seed, folder) of every finished multi-seed zero-shot run folder."""
        from lg_pipeline.dynamics.seeds import seed_folders
        from lg_pipeline.io.run_folder import SETTINGS_FILE

        root = self.path("zero_shot_seeds")
        found = []
        for base in sorted(root.glob("*/*/*")) if root.is_dir() else []:
            for seed, folder in seed_folders(base).items():
                if (folder / SETTINGS_FILE).is_file():
                    found.append((base.parts[-3], base.parts[-2], base.parts[-1], seed, folder))
        return found

    def zero_shot_across_seeds(self, model: str, level: str) -> Path:
        """Where the held-out loss across seeds of a model and level goes (`.parquet` table, `.png` figure)."""
        from lg_pipeline.dynamics.seeds import ACROSS_SEEDS

        return self.zero_shot_figures() / f"{model}__{level}__{ACROSS_SEEDS}"

    def zero_shot_figures(self) -> Path:
        return self.path("figures", "zero_shot")

    def zero_shot_figure(self, *name: str, run: bool = False) -> Path:
        """`figures/zero_shot/<name parts joined by __>.png`; `run=True`: one run's own, under `runs/`."""
        folder = self.zero_shot_figures() / "runs" if run else self.zero_shot_figures()
        return folder / ("__".join(name) + ".png")

    def dynamics(self, key: StatsKey, objective: str) -> Path:
        """A learning-dynamics run's folder (tables per eval step, `lg_pipeline.dynamics.learning.run`)."""
        return self.path("dynamics", key.model, str(key.variant), objective)

    def dynamics_table(self, key: StatsKey, objective: str, table: str) -> Path:
        """One table of a learning-dynamics run's folder (its names: `lg_pipeline.dynamics.learning.run`)."""
        from lg_pipeline.dynamics.learning.run import learning_run

        return learning_run(self.dynamics(key, objective)).table(table)

    def dynamics_verdict(self, key: StatsKey, objective: str) -> Path:
        """The completeness check's last verdict on that run (`assets.gates`)."""
        return self.dynamics(key, objective) / "check.json"

    def dynamics_runs(self) -> list[tuple[StatsKey, str]]:
        """(model|variant, objective) of every run folder with a summary."""
        from lg_pipeline.io.run_folder import SUMMARY_FILE

        root = self.path("dynamics")
        found = sorted(root.glob(f"*/*/*/{SUMMARY_FILE}")) if root.is_dir() else []
        return [(StatsKey.of(p.parts[-4], p.parts[-3]), p.parts[-2]) for p in found]

    def dynamics_seeds(self, key: StatsKey, objective: str) -> Path:
        """The folder of a multi-seed learning-dynamics run (config `seeds`), apart from the single-seed folders:
        `dynamics_seeds/<model>/<variant>/<objective>/`, holding `seed-<seed>/` run folders (`dynamics.seeds`) and
        the table and figure across them."""
        return self.path("dynamics_seeds", key.model, str(key.variant), objective)

    def dynamics_seed_runs(self, key: StatsKey) -> list[tuple[str, int, Path]]:
        """(objective, seed, folder) of every multi-seed learning-dynamics run folder of `key` with a summary."""
        from lg_pipeline.dynamics.seeds import seed_folders
        from lg_pipeline.io.run_folder import SUMMARY_FILE

        root = self.path("dynamics_seeds", key.model, str(key.variant))
        found = []
        for base in sorted(root.iterdir()) if root.is_dir() else []:
            found += [(base.name, s, f) for s, f in seed_folders(base).items() if (f / SUMMARY_FILE).is_file()]
        return found

    def dynamics_figures(self) -> Path:
        return self.path("figures", "dynamics")


class CurationResource(dg.ConfigurableResource):
    """How curated tables are sampled; `release_dir` switches the study's datasets to its release folder.

    Detailed CoT for sources that carry none comes from a teacher (`lg_pipeline.curation.teacher`): `teacher` is
    none | openai | transformers | precomputed (default `LG_TEACHER`, empty = none). openai: `teacher_model`,
    `teacher_base_url` and `teacher_api_key_env`, the NAME of the environment variable holding the key (the key
    itself is never configured here, logged or stored). transformers: `teacher_model` (catalog name or folder),
    `teacher_device`, `teacher_dtype` (empty: the catalog's). precomputed: `teacher_file` (study-format JSON).
    `keep_disagreeing: false` drops Detailed CoT rows whose final answer disagrees with the gold answer.
    """

    n_examples: int = 500  # study and hub sources
    n_offline_examples: int = 4  # offline packs, CPU-sized
    seed: int = 0
    release_dir: str | None = None
    tokenizer_model: str = "smollm2-135m-instruct"
    cache_dir: str = DEFAULT_CACHE_DIR
    teacher: str = ""
    teacher_model: str = ""
    teacher_base_url: str = ""
    teacher_api_key_env: str = "OPENAI_API_KEY"
    teacher_device: str = "cpu"
    teacher_dtype: str = ""
    teacher_temperature: float = 0.0
    teacher_max_tokens: int = 2048
    teacher_file: str = ""
    keep_disagreeing: bool = True

    def settings(self, offline: bool, tokenizer: Any = None) -> Any:
        from data_sources.datasets.catalog import make_adapter
        from lg_pipeline.curation import CurationSettings

        return CurationSettings(
            n_examples=self.n_offline_examples if offline and not self.release_dir else self.n_examples,
            seed=self.seed,
            release_dir=self.release_dir,
            cache_dir=str(Path(self.cache_dir, "curation")),
            tokenizer=tokenizer,
            teacher=self.make_teacher(),
            keep_disagreeing=self.keep_disagreeing,
            open_source=make_adapter,
        )

    def make_teacher(self) -> Any:
        """The configured teacher (None when `teacher` is empty or none); bad options raise an InputError."""
        from data_sources.teachers import make_teacher

        return make_teacher(
            self.teacher,
            model=self.teacher_model,
            base_url=self.teacher_base_url,
            api_key_env=self.teacher_api_key_env,
            device=self.teacher_device,
            dtype=self.teacher_dtype,
            temperature=self.teacher_temperature,
            max_tokens=self.teacher_max_tokens,
            file=self.teacher_file,
            cache_dir=Path(self.cache_dir, "curation"),
            model_cache_dir=self.cache_dir,
        )

    def tokenizer(self) -> Any:
        """The tokenizer the wiki cuts are counted in (the reference model family's)."""
        from data_sources.models.catalog import get_model_spec, resolve
        from data_sources.models.loading import load_tokenizer

        return load_tokenizer(resolve(get_model_spec(self.tokenizer_model), self.cache_dir), self.cache_dir)


class ComputeResource(dg.ConfigurableResource):
    """Device, dtype and engine settings for gradient steps (`cpu`, `cuda`, `cuda:N`; dtype empty = catalog's).

    For the length of a run the resource holds a *device lease* (`lg_pipeline.gradients.devices`): with `device: cuda`
    on a machine with several GPUs, concurrent gradient steps (up to the `gpu` pool limit) each get their own
    GPU. `devices` lists the candidates explicitly (`LG_DEVICES=cuda:0,cuda:1`; default: every visible GPU).
    Out-of-memory batch splits in the engine are reported in the run's log.
    """

    device: str = Field(default="cpu", description="Device: cpu, cuda or cuda:N (LG_DEVICE).")
    devices: str = Field(
        default="", description="Candidate devices to lease, comma-separated (LG_DEVICES); empty: every visible GPU."
    )
    lock_dir: str = Field(default="", description="Folder of the device-lease lock files; empty: the default.")
    lease_timeout_s: float = Field(default=3600.0, description="Seconds to wait for a free device.")
    dtype: str = Field(
        default="", description="Weights' dtype: float32 or bfloat16 (float16 is refused); empty: the catalog's."
    )
    batch_size: int = Field(
        default=4, description="gradient_stats: examples per forward/backward pass (examples; scheduling, changes "
        "no number). The dynamics runs' batch_size is their own config's (examples per optimizer step)."
    )
    max_batch_tokens: int = Field(
        default=0, description="gradient_stats: padded tokens per forward/backward (tokens); 0: per device (1024 on "
        "a CPU, 8192 on a GPU)."
    )
    max_length: int = Field(
        default=1024, description="Tokens per sequence (longer ones are cut) in gradient_stats and "
        "zero_shot_dynamics, and in training_dynamics when its config's max_length is 0."
    )
    method: Literal["core", "full-svd"] = Field(
        default="core", description="Statistics method: core (from the factors) or full-svd (the study's "
        "reference, one example per backward); the same numbers."
    )
    targets: str = Field(default="q,k,v,o", description="Studied matrices, module suffixes comma-separated.")
    encoding: Literal["pair", "study"] = Field(
        default="pair", description="How text becomes tokens: pair (prompt and response apart) or study (the "
        "study's whole-text rules)."
    )
    stats_schedule: Literal["", "after-backward", "in-hook"] = Field(
        default="", description="When statistics are computed (same numbers): after-backward or in-hook; empty: "
        "in-hook on CUDA, after-backward on a CPU."
    )
    cache_dir: str = Field(default=DEFAULT_CACHE_DIR, description="Model and package cache folder (LG_CACHE_DIR).")

    _lease: Any = PrivateAttr(default=None)
    _log: Any = PrivateAttr(default=None)

    @contextlib.contextmanager
    def yield_for_execution(self, context: dg.InitResourceContext) -> Iterator[ComputeResource]:
        """Lease a device for the run and forward engine warnings (OOM splits) to the run log; always release."""
        from lg_pipeline.gradients.devices import DEFAULT_LOCK_DIR, candidate_devices, lease_device

        candidates = candidate_devices(self.device, self.devices)
        self._lease = lease_device(candidates, self.lock_dir or DEFAULT_LOCK_DIR, self.lease_timeout_s)
        forward = _RunLogHandler(context.log)
        engine_log = logging.getLogger("lg_pipeline.gradients.engine")
        engine_log.addHandler(forward)
        self._log = context.log
        _reset_peak_memory(self._lease.device)
        try:
            if context.log and self._lease.device != self.device:
                context.log.info(f"device lease: {self._lease.device} (of {', '.join(candidates)})")
            yield self
        finally:
            engine_log.removeHandler(forward)
            self._lease.release()
            self._lease, self._log = None, None

    @property
    def leased_device(self) -> str:
        """The device this run computes on: the leased one inside a run, else the configured one."""
        return self._lease.device if self._lease is not None else self.device

    def load(self, model_name: str) -> tuple[Any, Any, Any]:
        """(model, tokenizer, spec), reused across runs in one process while the catalog entry is unchanged."""
        import time

        from data_sources.models.catalog import get_model_spec, open_model

        device = self.leased_device
        key = (repr(get_model_spec(model_name)), device, self.dtype, self.cache_dir)
        if key in _LOADED:
            self._info(f"model {model_name} already loaded on {device} (reused in this process)")
            return _LOADED[key]
        _LOADED.clear()
        self._info(f"loading model {model_name} on {device} ({self.dtype or 'catalog dtype'}) …")
        started = time.monotonic()
        _LOADED[key] = open_model(model_name, device, self.dtype or None, self.cache_dir)
        self._info(f"loaded model {model_name} in {time.monotonic() - started:.1f}s")
        return _LOADED[key]

    def load_dtype(self, model_name: str) -> str:
        """The dtype `load` gives the weights: the configured one, else the catalog's."""
        from data_sources.models.catalog import get_model_spec

        return self.dtype or get_model_spec(model_name).dtype

    @property
    def device_type(self) -> str:
        """`cpu` or `cuda`: the leased device's type (what the run keys record)."""
        return self.leased_device.split(":", 1)[0]

    def weights_identity(self, model_name: str) -> dict[str, Any] | None:
        """The model's weight files' identity, known without loading them (None for a hub model)."""
        from data_sources.models.catalog import weights_identity

        return weights_identity(model_name, self.cache_dir)

    def _info(self, message: str) -> None:
        if self._log is not None:
            self._log.info(message)

    def run_metadata(self) -> dict[str, Any]:
        """Peak memory of this run so far, for the materialization's metadata: the process's peak resident set
        (the whole process: in-process runs share it) and, on CUDA, the device's peak allocation since the lease."""
        return peak_memory(self.leased_device)

    def engine_config(self, chat: bool) -> Any:
        from lg_pipeline.gradients.engine import EngineConfig
        from lg_pipeline.gradients.targets import parse_suffixes

        return EngineConfig(
            self.method, parse_suffixes(self.targets), self.batch_size, self.max_length, chat,
            encoding=self.encoding, max_batch_tokens=self.max_batch_tokens or None,
            stats_schedule=self.stats_schedule or None,
        )


def _reset_peak_memory(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: str) -> dict[str, float]:
    """{"peak_rss_mib": process peak resident memory, "peak_cuda_mib": device peak (CUDA only)}, MiB."""
    import resource
    import sys

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    out = {"peak_rss_mib": round(rss / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)}
    if device.startswith("cuda"):
        import torch

        if torch.cuda.is_available():
            out["peak_cuda_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return out


class _RunLogHandler(logging.Handler):
    """Python log records of the domain core (which never imports Dagster) shown in the Dagster run log."""

    def __init__(self, dagster_log: Any):
        super().__init__(level=logging.INFO)
        self.dagster_log = dagster_log

    def emit(self, record: logging.LogRecord) -> None:
        if self.dagster_log is not None:
            level = "warning" if record.levelno >= logging.WARNING else "info"
            getattr(self.dagster_log, level)(record.getMessage())


ENVS = ("local", "gpu", "k8s")


def current_env(env: str | None = None) -> str:
    env = env or os.environ.get("LG_ENV", "local")
    if env not in ENVS:
        raise ValueError(f"LG_ENV must be one of {', '.join(ENVS)}, got '{env}'")
    return env


# Every documented variable, read when the code location loads (`resources_for`), never at import time:
# resource field -> environment variable. Unset variables leave the field's default.
ENV_SETTINGS: dict[str, dict[str, str]] = {
    "store": {"root": "LG_OUTPUT_ROOT", "staging_dir": "LG_STAGING_DIR"},
    "curation": {
        "n_offline_examples": "LG_N_OFFLINE_EXAMPLES",
        "release_dir": "LG_RELEASE_DIR",
        "cache_dir": "LG_CACHE_DIR",
        "teacher": "LG_TEACHER",
        "teacher_model": "LG_TEACHER_MODEL",
        "teacher_base_url": "LG_TEACHER_BASE_URL",
        "teacher_api_key_env": "LG_TEACHER_API_KEY_ENV",
        "teacher_device": "LG_TEACHER_DEVICE",
        "teacher_file": "LG_TEACHER_FILE",
    },
    "compute": {
        "device": "LG_DEVICE",
        "devices": "LG_DEVICES",
        "lock_dir": "LG_DEVICE_LOCK_DIR",
        "dtype": "LG_DTYPE",
        "cache_dir": "LG_CACHE_DIR",
    },
}


def env_settings(resource: str, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The fields of one resource that the environment sets (ints parsed; a bad value names its variable)."""
    from lg_pipeline.errors import InputError

    environ = os.environ if environ is None else environ
    fields = {"store": OutputStore, "curation": CurationResource, "compute": ComputeResource}[resource].model_fields
    out: dict[str, Any] = {}
    for field, variable in ENV_SETTINGS[resource].items():
        if environ.get(variable) in (None, ""):
            continue
        value: Any = environ[variable]
        if fields[field].annotation is int:
            try:
                value = int(value)
            except ValueError:
                raise InputError(f"{variable}={value!r}: not a whole number") from None
        out[field] = value
    return out


def resources_for(env: str | None = None) -> dict[str, Any]:
    """Resources per environment (`LG_ENV`): local CPU by default, `gpu` for a CUDA machine, `k8s` for a cluster.

    The `LG_*` variables of `ENV_SETTINGS` are read here, when the code location loads; the launchpad's
    `resources.<name>.config.<field>` overrides any of them per run. On Kubernetes every gradient step is a pod
    with one GPU of its own (`cuda` = that GPU); outputs go to a shared volume mounted at `LG_OUTPUT_ROOT`.
    """
    env = current_env(env)
    compute = env_settings("compute")
    if env in ("gpu", "k8s"):
        compute.update(device="cuda", dtype="bfloat16", batch_size=8)
    return {
        "store": OutputStore(**env_settings("store")),
        "curation": CurationResource(**env_settings("curation")),
        "compute": ComputeResource(**compute),
    }
