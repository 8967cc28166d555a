"""core.heap: returning freed memory to the OS between per-tensor steps."""
import numpy as np

from weightzip.core import heap


def test_large_blocks_mapped_nests_and_restores():
    with heap.large_blocks_mapped():
        with heap.large_blocks_mapped(1 << 16):
            a = np.ones(1 << 20)
        assert heap._depth == 1
        del a
    assert heap._depth == 0
    heap.release_free_memory()
    try:
        with heap.large_blocks_mapped():
            raise KeyError("x")
    except KeyError:
        pass
    assert heap._depth == 0
