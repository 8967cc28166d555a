"""Context-conditioned entropy models for sparse weight matrices (positions and codes).

Order-0 coding (:mod:`.entropy`) spends ``n H(p)`` bits on a stream whatever its structure. A
pruned layer is far from i.i.d.: whole input columns die (MNIST border pixels, pruned
neurons), whole output rows die, and the surviving columns keep different densities. The two
models here condition every symbol on its COLUMN of the 2-D view ``(rows, cols)`` of the
tensor (``sparse.matrix_shape``), learning as they go (adaptive, no side information beyond
a few header bytes), and on the transposed matrix when that is cheaper (``transposed`` flag).
Both are ANS-coded with ``constriction`` (``AnsCoder``: encoded in reverse, decoded forward).

**Mask** (:func:`encode_mask`): a row-activity vector ``a_r = any(M[r, :])`` (order-0 ANS,
:func:`.entropy.ans_encode`), then the rows with ``a_r = 1`` in order, each bit with a
Bernoulli probability from the earlier active rows of its column (a Krichevsky-Trofimov-like
estimator pulled towards the global density ``rho``)::

    p(M[r, c] = 1) = (n1_c + 2 alpha rho) / (n_c + 2 alpha)

``n1_c``: ones in column ``c`` among the active rows already coded, ``n_c``: their number.
``alpha`` (from :data:`ALPHAS`) and the orientation are chosen by the encoder as the ones with
the smallest ideal code length ``-sum log2 p``. Stream layout::

    u8   flags        bit 0: transposed; bits 1-4: index into ALPHAS
    u16  rho_q        rho = (rho_q + 0.5) / 65536, little-endian
    varint L          length of the row-activity stream
    L    bytes        entropy.ans_encode(a)
    rest              ANS payload, uint32 little-endian words

**Codes** (:func:`encode_codes`): the code ``s`` of each stored entry (row-major over the
matrix, or column-major when transposed) with a categorical model from the codes already coded
in the same column, pulled towards the global histogram ``P0``::

    p(s | column c) = (n_{c,s} + beta P0(s)) / (n_c + beta)

The header carries the histogram (the :mod:`.entropy` header format: distinct symbols and
counts), then ``u8 flags`` (bit 0 transposed, bits 1-4 index into BETAS), then the payload.
The caller compares the size with the order-0 codings and keeps the smallest.
"""
from __future__ import annotations

import numpy as np

from ..errors import WeightzipFormatError
from . import entropy

__all__ = ["ALPHAS", "BETAS", "encode_mask", "decode_mask", "encode_codes", "decode_codes",
           "mask_cost_bits", "codes_cost_bits"]

ALPHAS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 4.0, 8.0)
BETAS = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0)
MAX_MASK = 1 << 23   # largest tensor the encoder tries the context layout on (elements)
_EPS = 2.0 ** -20  # probabilities are clipped to [EPS, 1 - EPS] (constriction needs p > 0)


def _constriction():
    import constriction

    return constriction


def _rho_q(m: np.ndarray) -> int:
    return int(min(65535, max(0, round(float(m.mean()) * 65536 - 0.5)))) if m.size else 0


def _mask_probs(active: np.ndarray, alpha: float, rho: float) -> np.ndarray:
    """Bernoulli probabilities (Ra, C) for the active rows ``active`` (Ra, C) of a mask."""
    a = active.astype(np.float64)
    n1 = np.cumsum(a, axis=0) - a                                  # ones above, same column
    n = np.arange(a.shape[0], dtype=np.float64)[:, None]
    p = (n1 + 2.0 * alpha * rho) / (n + 2.0 * alpha)
    return np.clip(p, _EPS, 1.0 - _EPS)


def _row_probs(n1: np.ndarray, n: int, alpha: float, rho: float) -> np.ndarray:
    """Probabilities of one row from the column counts: the same formula as ``_mask_probs``."""
    p = (n1.astype(np.float64) + 2.0 * alpha * rho) / (float(n) + 2.0 * alpha)
    return np.clip(p, _EPS, 1.0 - _EPS)


def _bits(p: np.ndarray, x: np.ndarray) -> float:
    return float(-np.where(x, np.log2(p), np.log2(1.0 - p)).sum())


def mask_cost_bits(mask: np.ndarray) -> tuple[float, bool, int]:
    """Smallest ideal code length of the mask body over orientations and ALPHAS:
    ``(bits, transposed, alpha index)`` (the row-activity stream not included)."""
    best = (float("inf"), False, 0)
    m = np.asarray(mask, dtype=bool)
    rho = (_rho_q(m) + 0.5) / 65536
    for tr in (False, True):
        mm = m.T if tr else m
        act = mm[mm.any(axis=1)]
        for i, a in enumerate(ALPHAS):
            b = _bits(_mask_probs(act, a, rho), act) if act.size else 0.0
            if b < best[0]:
                best = (b, tr, i)
    return best


