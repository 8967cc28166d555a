"""Portable parts of an encoded tensor: what the ONNX and safetensors writers store.

``tensor_parts(fmt)`` turns a codec ``Format`` into a :class:`Parts` of plain numpy arrays that
other runtimes can decode with a few standard operators (exactly, bit for bit):

* ``scheme = "codebook"``: ``codebook`` (K,) float32 and ``codes`` (uint8 / uint16), value =
  ``codebook[codes]``; the weight-sharing formats, and any tensor with at most 256 distinct
  stored values when that is smaller than float32 (fixed-point clusters, sparse uniform codes).
* ``scheme = "uniform"`` (dense layout only): ``q`` (int8, or int16 when it does not fit),
  ``scale`` (G,) float32 with G dividing the first dimension: value of element ``p`` =
  ``float32(q[p]) * scale[p // (numel / G)]`` -- a per-axis ``DequantizeLinear`` on the
  ``[G, numel / G]`` view (int4 storage when ``-8 <= q <= 7``).
* ``scheme = "pq"``: ``codes`` [rows, M] (uint8 / uint16), ``codebooks`` [C, k, d] float32
  (C = 1 or M), value ``W[r, m d + j] = codebooks[m if C > 1 else 0, codes[r, m], j]`` cropped
  to ``cols``; optional sparse ``mask`` (the kept positions, as ``gaps`` below).
* ``scheme = "dense"``: ``values`` float32.

Layout: ``layout = "dense"`` (every element, row-major) or ``"sparse"``: ``gaps`` (uint8 or
4-bit) give the flat row-major positions of the stored entries, ``p_i = p_{i-1} + gap_i + 1``
(``p_{-1} = -1``), i.e. ``positions = cumsum(gaps + 1) - 1``; a gap larger than the width
allows is split by *filler* entries of value 0 (``gap = 2^b - 1``), as in Deep Compression.
The per-entry arrays (``codes``, ``q``, ``values``) are aligned with ``gaps``; unstored
elements are 0. ``bits`` records the code width (4 means the values fit in 4 bits: packed two
per byte in safetensors, ``UINT4`` / ``INT4`` tensors in ONNX).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..codec import decode, decode_parts


@dataclass
class Parts:
    scheme: str
    shape: tuple[int, ...]
    layout: str = "dense"
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        """Bytes of the arrays as stored (4-bit arrays count half a byte per element)."""
        total = 0
        for k, a in self.arrays.items():
            if self.meta.get(f"{k}_bits") == 4:
                total += (a.size + 1) // 2
            else:
                total += a.nbytes
        return total


def _uint_dtype(n: int):
    return np.uint8 if n <= 256 else np.uint16 if n <= 65536 else np.int32


def gaps_with_fillers(positions: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Relative gaps at ``bits`` width with fillers: ``(gaps, is_real)`` over all entries."""
    positions = np.asarray(positions, dtype=np.int64)
    if positions.size == 0:
        return np.zeros(0, np.uint8), np.zeros(0, bool)
    gap = np.diff(positions, prepend=-1) - 1
    m = (1 << bits) - 1
    n_fill = gap // (m + 1)
    total = positions.size + int(n_fill.sum())
    gaps = np.full(total, m, dtype=np.int64)
    real = np.zeros(total, bool)
    idx = np.arange(positions.size) + np.cumsum(n_fill)  # index of each real entry
    gaps[idx] = gap - n_fill * (m + 1)
    real[idx] = True
    return gaps.astype(np.uint8), real


def positions_from_gaps(gaps: np.ndarray) -> np.ndarray:
    return np.cumsum(gaps.astype(np.int64) + 1) - 1


def _sparse_entries(positions, entry_bytes: float) -> tuple[np.ndarray, np.ndarray, int]:
    """Choose 4 or 8 bit gaps (smaller total): ``(gaps, is_real, bits)``."""
    best = None
    for b in (4, 8):
        g, real = gaps_with_fillers(positions, b)
        cost = g.size * (b / 8 + entry_bytes)
        if best is None or cost < best[0]:
            best = (cost, g, real, b)
    return best[1], best[2], best[3]


def _codebook_parts(shape, table: np.ndarray, codes: np.ndarray | None, positions, values_nz) -> Parts:
    """Codebook scheme, dense (codes for every element) or sparse (codes for nonzeros)."""
    if positions is None:
        bits = 4 if table.size <= 16 else 8
        return Parts("codebook", shape, "dense", {"codebook": table.astype(np.float32),
                                                  "codes": codes.astype(_uint_dtype(table.size))},
                     {"codes_bits": bits if bits == 4 else None})
    # sparse: zero must be a table entry for the fillers
    tbl = table.astype(np.float32)
    zero = np.nonzero(tbl == 0)[0]
    if zero.size == 0:
        tbl = np.concatenate([tbl, np.zeros(1, np.float32)])
        zero_code = tbl.size - 1
    else:
        zero_code = int(zero[0])
    cbits = 4 if tbl.size <= 16 else 8
    gaps, real, gbits = _sparse_entries(positions, cbits / 8 if tbl.size <= 256 else 2)
    all_codes = np.full(gaps.size, zero_code, dtype=np.int64)
    all_codes[real] = codes
    return Parts("codebook", shape, "sparse", {"codebook": tbl, "codes": all_codes.astype(_uint_dtype(tbl.size)),
                                               "gaps": gaps},
                 {"codes_bits": 4 if cbits == 4 else None, "gaps_bits": 4 if gbits == 4 else None})


