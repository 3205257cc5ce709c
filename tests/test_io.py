from __future__ import annotations

import os
import stat

import pytest

from scenetag.io import atomic_path, atomic_write_text


def test_atomic_write_replaces_and_has_normal_mode(tmp_path):
    p = atomic_write_text(tmp_path / "a.txt", "one")
    atomic_write_text(p, "two")
    assert p.read_text() == "two"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~umask
    assert [f.name for f in tmp_path.iterdir()] == ["a.txt"]


def test_failed_write_leaves_old_file_and_no_temp(tmp_path):
    p = atomic_write_text(tmp_path / "a.txt", "old")
    with pytest.raises(RuntimeError):
        with atomic_path(p) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash mid-write")
    assert p.read_text() == "old" and [f.name for f in tmp_path.iterdir()] == ["a.txt"]
