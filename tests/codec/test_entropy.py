"""Entropy coding: exact round trips, closeness to the order-0 bound, best_coding, corrupt data."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from weightzip.codec import entropy
from weightzip.codec.bitpack import packed_nbytes
from weightzip.errors import WeightzipFormatError

streams = st.lists(st.integers(0, 40), max_size=300) | st.lists(st.sampled_from([0, 7, 2**31, 2**32 - 1]), max_size=50)


@settings(max_examples=120, deadline=None)
@given(streams, st.sampled_from(entropy.CODINGS))
def test_round_trip(symbols, coding):
    s = np.array(symbols, dtype=np.int64)
    alphabet = int(s.max()) + 1 if s.size else 1
    bits = max(1, (alphabet - 1).bit_length())
    data = entropy.encode_symbols(s, coding, bits=bits)
    out = entropy.decode_symbols(data, coding, s.size, bits=bits, alphabet_size=alphabet)
    assert out.dtype == np.int64 and np.array_equal(out, s)


def test_order0_entropy():
    assert entropy.order0_entropy_bits([]) == 0.0
    assert entropy.order0_entropy_bits([3, 3, 3]) == 0.0
    assert entropy.order0_entropy_bits([0, 1] * 8) == pytest.approx(16.0)
    s = [0] * 3 + [1]
    assert entropy.order0_entropy_bits(s) == pytest.approx(-(3 * math.log2(0.75) + math.log2(0.25)))


def _skewed_streams():
    rng = np.random.default_rng(0)
    n = 20000
    # k-means codes of Gaussian weights (32 centroids), relative-index gaps (geometric), sparse bitmap
    codes = np.clip(np.round(rng.normal(15.5, 5, n)), 0, 31).astype(np.int64)
    gaps = np.minimum(rng.geometric(0.1, n) - 1, 31)
    bitmap = (rng.random(100000) < 0.05).astype(np.int64)
    return {"codes": codes, "gaps": gaps, "bitmap": bitmap}


@pytest.mark.parametrize("name", ["codes", "gaps", "bitmap"])
def test_ans_within_3_percent_of_bound(name):
    s = _skewed_streams()[name]
    bound = entropy.order0_entropy_bits(s)
    data = entropy.ans_encode(s)
    assert len(data) * 8 <= 1.03 * bound
    assert np.array_equal(entropy.ans_decode(data, s.size), s)


@pytest.mark.parametrize("name", ["codes", "gaps"])
def test_huffman_within_3_percent_of_bound(name):
    s = _skewed_streams()[name]
    bound = entropy.order0_entropy_bits(s)
    data = entropy.huffman_encode(s)
    assert len(data) * 8 <= 1.03 * bound
    assert np.array_equal(entropy.huffman_decode(data, s.size), s)


def test_huffman_never_exceeds_bound_plus_one_bit_per_symbol():
    s = _skewed_streams()["bitmap"]
    data = entropy.huffman_encode(s)
    assert len(data) * 8 <= entropy.order0_entropy_bits(s) + s.size + 8 * 16


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 15), max_size=400))
def test_best_coding_is_the_smallest(symbols):
    s = np.array(symbols, dtype=np.int64)
    name, data = entropy.best_coding(s, 16)
    sizes = {c: len(entropy.encode_symbols(s, c, bits=4)) for c in entropy.CODINGS}
    assert len(data) == min(sizes.values())
    assert sizes[name] == len(data)
    assert np.array_equal(entropy.decode_symbols(data, name, s.size, bits=4, alphabet_size=16), s)


def test_best_coding_prefers_entropy_coder_on_skewed_streams():
    s = _skewed_streams()["bitmap"]
    name, data = entropy.best_coding(s, 2)
    assert name == "ans" and len(data) < packed_nbytes(s.size, 1) / 2


def test_single_symbol_and_empty():
    for coding in ("huffman", "ans"):
        data = entropy.encode_symbols(np.full(1000, 5), coding)
        assert len(data) < 8
        assert entropy.decode_symbols(data, coding, 1000).tolist() == [5] * 1000
        assert entropy.decode_symbols(entropy.encode_symbols([], coding), coding, 0).size == 0


@pytest.mark.parametrize("coding", ["huffman", "ans"])
def test_corrupt_streams_raise(coding):
    s = _skewed_streams()["codes"][:2000]
    data = entropy.encode_symbols(s, coding)
    with pytest.raises(WeightzipFormatError):
        entropy.decode_symbols(data, coding, s.size + 1)          # histogram does not sum to count
    with pytest.raises(WeightzipFormatError):
        entropy.decode_symbols(data[:3], coding, s.size)           # truncated header
    with pytest.raises(WeightzipFormatError):
        entropy.decode_symbols(data[: len(data) // 2], coding, s.size)  # truncated payload
    with pytest.raises(WeightzipFormatError):
        entropy.decode_symbols(data, coding, s.size, alphabet_size=10)  # symbols outside alphabet
    with pytest.raises(WeightzipFormatError):
        entropy.decode_symbols(b"", coding, 5)


def test_raw_stream_length_checked():
    with pytest.raises(WeightzipFormatError):
        entropy.decode_symbols(b"\x00\x00", "raw", 5, bits=4)
    with pytest.raises(WeightzipFormatError):
        entropy.decode_symbols(b"\xff", "raw", 2, bits=4, alphabet_size=10)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 30), min_size=2, max_size=400))
def test_huffman_size_prediction_is_exact(symbols):
    s = np.array(symbols, dtype=np.int64)
    vals, counts = entropy.histogram(s)
    data = entropy.huffman_encode(s)
    head = len(entropy._header(vals, counts))
    assert len(data) == head + (entropy.huffman_payload_bits(counts) + 7) // 8


@pytest.mark.parametrize("coding", ["raw", "huffman", "ans"])
def test_check_stream_accepts_encoded_streams_and_refuses_damage(coding):
    from weightzip.codec.entropy import check_stream, encode_symbols

    s = np.random.default_rng(0).integers(0, 5, 3000)
    data = encode_symbols(s, coding, bits=3)
    check_stream(data, coding, 3000, bits=3, alphabet_size=5)
    with pytest.raises(WeightzipFormatError):
        check_stream(data, coding, 3100, bits=3, alphabet_size=5)
    with pytest.raises(WeightzipFormatError):
        check_stream(data[:len(data) // 2 & ~3], coding, 3000, bits=3, alphabet_size=5)   # half the payload


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 140000), min_size=1, max_size=300), st.integers(0, 1))
def test_histogram_equals_numpy_unique(xs, wide):
    """The counting pass (small alphabets) and the sort (wide ones) give np.unique's answer."""
    from weightzip.codec.entropy import histogram

    s = np.asarray(xs, dtype=np.int64) * (1 + 1000 * wide)
    vals, counts = histogram(s)
    ref_v, ref_c = np.unique(s, return_counts=True)
    assert np.array_equal(vals, ref_v) and np.array_equal(counts, ref_c)


