"""Atomic file writes: the one helper below every layer (``.wz`` files, checkpoints, exports, plots,
study results, downloads all go through it).

    atomic_write(path, lambda f: f.write(data))    # f: a binary file object
    atomic_write_text(path, "text")

The bytes go to a temporary file in the destination's folder (``.<name>.<random>.tmp``), are
flushed and ``fsync``-ed, and the file is renamed over ``path`` with ``os.replace``: a reader sees
the old file or the complete new one, never a partial one, and a killed writer leaves at most
the hidden temp file. ``tempfile.mkstemp`` creates that file with mode ``0600``; before the
rename it gets the mode a plain ``open(path, "w")`` would give, ``0o666 & ~umask`` (``0644``
under the usual umask ``022``), so the result is readable by whoever the user's umask allows.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable


def current_umask() -> int:
    """The process's umask (read by setting it and putting it back: there is no getter)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def default_file_mode() -> int:
    """The mode ``open(path, "w")`` gives a new file: ``0o666 & ~umask``."""
    return 0o666 & ~current_umask()


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object], *, durable: bool = False,
                 suffix: str = ".tmp") -> Path:
    """Write ``path`` atomically: ``write(f)`` fills a temp file in the same folder, which is
    fsync-ed, given mode ``0o666 & ~umask`` and renamed over ``path``. If anything fails the
    temp file is deleted and ``path`` is left as it was. ``durable``: also fsync the folder, so
    that the rename survives a power loss (POSIX; skipped where a folder cannot be opened).
    ``suffix``: the temp file's (some writers pick the format from it, e.g. ``.png``)."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, default_file_mode())  # mkstemp made it 0600
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    if durable:
        try:
            dfd = os.open(directory, os.O_RDONLY)
        except OSError:  # e.g. Windows: a folder cannot be opened
            return path
        try:
            os.fsync(dfd)
        except OSError:
            pass
        finally:
            os.close(dfd)
    return path


def atomic_write_bytes(path: str | Path, data: bytes, **kw) -> Path:
    """:func:`atomic_write` of ``data``."""
    return atomic_write(path, lambda f: f.write(data), **kw)


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8", **kw) -> Path:
    """:func:`atomic_write` of ``text`` encoded (UTF-8 by default)."""
    return atomic_write(path, lambda f: f.write(text.encode(encoding)), **kw)
