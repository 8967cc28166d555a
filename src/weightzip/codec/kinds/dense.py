"""``dense``: the stored values themselves.

Stream ``values``: the ``n_entries`` values of the layout as float32 (``meta["value_dtype"] =
"float32"``) or, when asked for with ``options["float_dtype"] = "float16"``, as float16: a
lossy candidate (``meta["lossy"]`` reports its max / mean absolute error).
"""
from __future__ import annotations

import numpy as np

from ..format import FLOAT_DTYPES, Format, Reject, bad
from ..layout import Layout, decode_layout, layout_parts, plan_layout
from ..streams import StreamReader, StreamWriter
from .registry import EncodeContext, Kind, ValueCoder, register_kind


def _estimate(dtype: str) -> tuple[int, int]:
    v = 32 if dtype == "float32" else 16
    return v, v


def _encode(lay: Layout, st: StreamWriter, dtype: str) -> dict:
    if dtype == "float16":
        with np.errstate(over="ignore"):
            if not np.all(np.isfinite(lay.entries.astype(np.float16))):
                raise Reject("values overflow float16")
    v = lay.entries
    if dtype == "float32" and isinstance(v, np.ndarray) and v.dtype == np.dtype("<f4") and v.ndim == 1 \
            and v.flags.c_contiguous:
        # the stream is the values' own bytes: a view (no copy while the other candidates are built
        # and checked); encode() makes it bytes if this candidate is the one kept
        st.streams["values"] = memoryview(v).cast("B")
        st.info["values"] = {"coding": "float32", "count": int(v.size)}
    else:
        st.floats("values", v, dtype)
    return {"value_dtype": dtype}


def coders(ctx: EncodeContext) -> list[ValueCoder]:
    """float32 always; float16 too when ``options["float_dtype"]`` asks for it."""
    out = [ValueCoder("dense", "dense", lambda: _estimate("float32"), lambda lay, st: _encode(lay, st, "float32"))]
    if ctx.opts.float_dtype == "float16":
        out.append(ValueCoder("dense", "dense16", lambda: _estimate("float16"),
                              lambda lay, st: _encode(lay, st, "float16")))
    return out


def read_values(fmt: Format, rd: StreamReader, n: int, pos_fn) -> np.ndarray:
    """(n,) float32 stored values."""
    vd = fmt.meta.get("value_dtype")
    if vd not in ("float32", "float16"):
        raise bad(fmt, f"meta['value_dtype'] must be float32 or float16, got {vd!r}")
    if rd.info.get("values", {}).get("coding") != vd:
        raise bad(fmt, f"stream coding does not match value_dtype {vd!r}", "values")
    return rd.floats("values", n)


def _read_parts(fmt: Format, rd: StreamReader, n: int, pos_fn) -> tuple[np.ndarray, dict, dict]:
    return read_values(fmt, rd, n, pos_fn), {}, {}


def _plan(fmt: Format) -> dict:
    plan, n = plan_layout(fmt)
    vd = fmt.meta.get("value_dtype")
    if vd not in ("float32", "float16"):
        raise bad(fmt, f"meta['value_dtype'] must be float32 or float16, got {vd!r}")
    return {**plan, "values": (n, vd)}


def _summary(fmt: Format) -> dict:
    return {"value_bits": 32 if fmt.meta.get("value_dtype") == "float32" else 16}


DENSE = register_kind(Kind(
    "dense", FLOAT_DTYPES,
    decode=lambda fmt, rd: decode_layout(fmt, rd, read_values),
    parts=lambda fmt, rd: layout_parts(fmt, rd, _read_parts),
    summary=_summary, plan=_plan, coders=coders))