def _errors(fn):
    try:
        return ("ok", np.concatenate(list(fn())) if callable(fn) else fn)
    except WeightzipFormatError as e:
        return ("error", str(e))


@pytest.mark.parametrize("coding", entropy.CODINGS)
def test_chunked_decoding_equals_decode_symbols_including_errors(coding):
    """iter_decode_symbols: the chunks are decode_symbols' symbols, and a damaged stream raises
    decode_symbols' error (the same message)."""
    s = _skewed_streams()["codes"][:5001]
    alphabet = int(s.max()) + 1
    bits = max(1, (alphabet - 1).bit_length())
    data = entropy.encode_symbols(s, coding, bits=bits)
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x5A
    cases = [(data, s.size, alphabet), (data[: len(data) // 2], s.size, alphabet), (bytes(flipped), s.size, alphabet),
             (data, s.size, max(2, alphabet - 3)), (data + b"\x00\x00\x00\x00", s.size, alphabet)]
    for d, n, a in cases:
        whole = _errors(lambda: [entropy.decode_symbols(d, coding, n, bits=bits, alphabet_size=a)])
        chunked = _errors(lambda: entropy.iter_decode_symbols(d, coding, n, bits=bits, alphabet_size=a, chunk=64))
        assert whole[0] == chunked[0]
        if whole[0] == "ok":
            assert chunked[1].dtype == np.int64 and np.array_equal(whole[1], chunked[1])
        else:
            assert whole[1] == chunked[1]


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.uint32])
def test_narrow_symbols_code_to_the_int64_bytes(dtype, monkeypatch):
    """uint8 codes (1 byte a symbol, used as they are) give the bytes of the int64 symbols, with
    every coding and with the ANS / histogram passes split into chunks."""
    s = _skewed_streams()["codes"][:4321]
    alphabet = int(s.max()) + 1
    bits = max(1, (alphabet - 1).bit_length())
    whole = {c: entropy.encode_symbols(s, c, bits=bits) for c in entropy.CODINGS}   # one chunk
    best = entropy.best_coding(s, alphabet)
    monkeypatch.setattr(entropy, "CHUNK", 1000)
    for coding in entropy.CODINGS:
        assert entropy.encode_symbols(s.astype(dtype), coding, bits=bits) == whole[coding]
    assert entropy.best_coding(s.astype(dtype), alphabet) == best
    v, c = entropy.histogram(s.astype(dtype))
    v2, c2 = entropy.histogram(s)
    assert np.array_equal(v, v2) and np.array_equal(c, c2)
