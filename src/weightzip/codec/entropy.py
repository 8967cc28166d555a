"""Entropy coding of integer symbol streams (codes, index gaps, bitmaps) with ``constriction``.

Three codings of a stream of non-negative integers ``s_0 .. s_{n-1}`` (each < 2^32):

* ``raw``: fixed width ``bits`` per symbol, :func:`.bitpack.pack_bits` (no header);
* ``huffman``: Huffman code (``constriction.symbol.huffman``) built from the empirical histogram;
* ``ans``: range/ANS coding (``constriction.stream.stack.AnsCoder``) with a categorical model
  quantized (by constriction, ``perfect=False``) from the empirical histogram.

The decoder needs the histogram, so huffman / ans streams start with it (all little-endian)::

    varint  K                      number of distinct symbols (LEB128)
    u8      ws                     bit width of the symbol deltas
    bits    K x ws                 d_0 = s_(0), d_j = s_(j) - s_(j-1) - 1  (distinct symbols, ascending)
    u8      wc                     bit width of (count - 1)
    bits    K x wc                 count_j - 1
    payload                        huffman: the code bits (LSB-first, zero padded to a byte);
                                   ans: the coder's uint32 words, little-endian

Both packed sections are padded to whole bytes. ``n = sum(count_j)`` must equal the count the
caller expects. Symbols are coded as their rank among the distinct symbols; with ``K == 1``
the payload is empty. The order-0 bound of a stream is ``n * H(p)`` with ``p_j = count_j / n``
(:func:`order0_entropy_bits`); ANS reaches it within a few bytes, Huffman within < 1 bit/symbol.
"""
from __future__ import annotations

import heapq
import math

import numpy as np

from ..errors import WeightzipFormatError
from .bitpack import bits_for_alphabet, pack_bits, packed_nbytes, unpack_bits

CODINGS = ("raw", "huffman", "ans")


def _constriction():
    import constriction  # imported lazily: only needed when a stream is entropy coded

    return constriction


# ---------------------------------------------------------------------------------------------
# helpers

def _as_symbols(symbols) -> np.ndarray:
    s = np.asarray(symbols).ravel()
    if s.size == 0:
        return s.astype(np.int64)
    if not (np.issubdtype(s.dtype, np.integer) or s.dtype == np.bool_):
        raise ValueError(f"symbols must be integers, got dtype {s.dtype}")
    if s.dtype not in _NARROW:
        s = s.astype(np.int64, copy=False)  # int64 input (codes, gaps) is used as is, not copied
    if s.min() < 0 or s.max() >= 1 << 32:
        raise ValueError(f"symbols must be in [0, 2^32), got [{s.min()}, {s.max()}]")
    return s


#: symbol dtypes used as they are (uint8 codes: 1 byte per symbol, not an 8-byte copy); every
#: coder reads them chunk by chunk (:data:`CHUNK` symbols) and writes the same bytes as for int64
_NARROW = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.int32), np.dtype(np.uint32))
CHUNK = 1 << 20


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    n = shift = 0
    for i in range(10):
        if pos + i >= len(buf):
            raise WeightzipFormatError("entropy-coded stream header is truncated (varint)")
        b = buf[pos + i]
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, pos + i + 1
    raise WeightzipFormatError("entropy-coded stream header has an over-long varint")


def _constant(value, count: int) -> np.ndarray:
    """(count,) int64 all ``value``: a read-only broadcast view, so a stream of one symbol (a few
    header bytes, or 0 bytes at 0 bits) costs no memory however large the count it declares."""
    return np.broadcast_to(np.int64(value), (int(count),))


