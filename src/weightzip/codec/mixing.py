"""Context-mixing binary arithmetic coding of sparse weight matrices (codings ``cm_mask``, ``cm``).

:mod:`.context` conditions each mask bit on its column only, and each code on its column only.
A pruned layer has more structure: dead input columns AND weak output rows, neighbours that
are kept together (conv kernels), codes that repeat along a row. This coder binarizes every
decision and predicts it by MIXING several adaptive estimates in the logistic domain (as the
PAQ family of compressors does; DeepCABAC uses one context-selected estimate per flag), then
codes the bit with a binary arithmetic coder. All arithmetic is integer: an independent
decoder reproduces every probability bit for bit.

**Primitives** (12-bit probabilities ``p = P(bit = 1) * 4096``):

* ``squash(d) = 4096 / (1 + exp(-d / 256))`` for ``d`` in ``[-2047, 2047]``, interpolated
  linearly in 128-wide steps from the 33-entry table :data:`SQUASH_T` (``(t[j] (128 - w) +
  t[j + 1] w + 64) >> 7``, ``j = (d >> 7) + 16``, ``w = d & 127``); ``stretch(p)`` = the
  smallest ``d`` with ``squash(d) >= p`` (table :func:`_stretch_table`, an exact inverse).
* ``kt(n1, n) = clip(((2 n1 + 1) * 4096) // (2 n + 2), 1, 4095)``: a Krichevsky-Trofimov
  estimate from counts.
* adaptive probability (16-bit ``q``, initially 32768): ``q += ((bit << 16) - q) >> 4``;
  used as ``q >> 4``.
* mixer: inputs ``x_i`` (stretched, plus a bias input 256), weights ``w_i`` (int, 65536 = 1,
  initially 19661 = 0.3) of a weight set chosen by a small context;
  ``p = clip(squash(clip(sum(x_i w_i) >> 16, -2047, 2047)), 1, 4095)``; after the bit:
  ``w_i += (x_i * ((bit << 12) - p)) >> s`` with the learning-rate shift ``s`` from
  :data:`LR_SHIFTS` (chosen by the encoder, stored in the header).
* arithmetic coder: 32-bit ``[x1, x2]`` (initially ``[0, 2^32 - 1]``); ``xmid = x1 + ((x2 -
  x1) >> 12) * p``; bit 1 -> ``x2 = xmid``, bit 0 -> ``x1 = xmid + 1``; while the top bytes of
  ``x1`` and ``x2`` agree, emit it and shift in ``00`` / ``FF``. Flush: one byte
  ``(x1 >> 24) + 1`` (or ``x1 >> 24`` when the low 24 bits of ``x1`` are zero); trailing zero
  bytes are dropped, a decoder reads zeros past the end.

**Mask** (``cm_mask``, stream = ``u8 flags`` (bit 0 transposed, bits 1-2 index into LR_SHIFTS)
+ payload): every bit of the 2-D view ``[R, C]`` (or its transpose), row-major. Inputs:
``kt`` of the column's ones among the rows above, ``kt`` of the row's ones among the columns to
the left, ``kt`` of the previous row's ones, an adaptive probability selected by the 6
neighbours (left, left-2, up, up-left, up-right, up-2), an adaptive probability selected by
(left, up, the column's count bucket) and the bias. Weight set: (left, up, column bucket)
where the bucket of count ``n`` is ``0, 1, 2-3, 4-7, 8-15, >= 16`` -> 0..5.

**Codes** (``cm``, stream = ``u8 flags`` + payload, codes in ``[0, K)``, ``K`` = the stream's
alphabet): the codes of the entries of a context layout in row-major order of the (possibly
transposed) view, each as the ``D = ceil(log2 K)`` bits of a binary tree, most significant
first, node ``n = 1, 2n + bit, ...``; a bit whose 1-branch holds only codes ``>= K`` is not
coded (it is 0). Inputs per node: ``kt`` of the column's counts at that node, ``kt`` of the
row's counts at that node, an adaptive probability per (node, previous code in the row or
``K``), an adaptive probability per node, and the bias; weight set per node.

**Model 2** (flags bit 3, written since format 3): the adaptive probabilities of the mask (the
neighbour and the (left, up, bucket) ones) are counts-based, ``q += ((bit << 16) - q) * 2 //
(2 n + 3)`` with ``n`` the number of updates so far capped at 127 (fast at first, then averaging);
the codes get a sixth input, a counts-based adaptive probability per (node, the last code coded in
the same column, or ``K``; ``n`` capped at 1023). Model 1 streams (flags bit 3 clear) decode as before.

Decoding allocates ``O(C * 2^D)`` counters (refused above :data:`MAX_TABLE`) and at most
``R * C`` output bits: a stream cannot make it allocate more than its declared shape.
"""
from __future__ import annotations

