"""Sub-byte packing of unsigned integer codes (width 0..32 bits), vectorized with numpy.

Bit order (fixed by the file format, see ``docs/file-format.md``): the packed stream is a
sequence of bits where stream bit ``k`` is bit ``k % 8`` (least significant first) of byte
``k // 8``; value ``i`` occupies stream bits ``[i*w, (i+1)*w)``, its least significant bit
first. This is ``numpy.packbits(..., bitorder="little")`` applied to the values' bits, and
for ``w`` in {8, 16, 32} it is exactly the little-endian ``uint8/16/32`` array. The last byte
is padded with zero bits. Width 0 (an alphabet of one symbol) packs to no bytes at all.

    >>> pack_bits(np.array([1, 2, 3]), 2)        # bits 10 01 11 -> 0b00110110
    b'9'
    >>> unpack_bits(b'9', 2, 3)
    array([1, 2, 3], dtype=uint32)

Signed integers are mapped to unsigned ones either by ``zigzag`` (0, -1, 1, -2, 2, ... ->
0, 1, 2, 3, 4, ...) or by an ``offset`` (``u = x - lo``).
"""
from __future__ import annotations

import numpy as np

from ..errors import WeightzipFormatError

MAX_WIDTH = 32
_CHUNK = 1 << 20  # values per chunk (a multiple of 8, so every chunk ends on a byte boundary)


def packed_nbytes(count: int, width: int) -> int:
    """Bytes of ``count`` values packed at ``width`` bits: ``ceil(count * width / 8)``."""
    return (int(count) * int(width) + 7) // 8


def bits_for_alphabet(size: int) -> int:
    """Bits of a fixed-width code for an alphabet of ``size`` symbols: ``ceil(log2(size))``.

    ``size <= 1`` needs 0 bits (the single symbol is implied).
    """
    size = int(size)
    return 0 if size <= 1 else (size - 1).bit_length()


def _check_width(width: int) -> int:
    width = int(width)
    if not 0 <= width <= MAX_WIDTH:
        raise ValueError(f"bit width must be in 0..{MAX_WIDTH}, got {width}")
    return width


def pack_bits(values, width: int) -> bytes:
    """Pack non-negative integers ``values`` (any shape, flattened) at ``width`` bits each.

    Raises ``ValueError`` if a value is negative or does not fit in ``width`` bits.
    Returns ``packed_nbytes(values.size, width)`` bytes.
    """
    width = _check_width(width)
    v = np.asarray(values).ravel()
    if v.size and not np.issubdtype(v.dtype, np.integer):
        if not np.issubdtype(v.dtype, np.bool_):
            raise ValueError(f"pack_bits needs integer values, got dtype {v.dtype}")
    if v.size == 0:
        return b""
    lo, hi = int(v.min()), int(v.max())
    if lo < 0 or hi >= (1 << width):
        raise ValueError(f"values in [{lo}, {hi}] do not fit in {width} unsigned bits")
    if width == 0:
        return b""
    if width in (8, 16, 32):
        return v.astype(f"<u{width // 8}").tobytes()
    parts = []
    for start in range(0, v.size, _CHUNK):
        c = v[start:start + _CHUNK].astype("<u4")                       # (n,)
        bits = np.unpackbits(c.view(np.uint8).reshape(-1, 4), axis=1, bitorder="little")  # (n, 32)
        parts.append(np.packbits(bits[:, :width].ravel(), bitorder="little").tobytes())
    return b"".join(parts)


def unpack_bits(data, width: int, count: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`: ``count`` values of ``width`` bits -> ``uint32`` array (count,).

    ``data`` may be longer than needed (extra bytes are ignored); shorter raises
    :class:`WeightzipFormatError`.
    """
    width = _check_width(width)
    count = int(count)
    if count < 0:
        raise WeightzipFormatError(f"negative value count {count}")
    need = packed_nbytes(count, width)
    buf = np.frombuffer(data, dtype=np.uint8)
    if buf.size < need:
        raise WeightzipFormatError(
            f"packed stream too short: {count} values x {width} bits need {need} bytes, got {buf.size}")
    if width == 0 or count == 0:
        return np.zeros(count, dtype=np.uint32)
    if width in (8, 16, 32):
        return np.frombuffer(buf[:need].tobytes(), dtype=f"<u{width // 8}").astype(np.uint32)
    out = np.empty(count, dtype=np.uint32)
    for start in range(0, count, _CHUNK):
        n = min(_CHUNK, count - start)
        b0 = start * width // 8                                           # chunk starts on a byte
        raw = buf[b0:b0 + packed_nbytes(n, width)]
        bits = np.unpackbits(raw, bitorder="little", count=n * width).reshape(n, width)
        full = np.zeros((n, 32), dtype=np.uint8)
        full[:, :width] = bits
        out[start:start + n] = np.packbits(full, axis=1, bitorder="little").view("<u4").ravel()
    return out


# ---------------------------------------------------------------------------------------------
# signed <-> unsigned

def zigzag_encode(x) -> np.ndarray:
    """``u = 2x`` for ``x >= 0``, ``u = -2x - 1`` for ``x < 0`` (int64 in, uint64 out)."""
    x = np.asarray(x, dtype=np.int64)
    return ((x << 1) ^ (x >> 63)).astype(np.uint64)


def zigzag_decode(u) -> np.ndarray:
    """Inverse of :func:`zigzag_encode` (uint64/any unsigned in, int64 out)."""
    u = np.asarray(u).astype(np.uint64)
    return ((u >> np.uint64(1)).astype(np.int64)) ^ -((u & np.uint64(1)).astype(np.int64))


def signed_width(lo: int, hi: int, scheme: str = "offset") -> int:
    """Bits needed for integers in ``[lo, hi]`` under ``scheme`` (``offset``: relative to lo)."""
    lo, hi = int(lo), int(hi)
    if scheme == "offset":
        return bits_for_alphabet(hi - lo + 1)
    if scheme == "zigzag":
        return int(max(zigzag_encode([lo])[0], zigzag_encode([hi])[0])).bit_length()
    raise ValueError(f"unknown signed scheme {scheme!r}; use 'offset' or 'zigzag'")


def pack_signed(values, width: int, scheme: str = "zigzag", offset: int = 0) -> bytes:
    """Pack signed integers: ``zigzag`` or ``offset`` (``u = x - offset``) then :func:`pack_bits`."""
    x = np.asarray(values, dtype=np.int64).ravel()
    if scheme == "zigzag":
        return pack_bits(zigzag_encode(x), width)
    if scheme == "offset":
        return pack_bits(x - int(offset), width)
    raise ValueError(f"unknown signed scheme {scheme!r}; use 'offset' or 'zigzag'")


def unpack_signed(data, width: int, count: int, scheme: str = "zigzag", offset: int = 0) -> np.ndarray:
    """Inverse of :func:`pack_signed` (int64 out)."""
    u = unpack_bits(data, width, count)
    if scheme == "zigzag":
        return zigzag_decode(u)
    if scheme == "offset":
        return u.astype(np.int64) + int(offset)
    raise ValueError(f"unknown signed scheme {scheme!r}; use 'offset' or 'zigzag'")