def encode_mask(mask: np.ndarray) -> bytes:
    """Code a 2-D bool mask (rows, cols); see the module docstring for the layout."""
    m = np.asarray(mask, dtype=bool)
    if m.ndim != 2:
        raise ValueError(f"encode_mask needs a 2-D mask, got shape {m.shape}")
    _, tr, ai = mask_cost_bits(m)
    mm = np.ascontiguousarray(m.T if tr else m)
    rq = _rho_q(m)
    rho = (rq + 0.5) / 65536
    rows_on = mm.any(axis=1)
    ra = entropy.ans_encode(rows_on.astype(np.int64))
    head = bytes([int(tr) | (ai << 1)]) + rq.to_bytes(2, "little") + entropy._varint(len(ra)) + ra
    act = mm[rows_on]
    if act.size == 0:
        return head
    c = _constriction()
    coder = c.stream.stack.AnsCoder()
    coder.encode_reverse(act.ravel().astype(np.int32), c.stream.model.Bernoulli(perfect=False),
                         _mask_probs(act, ALPHAS[ai], rho).ravel())
    return head + coder.get_compressed().astype("<u4").tobytes()


def decode_mask(data: bytes, rows: int, cols: int) -> np.ndarray:
    """Inverse of :func:`encode_mask`: the bool mask (rows, cols)."""
    data = bytes(data)
    if len(data) < 4:
        raise WeightzipFormatError("context-coded mask stream is truncated (header)")
    flags = data[0]
    tr, ai = bool(flags & 1), flags >> 1
    if ai >= len(ALPHAS) or flags >> 5:
        raise WeightzipFormatError(f"context-coded mask stream has bad flags {flags:#x}")
    rho = (int.from_bytes(data[1:3], "little") + 0.5) / 65536
    ln, pos = entropy._read_varint(data, 3)
    r, cc = (cols, rows) if tr else (rows, cols)
    if pos + ln > len(data):
        raise WeightzipFormatError("context-coded mask stream is truncated (row activity)")
    rows_on = entropy.ans_decode(data[pos:pos + ln], r).astype(bool)
    out = np.zeros((r, cc), dtype=bool)
    payload = data[pos + ln:]
    if len(payload) % 4:
        raise WeightzipFormatError("context-coded mask payload is not a whole number of words")
    idx = np.flatnonzero(rows_on)
    if idx.size:
        c = _constriction()
        fam = c.stream.model.Bernoulli(perfect=False)
        try:
            coder = c.stream.stack.AnsCoder(np.frombuffer(payload, dtype="<u4").astype(np.uint32))
            n1 = np.zeros(cc, dtype=np.int64)
            for k, row in enumerate(idx):
                bits = np.asarray(coder.decode(fam, _row_probs(n1, k, ALPHAS[ai], rho)), dtype=bool)
                out[row] = bits
                n1 += bits
            leftover = not coder.is_empty()
        except (ValueError, RuntimeError, OverflowError) as e:
            raise WeightzipFormatError(f"context-coded mask stream is corrupted: {e}") from e
        if leftover:
            raise WeightzipFormatError("context-coded mask stream is corrupted (coder not empty at the end)")
    elif payload:
        raise WeightzipFormatError("context-coded mask stream has a payload but no active row")
    return out.T.copy() if tr else out


# ---------------------------------------------------------------------------------------------
# codes