import numpy as np

from ..errors import WeightzipFormatError

__all__ = ["LR_SHIFTS", "MAX_TABLE", "MAX_ALPHABET", "encode_mask", "decode_mask", "encode_codes",
           "decode_codes"]

LR_SHIFTS = (12, 13, 14, 15)
MAX_TABLE = 1 << 21          # column x tree-node counters of a code stream (2 x 16 MiB of int64)
MAX_ALPHABET = 256           # largest code alphabet coded with ``cm`` (node x previous-code table: 1 MiB)

SQUASH_T = np.array([1, 2, 3, 6, 10, 16, 27, 45, 73, 120, 194, 310, 488, 747, 1101, 1546, 2047, 2549,
                     2994, 3348, 3607, 3785, 3901, 3975, 4022, 4050, 4068, 4079, 4085, 4089, 4092, 4093,
                     4094], dtype=np.int64)


def _squash_py(d: int) -> int:
    if d > 2047:
        return 4095
    if d < -2047:
        return 1
    w = d & 127
    j = (d >> 7) + 16
    return int((SQUASH_T[j] * (128 - w) + SQUASH_T[j + 1] * w + 64) >> 7)


def _stretch_table() -> np.ndarray:
    """``t[p]`` = the smallest ``d`` in [-2047, 2047] with ``squash(d) >= p`` (2047 if none)."""
    t = np.full(4096, 2047, dtype=np.int64)
    pi = 0
    for x in range(-2047, 2048):
        v = _squash_py(x)
        for i in range(pi, v + 1):
            t[i] = x
        pi = max(pi, v + 1)
    return t


STRETCH = _stretch_table()


_KERNELS = None


def _kernels():
    """The numba kernels (:mod:`._cm_kernels`), imported on first use (numba loads only when a
    ``cm`` / ``cm_mask`` stream is coded)."""
    global _KERNELS
    if _KERNELS is None:
        from . import _cm_kernels as k

        _KERNELS = {"mask_run": k.mask_run, "codes_run": k.codes_run, "flush": k.flush}
    return _KERNELS


def _sq() -> np.ndarray:
    return SQUASH_T