def histogram(symbols) -> tuple[np.ndarray, np.ndarray]:
    """``(distinct ascending symbols (K,), counts (K,))`` of a symbol stream (int64)."""
    s = _as_symbols(symbols)
    if s.size == 0:
        return s, s.copy()
    lo, hi = int(s.min()), int(s.max())
    if hi - lo <= 2 * s.size + 65536:  # a small alphabet (codes, gaps): one counting pass
        if s.dtype == np.intp:
            counts = np.bincount((s - lo if lo else s).astype(np.intp, copy=False), minlength=hi - lo + 1)
        else:   # narrow symbols: counted chunk by chunk (no n-sized intp copy)
            counts = np.zeros(hi - lo + 1, dtype=np.intp)
            for a in range(0, s.size, CHUNK):
                c = s[a:a + CHUNK].astype(np.intp)
                counts += np.bincount(c - lo if lo else c, minlength=hi - lo + 1)
        vals = np.flatnonzero(counts)
        return (vals + lo).astype(np.int64), counts[vals].astype(np.int64)
    vals, counts = np.unique(s, return_counts=True)
    return vals.astype(np.int64), counts.astype(np.int64)


def order0_entropy_bits(symbols) -> float:
    """Order-0 empirical entropy of the stream in bits: ``n * H(p) = -sum_j c_j log2(c_j / n)``."""
    _, c = histogram(symbols)
    n = c.sum()
    if n == 0:
        return 0.0
    p = c / n
    return float(-(c * np.log2(p)).sum())


def _header(vals: np.ndarray, counts: np.ndarray) -> bytes:
    deltas = np.diff(vals, prepend=-1) - 1                         # (K,) >= 0
    ws = int(deltas.max()).bit_length() if deltas.size else 0
    wc = int((counts - 1).max()).bit_length() if counts.size else 0
    return b"".join([_varint(int(vals.size)), bytes([ws]), pack_bits(deltas, ws),
                     bytes([wc]), pack_bits(counts - 1, wc)])


def _read_header(data: bytes, count: int, alphabet_size: int | None) -> tuple[np.ndarray, np.ndarray, int]:
    """Parse the histogram header; returns (distinct symbols, counts, payload offset).

    Nothing is allocated before it is bounded by the bytes present: ``K`` distinct symbols need
    ``K <= count``, ``K <= alphabet_size`` and, for ``K >= 2``, ``K - 1 <= 8 len(data) + 64``
    (every symbol but the most likely one costs at least one bit in Huffman and ANS codes; 64
    bits of ANS state slack)."""
    k, pos = _read_varint(data, 0)
    if k > max(count, 0) or (count > 0 and k == 0):
        raise WeightzipFormatError(f"entropy-coded stream declares {k} distinct symbols for {count} symbols")
    if alphabet_size is not None and k > alphabet_size:
        raise WeightzipFormatError(f"entropy-coded stream declares {k} distinct symbols, "
                                   f"the alphabet has {alphabet_size}")
    if k >= 2 and k - 1 > 8 * len(data) + 64:
        raise WeightzipFormatError(f"entropy-coded stream declares {k} distinct symbols; its {len(data)} bytes "
                                   f"can hold at most {8 * len(data) + 65}")
    if pos >= len(data):
        raise WeightzipFormatError("entropy-coded stream header is truncated")
    ws = data[pos]
    pos += 1
    if ws > 32:
        raise WeightzipFormatError(f"entropy-coded stream header has symbol width {ws} > 32")
    nb = packed_nbytes(k, ws)
    deltas = unpack_bits(data[pos:pos + nb], ws, k).astype(np.int64)
    pos += nb
    if pos >= len(data):
        raise WeightzipFormatError("entropy-coded stream header is truncated")
    wc = data[pos]
    pos += 1
    if wc > 32:
        raise WeightzipFormatError(f"entropy-coded stream header has count width {wc} > 32")
    nb = packed_nbytes(k, wc)
    counts = unpack_bits(data[pos:pos + nb], wc, k).astype(np.int64) + 1
    pos += nb
    vals = np.cumsum(deltas + 1) - 1
    if int(counts.sum()) != count:
        raise WeightzipFormatError(
            f"entropy-coded stream histogram sums to {int(counts.sum())} symbols, expected {count}")
    if vals.size and (vals[-1] >= (1 << 32) or (alphabet_size is not None and vals[-1] >= alphabet_size)):
        raise WeightzipFormatError(
            f"entropy-coded stream has symbol {int(vals[-1])} outside the alphabet of {alphabet_size}")
    return vals, counts, pos