def _order(pos: np.ndarray, rows: int, cols: int, tr: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(coding order (E,), line index (E,), context index (E,)) of flat row-major positions."""
    r, c = np.divmod(pos.astype(np.int64), cols)
    if tr:
        r, c = c, r
    order = np.lexsort((c, r))
    return order, r[order], c[order]


def _codes_counts(ranks: np.ndarray, ctx: np.ndarray, k: int) -> np.ndarray:
    """(E, K) float64: per coded entry, the counts of each rank among the EARLIER entries of
    the same context (entries in coding order)."""
    e = ranks.size
    o = np.lexsort((np.arange(e), ctx))                            # by context, then order
    onehot = np.zeros((e, k), dtype=np.float64)
    onehot[np.arange(e), ranks[o]] = 1.0
    cs = np.cumsum(onehot, axis=0) - onehot                        # inclusive -> exclusive
    sc = ctx[o]
    start = np.r_[0, np.flatnonzero(np.diff(sc)) + 1]
    first = np.repeat(start, np.diff(np.r_[start, e]))
    before = np.empty((e, k), dtype=np.float64)
    before[o] = cs - cs[first]                                     # counts within the context
    return before


def _codes_probs(before: np.ndarray, p0: np.ndarray, beta: float) -> np.ndarray:
    """Categorical probabilities (E, K) ``(n_{c,s} + beta P0(s)) / (n_c + beta)``."""
    return (before + beta * p0) / (before.sum(axis=1, keepdims=True) + beta)


def _rank_within(keys: np.ndarray) -> np.ndarray:
    """For each position i, the number of j < i with keys[j] == keys[i] (E,) int64."""
    e = keys.size
    o = np.argsort(keys, kind="stable")
    sk = keys[o]
    start = np.r_[0, np.flatnonzero(np.diff(sk)) + 1]
    first = np.repeat(start, np.diff(np.r_[start, e]))
    out = np.empty(e, dtype=np.int64)
    out[o] = np.arange(e) - first
    return out


def codes_cost_bits(codes: np.ndarray, pos: np.ndarray, rows: int, cols: int) -> tuple[float, bool, int]:
    """Smallest ideal code length of the codes over orientations and BETAS (O(E log E) memory-light:
    only the count of the coded rank and the context total are needed)."""
    vals, counts = entropy.histogram(codes)
    ranks = np.searchsorted(vals, codes)
    p0 = counts / counts.sum()
    best = (float("inf"), False, 0)
    for tr in (False, True):
        o, _, ctx = _order(pos, rows, cols, tr)
        r = ranks[o]
        sel = _rank_within(ctx * vals.size + r).astype(np.float64)   # earlier same rank, same context
        n = _rank_within(ctx).astype(np.float64)                     # earlier entries, same context
        pr = p0[r]
        for i, b in enumerate(BETAS):
            bits = float(-np.log2((sel + b * pr) / (n + b)).sum())
            if bits < best[0]:
                best = (bits, tr, i)
    return best


MAX_PROB_TABLE = 1 << 24   # E * K float64 probabilities built for the coder (128 MiB)


def encode_codes(codes, pos, rows: int, cols: int, *, only_if_better: bool = False) -> bytes | None:
    """Code the codes (E,) of the entries at flat positions ``pos`` (E,, ascending, row-major).

    With ``only_if_better`` return None (without coding) when the ideal context cost is not
    below the order-0 entropy or the (E, K) probability table would exceed MAX_PROB_TABLE."""
    s = entropy._as_symbols(codes)
    pos = np.asarray(pos, dtype=np.int64).ravel()
    if s.size != pos.size:
        raise ValueError(f"{s.size} codes for {pos.size} positions")
    vals, counts = entropy.histogram(s)
    head = entropy._header(vals, counts)
    if vals.size <= 1:
        return head + b"\x00"
    cost, tr, bi = codes_cost_bits(s, pos, rows, cols)
    if only_if_better and (cost >= entropy.order0_entropy_bits(s) or s.size * vals.size > MAX_PROB_TABLE):
        return None
    ranks = np.searchsorted(vals, s)
    o, _, ctx = _order(pos, rows, cols, tr)
    p = _codes_probs(_codes_counts(ranks[o], ctx, vals.size), counts / counts.sum(), BETAS[bi])
    c = _constriction()
    coder = c.stream.stack.AnsCoder()
    coder.encode_reverse(ranks[o].astype(np.int32), c.stream.model.Categorical(perfect=False), p)
    return head + bytes([int(tr) | (bi << 1)]) + coder.get_compressed().astype("<u4").tobytes()


def decode_codes(data: bytes, pos, rows: int, cols: int) -> np.ndarray:
    """Inverse of :func:`encode_codes`; ``pos`` as given to the encoder. Returns int64 (E,)."""
    data = bytes(data)
    pos = np.asarray(pos, dtype=np.int64).ravel()
    e = pos.size
    vals, counts, off = entropy._read_header(data, e, None)
    if e == 0:
        return np.zeros(0, dtype=np.int64)
    if off >= len(data):
        raise WeightzipFormatError("context-coded codes stream is truncated (flags)")
    if vals.size == 1:
        return np.full(e, vals[0], dtype=np.int64)
    flags = data[off]
    tr, bi = bool(flags & 1), flags >> 1
    if bi >= len(BETAS) or flags >> 5:
        raise WeightzipFormatError(f"context-coded codes stream has bad flags {flags:#x}")
    payload = data[off + 1:]
    if len(payload) % 4:
        raise WeightzipFormatError("context-coded codes payload is not a whole number of words")
    o, line, ctx = _order(pos, rows, cols, tr)
    p0 = counts / counts.sum()
    k, beta = vals.size, BETAS[bi]
    ncols = rows if tr else cols
    tab = np.zeros((ncols, k), dtype=np.float64)                   # counts per context
    ranks = np.empty(e, dtype=np.int64)
    c = _constriction()
    fam = c.stream.model.Categorical(perfect=False)
    bounds = np.r_[0, np.flatnonzero(np.diff(line)) + 1, e]
    try:
        coder = c.stream.stack.AnsCoder(np.frombuffer(payload, dtype="<u4").astype(np.uint32))
        for a, b in zip(bounds[:-1], bounds[1:]):
            cx = ctx[a:b]                                          # distinct within a line
            p = _codes_probs(tab[cx], p0, beta)
            r = np.asarray(coder.decode(fam, p), dtype=np.int64)
            ranks[a:b] = r
            tab[cx, r] += 1.0
        leftover = not coder.is_empty()
    except (ValueError, RuntimeError, OverflowError, IndexError) as ex:
        raise WeightzipFormatError(f"context-coded codes stream is corrupted: {ex}") from ex
    if leftover:
        raise WeightzipFormatError("context-coded codes stream is corrupted (coder not empty at the end)")
    out = np.empty(e, dtype=np.int64)
    out[o] = vals[ranks]
    return out
