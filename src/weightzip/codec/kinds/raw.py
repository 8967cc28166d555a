"""``raw``: integer / bool tensors (e.g. BN ``num_batches_tracked``), stored as their bytes.

Stream ``data``: the ``numel`` elements little-endian in ``dtype`` (bool as one byte 0/1), coding
``bytes``. Float tensors are never ``raw``.
"""
from __future__ import annotations

import numpy as np

from ..format import RAW_DTYPES, Format, bad
from ..streams import StreamReader, StreamWriter
from .registry import Kind, register_kind

NP_RAW = {"bool": "u1", "uint8": "u1", "int8": "i1", "int16": "<i2", "int32": "<i4", "int64": "<i8"}


def encode_raw(a: np.ndarray, shape, dtype: str) -> Format:
    """The ``raw`` Format of the integer / bool array ``a`` of numpy-compatible ``dtype``."""
    st = StreamWriter(("raw",))
    st.raw("data", np.ascontiguousarray(a).astype(NP_RAW[dtype]).tobytes(), a.size)
    return Format("raw", tuple(shape), dtype, {"stream_info": st.info}, st.streams)


def decode_raw(fmt: Format, rd: StreamReader | None = None) -> np.ndarray:
    """(numel,) array of ``fmt.dtype`` (native byte order)."""
    numel = fmt.numel
    data = fmt.streams.get("data", b"")
    dt = np.dtype(NP_RAW[fmt.dtype])
    if len(data) != numel * dt.itemsize or fmt.meta["stream_info"]["data"].get("count") != numel:
        raise bad(fmt, f"{len(data)} bytes for {numel} {fmt.dtype} values", "data")
    a = np.frombuffer(data, dtype=dt)
    if fmt.dtype == "bool":
        if a.size and a.max() > 1:
            raise bad(fmt, "bool tensor with bytes other than 0/1", "data")
        return a.astype(bool)
    return a.astype(dt.newbyteorder("="))


def _plan(fmt: Format) -> dict:
    numel, data = fmt.numel, fmt.streams.get("data", b"")
    need = numel * np.dtype(NP_RAW[fmt.dtype]).itemsize
    if len(data) != need:
        raise bad(fmt, f"{len(data)} bytes for {numel} {fmt.dtype} values (need {need})", "data")
    return {"data": (numel, "bytes")}


def _parts(fmt: Format, rd: StreamReader) -> dict:
    return {"values": decode_raw(fmt).reshape(tuple(fmt.shape))}


def _summary(fmt: Format) -> dict:
    return {"value_bits": 8 * np.dtype(NP_RAW[fmt.dtype]).itemsize, "sparse": "none"}


RAW = register_kind(Kind("raw", RAW_DTYPES, decode=decode_raw, parts=_parts, summary=_summary, plan=_plan,
                              byte_streams=True))
