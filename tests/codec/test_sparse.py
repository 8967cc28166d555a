"""Relative indices with fillers (against a slow reference), index-width choice, bitmap, CSR."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from weightzip.codec.sparse import (bitmap_from_positions, bitmap_to_positions, choose_index_bits,
                                    csr_from_dense, csr_from_positions, csr_index_bits, csr_to_dense,
                                    filler_count, matrix_shape, relative_index_decode, relative_index_encode)


def reference_relative(positions, bits):
    """Deep Compression by hand: walk the tensor, emit a filler whenever the run of zeros
    since the last entry reaches 2^bits - 1 and the next element is still a zero."""
    mx = (1 << bits) - 1
    gaps, fill, entry_pos = [], [], []
    prev = -1
    for p in positions:
        gap = p - prev - 1
        while gap > mx:
            prev = prev + mx + 1           # the filler sits on a zero element
            gaps.append(mx)
            fill.append(True)
            entry_pos.append(prev)
            gap = p - prev - 1
        gaps.append(gap)
        fill.append(False)
        entry_pos.append(p)
        prev = p
    return gaps, fill, entry_pos


positions_st = st.lists(st.integers(0, 3000), max_size=60, unique=True).map(sorted)


@settings(max_examples=150, deadline=None)
@given(positions_st, st.integers(1, 12))
def test_relative_index_matches_reference(positions, bits):
    ri = relative_index_encode(positions, bits)
    gaps, fill, entry_pos = reference_relative(positions, bits)
    assert ri.gaps.tolist() == gaps
    assert ri.is_filler.tolist() == fill
    assert ri.entry_positions.tolist() == entry_pos
    assert ri.n_fillers == sum(fill) == filler_count(positions, bits)
    assert ri.entry_positions[ri.real].tolist() == positions
    assert relative_index_decode(ri.gaps).tolist() == entry_pos
    assert (ri.gaps < (1 << bits)).all()


def test_deep_compression_example():
    # b = 3: 1 zero, then 10 zeros = 7 + filler + 2
    ri = relative_index_encode([1, 12], 3)
    assert ri.gaps.tolist() == [1, 7, 2]
    assert ri.is_filler.tolist() == [False, True, False]
    assert ri.entry_positions.tolist() == [1, 9, 12]


@settings(max_examples=100, deadline=None)
@given(positions_st, st.integers(0, 32), st.integers(0, 2))
def test_choose_index_bits_is_brute_force_optimal(positions, vbits, extra):
    vbits0 = vbits + extra
    choice = choose_index_bits(positions, vbits, vbits0)
    brute = {}
    for b in range(1, 17):
        gaps, fill, _ = reference_relative(positions, b)
        v = vbits0 if any(fill) else vbits
        brute[b] = len(gaps) * (b + v)
    assert choice.total_bits == min(brute.values())
    assert choice.bits == min(b for b, c in brute.items() if c == choice.total_bits)
    assert choice.costs == brute


def test_decode_checks_bounds():
    from weightzip.errors import WeightzipFormatError
    with pytest.raises(WeightzipFormatError):
        relative_index_decode([3, 4], numel=6)


def test_invalid_positions():
    with pytest.raises(ValueError):
        relative_index_encode([3, 3], 4)
    with pytest.raises(ValueError):
        relative_index_encode([-1], 4)


@settings(max_examples=50, deadline=None)
@given(positions_st)
def test_bitmap_round_trip(positions):
    bm = bitmap_from_positions(positions, 3001)
    assert bm.sum() == len(positions)
    assert bitmap_to_positions(bm).tolist() == positions


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support")
@settings(max_examples=50, deadline=None)
@given(st.integers(1, 12), st.integers(1, 12), st.floats(0, 1), st.integers(0, 1000))
def test_csr_matches_torch(rows, cols, density, seed):
    g = torch.Generator().manual_seed(seed)
    m = torch.randn(rows, cols, generator=g) * (torch.rand(rows, cols, generator=g) < density)
    indptr, indices, values = csr_from_dense(m.numpy())
    ref = m.to_sparse_csr()
    assert indptr.tolist() == ref.crow_indices().tolist()
    assert indices.tolist() == ref.col_indices().tolist()
    assert np.array_equal(values, ref.values().numpy())
    assert np.array_equal(csr_to_dense(indptr, indices, values, (rows, cols)), m.numpy())
    p = np.flatnonzero(m.numpy())
    ip2, ix2, _ = csr_from_positions(p, m.numpy().ravel()[p], (rows, cols))
    assert np.array_equal(ip2, indptr) and np.array_equal(ix2, indices)


def test_matrix_shape_and_csr_bits():
    assert matrix_shape((6, 3, 5, 5)) == (6, 75)
    assert matrix_shape(()) == (1, 1)
    assert matrix_shape((7,)) == (7, 1)
    # 300 x 784, nnz 1000: 1000*10 column bits + 301*10 pointer bits
    assert csr_index_bits((300, 784), 1000) == 1000 * 10 + 301 * 10