def _encode_with(run, n_bits_bound: int, args_fn) -> bytes:
    buf = np.zeros(n_bits_bound * 12 // 8 + 16, np.uint8)   # <= 12 bits per coded bit
    st = np.array([0, 0xFFFFFFFF, 0, 0], np.int64)
    args_fn(buf, st)
    _kernels()["flush"](st, buf)
    out = bytes(buf[:st[3]])
    return out.rstrip(b"\x00")


def _decoder_state(payload: bytes) -> tuple[np.ndarray, np.ndarray]:
    buf = np.frombuffer(payload, dtype=np.uint8).copy()   # writable: one kernel encodes and decodes
    x = 0
    for i in range(4):
        x = (x << 8) | (int(buf[i]) if i < buf.size else 0)
    return buf, np.array([0, 0xFFFFFFFF, x, 4], np.int64)


MODEL2 = 8                   # flags bit 3: model 2 (counts-based adaptive states; codes: + last code of the column)


def _flags(data: bytes, what: str) -> tuple[bool, int, int]:
    """(transposed, learning-rate shift, model 1 or 2) of a stream's flags byte."""
    if len(data) < 1:
        raise WeightzipFormatError(f"{what} stream is truncated (no flags byte)")
    f = data[0]
    if f >> 4:
        raise WeightzipFormatError(f"{what} stream has unknown flags {f:#x}")
    return bool(f & 1), LR_SHIFTS[(f >> 1) & 3], 2 if f & MODEL2 else 1


def encode_mask(mask: np.ndarray, transposed: bool | None = None) -> bytes:
    """Code a 2-D bool mask (rows, cols) as a ``cm_mask`` stream (the smallest over orientations
    and :data:`LR_SHIFTS` unless ``transposed`` is given)."""
    m = np.asarray(mask, dtype=bool)
    if m.ndim != 2:
        raise ValueError(f"encode_mask needs a 2-D mask, got shape {m.shape}")
    k = _kernels()

    def run(tr: bool, si: int) -> bytes:
        mm = np.ascontiguousarray((m.T if tr else m).astype(np.uint8))
        data = _encode_with(k["mask_run"], mm.size,
                            lambda buf, st: k["mask_run"](mm, buf, st, False, LR_SHIFTS[si], SQUASH_T, STRETCH, 2))
        return bytes([int(tr) | (si << 1) | MODEL2]) + data

    return _search(run, transposed)


def _search(run, transposed: bool | None) -> bytes:
    """The smallest of ``run(transposed, shift index)``: both orientations at the middle shift, then
    the other shifts in the better orientation (5 coder passes instead of 8)."""
    mid = 1
    cands = [run(tr, mid) for tr in ((False, True) if transposed is None else (transposed,))]
    best = min(cands, key=len)
    tr = bool(best[0] & 1)
    for si in range(len(LR_SHIFTS)):
        if si != mid:
            c = run(tr, si)
            if len(c) < len(best):
                best = c
    return best


def decode_mask(data: bytes, rows: int, cols: int) -> np.ndarray:
    """Inverse of :func:`encode_mask`: the bool mask (rows, cols)."""
    data = bytes(data)
    tr, shift, model = _flags(data, "cm_mask")
    r, c = (cols, rows) if tr else (rows, cols)
    m = np.zeros((r, c), np.uint8)
    buf, st = _decoder_state(data[1:])
    _kernels()["mask_run"](m, buf, st, True, shift, SQUASH_T, STRETCH, model)
    out = m.astype(bool)
    return np.ascontiguousarray(out.T) if tr else out


def _order(pos: np.ndarray, rows: int, cols: int, tr: bool):
    r, c = np.divmod(pos.astype(np.int64), cols)
    if tr:
        r, c = c, r
    order = np.lexsort((c, r))
    return order, np.ascontiguousarray(r[order]), np.ascontiguousarray(c[order])


def _depth(k: int) -> int:
    return max(0, int(k - 1).bit_length())


def codes_applicable(k: int, rows: int, cols: int) -> bool:
    """Whether ``cm`` may code an alphabet ``k`` on a (rows, cols) view (table limits)."""
    nodes = 1 << _depth(k)
    return 2 <= k <= MAX_ALPHABET and max(rows, cols) * nodes <= MAX_TABLE


def encode_codes(codes, pos, rows: int, cols: int, k: int) -> bytes | None:
    """Code the codes (E,) in ``[0, k)`` of the entries at flat positions ``pos`` (row-major) as a
    ``cm`` stream; None when the alphabet / tables are out of this coder's limits."""
    s = np.asarray(codes, dtype=np.int64).ravel()
    pos = np.asarray(pos, dtype=np.int64).ravel()
    if s.size != pos.size:
        raise ValueError(f"{s.size} codes for {pos.size} positions")
    if not codes_applicable(k, rows, cols):
        return None
    if s.size and (s.min() < 0 or s.max() >= k):
        raise ValueError("codes out of range")
    kk = _kernels()
    depth = _depth(k)
    orders = {}

    def run(tr: bool, si: int) -> bytes:
        if tr not in orders:
            o, line, col = _order(pos, rows, cols, tr)
            orders[tr] = (np.ascontiguousarray(s[o]), line, col)
        so, line, col = orders[tr]
        data = _encode_with(kk["codes_run"], s.size * depth,
                            lambda buf, st: kk["codes_run"](so.copy(), line, col, rows if tr else cols, k, depth,
                                                            buf, st, False, LR_SHIFTS[si], SQUASH_T, STRETCH, 2))
        return bytes([int(tr) | (si << 1) | MODEL2]) + data

    return _search(run, None)


def decode_codes(data: bytes, pos, rows: int, cols: int, k: int) -> np.ndarray:
    """Inverse of :func:`encode_codes`; ``pos`` as given to the encoder. Returns int64 (E,)."""
    data = bytes(data)
    pos = np.asarray(pos, dtype=np.int64).ravel()
    if not codes_applicable(k, rows, cols):
        raise WeightzipFormatError(f"cm stream: alphabet {k} on a {rows}x{cols} view is beyond the coder's limits")
    tr, shift, model = _flags(data, "cm")
    o, line, col = _order(pos, rows, cols, tr)
    out_o = np.zeros(pos.size, np.int64)
    buf, st = _decoder_state(data[1:])
    _kernels()["codes_run"](out_o, line, col, rows if tr else cols, k, _depth(k), buf, st, True, shift,
                            SQUASH_T, STRETCH, model)
    out = np.empty(pos.size, np.int64)
    out[o] = out_o
    return out