def _check_huffman(data: bytes, count: int, alphabet_size: int | None) -> tuple[np.ndarray, np.ndarray, int]:
    """Header of a Huffman stream whose payload has exactly the ``ceil(sum_j c_j l_j / 8)`` bytes
    its histogram implies (:func:`huffman_payload_bits`), so ``count`` is bounded by the bytes."""
    vals, counts, pos = _read_header(data, count, alphabet_size)
    if vals.size >= 2:
        need = (huffman_payload_bits(counts) + 7) // 8
        if len(data) - pos != need:
            raise WeightzipFormatError(f"huffman stream declares {count} symbols whose code needs {need} payload "
                                       f"bytes, the stream holds {len(data) - pos}")
    return vals, counts, pos


def _check_ans(data: bytes, count: int, alphabet_size: int | None) -> tuple[np.ndarray, np.ndarray, int]:
    """Header of an ANS stream: whole 32-bit words, and about the histogram's order-0 bound
    ``n H(p)`` at least (no code beats the entropy of its own histogram by more than its coder
    state; committed files come within 0.3 %): refused below ``0.99 n H(p) - 256`` bits."""
    vals, counts, pos = _read_header(data, count, alphabet_size)
    if vals.size >= 2:
        payload = len(data) - pos
        if payload % 4:
            raise WeightzipFormatError(f"ans stream payload of {payload} bytes is not a whole number of words")
        bound = float(-(counts * np.log2(counts / float(count))).sum())
        if 8 * payload < 0.99 * bound - 256:
            raise WeightzipFormatError(f"ans stream declares {count} symbols needing at least {math.ceil(bound)} "
                                       f"bits, the stream holds {8 * payload} payload bits")
    return vals, counts, pos


# ---------------------------------------------------------------------------------------------
# Huffman

def huffman_payload_bits(counts) -> int:
    """Exact payload size in bits of a Huffman code for this histogram: ``sum_j c_j l_j``.

    Every Huffman tree of a histogram has the same (optimal) weighted length, whatever the
    tie-breaking, so this equals the size :func:`huffman_encode` produces, computed in
    O(K log K) without coding the stream (the sum of all merged weights).
    """
    c = [int(x) for x in np.asarray(counts).ravel() if x > 0]
    if len(c) <= 1:
        return 0
    heapq.heapify(c)
    total = 0
    while len(c) > 1:
        merged = heapq.heappop(c) + heapq.heappop(c)
        total += merged
        heapq.heappush(c, merged)
    return total


