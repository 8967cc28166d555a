"""Sparse position encodings: relative indices with fillers, bitmaps, and row-wise CSR.

**Relative index (Deep Compression / EIE convention)** over the FLATTENED tensor (row-major).
The sorted nonzero positions ``p_0 < p_1 < ...`` are stored as *entries*; every entry stores
``gap`` = the number of zeros skipped since the previous entry (``p_0`` zeros before the first)::

    gap_i = p_i - p_{i-1} - 1          (p_{-1} = -1)

in ``b`` bits, so a gap is at most ``M = 2^b - 1``. A longer gap ``g`` is split by inserting
``F = g >> b`` (= ``floor(g / 2^b)``) *filler* entries, each with gap ``M`` and value ZERO: a
filler sits on a zero element ``M + 1`` positions after the previous entry, and the real
entry then stores the remainder ``g & M``. Example, ``b = 3``, nonzeros at 1 and 12::

    positions  1 . . . . . . . . . .  12         gaps: [1, 7(filler), 2]
               ^entry    ^filler(9)    ^entry    (1 zero; 7 zeros then a filler at 9; 2 zeros)

Decoding is ``positions = cumsum(gaps + 1) - 1`` over all entries; fillers decode to value 0
so writing them is harmless. Trailing zeros after the last entry are implied by the shape.
Every entry (filler or not) occupies a distinct element, so ``#entries <= numel``.

The value of a filler must decode to exactly zero: value streams in sparse formats therefore
contain a zero code when fillers exist (see ``docs/file-format.md``).

**Bitmap**: one bit per element (1 = stored), packed with :mod:`.bitpack` (little bit order).

**CSR** (row-wise, for 2-D matrices ``[rows, cols]``): ``indptr`` (rows + 1,), ``indices``
(nnz,) column of each stored value, in row-major order - what ``torch.sparse_csr_tensor`` takes.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import WeightzipFormatError

MAX_INDEX_BITS = 16


@dataclass(frozen=True)
class RelativeIndex:
    """Entries of a relative index: ``gaps`` (E,) int64 in ``[0, 2^bits)``, ``is_filler`` (E,) bool,
    ``entry_positions`` (E,) int64 flat position of every entry, ``real`` (nnz,) int64 the entry
    number of each real (non-filler) position, in order."""

    bits: int
    gaps: np.ndarray
    is_filler: np.ndarray
    entry_positions: np.ndarray
    real: np.ndarray

    @property
    def n_entries(self) -> int:
        return int(self.gaps.size)

    @property
    def n_fillers(self) -> int:
        return int(self.gaps.size - self.real.size)


@dataclass(frozen=True)
class IndexChoice:
    """Result of :func:`choose_index_bits`: the best ``bits``, the ``total_bits`` it costs
    (index + value bits of every entry incl. fillers), ``n_fillers`` at that width, and
    ``costs[b]`` for every tried ``b`` (dict)."""

    bits: int
    total_bits: int
    n_fillers: int
    costs: dict


def _check_positions(positions) -> np.ndarray:
    p = np.asarray(positions, dtype=np.int64).ravel()
    if p.size and (p[0] < 0 or np.any(np.diff(p) <= 0)):
        raise ValueError("positions must be non-negative and strictly increasing")
    return p


def gaps_of(positions) -> np.ndarray:
    """``gap_i = p_i - p_{i-1} - 1`` with ``p_{-1} = -1`` (zeros skipped before each position)."""
    p = _check_positions(positions)
    return np.diff(p, prepend=-1) - 1


def filler_count(positions, bits: int) -> int:
    """Number of filler entries at index width ``bits``: ``sum_i gap_i >> bits``."""
    return int(np.sum(gaps_of(positions) >> int(bits)))


def relative_index_encode(positions, bits: int) -> RelativeIndex:
    """Relative-index entries (with fillers) of the sorted flat ``positions`` at ``bits`` bits.

    ``len(gaps) = len(positions) + sum(gap >> bits)``; real entry ``i`` lands at entry number
    ``i + (fillers before and at i)``. Vectorized: O(entries).
    """
    bits = int(bits)
    if not 1 <= bits <= 32:
        raise ValueError(f"index bits must be in 1..32, got {bits}")
    p = _check_positions(positions)
    g = np.diff(p, prepend=-1) - 1                                # (n,) zeros skipped
    nfill = g >> bits                                              # (n,) fillers before entry i
    mx = (1 << bits) - 1
    real = np.arange(p.size, dtype=np.int64) + np.cumsum(nfill)    # (n,) entry number of p_i
    total = int(p.size + nfill.sum())
    gaps = np.full(total, mx, dtype=np.int64)                      # fillers have gap M
    gaps[real] = g & mx
    is_filler = np.ones(total, dtype=bool)
    is_filler[real] = False
    entry_positions = np.cumsum(gaps + 1) - 1
    return RelativeIndex(bits, gaps, is_filler, entry_positions, real)


def relative_index_decode(gaps, numel: int | None = None) -> np.ndarray:
    """Flat positions of all entries: ``cumsum(gaps + 1) - 1`` (int64, (E,)).

    With ``numel`` the positions are checked to lie inside the tensor
    (:class:`WeightzipFormatError` otherwise).
    """
    g = np.asarray(gaps, dtype=np.int64).ravel()
    if g.size and g.min() < 0:
        raise WeightzipFormatError("relative index has a negative gap")
    pos = np.cumsum(g + 1) - 1
    if numel is not None and pos.size and pos[-1] >= numel:
        raise WeightzipFormatError(
            f"relative index points past the end of the tensor (position {int(pos[-1])} >= {numel} elements)")
    return pos


def index_cost_bits(positions, bits: int, value_bits: int, filler_value_bits: int | None = None) -> tuple[int, int]:
    """``(total_bits, n_fillers)`` of a relative index at ``bits``:
    ``(n + F) * (bits + v)`` with ``v = value_bits`` if ``F == 0`` else ``filler_value_bits``."""
    f = filler_count(positions, bits)
    n = np.asarray(positions).size
    v = value_bits if f == 0 or filler_value_bits is None else filler_value_bits
    return (n + f) * (int(bits) + int(v)), f


def choose_index_bits(positions, value_bits: int, filler_value_bits: int | None = None,
                      *, min_bits: int = 1, max_bits: int = MAX_INDEX_BITS) -> IndexChoice:
    """Index width ``b`` in ``[min_bits, max_bits]`` minimizing ``(n + F(b)) * (b + v(F(b)))``.

    ``F(b) = sum_i gap_i >> b`` is the filler count; ``v = value_bits`` per entry, or
    ``filler_value_bits`` when at least one filler exists (a zero code may cost one more bit).
    Ties go to the smaller ``b``. Vectorized over the gaps for every ``b``.
    """
    g = gaps_of(positions)
    n = g.size
    fv = value_bits if filler_value_bits is None else filler_value_bits
    costs = {}
    best = None
    for b in range(int(min_bits), int(max_bits) + 1):
        f = int(np.sum(g >> b))
        v = value_bits if f == 0 else fv
        c = (n + f) * (b + int(v))
        costs[b] = c
        if best is None or c < best[1]:
            best = (b, c, f)
    return IndexChoice(best[0], best[1], best[2], costs)


# ---------------------------------------------------------------------------------------------
# bitmap

def bitmap_from_positions(positions, numel: int) -> np.ndarray:
    """0/1 ``uint8`` array (numel,) with ones at ``positions``."""
    m = np.zeros(int(numel), dtype=np.uint8)
    m[np.asarray(positions, dtype=np.int64)] = 1
    return m


def bitmap_to_positions(bits) -> np.ndarray:
    """Flat positions (int64) of the ones of a 0/1 array."""
    return np.flatnonzero(np.asarray(bits)).astype(np.int64)


# ---------------------------------------------------------------------------------------------
# row-wise CSR

def matrix_shape(shape) -> tuple[int, int]:
    """2-D view used for CSR, blocks and PQ: ``[shape[0], numel / shape[0]]`` (conv:
    ``[C_out, C_in*kh*kw]``); a scalar is ``[1, 1]``; an empty first dim gives ``[0, 0]``."""
    shape = tuple(int(s) for s in shape)
    if len(shape) == 0:
        return (1, 1)
    rows = shape[0]
    numel = int(np.prod(shape, dtype=np.int64))
    return (rows, numel // rows if rows else 0)


def csr_from_positions(positions, values, shape2d) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSR arrays of a matrix given the sorted flat ``positions`` of its stored ``values``.

    Returns ``indptr`` (rows+1,) int64, ``indices`` (nnz,) int64 columns, ``values`` (nnz,).
    """
    rows, cols = (int(s) for s in shape2d)
    p = _check_positions(positions)
    vals = np.asarray(values)
    if vals.shape[0] != p.size:
        raise ValueError(f"{p.size} positions but {vals.shape[0]} values")
    if p.size and p[-1] >= rows * cols:
        raise ValueError(f"position {int(p[-1])} outside a {rows}x{cols} matrix")
    r = p // cols if cols else p
    indptr = np.zeros(rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(r, minlength=rows)[:rows], out=indptr[1:])
    indices = p - r * cols
    return indptr, indices, vals


