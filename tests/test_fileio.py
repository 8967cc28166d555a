"""Atomic writes: all or nothing, and the user's umask decides the mode (not mkstemp's 0600)."""
from __future__ import annotations

import os
import stat

import pytest

from weightzip.fileio import atomic_write, atomic_write_bytes, atomic_write_text, default_file_mode


@pytest.fixture
def umask():
    """Set the process umask for one test, then put the old one back."""
    old = os.umask(0o022)
    os.umask(old)
    yield lambda m: os.umask(m)
    os.umask(old)


def _mode(p) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_the_file_gets_the_umask_mode(tmp_path, umask, mask, mode):
    umask(mask)
    assert default_file_mode() == mode
    p = atomic_write_bytes(tmp_path / "a.bin", b"xyz")
    assert p.read_bytes() == b"xyz" and _mode(p) == mode
    assert _mode(atomic_write_text(tmp_path / "sub" / "b.txt", "hi", durable=True)) == mode


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path):
    p = tmp_path / "a.bin"
    p.write_bytes(b"old")

    def fail(f):
        f.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(p, fail)
    assert p.read_bytes() == b"old" and sorted(x.name for x in tmp_path.iterdir()) == ["a.bin"]
