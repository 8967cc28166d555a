"""``pq``: product quantization of the 2-D view ``[rows, cols]`` (``meta["matrix_shape"]``).

Row r is cut into M subvectors of d columns (the last may be cut at ``cols``); subvector m is
``codebooks[m or 0][codes[r, m]]``. Streams ``codebooks``: float32 (n_codebooks = M or 1, k, d);
``codes``: rows*M indices, alphabet k. Optional mask of the kept elements (``meta["mask"]``):
``none``, ``bitmap`` (stream ``mask``) or ``relative`` (stream ``mask_index`` at
``mask_index_bits``; with fillers, stream ``mask_flags`` 1 = real entry). Only tried with a hint
``{"kind": "pq", "codes": [rows, M], "codebooks": [M or 1, k, d], "matrix_shape"?}``.
"""
from __future__ import annotations

import numpy as np

from ...errors import WeightzipFormatError
from ..bitpack import bits_for_alphabet
from ..format import FLOAT_DTYPES, MAX_NUMEL, Format, Reject, bad, canonical, is_int, meta_int, to_numpy
from ..layout import choose_bits
from ..sparse import matrix_shape, relative_index_decode, relative_index_encode
from ..streams import StreamReader, StreamWriter
from .registry import Candidate, EncodeContext, Kind, register_kind

MASK_SCHEMES = ("none", "bitmap", "relative")