def huffman_encode(symbols) -> bytes:
    """Huffman-code a symbol stream; the histogram header is included (see module doc)."""
    s = _as_symbols(symbols)
    vals, counts = histogram(s)
    head = _header(vals, counts)
    if vals.size <= 1:
        return head
    c = _constriction()
    tree = c.symbol.huffman.EncoderHuffmanTree(counts.astype(np.float64))
    enc = c.symbol.QueueEncoder()
    encode = enc.encode_symbol
    for a in range(0, s.size, CHUNK):
        for r in np.searchsorted(vals, s[a:a + CHUNK]).tolist():   # rank of each symbol
            encode(r, tree)
    words, nbits = enc.get_compressed()
    return head + words.astype("<u4").tobytes()[: (nbits + 7) // 8]


def huffman_decode(data: bytes, count: int, alphabet_size: int | None = None) -> np.ndarray:
    """Inverse of :func:`huffman_encode`: ``count`` symbols (int64)."""
    data = bytes(data)
    vals, counts, pos = _check_huffman(data, count, alphabet_size)
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    if vals.size == 1:
        return _constant(vals[0], count)
    payload = data[pos:]
    if len(payload) * 8 < count:  # every Huffman code word of a >= 2-symbol alphabet has >= 1 bit
        raise WeightzipFormatError(f"huffman stream too short for {count} symbols ({len(payload)} bytes)")
    payload += b"\x00" * (-len(payload) % 4)
    c = _constriction()
    tree = c.symbol.huffman.DecoderHuffmanTree(counts.astype(np.float64))
    try:
        dec = c.symbol.QueueDecoder(np.frombuffer(payload, dtype="<u4").astype(np.uint32))
        decode = dec.decode_symbol
        ranks = np.fromiter((decode(tree) for _ in range(count)), dtype=np.int64, count=count)
    except ValueError as e:
        raise WeightzipFormatError(f"huffman stream is corrupted: {e}") from e
    return vals[ranks]


# ---------------------------------------------------------------------------------------------
# ANS

def _ans_model(counts: np.ndarray):
    c = _constriction()
    return c.stream.model.Categorical(counts.astype(np.float64) / float(counts.sum()), perfect=False)


def ans_encode(symbols) -> bytes:
    """ANS-code a symbol stream (categorical model from the histogram, stored in the header)."""
    s = _as_symbols(symbols)
    vals, counts = histogram(s)
    head = _header(vals, counts)
    if vals.size <= 1:
        return head
    c = _constriction()
    coder = c.stream.stack.AnsCoder()
    model = _ans_model(counts)
    # the symbols are pushed last to first (a stack: they decode first to last), a chunk at a time:
    # the same pushes, so the same words, as one call on the whole stream
    for a in reversed(range(0, s.size, CHUNK)):
        coder.encode_reverse(np.searchsorted(vals, s[a:a + CHUNK]).astype(np.int32), model)
    return head + coder.get_compressed().astype("<u4").tobytes()


def ans_decode(data: bytes, count: int, alphabet_size: int | None = None) -> np.ndarray:
    """Inverse of :func:`ans_encode`: ``count`` symbols (int64)."""
    data = bytes(data)
    vals, counts, pos = _check_ans(data, count, alphabet_size)
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    if vals.size == 1:
        return _constant(vals[0], count)
    payload = data[pos:]
    if len(payload) % 4:
        raise WeightzipFormatError(f"ans stream payload of {len(payload)} bytes is not a whole number of words")
    c = _constriction()
    try:
        coder = c.stream.stack.AnsCoder(np.frombuffer(payload, dtype="<u4").astype(np.uint32))
        ranks = np.asarray(coder.decode(_ans_model(counts), int(count)), dtype=np.int64)
        leftover = not coder.is_empty()
    except (ValueError, RuntimeError, OverflowError) as e:
        raise WeightzipFormatError(f"ans stream is corrupted: {e}") from e
    if leftover:  # a complete ANS stream returns to the empty state after its last symbol
        raise WeightzipFormatError("ans stream is corrupted or truncated (coder state not empty after the last symbol)")
    if ranks.size != count or (ranks.size and (ranks.min() < 0 or ranks.max() >= vals.size)):
        raise WeightzipFormatError("ans stream is corrupted: decoded symbols out of range")
    return vals[ranks]


# ---------------------------------------------------------------------------------------------
# dispatch

def encode_symbols(symbols, coding: str, *, bits: int | None = None) -> bytes:
    """Encode with ``coding`` in :data:`CODINGS`; ``raw`` needs ``bits`` (fixed width)."""
    if coding == "raw":
        if bits is None:
            raise ValueError("raw coding needs the bit width `bits`")
        return pack_bits(_as_symbols(symbols), bits)
    if coding == "huffman":
        return huffman_encode(symbols)
    if coding == "ans":
        return ans_encode(symbols)
    raise ValueError(f"unknown coding {coding!r}; valid: {CODINGS}")


def decode_symbols(data: bytes, coding: str, count: int, *, bits: int | None = None,
                   alphabet_size: int | None = None) -> np.ndarray:
    """Decode ``count`` symbols (int64; read-only when the stream holds one distinct symbol).
    Malformed data raises :class:`WeightzipFormatError`; symbols ``>= alphabet_size`` (when given) too."""
    count = int(count)
    if count < 0:
        raise WeightzipFormatError(f"negative symbol count {count}")
    if coding == "raw":
        if bits is None:
            raise ValueError("raw coding needs the bit width `bits`")
        if len(data) != packed_nbytes(count, bits):
            raise WeightzipFormatError(
                f"raw stream has {len(data)} bytes, {count} symbols x {bits} bits need {packed_nbytes(count, bits)}")
        if bits == 0:
            return _constant(0, count)
        out = unpack_bits(data, bits, count).astype(np.int64)
        if alphabet_size is not None and out.size and out.max() >= alphabet_size:
            raise WeightzipFormatError(f"raw stream has symbol {int(out.max())} outside the alphabet of {alphabet_size}")
        return out
    if coding == "huffman":
        return huffman_decode(data, count, alphabet_size)
    if coding == "ans":
        return ans_decode(data, count, alphabet_size)
    raise WeightzipFormatError(f"unknown stream coding {coding!r}; valid: {CODINGS}")


def iter_decode_symbols(data: bytes, coding: str, count: int, *, bits: int | None = None,
                        alphabet_size: int | None = None, chunk: int | None = None):
    """:func:`decode_symbols` a chunk at a time: yields consecutive int64 arrays of at most
    ``chunk`` symbols (``chunk`` a multiple of 8) whose concatenation is ``decode_symbols(...)``,
    with the same checks and errors, so a caller that uses each chunk (a codebook lookup) holds
    one chunk of symbols, not ``count`` int64s."""
    count = int(count)
    chunk = max(8, int(CHUNK if chunk is None else chunk) // 8 * 8)
    if count <= chunk or coding not in CODINGS:
        yield decode_symbols(data, coding, count, bits=bits, alphabet_size=alphabet_size)
        return
    if coding == "raw":
        if bits is None:
            raise ValueError("raw coding needs the bit width `bits`")
        if len(data) != packed_nbytes(count, bits):
            raise WeightzipFormatError(
                f"raw stream has {len(data)} bytes, {count} symbols x {bits} bits need {packed_nbytes(count, bits)}")
        for a in range(0, count, chunk):
            m = min(chunk, count - a)
            out = _constant(0, m) if bits == 0 else \
                unpack_bits(data[a * bits // 8:packed_nbytes(a + m, bits)], bits, m).astype(np.int64)
            if bits and alphabet_size is not None and out.max() >= alphabet_size:
                raise WeightzipFormatError(f"raw stream has symbol {int(out.max())} outside the alphabet of {alphabet_size}")
            yield out
        return
    if coding == "huffman":
        data = bytes(data)
        vals, counts, pos = _check_huffman(data, count, alphabet_size)
        if vals.size == 1:
            for a in range(0, count, chunk):
                yield _constant(vals[0], min(chunk, count - a))
            return
        payload = data[pos:]
        if len(payload) * 8 < count:
            raise WeightzipFormatError(f"huffman stream too short for {count} symbols ({len(payload)} bytes)")
        payload += b"\x00" * (-len(payload) % 4)
        c = _constriction()
        tree = c.symbol.huffman.DecoderHuffmanTree(counts.astype(np.float64))
        try:
            dec = c.symbol.QueueDecoder(np.frombuffer(payload, dtype="<u4").astype(np.uint32))
        except ValueError as e:
            raise WeightzipFormatError(f"huffman stream is corrupted: {e}") from e
        decode = dec.decode_symbol
        for a in range(0, count, chunk):
            m = min(chunk, count - a)
            try:
                ranks = np.fromiter((decode(tree) for _ in range(m)), dtype=np.int64, count=m)
            except ValueError as e:
                raise WeightzipFormatError(f"huffman stream is corrupted: {e}") from e
            yield vals[ranks]
        return
    # ans
    data = bytes(data)
    vals, counts, pos = _check_ans(data, count, alphabet_size)
    if vals.size == 1:
        for a in range(0, count, chunk):
            yield _constant(vals[0], min(chunk, count - a))
        return
    payload = data[pos:]
    if len(payload) % 4:
        raise WeightzipFormatError(f"ans stream payload of {len(payload)} bytes is not a whole number of words")
    c = _constriction()
    model = _ans_model(counts)
    try:
        coder = c.stream.stack.AnsCoder(np.frombuffer(payload, dtype="<u4").astype(np.uint32))
    except (ValueError, RuntimeError, OverflowError) as e:
        raise WeightzipFormatError(f"ans stream is corrupted: {e}") from e
    # decode_symbols checks the coder's final state before the symbols' range: a chunk out of range
    # is held back until the last chunk is decoded, so the same error comes first
    out_of_range = False
    for a in range(0, count, chunk):
        m = min(chunk, count - a)
        try:
            ranks = np.asarray(coder.decode(model, m))
            if a + m == count:
                leftover = not coder.is_empty()
        except (ValueError, RuntimeError, OverflowError) as e:
            raise WeightzipFormatError(f"ans stream is corrupted: {e}") from e
        if ranks.size != m or (ranks.size and (ranks.min() < 0 or ranks.max() >= vals.size)):
            out_of_range = True
        if a + m == count:
            if leftover:
                raise WeightzipFormatError("ans stream is corrupted or truncated (coder state not empty after the last symbol)")
        if out_of_range:
            if a + m == count:
                raise WeightzipFormatError("ans stream is corrupted: decoded symbols out of range")
            continue
        yield vals[ranks]


def check_stream(data: bytes, coding: str, count: int, *, bits: int, alphabet_size: int | None = None) -> None:
    """Check, without decoding the symbols, that ``data`` can hold ``count`` symbols in ``coding``:
    ``raw`` has exactly ``ceil(count bits / 8)`` bytes; ``huffman`` / ``ans`` have a histogram
    header summing to ``count`` inside the alphabet and a payload of the size that histogram needs
    (:func:`_check_huffman`, :func:`_check_ans`). Work and memory are bounded by ``len(data)``.
    Raises :class:`WeightzipFormatError`."""
    count = int(count)
    if count < 0:
        raise WeightzipFormatError(f"negative symbol count {count}")
    if coding == "raw":
        if len(data) != packed_nbytes(count, bits):
            raise WeightzipFormatError(
                f"raw stream has {len(data)} bytes, {count} symbols x {bits} bits need {packed_nbytes(count, bits)}")
    elif coding == "huffman":
        _check_huffman(bytes(data), count, alphabet_size)
    elif coding == "ans":
        _check_ans(bytes(data), count, alphabet_size)
    else:
        raise WeightzipFormatError(f"unknown stream coding {coding!r}; valid: {CODINGS}")


def best_coding(symbols, alphabet_size: int, codings=CODINGS) -> tuple[str, bytes]:
    """The smallest of ``codings`` for this stream: ``(name, bytes)``.

    ``raw`` uses ``bits_for_alphabet(alphabet_size)`` bits per symbol. Ties keep the earlier
    name in ``codings`` (raw first: no header, fastest to decode). A coder is only run when its
    predicted size can beat the best so far: the Huffman size is known exactly from the
    histogram (:func:`huffman_payload_bits`), and ANS cannot beat the order-0 bound.
    """
    s = _as_symbols(symbols)
    if s.size and s.max() >= alphabet_size:
        raise ValueError(f"symbol {int(s.max())} outside the alphabet of {alphabet_size}")
    bits = bits_for_alphabet(alphabet_size)
    best: tuple[str, bytes] | None = None
    predicted: dict[str, int] = {}
    if any(c != "raw" for c in codings):
        vals, counts = histogram(s)
        head = len(_header(vals, counts))
        n = int(counts.sum())
        h_bits = float(-(counts * np.log2(counts / n)).sum()) if n else 0.0
        predicted["ans"] = head + math.ceil(h_bits / 8)                  # a lower bound for ANS
        predicted["huffman"] = head + (huffman_payload_bits(counts) + 7) // 8   # exact
    # cheapest first: the entropy coders are only run when they can still win
    order = sorted(codings, key=lambda c: (predicted.get(c, packed_nbytes(s.size, bits)), c != "raw"))
    for name in order:
        if best is not None and predicted.get(name, 0) >= len(best[1]):
            continue
        if best is not None and name == "raw" and (packed_nbytes(s.size, bits), codings.index("raw")) > \
                (len(best[1]), codings.index(best[0])):
            continue   # raw's size is known: it would lose to the best (ties: the earlier coding)
        data = encode_symbols(s, name, bits=bits)
        if best is None or len(data) < len(best[1]) or (len(data) == len(best[1]) and
                                                        codings.index(name) < codings.index(best[0])):
            best = (name, data)
    if best is None:
        raise ValueError(f"no coding among {codings}")
    return best
