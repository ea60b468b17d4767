"""Atomic writes: nothing appears when the block fails, and what appears has a plain file's permissions."""

from __future__ import annotations

import os
import stat

import pytest

from kdyn.io import atomic_dir, atomic_path, write_json


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_written_files_and_folders_are_readable_by_the_group(tmp_path, umask_022):
    write_json(tmp_path / "summary.json", {"a": 1})
    with atomic_dir(tmp_path / "analysis") as d:
        (d / "x.txt").write_text("x")
    assert mode(tmp_path / "summary.json") == 0o644  # tempfile alone gives 0600
    assert mode(tmp_path / "analysis") == 0o755  # and 0700 for folders


def test_a_failed_block_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "out.parquet") as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    with pytest.raises(RuntimeError), atomic_dir(tmp_path / "analysis") as d:
        (d / "x.txt").write_text("x")
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
