"""``codebook``: a table of the distinct values and one code per stored value.

Streams ``codebook``: float32 table (K,) = ``meta["codebook_size"]``, sorted, with ``0.0`` as code
0 whenever a stored entry is zero (dense zeros or relative-index fillers); ``codes``: the
``n_entries`` indices into the table, alphabet K (``ceil(log2 K)`` bits when packed).
Value = ``codebook[code]``. Tried for every float tensor whose distinct values make the table
pay off (``32 K + numel ceil(log2 K) < 32 numel``), hinted or not.
"""
from __future__ import annotations

import numpy as np

from ..bitpack import bits_for_alphabet
from ..format import FLOAT_DTYPES, MAX_NUMEL, Format, Reject, bad, meta_int
from ..layout import Layout, code_context, decode_layout, layout_parts, plan_layout
from ..streams import StreamReader, StreamWriter
from .registry import EncodeContext, Kind, ValueCoder, register_kind


def distinct(a: np.ndarray, limit: int | None = None, sample: int = 65536) -> np.ndarray:
    """``np.unique(a)`` (sorted distinct values of a float array), in O(n log K) when ``a`` has
    few distinct values: the distinct values of an evenly strided sample of ``sample`` entries
    are the candidates, and if every entry of ``a`` is one of them (one binary search each) they
    are exactly ``a``'s distinct values; otherwise the full sort. With ``limit``: once the
    sample alone has more than ``limit`` distinct values, those are returned (a caller that only
    asks "more than ``limit``?" gets its answer without sorting ``a``)."""
    a = np.asarray(a).ravel()
    if a.size <= 4 * sample:
        return np.unique(a)
    cand = np.unique(a[:: a.size // sample])
    if limit is not None and cand.size > limit:
        return cand
    if cand.size <= 4096 and all(_in_table(cand, a[s:s + _CHUNK]) for s in range(0, a.size, _CHUNK)):
        return cand
    return np.unique(a)


_CHUNK = 1 << 20   # values per chunk of the table lookups (their index temporaries: 8 bytes a value)


def _in_table(table: np.ndarray, a: np.ndarray) -> bool:
    """Every value of ``a`` is in the sorted ``table`` (bit for bit up to -0.0 == 0.0, as ``==``)."""
    idx = np.searchsorted(table, a).clip(max=table.size - 1)
    return bool(np.array_equal(table[idx], a))


def _codes(table: np.ndarray, entries: np.ndarray, zero_first: bool) -> np.ndarray:
    """The index of each entry in ``table`` (sorted), in the narrowest unsigned dtype, chunk by
    chunk; ``zero_first``: code 0 is 0.0 and the other values follow (``table[1:]`` sorted)."""
    dt = np.uint8 if table.size <= 1 << 8 else np.uint16 if table.size <= 1 << 16 else np.uint32
    codes = np.empty(entries.size, dtype=dt)
    nzt = table[1:] if zero_first else table
    for s in range(0, entries.size, _CHUNK):
        e = entries[s:s + _CHUNK]
        c = np.searchsorted(nzt, e)
        if zero_first:
            c = np.where(e == 0, 0, c + 1)
        codes[s:s + _CHUNK] = c
    return codes


def _estimate(nzv: np.ndarray) -> tuple[int, int]:
    k = distinct(nzv).size
    return bits_for_alphabet(k), bits_for_alphabet(k + 1)


def _encode(lay: Layout, st: StreamWriter, max_codebook: int) -> dict:
    table = distinct(lay.entries)                                    # (K,) sorted, no -0.0
    if table.size == 0:
        raise Reject("no stored values")
    if table.size > max_codebook:
        raise Reject(f"{table.size} distinct values > max_codebook {max_codebook}")
    zero = table[np.searchsorted(table, 0.0).clip(max=table.size - 1)] == 0
    if zero:
        # zero present (dense zeros or fillers): it is code 0, the nonzero values follow sorted
        table = np.concatenate([np.zeros(1, np.float32), table[table != 0]])
    codes = _codes(table, lay.entries, zero)   # uint8 for up to 256 values: coded as they are
    st.floats("codebook", table)
    st.symbols("codes", codes, table.size, ctx=lay.code_context)
    return {"codebook_size": int(table.size)}


def coders(ctx: EncodeContext) -> list[ValueCoder]:
    """One coder when the table of the K distinct values is smaller than float32 values."""
    w, opts = ctx.w, ctx.opts
    if "codebook" not in opts.kinds or not w.size:
        return []
    k_all = distinct(w, limit=opts.max_codebook).size
    if k_all <= opts.max_codebook and k_all * 32 + w.size * bits_for_alphabet(k_all) < 32 * w.size:
        return [ValueCoder("codebook", "codebook", lambda: _estimate(ctx.nzv),
                           lambda lay, st: _encode(lay, st, opts.max_codebook))]
    if ctx.hkind == "codebook":
        ctx.hint_notes["codebook"] = (f"larger: {k_all} distinct values" if k_all <= opts.max_codebook
                                      else f"larger: more than max_codebook {opts.max_codebook} distinct values")
    return []


def read_values(fmt: Format, rd: StreamReader, n: int, pos_fn) -> np.ndarray:
    """(n,) float32 ``codebook[codes]``."""
    k = meta_int(fmt, fmt.meta, "codebook_size", 0, MAX_NUMEL)
    table = rd.floats("codebook", k)
    if k == 0:
        if n:
            raise bad(fmt, "empty codebook for a non-empty tensor", "codebook")
        return np.zeros(0, np.float32)
    # looked up a chunk of codes at a time: the values and one chunk of int64 codes in memory
    out, at = np.empty(n, np.float32), 0
    for codes in rd.symbol_chunks("codes", n, k, ctx=code_context(fmt, pos_fn)):
        out[at:at + codes.size] = table[codes]
        at += codes.size
    return out


def _read_parts(fmt: Format, rd: StreamReader, n: int, pos_fn) -> tuple[np.ndarray, dict, dict]:
    k = meta_int(fmt, fmt.meta, "codebook_size", 0, MAX_NUMEL)
    table = rd.floats("codebook", k)
    codes = rd.symbols("codes", n, k, ctx=code_context(fmt, pos_fn)) if k else np.zeros(0, np.int64)
    vals = table[codes] if k else np.zeros(0, np.float32)
    return vals, {"codebook": table}, {"codes": codes}


def _plan(fmt: Format) -> dict:
    plan, n = plan_layout(fmt)
    k = meta_int(fmt, fmt.meta, "codebook_size", 0, MAX_NUMEL)
    if k == 0 and n:
        raise bad(fmt, "empty codebook for a non-empty tensor", "codebook")
    return {**plan, "codebook": (k, "float"), **({"codes": (n, k)} if k else {})}


def _summary(fmt: Format) -> dict:
    return {"value_bits": bits_for_alphabet(fmt.meta.get("stream_info", {}).get("codes", {}).get("alphabet", 1))}


CODEBOOK = register_kind(Kind(
    "codebook", FLOAT_DTYPES,
    decode=lambda fmt, rd: decode_layout(fmt, rd, read_values),
    parts=lambda fmt, rd: layout_parts(fmt, rd, _read_parts),
    summary=_summary, plan=_plan, coders=coders))
