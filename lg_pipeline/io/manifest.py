"""A table's run manifest: where it came from, stored in the Parquet file's own key-value metadata.

A table copied without its run folder still says what made it (model and weights, data file and hash,
dataset/level/correctness, targets, encoding, dtype, device type, engine version, the run's limit), so
`validate`, `export-study` and the lineage read the table itself, never a file beside it.

The manifest is one JSON object under `MANIFEST_KEY`. `kind` is required (what the table is: the check that
applies); every other field is optional and absent when unknown. `FIELDS` lists the names the project uses,
so writers and readers agree on them; a writer may add others (they are kept, not checked).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

MANIFEST_KEY = b"lg_pipeline.manifest"
MANIFEST_VERSION = 1

FIELDS: dict[str, str] = {
    "kind": "what the table is: gradient_stats, gradient_status, curated, summary.<table>, dynamics.<table>, "
    "zero_shot.<table>, study_import (<table>: the file's stem inside its run folder)",
    "manifest_version": "the format of this object (MANIFEST_VERSION)",
    "run_key": "hash of everything that changes a number in the run",
    "model": "the model's catalog name or folder",
    "model_source": "where the weights came from (packaged_gguf, hub, local, ...)",
    "weights_fingerprint": "a sample hash of the weights (gradients.runner.weights_fingerprint)",
    "data_file": "the input data file's name (no folder)",
    "data_hash": "sha1 of the input data file (`data_file_fields`), or of the rows when they came from no one file",
    "dataset": "dataset name, where known",
    "level": "CoT level or wiki cut, where known",
    "correctness": "correct | wrong, where known",
    "targets": "the studied matrices (list of module suffixes)",
    "encoding": "pair | study",
    "dtype": "the weights' dtype (float32, bfloat16)",
    "device_type": "cpu | cuda",
    "engine_version": "gradients.engine.ENGINE_VERSION (or the run's own version string)",
    "limit": "how many examples the run was asked for (None: all)",
    "n_examples": "how many examples the data held",
    "example_ids": "the ids the run was asked for, in order (completeness is checked against them)",
    "parameters": "every studied matrix of the model (completeness is checked against them)",
    "columns": "extra columns the run added to every row (name -> value)",
    "settings": "the run's settings object, as a JSON object",
    "inputs": "the tables this one was computed from (file path -> data version), for derived tables",
}


def data_file_fields(path: str | Path) -> dict[str, str]:
    """`data_file` (the name, no folder) and `data_hash` (sha1 of its bytes) of one input file."""
    import hashlib

    digest = hashlib.sha1()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return {"data_file": Path(path).name, "data_hash": digest.hexdigest()}


def encode_manifest(manifest: Mapping[str, Any]) -> bytes:
    """The manifest as stored: JSON with sorted keys; `kind` required, `manifest_version` added."""
    if not manifest.get("kind"):
        raise ValueError("a run manifest needs a `kind`")
    return json.dumps({"manifest_version": MANIFEST_VERSION, **manifest}, sort_keys=True, default=str).encode()


def with_manifest(table: Any, manifest: Mapping[str, Any] | None) -> Any:
    """`table` (a pyarrow Table) with the manifest added to its schema metadata (pandas' own entry kept)."""
    if manifest is None:
        return table
    metadata = dict(table.schema.metadata or {})
    metadata[MANIFEST_KEY] = encode_manifest(manifest)
    return table.replace_schema_metadata(metadata)


def read_manifest(path: str | Path) -> dict[str, Any] | None:
    """The manifest of the Parquet file at `path`; None when it has none, or cannot be read as Parquet."""
    import pyarrow.parquet as pq

    try:
        metadata = pq.read_schema(path).metadata or {}
    except Exception:  # pyarrow raises ArrowInvalid/OSError on a torn or non-Parquet file: no manifest to read
        return None
    raw = metadata.get(MANIFEST_KEY)
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
