"""Compressed weight representations of the compiled runtime, built from a tensor's Format.

:func:`weight_rep` turns the codec's parts (``decode_parts``) of a Linear / Conv2d weight
into a :class:`WeightRep` that the kernels read directly (see :mod:`.kernels` for the value
formats). The dense weight is never materialised, except for the ``F32`` representation,
which IS the decoded dense layer (used for tensors stored as plain floats, and as the
fallback when a compressed form has no kernel: the reason is recorded in ``note``).

Rules (``rows x cols`` = the 2-D view ``[C_out, C_in/groups * kh * kw]``):

* layout: ``CSR`` over the stored non-zeros when the file's layout is sparse or the density
  of non-zeros is <= ``CSR_MAX_DENSITY``; otherwise ``DENSE`` (every element, row-major);
* ``codebook`` with K <= 256 entries -> ``TABLE`` (uint8 codes + the float32 table);
* ``uniform`` whose levels q fit int8 and whose scale groups are whole rows -> ``Q8``:
  ``w = q * scale[row group]``, the scale becomes the row's epilogue multiplier ``rowscale``;
* ``pq`` without a stored mask -> ``PQ`` (codes + codebooks);
* everything else (``dense``, ``mixed_fixed``, wider codebooks, masked PQ) -> ``F32``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ...codec.sparse import matrix_shape
from ...errors import WeightzipFormatError
from . import kernels as K

CSR_MAX_DENSITY = 0.5
# int8 / fp32 values: the dense row loop vectorizes (16 MACs per instruction), the CSR gather does
# not (~1.5 cycles per non-zero), so CSR pays off only below this density
CSR_MAX_DENSITY_VECTOR = 0.15


def _densify(rep: "WeightRep") -> "WeightRep":
    """CSR -> DENSE of the same values (TABLE gets a zero entry when its table has none)."""
    rows, cols = rep.rows, rep.cols
    r = np.repeat(np.arange(rows), np.diff(rep.indptr))
    if rep.vfmt == K.V_TABLE:
        tab = rep.tab
        zero = np.flatnonzero(tab == 0)
        if zero.size:
            z = int(zero[0])
        elif len(tab) < 256:
            tab = np.concatenate([tab, np.zeros(1, np.float32)])
            z = len(tab) - 1
        else:
            return rep
        codes = np.full((rows, cols), z, np.uint8)
        codes[r, rep.col] = rep.val
        return WeightRep(rows, cols, K.L_DENSE, K.V_TABLE, val=codes.reshape(-1), tab=tab, source=rep.source,
                         note=rep.note)
    val = np.zeros((rows, cols), rep.val.dtype)
    val[r, rep.col] = rep.val
    return WeightRep(rows, cols, K.L_DENSE, rep.vfmt, val=val.reshape(-1), rowscale=rep.rowscale,
                     source=rep.source, note=rep.note)


def _choose_layout(rep: "WeightRep") -> "WeightRep":
    if rep.layout != K.L_CSR or rep.vfmt == K.V_PQ or not rep.rows * rep.cols:
        return rep
    density = rep.nnz / (rep.rows * rep.cols)
    limit = CSR_MAX_DENSITY if rep.vfmt == K.V_TABLE else CSR_MAX_DENSITY_VECTOR
    return _densify(rep) if density > limit else rep


@dataclass
class WeightRep:
    rows: int
    cols: int
    layout: int                       # K.L_CSR / K.L_DENSE
    vfmt: int                         # K.V_TABLE / V_Q8 / V_F32 / V_PQ
    indptr: np.ndarray | None = None  # int32 (rows+1,)
    col: np.ndarray | None = None     # int (nnz,)
    val: np.ndarray | None = None     # uint8 codes / int8 levels / float32 values
    tab: np.ndarray | None = None     # float32 level table (TABLE)
    rowscale: np.ndarray | None = None  # float32 (rows,) multiplier of the row (Q8)
    pq: dict = field(default_factory=dict)  # codes (rows, M), codebooks (ncb, k, d)
    source: str = "dense"             # the codec kind it came from
    note: str = ""                    # why it is F32 when the file is compressed

    @property
    def nnz(self) -> int:
        if self.vfmt == K.V_PQ:
            return self.rows * self.cols
        return int(self.val.shape[0])

    @property
    def name(self) -> str:
        if self.vfmt == K.V_PQ:
            p = self.pq
            return f"pq k={p['codebooks'].shape[1]} d={p['codebooks'].shape[2]} M={p['codes'].shape[1]}"
        lay = "csr" if self.layout == K.L_CSR else "dense"
        v = (f"codebook{len(self.tab)}" if self.vfmt == K.V_TABLE else
             "int8-levels" if self.vfmt == K.V_Q8 else "fp32")
        return f"{lay} {v}"

    def nonzero_macs(self) -> int:
        """Stored non-zero weights (multiply-adds per output position)."""
        if self.vfmt == K.V_PQ:
            return int(np.count_nonzero(self.dense()))
        if self.vfmt == K.V_TABLE:
            return int(np.count_nonzero(self.tab[self.val]))
        return int(np.count_nonzero(self.val))

    def dense(self) -> np.ndarray:
        """The (rows, cols) float32 matrix this representation computes with (checks only)."""
        if self.vfmt == K.V_PQ:
            codes, cbs = self.pq["codes"], self.pq["codebooks"]
            ncb, k, d = cbs.shape
            M = codes.shape[1]
            sub = cbs[0][codes] if ncb == 1 else cbs[np.arange(M)[None, :], codes]
            return sub.reshape(self.rows, M * d)[:, :self.cols].astype(np.float32)
        v = self.tab[self.val] if self.vfmt == K.V_TABLE else self.val.astype(np.float32)
        if self.rowscale is not None:
            rs = self.rowscale
        else:
            rs = None
        out = np.zeros((self.rows, self.cols), np.float32)
        if self.layout == K.L_DENSE:
            out[:] = v.reshape(self.rows, self.cols)
        else:
            r = np.repeat(np.arange(self.rows), np.diff(self.indptr))
            out[r, self.col] = v
        if rs is not None:
            out *= rs[:, None]
        return out


def _csr_or_dense(rows, cols, positions, val, force_csr: bool):
    """(layout, indptr, col, val) for entries at sorted flat ``positions`` (None = all)."""
    numel = rows * cols
    if positions is None:
        nzmask = val != 0
        if force_csr or (numel and nzmask.mean() <= CSR_MAX_DENSITY) or numel == 0:
            positions = np.flatnonzero(nzmask)
            val = val[positions]
        else:
            return K.L_DENSE, None, None, val
    positions = np.asarray(positions, np.int64)
    order = np.argsort(positions, kind="stable")
    positions, val = positions[order], val[order]
    r = positions // cols if cols else positions
    indptr = np.zeros(rows + 1, np.int64)
    np.cumsum(np.bincount(r, minlength=rows)[:rows], out=indptr[1:])
    return K.L_CSR, indptr.astype(np.int32), positions - r * cols, val


def rep_from_dense(w: np.ndarray, note: str = "", source: str = "dense") -> WeightRep:
    """``F32`` representation of a dense weight (the decoded-dense reference)."""
    rows, cols = matrix_shape(w.shape)
    flat = np.ascontiguousarray(w, dtype=np.float32).reshape(-1)
    lay, ip, col, val = _csr_or_dense(rows, cols, None, flat, False)
    return WeightRep(rows, cols, lay, K.V_F32, ip, col, val.astype(np.float32), source=source, note=note)


def weight_rep(parts: dict | None, dense: np.ndarray, where: str) -> WeightRep:
    """See :func:`_weight_rep`; then CSR or DENSE by density and value format."""
    return _choose_layout(_weight_rep(parts, dense, where))


def _weight_rep(parts: dict | None, dense: np.ndarray, where: str) -> WeightRep:
    """The kernel representation of one weight from its codec ``parts`` (or the dense array).

    ``dense`` is the module's (decoded) weight; its shape must equal the Format's shape,
    else :class:`WeightzipFormatError` (the file does not fit the graph).
    """
    if parts is None:
        return rep_from_dense(dense)
    if tuple(parts["shape"]) != tuple(dense.shape):
        raise WeightzipFormatError(f"{where}: the file's tensor has shape {tuple(parts['shape'])}, the layer "
                                   f"expects {tuple(dense.shape)} (was the file written from another model?)")
    kind = parts["kind"]
    rows, cols = parts["matrix_shape"]
    sparse = parts.get("sparse") not in (None, "none")
    if kind == "codebook":
        tab = np.asarray(parts["codebook"], np.float32)
        if len(tab) > 256:
            return rep_from_dense(dense, f"codebook of {len(tab)} entries (> 256): runs as decoded fp32", kind)
        codes, positions = np.asarray(parts["codes"]), parts["positions"]
        if positions is None:  # a dense codebook: the zeros are the entries whose CENTROID is 0, not code 0
            nz = tab[codes.reshape(-1)] != 0 if len(tab) else np.zeros(codes.size, bool)
            if not (codes.size and nz.mean() > CSR_MAX_DENSITY):
                positions = np.flatnonzero(nz)
                codes = codes.reshape(-1)[positions]
        if positions is None:
            lay, ip, col = K.L_DENSE, None, None
        else:
            lay, ip, col, codes = _csr_or_dense(rows, cols, positions, codes, sparse)
        if lay == K.L_CSR:  # drop stored entries whose centroid is 0 (none for sparse layouts)
            keep = tab[codes] != 0
            if not keep.all():
                return _weight_rep({**parts, "positions": _positions(ip, col, cols)[keep],
                                    "codes": codes[keep]}, dense, where)
        return WeightRep(rows, cols, lay, K.V_TABLE, ip, col, codes.astype(np.uint8), tab, source=kind)
    if kind == "uniform":
        q = np.asarray(parts["q"])
        scale = np.asarray(parts["scale"], np.float32).reshape(-1)
        if q.size and (q.min() < -128 or q.max() > 127):
            return rep_from_dense(dense, "fixed-point levels outside int8: runs as decoded fp32", kind)
        if scale.size > 1 and rows % scale.size:
            return rep_from_dense(dense, "scale groups are not whole rows: runs as decoded fp32", kind)
        rowscale = np.repeat(scale, rows // scale.size) if scale.size > 1 else np.full(rows, scale[0], np.float32)
        lay, ip, col, qv = _csr_or_dense(rows, cols, parts["positions"], q, sparse)
        if lay == K.L_CSR:
            keep = qv != 0
            ip, col, qv = _filter(ip, col, qv, keep, rows)
        return WeightRep(rows, cols, lay, K.V_Q8, ip, col, qv.astype(np.int8), rowscale=rowscale.astype(np.float32),
                         source=kind)
    if kind == "pq":
        if parts.get("mask") is not None:
            return rep_from_dense(dense, "PQ with a stored per-weight mask (mask_mode=element): a shared "
                                  "centroid cannot apply the mask; runs as decoded fp32", kind)
        codes = np.asarray(parts["codes"], np.int64)
        cbs = np.asarray(parts["codebooks"], np.float32)
        if cbs.shape[1] > 65536:
            return rep_from_dense(dense, "PQ with more than 65536 centroids: runs as decoded fp32", kind)
        return WeightRep(rows, cols, K.L_DENSE, K.V_PQ, pq={"codes": codes, "codebooks": cbs}, source=kind)
    if kind in ("dense", "mixed_fixed"):
        if parts.get("positions") is not None:
            lay, ip, col, val = _csr_or_dense(rows, cols, parts["positions"],
                                              np.asarray(parts["values"], np.float32), True)
            return WeightRep(rows, cols, lay, K.V_F32, ip, col, val, source=kind)
        return rep_from_dense(dense, source=kind)
    return rep_from_dense(dense, f"format kind {kind!r} has no kernel: runs as decoded fp32", kind)


def _positions(indptr, col, cols):
    r = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
    return r * cols + col


def _filter(indptr, col, val, keep, rows):
    if keep.all():
        return indptr, col, val
    r = np.repeat(np.arange(rows), np.diff(indptr))[keep]
    ip = np.zeros(rows + 1, np.int64)
    np.cumsum(np.bincount(r, minlength=rows)[:rows], out=ip[1:])
    return ip.astype(np.int32), col[keep], val[keep]
