"""Writing and reading the named byte streams of a :class:`~.format.Format`.

Every stream has a ``meta["stream_info"][name]`` entry: ``coding`` (``raw`` = bit-packed,
``huffman``, ``ans`` for integer symbols, :mod:`.entropy`; ``float32`` / ``float16`` for float
arrays; ``bytes`` for the data of ``raw`` tensors), ``count`` (symbols / values) and, for integer
streams, ``alphabet`` (symbols are in ``[0, alphabet)``, ``ceil(log2 alphabet)`` bits when packed).
"""
from __future__ import annotations

import numpy as np

from ..errors import WeightzipFormatError
from . import context, entropy, mixing
from .bitpack import bits_for_alphabet
from .format import Format, bad, is_int


FLOAT_CODINGS = ("float32", "float16", "grid")
GRID_STREAMS = ("codebook", "codebooks", "scale")   # float streams whose readers take any float coding (a
                                                  # dense tensor's ``values`` coding is its value_dtype)
GRID_MAX_F = 40          # finest grid 2^-40
GRID_MAX_VARINT = 8      # bytes of one zigzag delta (|delta| < 2^55)


def encode_grid(v: np.ndarray) -> bytes | None:
    """Coding ``grid`` of float32 values that are all integers times ``2^-f`` (``0 <= f <=``
    :data:`GRID_MAX_F`), e.g. re-quantized codebooks and biases: one byte ``f``, then per value the
    zigzag LEB128 varint of ``a[i] - a[i - 1]`` (``a[-1] = 0``) of the integers ``a = v 2^f``.
    None when the values are not on such a grid or do not read back bit-exactly."""
    v = np.asarray(v, dtype=np.float32).ravel()
    if not v.size or not np.isfinite(v).all():
        return None
    d = v.astype(np.float64)
    for f in range(GRID_MAX_F + 1):
        a = d * 2.0 ** f
        if np.all(a == np.floor(a)):
            break
    else:
        return None
    if np.abs(a).max() >= 2.0 ** 53:
        return None
    ai = a.astype(np.int64)
    if not np.array_equal((ai.astype(np.float64) * 2.0 ** -f).astype(np.float32).view(np.uint32),
                          (v + np.float32(0.0)).view(np.uint32)):
        return None                      # -0.0 and the like: stay float32
    delta = np.diff(ai, prepend=0)
    out = bytearray([f])
    for x in delta.tolist():
        z = (x << 1) if x >= 0 else ((-x << 1) - 1)
        if z >= 1 << (7 * GRID_MAX_VARINT):
            return None
        while z >= 0x80:
            out.append((z & 0x7F) | 0x80)
            z >>= 7
        out.append(z)
    return bytes(out)


def decode_grid(data: bytes, n) -> np.ndarray:
    """Inverse of :func:`encode_grid` (``n`` values); bounded: refused unless the bytes can hold
    ``n`` varints."""
    data = bytes(data)
    if not is_int(n) or n < 0 or len(data) < 1 or n > len(data) - 1:
        raise WeightzipFormatError(f"grid stream of {len(data)} bytes cannot hold {n!r} values")
    f = data[0]
    if f > GRID_MAX_F:
        raise WeightzipFormatError(f"grid stream step 2^-{f} is finer than 2^-{GRID_MAX_F}")
    vals = np.empty(n, np.int64)
    acc, i, pos = 0, 0, 1
    while i < n:
        z, shift = 0, 0
        while True:
            if pos >= len(data) or shift >= 7 * GRID_MAX_VARINT:
                raise WeightzipFormatError("grid stream is truncated or holds an over-long varint")
            b = data[pos]
            pos += 1
            z |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                break
        acc += (z >> 1) if not z & 1 else -((z + 1) >> 1)
        if abs(acc) >= 1 << 53:
            raise WeightzipFormatError("grid stream value out of range")
        vals[i] = acc
        i += 1
    if pos != len(data):
        raise WeightzipFormatError(f"grid stream has {len(data) - pos} trailing bytes")
    return (vals.astype(np.float64) * 2.0 ** -f).astype(np.float32)


