"""Outputs under a remote fsspec root (memory:// here): pulled on demand, pushed atomically when a run ends."""

from __future__ import annotations

import uuid

import dagster as dg
import fsspec
import pytest

from assets.resources import OutputStore, local_root
from lg_pipeline.io.remote import RemoteMirror

pytestmark = pytest.mark.slow  # materializes the graph through Dagster

V = "commonsense_demo__none__correct"


@pytest.fixture
def remote():
    """A fresh in-memory bucket (fsspec's memory filesystem is per process)."""
    fs = fsspec.filesystem("memory")
    base = f"/lg-{uuid.uuid4().hex[:8]}"
    yield fs, base
    fs.rm(base, recursive=True) if fs.exists(base) else None


def test_local_roots_stay_plain_paths(tmp_path):
    assert local_root(str(tmp_path)) == tmp_path
    assert local_root(f"file://{tmp_path}") == tmp_path
    assert local_root("memory://bucket/x") is None
    assert OutputStore(root=f"file://{tmp_path}").curated(V) == tmp_path / "curated" / f"{V}.parquet"


def test_mirror_pulls_a_file_with_its_siblings_and_pushes_only_changes(remote, tmp_path):
    fs, base = remote
    for name, data in [
        ("a.parquet", b"A"),
        ("a.status.parquet", b"S"),
        ("a.parquet.parts/chunk-0", b"C"),
        ("b.parquet", b"B"),
    ]:
        fs.pipe_file(f"{base}/g/m/{name}", data)
    mirror = RemoteMirror(f"memory://{base}", tmp_path / "stage")
    local = mirror.local("g/m/a.parquet")
    assert local.read_bytes() == b"A"
    assert (local.parent / "a.status.parquet").is_file() and (local.parent / "a.parquet.parts" / "chunk-0").is_file()
    assert not (local.parent / "b.parquet").exists()  # another partition: not pulled
    local.write_bytes(b"A2")
    (local.parent / "a.parquet.parts" / "chunk-0").unlink()
    (local.parent / "a.check.json").write_text("{}")
    uploaded, deleted = mirror.push()
    assert uploaded == ["g/m/a.check.json", "g/m/a.parquet"] and deleted == ["g/m/a.parquet.parts/chunk-0"]
    assert fs.cat_file(f"{base}/g/m/a.parquet") == b"A2" and fs.cat_file(f"{base}/g/m/b.parquet") == b"B"
    assert not [p for p in fs.find(base) if p.endswith(".tmp")]  # uploads went through a temporary name
    assert mirror.push() == ([], [])  # nothing changed since


def test_whole_graph_on_a_remote_root(remote, tmp_path, monkeypatch):
    from assets.partitions import multi_key, variant_partition_key
    from assets.resources import ComputeResource, CurationResource
    from lg_pipeline.definitions import defs
    from tests.helpers.tiny_models import save_tiny_model, write_catalog

    fs, base = remote
    catalog = write_catalog(tmp_path / "models.yaml", {"tiny": save_tiny_model(tmp_path / "tiny", 3)})
    monkeypatch.setenv("LG_MODEL_CATALOG", str(catalog))
    staging = tmp_path / "staging"
    resources = {
        "store": OutputStore(root=f"memory://{base}", staging_dir=str(staging)),
        "curation": CurationResource(n_offline_examples=2, cache_dir=str(tmp_path / "cache")),
        "compute": ComputeResource(cache_dir=str(tmp_path / "cache"), batch_size=2),
    }
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("model", ["tiny"])
        for selection, key in [
            ("curated_dataset", variant_partition_key(V)),
            ("gradient_stats", multi_key("tiny", V)),
            ("layer_summary", "tiny"),
            ("figures", None),
        ]:
            result = dg.materialize(
                [*defs.assets, *defs.asset_checks],
                selection=[selection],
                partition_key=key,
                instance=instance,
                resources=resources,
                raise_on_error=False,
            )
            assert result.success, selection  # each run reads what the previous one pushed
    files = {p[len(base) + 1 :] for p in fs.find(base)}
    assert {f"curated/{V}.parquet", f"gradients/tiny/{V}.parquet", f"gradients/tiny/{V}.check.json"} <= files
    assert {"summaries/tiny/curves.parquet", "figures/index.html", "figures/lineage.json"} <= files
    assert not [f for f in files if f.endswith(".tmp") or ".parts/" in f]
    assert not any(staging.rglob("*.parquet"))  # staging copies dropped after each run


def test_a_remote_root_without_its_filesystem_package_fails_in_one_line():
    import importlib.util

    from lg_pipeline.errors import InputError

    if importlib.util.find_spec("s3fs") is not None:
        pytest.skip("s3fs is installed here")
    with pytest.raises(InputError, match="output root s3://bucket/lg: Install s3fs"):
        OutputStore(root="s3://bucket/lg").figures()