def reconstruct(codes: np.ndarray, cbs: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """``W[r, m*d:(m+1)*d] = C[m or 0][codes[r, m]]``, cut to ``cols`` columns. (rows, cols)"""
    m = codes.shape[1]
    if cbs.shape[0] == 1:
        sub = cbs[0][codes]                                          # (rows, M, d)
    else:
        sub = cbs[np.arange(m)[None, :], codes]                      # (rows, M, d)
    return sub.reshape(rows, -1)[:, :cols]


def geometry_error(codes, cbs, rows, cols) -> str | None:
    """Why ``codes`` [rows, M] and ``codebooks`` [M or 1, k, d] do not describe a rows x cols
    matrix, or None."""
    if cbs.ndim != 3:
        return f"codebooks must be [M or 1, k, d], got shape {tuple(cbs.shape)}"
    if codes.ndim != 2 or codes.shape[0] != rows:
        return f"codes must be [rows={rows}, M], got shape {tuple(codes.shape)}"
    m, k, d = codes.shape[1], cbs.shape[1], cbs.shape[2]
    if cbs.shape[0] not in (1, m):
        return f"{cbs.shape[0]} codebooks for M={m} subspaces (need 1 or M)"
    if k < 1 or d < 1 or m < 1:
        return "empty PQ codebooks"
    if not (m - 1) * d < cols <= m * d:
        return f"M={m} subspaces of d={d} do not cover {cols} columns"
    if codes.size and (codes.min() < 0 or codes.max() >= k):
        return f"PQ codes outside [0, {k})"
    return None


# =============================================================================================
# encode


def _write_mask(st: StreamWriter, nonzero: np.ndarray, mask_scheme: str, opts) -> dict:
    """Mask streams of the (rows, cols) bool ``nonzero``; returns the mask meta."""
    pos = np.flatnonzero(nonzero)
    if mask_scheme == "bitmap":
        st.symbols("mask", nonzero.ravel().astype(np.int64), 2)
        return {"mask": "bitmap", "mask_nnz": int(pos.size)}
    b = choose_bits(pos, 0, 1, opts)
    ri = relative_index_encode(pos, b)
    st.symbols("mask_index", ri.gaps, 1 << b)
    if ri.n_fillers:
        st.symbols("mask_flags", (~ri.is_filler).astype(np.int64), 2)
    return {"mask": "relative", "mask_nnz": int(pos.size), "mask_index_bits": b,
            "mask_entries": ri.n_entries, "mask_fillers": ri.n_fillers}


def encode_pq(w: np.ndarray, shape, h: dict, st: StreamWriter, opts, mask_scheme: str) -> dict:
    """Streams of the pq hint ``h`` for the canonical flat ``w`` (Reject if it does not reproduce
    the nonzeros); ``mask_scheme`` (bitmap / relative) is used when a mask is needed."""
    rows, cols = (int(x) for x in h.get("matrix_shape") or matrix_shape(shape))
    if rows * cols != w.size:
        raise Reject(f"matrix_shape {rows}x{cols} does not match {w.size} elements")
    codes = to_numpy(h["codes"]).astype(np.int64)
    cbs = canonical(to_numpy(h["codebooks"]))
    err = geometry_error(codes, cbs, rows, cols)
    if err:
        raise Reject(err)
    m, k, d = codes.shape[1], cbs.shape[1], cbs.shape[2]
    recon = reconstruct(codes, cbs, rows, cols)                      # (rows, cols)
    wm = w.reshape(rows, cols)
    nonzero = wm != 0
    need_mask = bool(np.any(~nonzero & (recon != 0)))
    if not np.array_equal(recon[nonzero].view(np.uint32), wm[nonzero].view(np.uint32)):
        raise Reject("PQ codebooks[codes] differ from the weights")
    meta = {"matrix_shape": [rows, cols], "M": m, "k": k, "d": d, "n_codebooks": int(cbs.shape[0])}
    st.floats("codebooks", cbs)
    st.symbols("codes", codes, k)
    if not need_mask:
        meta["mask"] = "none"
        return meta
    meta.update(_write_mask(st, nonzero, mask_scheme, opts))
    return meta


def candidates(ctx: EncodeContext) -> list[Candidate]:
    """With a pq hint: one candidate per mask scheme (bitmap, relative)."""
    if ctx.hkind != "pq" or "pq" not in ctx.opts.kinds:
        return []

    def build(st: StreamWriter, ms: str) -> dict:
        meta = encode_pq(ctx.w, ctx.shape, ctx.hint, st, ctx.opts, ms)
        meta["nnz"] = int(ctx.nz.size)
        return meta
    return [Candidate("pq", "pq", lambda st, ms=ms: build(st, ms)) for ms in ("bitmap", "relative")]


# =============================================================================================
# decode


def _read_geometry(fmt: Format) -> tuple[int, int, int, int, int, int]:
    """``(rows, cols, M, k, d, n_codebooks)`` from the meta, checked against the shape and limits."""
    m = fmt.meta
    ms = m.get("matrix_shape")
    if not (isinstance(ms, list) and len(ms) == 2 and all(is_int(x) and x >= 0 for x in ms)):
        raise bad(fmt, f"meta['matrix_shape'] must be [rows, cols], got {ms!r}")
    rows, cols = ms
    if rows * cols != fmt.numel:
        raise bad(fmt, f"matrix_shape {rows}x{cols} does not match shape {list(fmt.shape)}")
    M = meta_int(fmt, m, "M", 1, MAX_NUMEL)
    k = meta_int(fmt, m, "k", 1, MAX_NUMEL)
    d = meta_int(fmt, m, "d", 1, MAX_NUMEL)
    ncb = meta_int(fmt, m, "n_codebooks", 1, MAX_NUMEL)
    if ncb not in (1, M) or not (M - 1) * d < cols <= M * d or rows * M > MAX_NUMEL or ncb * k * d > MAX_NUMEL:
        raise bad(fmt, f"inconsistent PQ geometry M={M} k={k} d={d} n_codebooks={ncb} for {rows}x{cols}")
    return rows, cols, M, k, d, ncb


def _read_mask(fmt: Format, rd: StreamReader, rows: int, cols: int) -> np.ndarray | None:
    """(rows, cols) bool mask, or None for ``mask = "none"``."""
    m = fmt.meta
    scheme = m.get("mask")
    numel = rows * cols
    if scheme == "bitmap":
        mask = rd.symbols("mask", numel, 2).astype(bool).reshape(rows, cols)
        if int(mask.sum()) != m.get("mask_nnz"):
            raise bad(fmt, "mask popcount differs from meta['mask_nnz']", "mask")
        return mask
    if scheme == "relative":
        b = meta_int(fmt, m, "mask_index_bits", 1, 32)
        e = meta_int(fmt, m, "mask_entries", 0, numel)
        f = meta_int(fmt, m, "mask_fillers", 0, e)
        try:
            pos = relative_index_decode(rd.symbols("mask_index", e, 1 << b), numel)
        except WeightzipFormatError as err:
            raise bad(fmt, str(err), "mask_index") from None
        if f:
            flags = rd.symbols("mask_flags", e, 2).astype(bool)
            if int((~flags).sum()) != f:
                raise bad(fmt, "filler flags differ from meta['mask_fillers']", "mask_flags")
            pos = pos[flags]
        mask = np.zeros(numel, dtype=bool)
        mask[pos] = True
        return mask.reshape(rows, cols)
    if scheme != "none":
        raise bad(fmt, f"meta['mask'] must be none/bitmap/relative, got {scheme!r}")
    return None


def read_pq(fmt: Format, rd: StreamReader) -> dict:
    """``codes`` [rows, M] int64, ``codebooks`` [n_codebooks, k, d] float32, ``mask`` bool
    [rows, cols] or None, ``matrix_shape`` (rows, cols)."""
    rows, cols, M, k, d, ncb = _read_geometry(fmt)
    cbs = rd.floats("codebooks", ncb * k * d).reshape(ncb, k, d)
    codes = rd.symbols("codes", rows * M, k).reshape(rows, M)
    mask = _read_mask(fmt, rd, rows, cols)
    return {"codes": codes, "codebooks": cbs, "mask": mask, "matrix_shape": (rows, cols)}


def decode_pq(fmt: Format, rd: StreamReader) -> np.ndarray:
    """Flat float32 (numel,): the reconstruction, zero outside the mask."""
    p = read_pq(fmt, rd)
    rows, cols = p["matrix_shape"]
    recon = reconstruct(p["codes"], p["codebooks"], rows, cols)
    if p["mask"] is not None:
        recon = np.where(p["mask"], recon, np.float32(0))           # not recon * mask: -0.0
    return np.ascontiguousarray(recon, dtype=np.float32).ravel()


def _plan(fmt: Format) -> dict:
    rows, cols, M, k, d, ncb = _read_geometry(fmt)
    m, numel = fmt.meta, rows * cols
    plan = {"codebooks": (ncb * k * d, "float"), "codes": (rows * M, k)}
    scheme = m.get("mask")
    if scheme == "bitmap":
        plan["mask"] = (numel, 2)
    elif scheme == "relative":
        b = meta_int(fmt, m, "mask_index_bits", 1, 32)
        e = meta_int(fmt, m, "mask_entries", 0, numel)
        f = meta_int(fmt, m, "mask_fillers", 0, e)
        plan["mask_index"] = (e, 1 << b)
        if f:
            plan["mask_flags"] = (e, 2)
    elif scheme != "none":
        raise bad(fmt, f"meta['mask'] must be none/bitmap/relative, got {scheme!r}")
    return plan


def _summary(fmt: Format) -> dict:
    m = fmt.meta
    return {"value_bits": bits_for_alphabet(m.get("stream_info", {}).get("codes", {}).get("alphabet", 1)),
            "sparse": m.get("mask"), "index_bits": m.get("mask_index_bits"), "n_fillers": m.get("mask_fillers", 0)}


PQ = register_kind(Kind("pq", FLOAT_DTYPES, decode=decode_pq, parts=read_pq, summary=_summary, plan=_plan,
                        candidates=candidates, hint_driven=True))
