"""``uniform``: integer levels times a per-row-group scale (uniform / fixed-point quantization).

Value = ``float32(q) * float32(scale[group])`` with ``G = meta["scale_groups"]`` groups of
``rows / G`` consecutive rows of the 2-D view (G = 1: one scale). Streams ``scale``: float32 (G,);
``codes``: one per stored entry, either ``q_mode = "range"``: ``q - q_offset`` (alphabet
``max q - min q + 1``), or ``q_mode = "table"``: index into the ``n_levels`` sorted distinct
levels, stored zigzag-coded in stream ``levels`` (whichever is smaller). Only tried with a hint
``{"kind": "uniform", "scale", "bits"?}`` or ``{"kind": "fixed_point", "frac_bits", "bits"?}``
(scale ``2^-frac_bits``).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..bitpack import bits_for_alphabet, zigzag_decode, zigzag_encode
from ..format import FLOAT_DTYPES, MAX_NUMEL, Format, Reject, bad, bits_range, is_int, meta_int, to_numpy
from ..layout import Layout, decode_layout, layout_parts, plan_layout
from ..sparse import matrix_shape
from ..streams import StreamReader, StreamWriter
from .registry import EncodeContext, Kind, ValueCoder, register_kind


def _scales(h: dict, shape) -> np.ndarray:
    """(G,) float32 scales of the hint; G must divide the rows of the 2-D view."""
    s = np.asarray(to_numpy(h["scale"]), dtype=np.float32).ravel()
    if s.size == 0 or not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise Reject("uniform scale must be finite and > 0")
    rows = matrix_shape(shape)[0]
    if s.size > 1 and (rows % s.size):
        raise Reject(f"{s.size} scale groups do not divide the {rows} rows")
    return s


def entry_scale(scales: np.ndarray, pos: np.ndarray | None, numel: int, shape) -> np.ndarray:
    """Per-entry float32 scale: group of row ``r`` is ``r // (rows / G)``; (1,) when G = 1."""
    if scales.size == 1:
        return scales[:1]
    rows, cols = matrix_shape(shape)
    if pos is None:
        pos = np.arange(numel, dtype=np.int64)
    return scales[(pos // cols) // (rows // scales.size)]


def _estimate(nzv: np.ndarray, scales: np.ndarray, nz: np.ndarray, shape) -> tuple[int, int]:
    if nzv.size == 0:
        return 0, 0
    q = np.rint(nzv.astype(np.float64) / entry_scale(scales, nz, 0, shape).astype(np.float64))
    lo, hi = int(q.min()), int(q.max())
    return bits_range(lo, hi), bits_range(min(lo, 0), max(hi, 0))


def _levels(lay: Layout, scales: np.ndarray, shape) -> np.ndarray:
    """(E,) int64 q with ``float32(q) * scale == entries`` bit for bit, else Reject."""
    s = entry_scale(scales, lay.entry_pos, lay.entries.size, shape)
    q = np.rint(lay.entries.astype(np.float64) / s.astype(np.float64))
    if q.size and np.max(np.abs(q)) >= 2**31:
        raise Reject("uniform codes overflow 32 bits")
    q = q.astype(np.int64)
    if not np.array_equal((q.astype(np.float32) * s).view(np.uint32), lay.entries.view(np.uint32)):
        raise Reject("weights are not integer multiples q * scale (decoded float32(q) * scale differs)")
    return q


def _encode(lay: Layout, st: StreamWriter, h: dict, shape) -> dict:
    scales = _scales(h, shape)
    q = _levels(lay, scales, shape)
    meta: dict[str, Any] = {"scale_groups": int(scales.size)}
    if "bits" in h:
        b = int(h["bits"])
        meta["hint_bits"] = b
        if q.size and (q.min() < -(1 << (b - 1)) or q.max() > (1 << (b - 1)) - 1):
            raise Reject(f"codes in [{q.min()}, {q.max()}] exceed the hinted {b} signed bits")
    st.floats("scale", scales)
    lo, hi = (int(q.min()), int(q.max())) if q.size else (0, 0)
    levels = np.unique(q)
    range_bits = q.size * bits_range(lo, hi)
    zz = zigzag_encode(levels).astype(np.int64)
    table_bits = q.size * bits_for_alphabet(levels.size) + levels.size * max(1, int(zz.max()).bit_length() if zz.size else 1)
    if table_bits < range_bits:
        meta.update(q_mode="table", n_levels=int(levels.size))
        st.symbols("levels", zz, int(zz.max()) + 1 if zz.size else 1)
        st.symbols("codes", np.searchsorted(levels, q), levels.size)
    else:
        meta.update(q_mode="range", q_offset=lo)
        st.symbols("codes", q - lo, hi - lo + 1)
    return meta


def _uniform_hint(h: dict, hkind) -> dict | None:
    """The hint as ``{"scale", "bits"?}`` (fixed_point: scale ``2^-frac_bits``), or None."""
    if hkind == "uniform" and "scale" in h:
        return h
    if hkind == "fixed_point" and "frac_bits" in h:
        return {"scale": 2.0 ** -int(h["frac_bits"]), **({"bits": h["bits"]} if "bits" in h else {})}
    return None


def coders(ctx: EncodeContext) -> list[ValueCoder]:
    """One coder for a uniform / fixed_point hint with valid scales."""
    uh = _uniform_hint(ctx.hint, ctx.hkind)
    if uh is None or "uniform" not in ctx.opts.kinds:
        return []
    try:
        scales = _scales(uh, ctx.shape)
    except Reject as e:
        ctx.hint_invalid("uniform", e)
        return []
    return [ValueCoder("uniform", "uniform", lambda: _estimate(ctx.nzv, scales, ctx.nz, ctx.shape),
                       lambda lay, st: _encode(lay, st, uh, ctx.shape))]


def read_uniform(fmt: Format, rd: StreamReader, n: int, pos_fn) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(q (n,) int64, per-entry scale (n,) or (1,) float32, scales (G,))``."""
    m = fmt.meta
    g = meta_int(fmt, m, "scale_groups", 1, MAX_NUMEL)
    scales = rd.floats("scale", g)
    rows = matrix_shape(fmt.shape)[0]
    if g > 1 and (rows % g):
        raise bad(fmt, f"{g} scale groups do not divide {rows} rows")
    mode = m.get("q_mode")
    if mode == "range":
        off = m.get("q_offset")
        if not is_int(off) or abs(off) >= 2**32:
            raise bad(fmt, f"meta['q_offset'] must be an integer, got {off!r}")
        q = rd.symbols("codes", n, rd.alphabet("codes")) + off
    elif mode == "table":
        nl = meta_int(fmt, m, "n_levels", 1, MAX_NUMEL)
        levels = zigzag_decode(rd.symbols("levels", nl, rd.alphabet("levels")))
        q = levels[rd.symbols("codes", n, nl)]
    else:
        raise bad(fmt, f"meta['q_mode'] must be 'range' or 'table', got {mode!r}")
    s = entry_scale(scales, pos_fn() if g > 1 else None, n, fmt.shape)
    return q, s, scales


def read_values(fmt: Format, rd: StreamReader, n: int, pos_fn) -> np.ndarray:
    """(n,) float32 ``float32(q) * scale``."""
    q, s, _ = read_uniform(fmt, rd, n, pos_fn)
    return q.astype(np.float32) * s


def _read_parts(fmt: Format, rd: StreamReader, n: int, pos_fn) -> tuple[np.ndarray, dict, dict]:
    q, s, scales = read_uniform(fmt, rd, n, pos_fn)
    return q.astype(np.float32) * s, {"scale": scales}, {"q": q}


def _plan(fmt: Format) -> dict:
    plan, n = plan_layout(fmt)
    m = fmt.meta
    g = meta_int(fmt, m, "scale_groups", 1, MAX_NUMEL)
    rows = matrix_shape(fmt.shape)[0]
    if g > 1 and (rows % g):
        raise bad(fmt, f"{g} scale groups do not divide {rows} rows")
    plan["scale"] = (g, "float")
    mode = m.get("q_mode")
    rd = StreamReader(fmt)
    if mode == "range":
        off = m.get("q_offset")
        if not is_int(off) or abs(off) >= 2**32:
            raise bad(fmt, f"meta['q_offset'] must be an integer, got {off!r}")
        plan["codes"] = (n, rd.alphabet("codes"))
    elif mode == "table":
        nl = meta_int(fmt, m, "n_levels", 1, MAX_NUMEL)
        plan["levels"] = (nl, rd.alphabet("levels"))
        plan["codes"] = (n, nl)
    else:
        raise bad(fmt, f"meta['q_mode'] must be 'range' or 'table', got {mode!r}")
    return plan


def _summary(fmt: Format) -> dict:
    return {"value_bits": bits_for_alphabet(fmt.meta.get("stream_info", {}).get("codes", {}).get("alphabet", 1))}


UNIFORM = register_kind(Kind(
    "uniform", FLOAT_DTYPES,
    decode=lambda fmt, rd: decode_layout(fmt, rd, read_values),
    parts=lambda fmt, rd: layout_parts(fmt, rd, _read_parts),
    summary=_summary, plan=_plan, coders=coders, hint_kinds=("fixed_point",), hint_driven=True))