class StreamWriter:
    """Collects streams and their ``stream_info`` while a candidate is built. Integer streams get
    the smallest of ``codings`` (:func:`.entropy.best_coding`)."""

    def __init__(self, codings):
        self.codings = codings
        self.streams: dict[str, bytes] = {}
        self.info: dict[str, dict] = {}

    def symbols(self, name: str, symbols, alphabet: int, ctx: tuple | None = None) -> None:
        """``ctx = (positions, rows, cols)`` also tries :func:`.context.encode_codes` (coding
        ``context``) and keeps it when smaller than the order-0 codings."""
        s = np.asarray(symbols).ravel()
        if ctx is not None or s.dtype not in entropy._NARROW:   # narrow codes (uint8) are coded as they are
            s = s.astype(np.int64, copy=False)
        coding, data = entropy.best_coding(s, alphabet, self.codings)
        if ctx is not None and "ans" in self.codings:
            cdata = context.encode_codes(s, *ctx, only_if_better=True)
            if cdata is not None and len(cdata) < len(data):
                coding, data = "context", cdata
            mdata = mixing.encode_codes(s, *ctx, int(alphabet))
            if mdata is not None and len(mdata) < len(data):
                coding, data = "cm", mdata
        self.streams[name] = data
        self.info[name] = {"coding": coding, "count": int(s.size), "alphabet": int(alphabet)}

    def floats(self, name: str, values, dtype: str = "float32") -> None:
        v = np.asarray(values, dtype=np.float32).ravel()
        data = v.astype("<f4" if dtype == "float32" else "<f2").tobytes()
        g = encode_grid(v) if dtype == "float32" and name in GRID_STREAMS and set(self.codings) - {"raw"} else None
        if g is not None and len(g) < len(data):
            data, dtype = g, "grid"
        self.streams[name] = data
        self.info[name] = {"coding": dtype, "count": int(v.size)}

    def blob(self, name: str, data: bytes, coding: str, count: int) -> None:
        """A self-delimiting stream made by a coder of its own (e.g. ``context_mask``)."""
        self.streams[name] = bytes(data)
        self.info[name] = {"coding": coding, "count": int(count)}

    def raw(self, name: str, data: bytes, count: int) -> None:
        self.streams[name] = bytes(data)
        self.info[name] = {"coding": "bytes", "count": int(count)}

    def sub(self) -> "StreamWriter":
        """An empty writer with the same codings (to build alternatives and keep the smaller)."""
        return StreamWriter(self.codings)

    def merge(self, other: "StreamWriter") -> None:
        self.streams.update(other.streams)
        self.info.update(other.info)

    @property
    def nbytes(self) -> int:
        return sum(len(s) for s in self.streams.values())


