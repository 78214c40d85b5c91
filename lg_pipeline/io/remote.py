"""A local working copy of a remote output root (any fsspec URL: s3://, gs://, memory://, ...).

Everything in the domain core reads and writes local files, atomically (temp file + `os.replace`), and the
gradient runs resume from chunk folders: none of that maps onto an object store directly. So a run works in a
local staging folder. What it asks for is pulled first: a whole folder, or a file with its siblings of the same
stem (`v.status.parquet`, `v.check.json` and the `v.parquet.parts/` chunks of `v.parquet`). When the run ends,
every file it created or changed is pushed back, and every pulled file it deleted is removed remotely. Each file
is uploaded under a temporary name and then moved into place, so readers never see half a file (on object
stores the object appears whole anyway).
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import Any


class RemoteMirror:
    """Pull on demand, push changes once (`push`), for one remote root and one local staging folder."""

    def __init__(self, url: str, staging: str | Path):
        from upath import UPath

        from lg_pipeline.errors import InputError

        self.public_url = public_url(url)  # what logs, errors and metadata show
        try:
            remote = UPath(url)
            self.fs: Any = remote.fs
        except (ImportError, ValueError) as exc:  # e.g. s3:// without s3fs installed
            raise InputError(f"output root {self.public_url}: {str(exc).replace(url, self.public_url)}") from None
        self.url = url
        self.base = remote.path.rstrip("/")
        self.staging = Path(staging)
        self.staging.mkdir(parents=True, exist_ok=True)
        self._pulled: dict[str, tuple[int, int]] = {}  # relative path -> (mtime_ns, size) right after the pull
        self._asked: set[str] = set()

    def local(self, rel: str) -> Path:
        """The staging path of `rel`, pulled first (once per mirror)."""
        rel = rel.strip("/")
        if rel not in self._asked:
            self._asked.add(rel)
            self._pull(rel)
        return self.staging / rel if rel else self.staging

    def _remote(self, rel: str) -> str:
        return f"{self.base}/{rel}" if rel else self.base

    def _pull(self, rel: str) -> None:
        target = self._remote(rel)
        if self.fs.isdir(target):
            found = self.fs.find(target)
        else:
            parent, _, name = target.rpartition("/")
            stem = name.partition(".")[0]  # `v.parquet` -> `v.*`: its status, check verdict and chunk folders
            found = []
            for match in self.fs.glob(f"{parent}/{stem}.*") + self.fs.glob(f"{parent}/{name}") if stem else []:
                found.extend(self.fs.find(match) if self.fs.isdir(match) else [match])
        for remote_file in found:
            sub = remote_file[len(self.base) :].lstrip("/") if remote_file.startswith(self.base) else None
            local = self.staging / sub if sub else None
            if local is None or local.exists() or sub in self._pulled:
                continue  # the local copy is this run's working copy: never overwritten by a pull
            local.parent.mkdir(parents=True, exist_ok=True)
            self.fs.get_file(remote_file, str(local))
            stat = local.stat()
            self._pulled[sub] = (stat.st_mtime_ns, stat.st_size)

    def push(self) -> tuple[list[str], list[str]]:
        """Upload new and changed files, delete remotely what was pulled and deleted here: (uploaded, deleted)."""
        uploaded, deleted = [], []
        for local in sorted(p for p in self.staging.rglob("*") if p.is_file()):
            rel = local.relative_to(self.staging).as_posix()
            if local.name.startswith(".") and local.name.endswith(".tmp"):
                continue  # an atomic write that did not finish
            stat = local.stat()
            if self._pulled.get(rel) == (stat.st_mtime_ns, stat.st_size):
                continue
            self._upload(local, self._remote(rel))
            uploaded.append(rel)
        for rel in sorted(self._pulled):
            if not (self.staging / rel).exists() and self.fs.exists(self._remote(rel)):
                self.fs.rm_file(self._remote(rel))
                deleted.append(rel)
        self._pulled = {rel: _stat(self.staging / rel) for rel in self._local_files()}
        return uploaded, deleted

    def _local_files(self) -> list[str]:
        return [p.relative_to(self.staging).as_posix() for p in self.staging.rglob("*") if p.is_file()]

    def _upload(self, local: Path, remote: str) -> None:
        parent, _, name = remote.rpartition("/")
        self.fs.makedirs(parent, exist_ok=True)
        tmp = f"{parent}/.{name}.{uuid.uuid4().hex[:8]}.tmp"
        self.fs.put_file(str(local), tmp)
        try:
            self.fs.mv(tmp, remote)
        except BaseException:
            if self.fs.exists(tmp):
                self.fs.rm_file(tmp)
            raise

    def close(self) -> None:
        """Drop the staging folder (after `push`)."""
        shutil.rmtree(self.staging, ignore_errors=True)


def _stat(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_mtime_ns, stat.st_size


def public_url(url: str) -> str:
    """`url` without user, password, query or fragment: a credential can hide in any of them."""
    import urllib.parse

    parts = urllib.parse.urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def staging_dir(url: str, root: str | Path | None = None) -> Path:
    """A fresh staging folder for one run against `url`, under `LG_STAGING_DIR` or this user's own temp folder.

    The default is `<temp dir>/lg-pipeline-<uid>/staging`, created 0o700 and checked (never another user's or a
    symlink), so nobody else can read the staged outputs or plant files for the run to push.
    """
    import hashlib
    import tempfile

    from lg_pipeline.io.locks import private_dir

    explicit = root or os.environ.get("LG_STAGING_DIR")
    base = Path(explicit) if explicit else Path(tempfile.gettempdir()) / f"lg-pipeline-{os.getuid()}" / "staging"
    digest = hashlib.sha1(url.encode()).hexdigest()[:12]
    return private_dir(base) / digest / f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