def csr_from_dense(matrix) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(indptr, indices, values)`` of the nonzeros of a 2-D array (row-major order)."""
    m = np.asarray(matrix)
    if m.ndim != 2:
        raise ValueError(f"csr_from_dense needs a 2-D matrix, got shape {m.shape}")
    flat = m.ravel()
    p = np.flatnonzero(flat)
    return csr_from_positions(p, flat[p], m.shape)


def csr_to_dense(indptr, indices, values, shape2d) -> np.ndarray:
    """Dense 2-D array from CSR arrays (inverse of :func:`csr_from_dense`)."""
    rows, cols = (int(s) for s in shape2d)
    indptr = np.asarray(indptr, dtype=np.int64)
    values = np.asarray(values)
    out = np.zeros((rows, cols), dtype=values.dtype)
    r = np.repeat(np.arange(rows), np.diff(indptr))
    out[r, np.asarray(indices, dtype=np.int64)] = values
    return out


def csr_index_bits(shape2d, nnz: int) -> int:
    """Bits of a plain CSR index: ``nnz * ceil(log2 cols) + (rows + 1) * ceil(log2(nnz + 1))``."""
    rows, cols = (int(s) for s in shape2d)
    cb = max(0, (cols - 1).bit_length())
    pb = max(0, int(nnz).bit_length())
    return int(nnz) * cb + (rows + 1) * pb
