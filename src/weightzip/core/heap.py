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
import threading
from contextlib import contextmanager

__all__ = ["release_free_memory", "large_blocks_mapped"]


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


@functools.lru_cache(maxsize=1)
def _mallopt():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        fn = libc.mallopt
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: glibc's largest dynamic mmap threshold on 64-bit (what a process that freed large blocks runs
#: with) and the trim threshold its adjustment sets with it (twice that)
_DYNAMIC_MAX = 32 << 20
_depth = 0
_lock = threading.Lock()


@contextmanager
def large_blocks_mapped(threshold: int = 1 << 20):
    """Within the block, every allocation of ``threshold`` bytes or more is its own mapping
    (glibc ``mallopt(M_MMAP_THRESHOLD)``), returned to the OS when freed. glibc otherwise raises
    its threshold to the size of each large block freed (up to 32 MB), after which such blocks come
    from the arenas and the pages of those freed in between stay resident: BERT-base kept about
    70 MB more after ``compress`` than it held (16 MB here: about 25 MB more than 1 MB). The cost:
    a fresh mapping faults its pages in, so the per-chunk temporaries of 1 MB and more (the
    k-means assignment's 8 MB arrays) are slower to make. The heap's top is kept up to 8 MB
    (``M_TRIM_THRESHOLD``). On leaving the (outermost) block the thresholds are 32 MB and 64 MB,
    the values glibc's own adjustment tends to. Elsewhere: does nothing."""
    global _depth
    fn = _mallopt()
    if fn is None:
        yield
        return
    with _lock:
        _depth += 1
        if _depth == 1:
            fn(_M_MMAP_THRESHOLD, int(threshold))
            fn(_M_TRIM_THRESHOLD, max(8 << 20, 2 * int(threshold)))
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                fn(_M_MMAP_THRESHOLD, _DYNAMIC_MAX)
                fn(_M_TRIM_THRESHOLD, 2 * _DYNAMIC_MAX)


def release_free_memory() -> None:
    """Return the C heap's free pages to the OS (``malloc_trim(0)`` where glibc has it)."""
    fn = _malloc_trim()
    if fn is not None:
        fn(0)
