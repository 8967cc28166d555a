"""The packer of the compiled runtime: weights, epilogues and index streams into a program's
flat arrays (``B`` uint8, ``F`` float32; layouts in :mod:`.kernels`). Used by the chain walk
(:mod:`.plan`) and the graph lowering (:mod:`.lower`)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import kernels as K
from .weights import WeightRep

@dataclass
class OpInfo:
    """One op of a plan, for ``inspect`` / ``bench``: what runs and from which representation."""
    layer: str
    op: str
    rep: str = ""
    note: str = ""
    macs: int = 0          # non-zero multiply-adds per sample
    weight_bytes: int = 0  # resident bytes of its compressed weights
    fused: list[str] = field(default_factory=list)



class Packer:
    def __init__(self):
        self.bparts: list[np.ndarray] = []
        self.blen = 0
        self.fparts: list[np.ndarray] = []
        self.flen = 0

    def b(self, arr: np.ndarray) -> int:
        raw = np.ascontiguousarray(arr).view(np.uint8).reshape(-1)
        pad = (-self.blen) % 64
        if pad:
            self.bparts.append(np.zeros(pad, np.uint8))
            self.blen += pad
        off = self.blen
        self.bparts.append(raw)
        self.blen += raw.size
        return off

    def f(self, arr) -> int:
        a = np.ascontiguousarray(arr, dtype=np.float32).reshape(-1)
        pad = (-self.flen) % 16
        if pad:
            self.fparts.append(np.zeros(pad, np.float32))
            self.flen += pad
        off = self.flen
        self.fparts.append(a)
        self.flen += a.size
        return off

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        B = np.concatenate(self.bparts + [np.zeros(64, np.uint8)])
        F = np.concatenate(self.fparts + [np.zeros(16, np.float32)])
        return B, F


def new_op(kind: int, nin: int, nout: int) -> np.ndarray:
    op = np.zeros(K.OPW, np.int64)
    op[K.C_KIND] = kind
    op[K.C_NIN] = nin
    op[K.C_NOUT] = nout
    op[K.C_ALPHA] = -1
    op[K.C_BETA] = -1
    op[K.C_ACT] = K.A_NONE
    op[K.C_CPTR] = op[K.C_CROW] = op[K.C_CVAL] = op[K.C_CSUM] = -1
    return op


def _code_bits(rep: WeightRep) -> int:
    return max(1, int(len(rep.tab) - 1).bit_length())


def _pack_csr16(op: np.ndarray, rep: WeightRep, pk: Packer) -> None:
    """Packed CSR (see :mod:`.kernels`): ``p = (col % 2^b) | code << b``, columns in blocks of
    ``2^b`` (b = 16 - code bits), one ``indptr`` entry per (row, block). A weight whose columns
    fit one block and whose table has room for a zero entry is stored SELL-4 instead
    (:func:`_pack_sell4`)."""
    if len(rep.tab) < 256 and rep.cols <= 1 << (16 - max(1, len(rep.tab).bit_length())):
        _pack_sell4(op, rep, pk)
        return
    b = 16 - _code_bits(rep)
    nblk = max(1, -(-rep.cols // (1 << b)))
    r = np.repeat(np.arange(rep.rows, dtype=np.int64), np.diff(rep.indptr))
    col = rep.col.astype(np.int64)
    blk = col >> b
    key = r * nblk + blk
    order = np.argsort(key, kind="stable")     # (row, block) groups contiguous (a no-op for sorted CSR)
    counts = np.bincount(key, minlength=rep.rows * nblk)
    ptr = np.zeros(rep.rows * nblk + 1, np.int64)
    np.cumsum(counts, out=ptr[1:])
    packed = ((col & ((1 << b) - 1)) | (rep.val.astype(np.int64) << b))[order]
    op[K.C_COLW] = 1
    op[K.C_PKB] = b
    op[K.C_NBLK] = nblk
    op[K.C_PTR] = pk.b(ptr.astype(np.int32))
    op[K.C_COL] = pk.b(packed.astype(np.uint16))
    op[K.C_TAB] = pk.f(rep.tab)


def _pack_sell4(op: np.ndarray, rep: WeightRep, pk: Packer) -> None:
    """SELL-4 of the packed entries: rows sorted by length (longest first), cut into slices of 4;
    slice s holds ``L_s`` = its longest row's length steps of 4 interleaved entries (step k of
    rows 0..3 of the slice adjacent), shorter rows padded with ``code = len(tab)``, a zero table
    entry (~1% padding on LeNet-300-100's layers). The batch-1 kernel then runs four independent
    rows per loop, one loop exit per 4 rows (runtime.md's profile of LeNet-300-100's first
    layer: 11.6 us row by row, commit e2c404a, -> 7.6 us)."""
    tab = np.append(rep.tab.astype(np.float32), np.float32(0.0))
    zero = len(tab) - 1
    b = 16 - max(1, int(zero).bit_length())
    lens = np.diff(rep.indptr).astype(np.int64)
    order = np.argsort(-lens, kind="stable")
    nsl = -(-rep.rows // 4)
    srows = np.full(4 * nsl, -1, np.int64)
    srows[:rep.rows] = order
    L = np.zeros(nsl, np.int64)
    L[:] = np.concatenate([lens[order], np.zeros(4 * nsl - rep.rows, np.int64)]).reshape(nsl, 4).max(1)
    sptr = np.zeros(nsl + 1, np.int64)
    np.cumsum(L, out=sptr[1:])
    data = np.full((int(sptr[-1]), 4), zero << b, np.int64)
    packed = rep.col.astype(np.int64) | (rep.val.astype(np.int64) << b)
    for q in range(4):   # vectorized per lane: lane q of slice s takes row srows[4s + q]
        rows_q = srows[q::4]
        for s, r in enumerate(rows_q):
            if r >= 0 and lens[r]:
                data[sptr[s]:sptr[s] + lens[r], q] = packed[rep.indptr[r]:rep.indptr[r + 1]]
    op[K.C_COLW] = 3
    op[K.C_PKB] = b
    op[K.C_NBLK] = nsl
    op[K.C_PTR] = pk.b(sptr.astype(np.int32))
    op[K.C_COL] = pk.b(data.astype(np.uint16).reshape(-1))
    op[K.C_SROW] = pk.b(srows.astype(np.int32))
    op[K.C_TAB] = pk.f(tab)


def pq_lut(rep: WeightRep, conv: bool = False) -> bool:
    """A PQ FC weight runs from lookup tables (a ``PQFC`` op, codebooks stored transposed);
    otherwise (convolutions, and FC layers with too few rows: :func:`.kernels.pq_direct`) from
    its centroids in an FC / CONV op."""
    if rep.vfmt != K.V_PQ or conv:
        return False
    _, k, d = rep.pq["codebooks"].shape
    return not K.pq_direct(rep.rows, k, d)


def pack_weight(op: np.ndarray, rep: WeightRep, pk: Packer, conv: bool, panels: bool = False) -> int:
    """Write ``rep`` into the op's weight columns; returns its resident bytes. ``panels``: a dense
    weight is stored in the 64-row panels of the rows-as-lanes 1 x 1 conv (``K.rl_panels``)
    instead of row-major."""
    start_b, start_f = pk.blen, pk.flen
    op[K.C_ROWS] = rep.rows
    op[K.C_COLS] = rep.cols
    op[K.C_LAYOUT] = rep.layout
    op[K.C_VFMT] = rep.vfmt
    if rep.vfmt == K.V_PQ:
        codes = rep.pq["codes"]                               # (rows, M)
        cbs = rep.pq["codebooks"]                              # (ncb, k, d)
        ncb, k, d = cbs.shape
        M = codes.shape[1]
        cT = np.ascontiguousarray(codes.T)                     # (M, rows): sub-space major
        if k <= 256:
            op[K.C_CODEW] = 1
            op[K.C_VAL] = pk.b(cT.astype(np.uint8))
        else:
            op[K.C_CODEW] = 2
            op[K.C_VAL] = pk.b(cT.astype(np.uint16))
        # tables (PQFC) read the codebooks transposed (ncb, d, k); conv and FC-from-centroids
        # (few rows: K.pq_direct) read centroids (ncb, k, d)
        op[K.C_TAB] = pk.f(np.ascontiguousarray(cbs.transpose(0, 2, 1)) if pq_lut(rep, conv) else cbs)
        op[K.C_M], op[K.C_K], op[K.C_D], op[K.C_NCB] = M, k, d, ncb
        op[K.C_NNZ] = rep.rows * M
    else:
        op[K.C_NNZ] = rep.nnz
        if rep.layout == K.L_CSR and rep.vfmt == K.V_TABLE:
            # every CSR codebook weight is packed (its <= 256 codes leave >= 8 column bits)
            _pack_csr16(op, rep, pk)
            return (pk.blen - start_b) + 4 * (pk.flen - start_f)
        if rep.layout == K.L_CSR:
            op[K.C_PTR] = pk.b(rep.indptr.astype(np.int32))
            if rep.cols <= 65536:
                op[K.C_COLW] = 2
                op[K.C_COL] = pk.b(rep.col.astype(np.uint16))
            else:
                op[K.C_COLW] = 4
                op[K.C_COL] = pk.b(rep.col.astype(np.int32))
        val = rep.val
        if panels:
            assert rep.layout == K.L_DENSE
            val = K.rl_panels(val, rep.rows, rep.cols)
        if rep.vfmt == K.V_F32:
            op[K.C_VAL] = pk.f(val)
        else:
            op[K.C_VAL] = pk.b(val)
        if rep.vfmt == K.V_TABLE:
            # padded for the register look-ups of the dense batch-1 rows (kernels._lut)
            op[K.C_NTAB] = len(rep.tab)
            tab = np.zeros(max(len(rep.tab), K.lut_len(len(rep.tab))), np.float32)
            tab[:len(rep.tab)] = rep.tab
            op[K.C_TAB] = pk.f(tab)
    return (pk.blen - start_b) + 4 * (pk.flen - start_f)


CSC_MAX_NNZ = 1 << 20


def pack_csc(op: np.ndarray, rep: WeightRep, pk: Packer) -> int:
    """Also store the weight column-major (CSC) and its row sums for the background-skipping
    batch-1 kernel (:func:`.kernels._fc1_csc`); only for CSR layers whose input is likely to be
    mostly one value (the model input, after ReLU / act-quant)."""
    if rep.layout != K.L_CSR or rep.vfmt == K.V_PQ or rep.rows > 65536 or rep.nnz > CSC_MAX_NNZ or rep.nnz == 0:
        return 0
    start_b, start_f = pk.blen, pk.flen
    r = np.repeat(np.arange(rep.rows), np.diff(rep.indptr))
    order = np.lexsort((r, rep.col))
    cptr = np.zeros(rep.cols + 1, np.int64)
    np.cumsum(np.bincount(rep.col, minlength=rep.cols)[:rep.cols], out=cptr[1:])
    op[K.C_CPTR] = pk.b(cptr.astype(np.int32))
    op[K.C_CROW] = pk.b(r[order].astype(np.uint16))
    v = rep.val[order]
    op[K.C_CVAL] = pk.f(v) if rep.vfmt == K.V_F32 else pk.b(v)
    w = (rep.tab[rep.val] if rep.vfmt == K.V_TABLE else rep.val).astype(np.float64)
    op[K.C_CSUM] = pk.f(np.bincount(r, weights=w, minlength=rep.rows)[:rep.rows])   # row sums
    return (pk.blen - start_b) + 4 * (pk.flen - start_f)


def epilogue_cols(op, pk: Packer, rows: int, rowscale, bias, bn, act) -> int:
    """alpha / beta / act columns: ``y = act(alpha[r] * acc[r] + beta[r])`` with ``alpha =
    rowscale * bn_alpha``, ``beta = bias * bn_alpha + bn_beta`` (``bn``: a folded batch norm
    ``(alpha, beta)``, ``alpha = g / sqrt(var + eps)``, ``beta = beta_bn - mean * alpha``).
    Returns resident bytes."""
    start = pk.flen
    a = None if rowscale is None else np.asarray(rowscale, np.float64)
    b = None if bias is None else np.asarray(bias.detach().double().numpy() if hasattr(bias, "detach") else bias,
                                             np.float64).reshape(-1)
    if bn is not None:
        inv, beta = (np.asarray(v, np.float64) for v in bn)
        a = inv if a is None else a * inv
        b = beta if b is None else b * inv + beta
    if a is not None:
        op[K.C_ALPHA] = pk.f(a)
    if b is not None:
        op[K.C_BETA] = pk.f(b)
    if act is not None:
        op[K.C_ACT] = act[0]
        op[K.C_ACTP] = pk.f(np.asarray(act[1], np.float32))
    return 4 * (pk.flen - start)
