"""Device leases on a shared host: a private lock folder, lock files never followed through a symlink."""

from __future__ import annotations

import os
import stat

import pytest

from lg_pipeline.errors import InputError
from lg_pipeline.gradients.devices import DEFAULT_LOCK_DIR, lease_device


def test_the_default_lock_folder_is_this_users_own():
    assert f"lg-pipeline-{os.getuid()}" in str(DEFAULT_LOCK_DIR)


def test_a_planted_symlink_never_makes_a_lease_truncate_another_file(tmp_path):
    folder = tmp_path / "devices"
    folder.mkdir(mode=0o700)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (folder / "cuda_0.lock").symlink_to(victim)
    with pytest.raises(InputError, match="symlink"):
        lease_device(["cuda:0"], folder, timeout_s=0)
    assert victim.read_text() == "precious"


def test_lease_files_are_private(tmp_path):
    with lease_device(["cuda:0"], tmp_path / "devices", timeout_s=0) as lease:
        assert stat.S_IMODE(lease.lock_file.stat().st_mode) == 0o600
        assert stat.S_IMODE(lease.lock_file.parent.stat().st_mode) == 0o700