def _from_values(shape, positions, values) -> Parts:
    """Any tensor from its stored nonzero values: a table if <= 256 distinct values and smaller."""
    numel = int(np.prod(shape, dtype=np.int64)) if shape else 1
    table, inv = np.unique(values.astype(np.float32), return_inverse=True)
    if positions is None:
        if table.size <= 256 and table.size * 4 + numel * (0.5 if table.size <= 16 else 1) < numel * 4:
            return _codebook_parts(shape, table, inv, None, None)
        return Parts("dense", shape, "dense", {"values": values.astype(np.float32).reshape(-1)})
    if table.size <= 256:
        return _codebook_parts(shape, table, inv, positions, values)
    gaps, real, gbits = _sparse_entries(positions, 4)
    vals = np.zeros(gaps.size, np.float32)
    vals[real] = values
    p = Parts("dense", shape, "sparse", {"values": vals, "gaps": gaps}, {"gaps_bits": 4 if gbits == 4 else None})
    if p.nbytes >= numel * 4:
        dense = np.zeros(numel, np.float32)
        dense[positions] = values
        return Parts("dense", shape, "dense", {"values": dense})
    return p


def tensor_parts(fmt) -> Parts | None:
    """Portable parts of a floating-point ``Format`` (None for integer tensors: kept as they are)."""
    if fmt.kind == "raw":
        return None
    shape = tuple(int(s) for s in fmt.shape)
    numel = int(np.prod(shape, dtype=np.int64)) if shape else 1
    d = decode_parts(fmt)
    if fmt.kind == "pq":
        codes = d["codes"]
        k = d["codebooks"].shape[1]
        parts = Parts("pq", shape, "dense", {"codes": codes.astype(_uint_dtype(k)),
                                             "codebooks": d["codebooks"].astype(np.float32)},
                      {"codes_bits": 4 if k <= 16 else None, "matrix_shape": list(d["matrix_shape"])})
        if d.get("mask") is not None:
            pos = np.flatnonzero(np.asarray(d["mask"]).reshape(-1))
            gaps, _real, gbits = _sparse_entries(pos, 0)
            parts.arrays["mask_gaps"] = gaps
            parts.meta["mask_gaps_bits"] = 4 if gbits == 4 else None
        return parts
    if fmt.kind == "codebook":
        table = np.asarray(d["codebook"], np.float32)
        if d["positions"] is None:
            return _codebook_parts(shape, table, d["codes"], None, None)
        return _codebook_parts(shape, table, d["codes"], d["positions"], d["values"])
    if fmt.kind == "uniform" and d["positions"] is None:
        q = np.asarray(d["q"], np.int64)
        scale = np.asarray(d["scale"], np.float32)
        if q.size and (q.min() < -32768 or q.max() > 32767):
            return _from_values(shape, None, d["values"])
        qd = np.int8 if (q.size == 0 or (q.min() >= -128 and q.max() <= 127)) else np.int16
        bits = 4 if q.size and q.min() >= -8 and q.max() <= 7 else None
        return Parts("uniform", shape, "dense", {"q": q.astype(qd), "scale": scale}, {"q_bits": bits})
    if d.get("positions") is None:
        return _from_values(shape, None, np.asarray(d["values"]).reshape(-1))
    return _from_values(shape, d["positions"], np.asarray(d["values"]))


def dense_from_parts(p: Parts) -> np.ndarray:
    """Reference decoder of :class:`Parts` (numpy), the definition the writers' graphs follow."""
    numel = int(np.prod(p.shape, dtype=np.int64)) if p.shape else 1
    a = p.arrays
    if p.scheme == "pq":
        rows, cols = p.meta["matrix_shape"]
        cb = a["codebooks"]
        codes = a["codes"].astype(np.int64)
        M = codes.shape[1]
        idx = codes if cb.shape[0] == 1 else codes + np.arange(M)[None, :] * cb.shape[1]
        flat = cb.reshape(-1, cb.shape[2])[idx].reshape(rows, -1)[:, :cols]
        if "mask_gaps" in a:
            mask = np.zeros(rows * cols, np.float32)
            mask[positions_from_gaps(a["mask_gaps"])] = 1
            flat = flat * mask.reshape(rows, cols)
        return flat.reshape(p.shape).astype(np.float32)
    if p.scheme == "codebook":
        vals = a["codebook"][a["codes"].astype(np.int64)]
    elif p.scheme == "uniform":
        G = a["scale"].size
        vals = (a["q"].astype(np.float32).reshape(G, -1) * a["scale"][:, None]).reshape(-1)
    else:
        vals = a["values"]
    if p.layout == "dense":
        return vals.reshape(p.shape).astype(np.float32)
    out = np.zeros(numel, np.float32)
    out[positions_from_gaps(a["gaps"])] = vals
    return out.reshape(p.shape)


def check_parts(fmt, p: Parts) -> None:
    """Assert the parts decode to the codec's tensor bit for bit (used by the writers)."""
    ref = decode(fmt).to(dtype=__import__("torch").float32).numpy()
    got = dense_from_parts(p)
    if not np.array_equal(ref.view(np.uint32) if ref.size else ref, (got + 0.0).view(np.uint32) if got.size else got):
        if not np.array_equal(ref, got):
            raise AssertionError("export parts do not reproduce the tensor")
