"""Giving freed memory back to the operating system between large per-tensor steps.

glibc keeps freed blocks in its arenas (one per thread that allocated) and returns them only
from the top of each heap, so after a large tensor's working copies are freed the process's RSS
can stay near the high-water mark, and the next tensor's copies land on top of it. Calling
``malloc_trim(0)`` after each tensor (the k-means stage, the encoder loop of ``save``) returns
the free pages, so the peak is one tensor's working set over what is live, not over the
largest earlier one's leftovers. Elsewhere (musl, macOS, Windows) :func:`release_free_memory` does nothing.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools

__all__ = ["release_free_memory"]


@functools.lru_cache(maxsize=1)
def _malloc_trim():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        fn = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return fn


def release_free_memory() -> None:
    """Return the C heap's free pages to the OS (``malloc_trim(0)`` where glibc has it)."""
    fn = _malloc_trim()
    if fn is not None:
        fn(0)