class StreamReader:
    """Reads a Format's streams, validating counts and codings against expectations."""

    def __init__(self, fmt: Format):
        self.fmt = fmt
        info = fmt.meta.get("stream_info")
        if not isinstance(info, dict):
            raise bad(fmt, "meta['stream_info'] is missing or not an object")
        self.info = info

    def _get(self, name: str) -> tuple[dict, bytes]:
        if name not in self.fmt.streams:
            raise bad(self.fmt, "stream is missing", name)
        inf = self.info.get(name)
        if not isinstance(inf, dict):
            raise bad(self.fmt, "stream has no stream_info entry", name)
        return inf, self.fmt.streams[name]

    def symbols(self, name: str, count: int, alphabet: int, ctx: tuple | None = None) -> np.ndarray:
        """(count,) int64 symbols in ``[0, alphabet)``; a ``context``-coded stream needs the
        ``ctx = (positions, rows, cols)`` it was written with."""
        inf, data = self._get(name)
        if inf.get("count") != count:
            raise bad(self.fmt, f"stream holds {inf.get('count')!r} symbols, expected {count}", name)
        if inf.get("alphabet") != alphabet:
            raise bad(self.fmt, f"stream alphabet is {inf.get('alphabet')!r}, expected {alphabet}", name)
        coding = inf.get("coding")
        if coding == "cm":
            if ctx is None:
                raise bad(self.fmt, "cm coding is only valid for the codes of a context layout", name)
            try:
                return mixing.decode_codes(data, *ctx, alphabet)
            except WeightzipFormatError as e:
                raise bad(self.fmt, str(e), name) from None
        if coding == "context":
            if ctx is None:
                raise bad(self.fmt, "context coding is only valid for the codes of a context layout", name)
            try:
                out = context.decode_codes(data, *ctx)
            except WeightzipFormatError as e:
                raise bad(self.fmt, str(e), name) from None
            if out.size and (out.min() < 0 or out.max() >= alphabet):
                raise bad(self.fmt, "decoded codes out of range", name)
            return out
        if coding not in entropy.CODINGS:
            raise bad(self.fmt, f"unknown coding {coding!r} for an integer stream (valid: {entropy.CODINGS})", name)
        try:
            return entropy.decode_symbols(data, coding, count, bits=bits_for_alphabet(alphabet),
                                          alphabet_size=alphabet)
        except WeightzipFormatError as e:
            raise bad(self.fmt, str(e), name) from None

    def symbol_chunks(self, name: str, count: int, alphabet: int, ctx: tuple | None = None):
        """:meth:`symbols` as consecutive int64 chunks (:func:`.entropy.iter_decode_symbols`: one
        chunk of symbols in memory at a time); ``context`` / ``cm`` streams come in one piece."""
        inf, data = self._get(name)
        coding = inf.get("coding")
        if coding not in entropy.CODINGS or inf.get("count") != count or inf.get("alphabet") != alphabet:
            yield self.symbols(name, count, alphabet, ctx)   # its checks and errors
            return
        try:
            yield from entropy.iter_decode_symbols(data, coding, count, bits=bits_for_alphabet(alphabet),
                                                   alphabet_size=alphabet)
        except WeightzipFormatError as e:
            raise bad(self.fmt, str(e), name) from None

    def floats(self, name: str, count: int | None = None) -> np.ndarray:
        """(count,) float32 values of a float32 / float16 / grid stream (all finite)."""
        inf, data = self._get(name)
        coding = inf.get("coding")
        if coding not in FLOAT_CODINGS:
            raise bad(self.fmt, f"stream coding must be float32 or float16 (or grid), got {coding!r}", name)
        n = inf.get("count")
        if count is not None and n != count:
            raise bad(self.fmt, f"stream holds {n!r} values, expected {count}", name)
        if coding == "grid":
            try:
                return decode_grid(data, n)
            except WeightzipFormatError as e:
                raise bad(self.fmt, str(e), name) from None
        width = 4 if coding == "float32" else 2
        if not is_int(n) or len(data) != n * width:
            raise bad(self.fmt, f"stream has {len(data)} bytes, {n!r} {coding} values need "
                                f"{n * width if is_int(n) else '?'}", name)
        out = np.frombuffer(data, dtype="<f4" if width == 4 else "<f2").astype(np.float32)
        if not np.isfinite(out).all():  # encode refuses NaN / Inf, so no genuine file holds them
            bad_n = int((~np.isfinite(out)).sum())
            raise bad(self.fmt, f"stream holds {bad_n} NaN / Inf values; weightzip never writes them "
                                "(corrupted or forged file)", name)
        return out

    def alphabet(self, name: str) -> int:
        """The declared alphabet of an integer stream whose alphabet is not implied by the meta."""
        a = self.info.get(name, {}).get("alphabet")
        if not is_int(a) or not 1 <= a <= 2**32:
            raise bad(self.fmt, f"bad alphabet {a!r}", name)
        return a
