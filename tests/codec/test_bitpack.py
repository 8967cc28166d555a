"""Bit packing: round trips for every width, the documented bit order, signed mappings."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from weightzip.codec import bitpack
from weightzip.codec.bitpack import (bits_for_alphabet, pack_bits, pack_signed, packed_nbytes, unpack_bits,
                                     unpack_signed, zigzag_decode, zigzag_encode)
from weightzip.errors import WeightzipFormatError


def reference_pack(values, width):
    """Obviously-correct packing: stream bit k = bit (k % 8) of byte k // 8, values LSB first."""
    out = bytearray(packed_nbytes(len(values), width))
    k = 0
    for v in values:
        for j in range(width):
            if (int(v) >> j) & 1:
                out[k // 8] |= 1 << (k % 8)
            k += 1
    return bytes(out)


@pytest.mark.parametrize("width", range(0, 33))
def test_round_trip_every_width(width):
    rng = np.random.default_rng(width)
    for count in (0, 1, 7, 8, 9, 1000):
        hi = (1 << width) - 1
        v = rng.integers(0, hi + 1, size=count, dtype=np.uint64)
        if count:
            v[0] = hi  # the largest value must survive
        data = pack_bits(v, width)
        assert len(data) == packed_nbytes(count, width)
        assert np.array_equal(unpack_bits(data, width, count), v.astype(np.uint32))


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 32).flatmap(lambda w: st.tuples(st.just(w), st.lists(st.integers(0, (1 << w) - 1), max_size=40))))
def test_matches_reference_bit_order(args):
    width, values = args
    assert pack_bits(np.array(values, dtype=np.uint64), width) == reference_pack(values, width)


def test_documented_example_and_byte_widths():
    assert pack_bits(np.array([1, 2, 3]), 2) == b"9"
    v = np.array([1, 300, 65535], dtype=np.int64)
    assert pack_bits(v, 16) == v.astype("<u2").tobytes()
    assert pack_bits(v, 32) == v.astype("<u4").tobytes()
    m = np.array([1, 0, 1, 1, 0, 0, 0, 1, 1])
    assert pack_bits(m, 1) == np.packbits(m.astype(np.uint8), bitorder="little").tobytes()


def test_chunk_boundaries(monkeypatch):
    monkeypatch.setattr(bitpack, "_CHUNK", 16)
    rng = np.random.default_rng(0)
    for width in (3, 5, 13, 31):
        v = rng.integers(0, 1 << width, size=101)
        data = pack_bits(v, width)
        assert data == reference_pack(v.tolist(), width)
        assert np.array_equal(unpack_bits(data, width, 101), v)


def test_errors():
    with pytest.raises(ValueError):
        pack_bits(np.array([4]), 2)
    with pytest.raises(ValueError):
        pack_bits(np.array([-1]), 8)
    with pytest.raises(ValueError):
        pack_bits(np.array([1]), 33)
    with pytest.raises(WeightzipFormatError):
        unpack_bits(b"\x00", 5, 2)


def test_bits_for_alphabet():
    assert [bits_for_alphabet(k) for k in (0, 1, 2, 3, 4, 5, 256, 257)] == [0, 0, 1, 2, 2, 3, 8, 9]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(-(2**31), 2**31 - 1), max_size=50))
def test_zigzag_and_signed(values):
    x = np.array(values, dtype=np.int64)
    assert np.array_equal(zigzag_decode(zigzag_encode(x)), x)
    if x.size:
        w = bitpack.signed_width(x.min(), x.max(), "zigzag")
        assert np.array_equal(unpack_signed(pack_signed(x, w, "zigzag"), w, x.size, "zigzag"), x)
        lo = int(x.min())
        w = bitpack.signed_width(lo, x.max(), "offset")
        assert np.array_equal(unpack_signed(pack_signed(x, w, "offset", lo), w, x.size, "offset", lo), x)


def test_zigzag_order():
    assert zigzag_encode([0, -1, 1, -2, 2]).tolist() == [0, 1, 2, 3, 4]
