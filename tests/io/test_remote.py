"""Credentials never reach a log line; staging is this user's own folder."""

from __future__ import annotations

import os
import stat

import pytest

from lg_pipeline.io.remote import public_url, staging_dir


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("s3://AKIAKEY:secret@bucket/lg", "s3://bucket/lg"),
        ("https://user:pw@host:9000/root?X-Amz-Signature=abc#frag", "https://host:9000/root"),
        ("memory://bucket/lg", "memory://bucket/lg"),
        ("/local/path", "/local/path"),
    ],
)
def test_credentials_are_stripped_from_urls_shown(url, shown):
    assert public_url(url) == shown


def test_default_staging_is_a_private_folder_of_this_user(tmp_path, monkeypatch):
    monkeypatch.delenv("LG_STAGING_DIR", raising=False)
    monkeypatch.setattr("tempfile.gettempdir", lambda: str(tmp_path))
    folder = staging_dir("s3://k:s@b/x")
    base = tmp_path / f"lg-pipeline-{os.getuid()}" / "staging"
    assert folder.is_relative_to(base) and stat.S_IMODE(base.stat().st_mode) == 0o700
    assert "s@b" not in str(folder)
