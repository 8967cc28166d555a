"""numba kernels of the compiled runtime: one native call runs a whole program of ops.

A *program* is three flat arrays built by :mod:`.pack`:

* ``ops`` int64 (n_ops, OPW): one row per op; column meanings are the ``C_*`` constants;
* ``B`` uint8: every integer stream, 64-byte aligned pieces viewed in place as int32 row
  pointers, uint16/int32 column indices, uint8 codebook codes, int8 fixed-point levels;
* ``F`` float32: codebooks, level tables, per-row alpha / beta (bias, scales and folded BN),
  activation parameters.

Activations are sample-major float32 ``(n, features)`` (a conv feature map is ``C*H*W``, the
order of ``torch.flatten``). Each op reads ``n`` samples from one half of the work buffer and
writes the other half (ping-pong); op scratch (transposed inputs, lookup tables) follows.

Weight of a linear-like op (rows = outputs, cols = inputs; a conv's cols are
``(C_in/groups)*kh*kw`` in the weight's row-major order): layout ``CSR`` (``indptr`` (rows+1),
``cols`` (nnz)) or ``DENSE`` (all rows*cols, row-major). A CSR codebook weight with
``bits(code) + bits(column) <= 16`` is *packed* (``C_COLW == 1``): ONE uint16 per stored
weight, ``p = (col - blk*2^b) | code << b`` with ``b = C_PKB`` column bits, the columns cut into
``C_NBLK`` blocks of ``2^b`` and ``indptr`` of ``rows*C_NBLK + 1`` entries (row r, block blk:
``indptr[r*C_NBLK + blk]``) - 2 bytes and 3 loads (p, tab, x) per weight instead of 3 and 4.
When the columns fit one block, the packed entries are stored SELL-4 (``C_COLW == 3``): rows
sorted by length in slices of 4, each slice ``L_s`` steps of 4 interleaved entries (``indptr`` =
slice starts in steps, ``srows`` int32 (4 * slices) the rows, -1 = none), short rows padded with
a zero table entry; the batch-1 kernel keeps four rows' sums in flight.
Value format

* ``TABLE``: ``w = tab[code]``, ``code`` uint8 (codebook / weight sharing);
* ``Q8``:    ``w = float(q)``, ``q`` int8 (fixed-point / binary / ternary levels; the level's
  scale is folded into the per-row ``alpha``);
* ``F32``:   ``w`` float32 (decoded dense values: the reference representation);
* ``PQ``:    ``w[r, m*d + t] = cb[m or 0, code[r, m], t]`` (product quantization).

Every op ends with the epilogue ``y[r] = act(alpha[r] * acc[r] + beta[r])``.

Per op kind (x: one sample's input, y: its output):

* ``FC``:   ``acc[r] = sum_j w[r, j] x[j]``. Batch 1: one row at a time, a scalar
  gather-reduction over the row's non-zeros (four partial sums). Batch n > 1 (weights
  stationary): the n inputs are transposed to ``xT (cols, m)`` once (m = n rounded up to 16),
  then each row's stored weights are decoded once into ``(w_j, base_j)`` and :func:`_tiles`
  computes ``acc[0:m] = sum_j w_j xT[base_j : base_j + m]`` in 16-lane register tiles
  (:mod:`.simd`); dense rows go four at a time (:func:`_tiles4`).
* ``PQFC``: lookup tables ``T[m, j] = <cb[m or 0, j], x[m*d:(m+1)*d]>`` (k*cols MACs, the k
  centroids of the transposed codebook in register tiles), then sub-space major
  ``acc[r] += T[m, code[m, r]]`` (codes stored (M, rows)); at batch 1 sixteen rows per step,
  the table held in registers (:func:`.simd.vlut128`: AVX-512 permutes).
* ``CONV``: direct sparse convolution, weights stationary over the output plane: every stored
  tap ``(o, c, i, j, w)`` adds ``w * x[c, oh*sh - ph + i*dh, ow*sw - pw + j*dw]`` to plane ``o``;
  stride 1 reads shifted runs of the zero-padded input (rows computed over the padded width),
  other strides an im2col, both through :func:`_tiles`.
* ``POOL``: max / average pooling (``avg`` counts padding as torch's default).
* ``EW``:   element-wise ``act(alpha[c] * x + beta[c])`` with ``c = i // (features / C)``
  (standalone BatchNorm / activation).
* ``ACTQ``: ``round(clip(x, 0, c) / c * L) / L * c`` (k-bit activation quantizer, L = 2^k - 1).

The LSTM step loop (:func:`lstm_forward`, used by :mod:`.lstm`) is here too: numba invalidates a
cached function only when its own file changes, so every kernel that calls another lives in
this file.
"""
from __future__ import annotations

import math

import numba
import numpy as np
from numba import prange
from numba.extending import overload

from .simd import (f32_bits, vadd, vclamp, vcodes, vfma, vfmav, vload, vlut32, vlut64, vlut128, vlut256, vmul, vsigmoid,
                   vstore, vsum, vtanh, vtranspose16, vzero)

FM = {"reassoc", "contract", "nsz"}  # reassociation lets LLVM vectorize the reductions
FMS = {"contract", "nsz"}            # scalar reductions: no reassociation, so no gather vectorization

# op kinds (7.. : the graph ops of :mod:`.lower`, programs run by :func:`run_graph_chunk`)
K_FC, K_CONV, K_POOL, K_EW, K_ACTQ, K_PQFC = 1, 2, 3, 4, 5, 6
K_BIN, K_GATHER, K_NORM, K_SOFTMAX, K_ATTN, K_EMB, K_REDUCE, K_PAD = 7, 8, 9, 10, 11, 12, 13, 14
K_TORCH = 15   # a marker: the Python runner runs this op in torch (lower.TorchStep); skipped natively
# weight layouts / value formats
L_CSR, L_DENSE = 0, 1
V_TABLE, V_Q8, V_F32, V_PQ = 0, 1, 2, 3
# activations
A_NONE, A_RELU, A_HARDTANH, A_LEAKY, A_TANH, A_SIGMOID, A_ELU, A_GELU, A_SILU = 0, 1, 2, 3, 4, 5, 6, 7, 8
A_HARDSWISH, A_HARDSIGMOID, A_GELU_TANH, A_RSQRT, A_NEG, A_EXP, A_SQRT, A_SQUARE, A_RECIP = range(9, 18)
A_POWI = 18   # x ** k, integer k = F[p] (1 <= |k| <= 8), by repeated products as torch
# binary ops (K_BIN, column C_LAYOUT): y = x OP x2; RSUB / RDIV: y = x2 - x, x2 / x
B_ADD, B_SUB, B_MUL, B_DIV, B_RSUB, B_RDIV = 0, 1, 2, 3, 4, 5
# norms (K_NORM, column C_LAYOUT) and reductions (K_REDUCE)
NORM_LAYER, NORM_RMS = 0, 1
R_MEAN, R_SUM, R_MAX = 0, 1, 2

# op table columns
C_KIND, C_NIN, C_NOUT, C_ACT, C_ACTP, C_ALPHA, C_BETA = 0, 1, 2, 3, 4, 5, 6
C_LAYOUT, C_VFMT, C_PTR, C_COL, C_COLW, C_VAL, C_TAB, C_NNZ = 7, 8, 9, 10, 11, 12, 13, 14
C_CIN, C_H, C_W, C_COUT, C_KH, C_KW, C_SH, C_SW, C_PH, C_PW, C_DH, C_DW, C_GROUPS, C_HO, C_WO = range(15, 30)
C_M, C_K, C_D, C_NCB, C_CODEW, C_SCR = 30, 31, 32, 33, 34, 35
C_ROWS, C_COLS = 36, 37
C_CPTR, C_CROW, C_CVAL = 38, 39, 40   # optional column-major copy (CSC) of an FC weight; -1 = none
C_CSUM = 41                            # F offset of the row sums sum_j w[r, j] (with the CSC copy)
C_PKB, C_NBLK = 42, 43                 # packed CSR (C_COLW == 1): column bits, column blocks
C_SROW = 44                            # SELL-4 (C_COLW == 3): B offset of the slice rows; C_NBLK = slices
C_NTAB = 45                            # dense codebook (V_TABLE, L_DENSE): table entries (padded to lut_len)
# graph programs: value slots are offsets into the work buffer in floats PER SAMPLE of the chunk
# (slot offset = C_XS * chunk); C_REP: rows per sample of a row-wise op (FC over (T, D), norms)
C_XS, C_YS, C_X2S, C_X3S, C_REP = 46, 47, 48, 49, 50
C_RL = 51   # 1: a dense 1 x 1 conv runs rows-as-lanes (:func:`_conv1x1_rl`), its weights in 64-row panels
C_FUSE = 52  # 1: this 1 x 1 conv and the depthwise conv in the next row run as one (:func:`_conv_expand_dw`);
             # 2: this depthwise conv is run by the op before it (skipped on its own)
OPW = 53
# an FC op with C_SCR == 1 runs decode + BLAS from this many rows, the register tiles below:
# HF BERT 4-bit, 1 thread, AVX-512 (Zen 4), whole model, tiles / BLAS: hidden 256 at 32 rows
# 1.6 / 2.6 ms, 128 rows 11.2 / 12.6 ms, 256 rows 13.4 / 13.5 ms; hidden 768 at 128 rows
# 20.9 / 25.3 ms, 512 rows 105.7 / 94.1 ms
GEMM_MIN_ROWS = 384
# pool: C_LAYOUT holds the pool type
P_MAX, P_AVG = 0, 1


@numba.njit(cache=True, fastmath=FM)
def _act(v, act, F, p):  # pragma: no cover - compiled
    if act == A_NONE:
        return v
    if act == A_RELU:
        return v if v > 0.0 else np.float32(0.0)
    if act == A_HARDTANH:
        lo = F[p]
        hi = F[p + 1]
        return lo if v < lo else (hi if v > hi else v)
    if act == A_LEAKY:
        return v if v >= 0.0 else v * F[p]
    if act == A_TANH:
        return np.float32(math.tanh(v))
    if act == A_SIGMOID:
        return np.float32(1.0 / (1.0 + math.exp(-v)))
    if act == A_ELU:
        return v if v > 0.0 else np.float32(F[p] * (math.exp(v) - 1.0))
    if act == A_GELU:
        return np.float32(0.5 * v * (1.0 + math.erf(v * 0.7071067811865476)))
    if act == A_SILU:
        return np.float32(v / (1.0 + math.exp(-v)))
    if act == A_HARDSWISH:
        r = v + np.float32(3.0)
        r = np.float32(0.0) if r < 0.0 else (np.float32(6.0) if r > 6.0 else r)
        return v * r / np.float32(6.0)
    if act == A_HARDSIGMOID:
        r = v + np.float32(3.0)
        r = np.float32(0.0) if r < 0.0 else (np.float32(6.0) if r > 6.0 else r)
        return r / np.float32(6.0)
    if act == A_GELU_TANH:
        return np.float32(0.5 * v * (1.0 + math.tanh(0.7978845608028654 * (v + 0.044715 * v * v * v))))
    if act == A_RSQRT:
        return np.float32(1.0 / math.sqrt(v)) if v >= 0.0 else np.float32(np.nan)
    if act == A_NEG:
        return -v
    if act == A_EXP:
        return np.float32(math.exp(v))
    if act == A_SQRT:
        return np.float32(math.sqrt(v)) if v >= 0.0 else np.float32(np.nan)
    if act == A_SQUARE:
        return v * v
    if act == A_RECIP:
        return np.float32(1.0) / v
    if act == A_POWI:
        k = int(F[p])
        r = v
        for _ in range(abs(k) - 1):
            r = r * v
        return r if k > 0 else np.float32(1.0) / r
    return v


# vectorizable transcendental functions: numba lowers math.exp / math.erf to scalar libm calls
# (no vector math library here), which keeps every loop that calls them scalar (~5-10 ns an
# element). These are straight-line float32 arithmetic plus one table look-up, so LLVM
# vectorizes the loops that call them (AVX2 and AVX-512 alike). ``error_model="numpy"``: no
# zero-division check (a branch that keeps any loop with a division scalar: 3 ns vs 0.5 ns an
# element measured for SiLU).
_EXP_LO = np.float32(-87.3)    # below: 0 (e^-87.3 ~ 1.2e-38, the smallest normal float)
_EXP_HI = np.float32(88.0)     # above: clamped (e^88 ~ 1.65e38)


@numba.njit(cache=True, fastmath=FMS, error_model="numpy")
def _fexp(x):  # pragma: no cover - compiled
    """``e^x`` in float32, relative error ~1e-7: ``x = n ln2 + r`` (|r| <= ln2 / 2, ln2 split in
    two parts so ``r`` is exact to float32), ``e^r`` by its degree-7 Taylor polynomial (remainder
    ``|r|^8 / 8! < 3e-9``), ``2^n`` from its bits (:func:`.simd.f32_bits`, ``n`` in -126 .. 127
    after the clamp); 0 below -87.3 (and for -inf)."""
    xc = min(max(x, _EXP_LO), _EXP_HI)
    nf = np.floor(xc * np.float32(1.4426950408889634) + np.float32(0.5))
    r = xc - nf * np.float32(0.693145751953125)
    r = r - nf * np.float32(1.4286068203094173e-06)
    p = np.float32(1.0 / 5040.0)
    p = p * r + np.float32(1.0 / 720.0)
    p = p * r + np.float32(1.0 / 120.0)
    p = p * r + np.float32(1.0 / 24.0)
    p = p * r + np.float32(1.0 / 6.0)
    p = p * r + np.float32(0.5)
    p = p * r + np.float32(1.0)
    p = p * r + np.float32(1.0)
    v = p * f32_bits((np.int32(nf) + np.int32(127)) << np.int32(23))
    return v if x >= _EXP_LO else np.float32(0.0)


@numba.njit(cache=True, fastmath=FMS, error_model="numpy")
def _fgelu(v):  # pragma: no cover - compiled
    """``GELU(v) = v / 2 * erfc(-v / sqrt 2)`` with ``erfc(z) = t exp(-z^2 + P(t))``, ``t = 1 / (1 +
    z / 2)`` for ``z >= 0`` (Numerical Recipes' Chebyshev fit, relative error < 1.2e-7 for every
    z) and ``erfc(-z) = 2 - erfc(z)``."""
    z = abs(v) * np.float32(0.7071067811865476)
    t = np.float32(1.0) / (np.float32(1.0) + np.float32(0.5) * z)
    q = np.float32(0.17087277)
    q = q * t + np.float32(-0.82215223)
    q = q * t + np.float32(1.48851587)
    q = q * t + np.float32(-1.13520398)
    q = q * t + np.float32(0.27886807)
    q = q * t + np.float32(-0.18628806)
    q = q * t + np.float32(0.09678418)
    q = q * t + np.float32(0.37409196)
    q = q * t + np.float32(1.00002368)
    q = q * t + np.float32(-1.26551223)
    ec = t * _fexp(q - z * z)
    h = np.float32(0.5) * v
    return h * (np.float32(2.0) - ec) if v >= 0.0 else h * ec


@numba.njit(cache=True, fastmath=FM, error_model="numpy")
def _act_vec(a, act, F, p):  # pragma: no cover - compiled
    """``a = act(a)`` in place over a contiguous float32 array: one loop per activation, so
    the common ones vectorize (GELU, SiLU, sigmoid, tanh-GELU, exp through :func:`_fexp`);
    the others call :func:`_act` per element."""
    n = a.shape[0]
    if act == A_NONE:
        return
    if act == A_RELU:
        for i in range(n):
            a[i] = max(a[i], np.float32(0.0))
    elif act == A_HARDTANH:
        lo = F[p]
        hi = F[p + 1]
        for i in range(n):
            a[i] = min(max(a[i], lo), hi)
    elif act == A_GELU:
        for i in range(n):
            a[i] = _fgelu(a[i])
    elif act == A_SILU:
        for i in range(n):
            a[i] = a[i] / (np.float32(1.0) + _fexp(-a[i]))
    elif act == A_SIGMOID:
        for i in range(n):
            a[i] = np.float32(1.0) / (np.float32(1.0) + _fexp(-a[i]))
    elif act == A_GELU_TANH:
        # 0.5 v (1 + tanh(u)) = v sigmoid(2u), u = sqrt(2/pi) (v + 0.044715 v^3)
        for i in range(n):
            v = a[i]
            u = np.float32(1.5957691216057308) * (v + np.float32(0.044715) * v * v * v)
            a[i] = v / (np.float32(1.0) + _fexp(-u))
    elif act == A_EXP:
        for i in range(n):
            a[i] = _fexp(a[i])
    elif act == A_HARDSWISH:
        for i in range(n):
            v = a[i]
            a[i] = v * min(max(v + np.float32(3.0), np.float32(0.0)), np.float32(6.0)) / np.float32(6.0)
    else:
        for i in range(n):
            a[i] = _act(a[i], act, F, p)


@numba.njit(cache=True, fastmath=FM)
def _finish(op, F, r, acc):  # pragma: no cover - compiled
    a = op[C_ALPHA]
    b = op[C_BETA]
    v = acc
    if a >= 0:
        v = v * F[a + r]
    if b >= 0:
        v = v + F[b + r]
    return _act(np.float32(v), op[C_ACT], F, op[C_ACTP])


@numba.njit(cache=True, fastmath=FM)
def _epi(op, F, y, n, r0, r1, ys, yr):  # pragma: no cover - compiled
    """In place over rows r0..r1-1 of n samples: ``y = act(alpha[r] * y + beta[r])``.
    One call per op (a call per element costs ~15 ns: more than the arithmetic)."""
    a0 = op[C_ALPHA]
    b0 = op[C_BETA]
    act = op[C_ACT]
    p = op[C_ACTP]
    for r in range(r0, r1):
        a = F[a0 + r] if a0 >= 0 else np.float32(1.0)
        b = F[b0 + r] if b0 >= 0 else np.float32(0.0)
        o = r * yr
        if ys == 1:
            # the row's n outputs are contiguous (conv planes, transposed FC): a slice loop
            # vectorizes (a strided one does not: ~0.4 ns per element)
            yo = y[o:o + n]
            if act == A_NONE:
                for s in range(n):
                    yo[s] = yo[s] * a + b
            elif act == A_RELU:
                for s in range(n):
                    v = yo[s] * a + b
                    yo[s] = v if v > 0.0 else np.float32(0.0)
            elif act == A_HARDTANH:
                # ReLU6 / clamp (MobileNets): min / max vectorize, a call of _act per element
                # does not (measured 6 ms of a 112 x 112 x 96 plane's 7.7 ms)
                lo = F[p]
                hi = F[p + 1]
                for s in range(n):
                    v = yo[s] * a + b
                    yo[s] = min(max(v, lo), hi)
            else:
                for s in range(n):
                    yo[s] = yo[s] * a + b
                _act_vec(yo, act, F, p)
        elif act == A_NONE:
            for s in range(n):
                y[o + s * ys] = y[o + s * ys] * a + b
        elif act == A_RELU:
            for s in range(n):
                v = y[o + s * ys] * a + b
                y[o + s * ys] = v if v > 0.0 else np.float32(0.0)
        else:
            for s in range(n):
                y[o + s * ys] = _act(y[o + s * ys] * a + b, act, F, p)



@numba.njit(cache=True, fastmath=FM, error_model="numpy")
def _epi_add(op, F, y, res, n, rows):  # pragma: no cover - compiled
    """The epilogue with a residual operand fused in (ResNets' ``act(bn(conv(x)) + shortcut)``):
    per output channel ``r < rows`` over its ``n`` contiguous outputs,
    ``y[r, s] = act(alpha[r] * y[r, s] + beta[r] + res[r, s])``, with ``res`` (rows, n) the other
    operand of the add (:meth:`.lower._Lowering._binary`). One pass over the plane instead of two
    (the epilogue, then the add + ReLU reading both planes again)."""
    a0 = op[C_ALPHA]
    b0 = op[C_BETA]
    act = op[C_ACT]
    p = op[C_ACTP]
    for r in range(rows):
        a = F[a0 + r] if a0 >= 0 else np.float32(1.0)
        b = F[b0 + r] if b0 >= 0 else np.float32(0.0)
        yo = y[r * n:(r + 1) * n]
        ro = res[r * n:(r + 1) * n]
        if act == A_RELU:
            for s in range(n):
                v = (yo[s] * a + b) + ro[s]
                yo[s] = v if v > 0.0 else np.float32(0.0)
        elif act == A_HARDTANH:
            lo = F[p]
            hi = F[p + 1]
            for s in range(n):
                v = (yo[s] * a + b) + ro[s]
                yo[s] = min(max(v, lo), hi)
        else:
            for s in range(n):
                yo[s] = (yo[s] * a + b) + ro[s]
            if act != A_NONE:
                _act_vec(yo, act, F, p)

# ------------------------------------------------------------------------------------------
# fully connected


@numba.njit(cache=True, fastmath=FM)
def _csr_rows_val(op, F, ptr, col, vals, x, y):  # pragma: no cover - compiled
    """Batch 1: ``y[r] = finish(sum_{j in row r} float(vals_j) x[col_j])``."""
    for r in range(ptr.shape[0] - 1):
        s0 = np.float32(0.0)
        s1 = np.float32(0.0)
        s2 = np.float32(0.0)
        s3 = np.float32(0.0)
        j = ptr[r]
        e = ptr[r + 1]
        while j + 4 <= e:
            s0 += np.float32(vals[j]) * x[col[j]]
            s1 += np.float32(vals[j + 1]) * x[col[j + 1]]
            s2 += np.float32(vals[j + 2]) * x[col[j + 2]]
            s3 += np.float32(vals[j + 3]) * x[col[j + 3]]
            j += 4
        while j < e:
            s0 += np.float32(vals[j]) * x[col[j]]
            j += 1
        y[r] = (s0 + s1) + (s2 + s3)


@numba.njit(cache=True, fastmath=FMS)
def _csr_rows_packed(ptr, pk, tab, x, y, nblk, b):  # pragma: no cover - compiled
    """Batch 1, packed CSR: ``y[r] = sum_blk sum_{p in (r, blk)} tab[p >> b] x[blk*2^b + (p & (2^b-1))]``.
    No reassociation (FMS): LLVM would vectorize the reduction with gathers, measured slower
    than four scalar partial sums on this CPU."""
    mask = np.uint32((1 << b) - 1)
    sh = np.uint32(b)
    rows = (ptr.shape[0] - 1) // nblk
    for r in range(rows):
        s0 = np.float32(0.0)
        s1 = np.float32(0.0)
        s2 = np.float32(0.0)
        s3 = np.float32(0.0)
        for blk in range(nblk):
            xb = x[blk << b:]
            j = ptr[r * nblk + blk]
            e = ptr[r * nblk + blk + 1]
            while j + 4 <= e:
                p0 = np.uint32(pk[j])
                p1 = np.uint32(pk[j + 1])
                p2 = np.uint32(pk[j + 2])
                p3 = np.uint32(pk[j + 3])
                s0 += tab[p0 >> sh] * xb[p0 & mask]
                s1 += tab[p1 >> sh] * xb[p1 & mask]
                s2 += tab[p2 >> sh] * xb[p2 & mask]
                s3 += tab[p3 >> sh] * xb[p3 & mask]
                j += 4
            while j < e:
                p0 = np.uint32(pk[j])
                s0 += tab[p0 >> sh] * xb[p0 & mask]
                j += 1
        y[r] = (s0 + s1) + (s2 + s3)


@numba.njit(cache=True, fastmath=FMS)
def _sell4_rows(sptr, data, srows, tab, x, y, b):  # pragma: no cover - compiled
    """Batch 1, SELL-4: the four rows of a slice advance together, one independent partial sum
    each (scalar, no reassociation: see :func:`_csr_rows_packed`)."""
    mask = np.uint32((1 << b) - 1)
    sh = np.uint32(b)
    four = np.uint64(4)
    for s in range(sptr.shape[0] - 1):
        s0 = np.float32(0.0)
        s1 = np.float32(0.0)
        s2 = np.float32(0.0)
        s3 = np.float32(0.0)
        for k in range(np.uint64(sptr[s]), np.uint64(sptr[s + 1])):
            o = k * four
            p0 = np.uint32(data[o])
            p1 = np.uint32(data[o + np.uint64(1)])
            p2 = np.uint32(data[o + np.uint64(2)])
            p3 = np.uint32(data[o + np.uint64(3)])
            s0 += tab[p0 >> sh] * x[p0 & mask]
            s1 += tab[p1 >> sh] * x[p1 & mask]
            s2 += tab[p2 >> sh] * x[p2 & mask]
            s3 += tab[p3 >> sh] * x[p3 & mask]
        r = srows[4 * s]
        y[r] = s0
        r = srows[4 * s + 1]
        if r >= 0:
            y[r] = s1
        r = srows[4 * s + 2]
        if r >= 0:
            y[r] = s2
        r = srows[4 * s + 3]
        if r >= 0:
            y[r] = s3


def _sell4_views(op, B):  # pragma: no cover - inlined into compiled code via the overload
    raise NotImplementedError


@overload(_sell4_views, inline="always")
def _sell4_views_impl(op, B):
    def impl(op, B):
        nsl = op[C_NBLK]
        sptr = B[op[C_PTR]:op[C_PTR] + 4 * (nsl + 1)].view(np.int32)
        data = B[op[C_COL]:op[C_COL] + 8 * np.int64(sptr[nsl])].view(np.uint16)
        srows = B[op[C_SROW]:op[C_SROW] + 16 * nsl].view(np.int32)
        return sptr, data, srows
    return impl


@numba.njit(cache=True, fastmath=FM)
def _dense_rows_tab(op, F, rows, cols, codes, tab, x, y):  # pragma: no cover - compiled
    """``y[r] = sum_j tab[codes[r, j]] * x[j]``: sixteen weights per step decoded in registers
    (:func:`_lut`: the table's <= 256 entries by permutes, no per-weight gather) into four
    16-lane FMA chains, then 16-weight steps and the scalar tail."""
    nt = op[C_NTAB]
    c64 = cols - cols % 64 if 0 < nt <= 256 else 0
    c16 = cols - cols % 16 if 0 < nt <= 256 else 0
    for r in range(rows):
        o = r * cols
        a0 = vzero()
        a1 = vzero()
        a2 = vzero()
        a3 = vzero()
        for j in range(0, c64, 64):
            a0 = vfmav(a0, _lut(nt, tab, codes, o + j), vload(x, j))
            a1 = vfmav(a1, _lut(nt, tab, codes, o + j + 16), vload(x, j + 16))
            a2 = vfmav(a2, _lut(nt, tab, codes, o + j + 32), vload(x, j + 32))
            a3 = vfmav(a3, _lut(nt, tab, codes, o + j + 48), vload(x, j + 48))
        for j in range(c64, c16, 16):
            a0 = vfmav(a0, _lut(nt, tab, codes, o + j), vload(x, j))
        s = vsum(vadd(vadd(a0, a1), vadd(a2, a3)))
        for j in range(c16, cols):
            s += tab[codes[o + j]] * x[j]
        y[r] = s


@numba.njit(cache=True, fastmath=FM, inline="always")
def _lut(nt, tab, codes, i):  # pragma: no cover - compiled
    """``tab[codes[i : i + 16]]`` from a table of ``nt <= 256`` entries padded to ``lut_len(nt)``."""
    c = vcodes(codes, i)
    if nt <= 32:
        return vlut32(tab, 0, c)
    if nt <= 64:
        return vlut64(tab, 0, c)
    if nt <= 128:
        return vlut128(tab, 0, c)
    return vlut256(tab, 0, c)


@numba.njit(cache=True, fastmath=FM)
def _dense_rows_val(op, F, rows, cols, vals, x, y):  # pragma: no cover - compiled
    for r in range(rows):
        s = np.float32(0.0)
        o = r * cols
        for j in range(cols):
            s += np.float32(vals[o + j]) * x[j]
        y[r] = s


@numba.njit(cache=True, fastmath=FM)
def _differ(x, v, idx):  # pragma: no cover - compiled
    """Positions of the inputs that differ from ``v`` into ``idx``; returns their count."""
    k = 0
    for c in range(x.shape[0]):
        idx[k] = c
        k += 1 if x[c] != v else 0
    return k


@numba.njit(cache=True, fastmath=FM)
def _csc_tab(cptr, row, codes, tab, x, x0, idx, k, y):  # pragma: no cover - compiled
    """Input-stationary, background skipped: ``y[row_j] += (x[c] - x0) * tab[code_j]`` over the
    stored weights of every input ``c`` that differs from the background value ``x0``."""
    for t in range(k):
        c = idx[t]
        xv = x[c] - x0
        for j in range(cptr[c], cptr[c + 1]):
            y[row[j]] += xv * tab[codes[j]]


@numba.njit(cache=True, fastmath=FM)
def _csc_val(cptr, row, vals, x, x0, idx, k, y):  # pragma: no cover - compiled
    for t in range(k):
        c = idx[t]
        xv = x[c] - x0
        for j in range(cptr[c], cptr[c + 1]):
            y[row[j]] += xv * np.float32(vals[j])


@numba.njit(cache=True, fastmath=FM)
def _fc1_csc(op, B, F, x, y, scr):  # pragma: no cover - compiled
    """Batch-1 FC from the CSC copy when at most half the inputs differ from a background value
    ``x0`` (0: post-ReLU zeros; else ``x[0]``: e.g. the normalized blank pixels of an image):
    ``W x = x0 * rowsum(W) + W (x - x0)`` costs ~ nnz * (fraction of non-background inputs)
    instead of nnz (EIE's activation sparsity). Returns False to use the CSR rows instead."""
    nin = op[C_NIN]
    idx = scr[:nin].view(np.int32)
    x0 = np.float32(0.0)
    k = _differ(x, x0, idx)
    if 2 * k > nin:
        x0 = x[0]
        k = _differ(x, x0, idx)
        if 2 * k > nin:
            return False
    nnz = op[C_NNZ]
    if x0 == 0.0:
        for r in range(y.shape[0]):
            y[r] = 0.0
    else:
        rs = F[op[C_CSUM]:op[C_CSUM] + y.shape[0]]
        for r in range(y.shape[0]):
            y[r] = x0 * rs[r]
    cptr = B[op[C_CPTR]:op[C_CPTR] + 4 * (nin + 1)].view(np.int32)
    row = B[op[C_CROW]:op[C_CROW] + 2 * nnz].view(np.uint16)
    v0 = op[C_CVAL]
    vf = op[C_VFMT]
    if vf == V_TABLE:
        _csc_tab(cptr, row, B[v0:v0 + nnz], F[op[C_TAB]:op[C_TAB] + 256], x, x0, idx, k, y)
    elif vf == V_Q8:
        _csc_val(cptr, row, B[v0:v0 + nnz].view(np.int8), x, x0, idx, k, y)
    else:
        _csc_val(cptr, row, F[v0:v0 + nnz], x, x0, idx, k, y)
    return True


@numba.njit(cache=True, fastmath=FM)
def _fc1(op, B, F, x, y):  # pragma: no cover - compiled
    """Batch-1 FC: take the typed views once, then one specialised row loop."""
    nnz = op[C_NNZ]
    vf = op[C_VFMT]
    rows = op[C_ROWS]
    cols = op[C_COLS]
    v0 = op[C_VAL]
    if vf == V_PQ:   # few rows: from the centroids (ncb, k, d)
        cb = F[op[C_TAB]:op[C_TAB] + op[C_NCB] * op[C_K] * op[C_D]]
        if op[C_CODEW] == 1:
            _pq1_direct(op, cb, B[v0:v0 + nnz], x, y)
        else:
            _pq1_direct(op, cb, B[v0:v0 + 2 * nnz].view(np.uint16), x, y)
        return
    if op[C_LAYOUT] == L_DENSE:
        if vf == V_F32:
            _dense_rows_val(op, F, rows, cols, F[v0:v0 + nnz], x, y)
        elif vf == V_Q8:
            _dense_rows_val(op, F, rows, cols, B[v0:v0 + nnz].view(np.int8), x, y)
        else:
            _dense_rows_tab(op, F, rows, cols, B[v0:v0 + nnz], F[op[C_TAB]:op[C_TAB] + 256], x, y)
        return
    if op[C_COLW] == 3:
        sptr, data, srows = _sell4_views(op, B)
        _sell4_rows(sptr, data, srows, F[op[C_TAB]:op[C_TAB] + 256], x, y, op[C_PKB])
        return
    if op[C_COLW] == 1:
        nblk = op[C_NBLK]
        ptr = B[op[C_PTR]:op[C_PTR] + 4 * (rows * nblk + 1)].view(np.int32)
        _csr_rows_packed(ptr, B[op[C_COL]:op[C_COL] + 2 * nnz].view(np.uint16), F[op[C_TAB]:op[C_TAB] + 256],
                         x, y, nblk, op[C_PKB])
        return
    ptr = B[op[C_PTR]:op[C_PTR] + 4 * (rows + 1)].view(np.int32)
    if op[C_COLW] == 2:
        col = B[op[C_COL]:op[C_COL] + 2 * nnz].view(np.uint16)
        if vf == V_F32:
            _csr_rows_val(op, F, ptr, col, F[v0:v0 + nnz], x, y)
        else:   # V_Q8 (codebook CSR weights are always packed)
            _csr_rows_val(op, F, ptr, col, B[v0:v0 + nnz].view(np.int8), x, y)
    else:
        col4 = B[op[C_COL]:op[C_COL] + 4 * nnz].view(np.int32)
        if vf == V_F32:
            _csr_rows_val(op, F, ptr, col4, F[v0:v0 + nnz], x, y)
        else:   # V_Q8 (codebook CSR weights are always packed)
            _csr_rows_val(op, F, ptr, col4, B[v0:v0 + nnz].view(np.int8), x, y)


# Weights-stationary products ``acc[0:n] = sum_j w_j * xT[base_j : base_j + n]`` over the stored
# weights of each row r0..r1-1, then :func:`_store`. Used by FC at batch n > 1 (xT = transposed
# inputs, base = col * n) and by CONV at any batch (xT = the zero-padded input with base = the
# tap's shift, or an im2col). Each row's weights are first decoded into (w_j, base_j) pairs,
# then :func:`_tiles` runs ONE generic register-tiled loop whatever the weight format.


@numba.njit(cache=True, fastmath=FM, inline="always")
def _store(acc, y, r, n, ys, yr, wrow, wval):  # pragma: no cover - compiled
    """``y[s*ys + r*yr] = acc[s]``; with ``wrow > 0`` only the first ``wval`` of every ``wrow``
    accumulators are outputs (the widened rows of the shifted-input convolution)."""
    # unsigned indices: no negative-index wraparound test per element, so the copies
    # vectorize (measured 1.6 vs 7-9.5 us for LeNet-5's first conv output, 20 x 24 x 24)
    if wrow == 0:
        if ys == 1:
            yo = np.uint64(r * yr)
            for s in range(np.uint64(n)):
                y[yo + s] = acc[s]
        else:
            for s in range(n):
                y[s * ys + r * yr] = acc[s]
    else:
        for oh in range(n // wrow):
            yo = np.uint64(r * yr + oh * wval)
            ao = np.uint64(oh * wrow)
            for ow in range(np.uint64(wval)):
                y[yo + ow] = acc[ao + ow]


@numba.njit(cache=True, fastmath=FM)
def _tiles(wb, bb, cnt, xT, n, acc):  # pragma: no cover - compiled
    """``acc[s] = sum_{j < cnt} wb[j] * xT[bb[j] + s]`` for s < n.

    Tiles of 128 outputs held in eight 16-lane registers (:mod:`.simd`) across all ``cnt``
    weights (one broadcast FMA per register per weight, no accumulator traffic); then one 64-,
    32- and 16-lane tile each with the weights split into 2 or 4 independent FMA chains (the
    FMA latency binds below 128 lanes); the last ``n % 16`` lanes as one more 16-lane tile. The
    register tiles are written out (not looped) so they stay registers. Reads ``xT[bb[j] :
    bb[j] + n + 15]`` and writes ``acc[: n + 15]`` (callers leave that slack).
    """
    n128 = n - n % 128
    n64 = n - n % 64
    for s0 in range(0, n128, 128):
        # eight registers: two FMA chains per FMA latency window, so long rows (conv planes)
        # run at the FMA throughput instead of its latency
        a0 = vzero()
        a1 = vzero()
        a2 = vzero()
        a3 = vzero()
        a4 = vzero()
        a5 = vzero()
        a6 = vzero()
        a7 = vzero()
        for j in range(cnt):
            w = wb[j]
            b = bb[j] + s0
            a0 = vfma(a0, w, vload(xT, b))
            a1 = vfma(a1, w, vload(xT, b + 16))
            a2 = vfma(a2, w, vload(xT, b + 32))
            a3 = vfma(a3, w, vload(xT, b + 48))
            a4 = vfma(a4, w, vload(xT, b + 64))
            a5 = vfma(a5, w, vload(xT, b + 80))
            a6 = vfma(a6, w, vload(xT, b + 96))
            a7 = vfma(a7, w, vload(xT, b + 112))
        vstore(acc, s0, a0)
        vstore(acc, s0 + 16, a1)
        vstore(acc, s0 + 32, a2)
        vstore(acc, s0 + 48, a3)
        vstore(acc, s0 + 64, a4)
        vstore(acc, s0 + 80, a5)
        vstore(acc, s0 + 96, a6)
        vstore(acc, s0 + 112, a7)
    # below 128 lanes the FMA latency (4 cycles) binds: each register tile is split over the
    # even / odd (or j mod 4) weights into independent chains, summed at the end
    for s0 in range(n128, n64, 64):
        a0 = vzero()
        a1 = vzero()
        a2 = vzero()
        a3 = vzero()
        b0 = vzero()
        b1 = vzero()
        b2 = vzero()
        b3 = vzero()
        j = 0
        while j + 2 <= cnt:
            w = wb[j]
            b = bb[j] + s0
            a0 = vfma(a0, w, vload(xT, b))
            a1 = vfma(a1, w, vload(xT, b + 16))
            a2 = vfma(a2, w, vload(xT, b + 32))
            a3 = vfma(a3, w, vload(xT, b + 48))
            w = wb[j + 1]
            b = bb[j + 1] + s0
            b0 = vfma(b0, w, vload(xT, b))
            b1 = vfma(b1, w, vload(xT, b + 16))
            b2 = vfma(b2, w, vload(xT, b + 32))
            b3 = vfma(b3, w, vload(xT, b + 48))
            j += 2
        if j < cnt:
            w = wb[j]
            b = bb[j] + s0
            a0 = vfma(a0, w, vload(xT, b))
            a1 = vfma(a1, w, vload(xT, b + 16))
            a2 = vfma(a2, w, vload(xT, b + 32))
            a3 = vfma(a3, w, vload(xT, b + 48))
        vstore(acc, s0, vadd(a0, b0))
        vstore(acc, s0 + 16, vadd(a1, b1))
        vstore(acc, s0 + 32, vadd(a2, b2))
        vstore(acc, s0 + 48, vadd(a3, b3))
    s0 = n64
    if n - s0 >= 32:
        a0 = vzero()
        a1 = vzero()
        b0 = vzero()
        b1 = vzero()
        j = 0
        while j + 2 <= cnt:
            b = bb[j] + s0
            a0 = vfma(a0, wb[j], vload(xT, b))
            a1 = vfma(a1, wb[j], vload(xT, b + 16))
            b = bb[j + 1] + s0
            b0 = vfma(b0, wb[j + 1], vload(xT, b))
            b1 = vfma(b1, wb[j + 1], vload(xT, b + 16))
            j += 2
        if j < cnt:
            b = bb[j] + s0
            a0 = vfma(a0, wb[j], vload(xT, b))
            a1 = vfma(a1, wb[j], vload(xT, b + 16))
        vstore(acc, s0, vadd(a0, b0))
        vstore(acc, s0 + 16, vadd(a1, b1))
        s0 += 32
    if n - s0 >= 16:
        a0 = vzero()
        a1 = vzero()
        a2 = vzero()
        a3 = vzero()
        j = 0
        while j + 4 <= cnt:
            a0 = vfma(a0, wb[j], vload(xT, bb[j] + s0))
            a1 = vfma(a1, wb[j + 1], vload(xT, bb[j + 1] + s0))
            a2 = vfma(a2, wb[j + 2], vload(xT, bb[j + 2] + s0))
            a3 = vfma(a3, wb[j + 3], vload(xT, bb[j + 3] + s0))
            j += 4
        while j < cnt:
            a0 = vfma(a0, wb[j], vload(xT, bb[j] + s0))
            j += 1
        vstore(acc, s0, vadd(vadd(a0, a1), vadd(a2, a3)))
        s0 += 16
    if s0 < n:
        # the last n - s0 < 16 outputs as one more 16-lane tile: it reads up to 15 floats past
        # xT[bb[j] + n] and writes up to 15 past acc[n] (every caller's acc has 16 spare floats;
        # conv phase planes end with 16 spare floats, batched FC inputs are padded to 16 lanes).
        # Was a scalar loop per weight: 2.5x the time of a stride-1 conv of the same MACs for
        # ResNet-20's stride-2 convs (72 outputs = 4 tiles + 8 scalar lanes)
        a0 = vzero()
        a1 = vzero()
        j = 0
        while j + 2 <= cnt:
            a0 = vfma(a0, wb[j], vload(xT, bb[j] + s0))
            a1 = vfma(a1, wb[j + 1], vload(xT, bb[j + 1] + s0))
            j += 2
        if j < cnt:
            a0 = vfma(a0, wb[j], vload(xT, bb[j] + s0))
        vstore(acc, s0, vadd(a0, a1))


@numba.njit(cache=True, fastmath=FM)
def _tiles4(w4, bb, cnt, xT, n, acc4, ld):  # pragma: no cover - compiled
    """Four rows sharing their columns (dense layouts): ``acc4[q*ld + s] = sum_j w4[q*cnt + j] *
    xT[bb[j] + s]`` for q < 4, s < n. Each loaded input vector feeds four FMAs (one per row), so a
    64-wide tile keeps 16 accumulators in registers and loads 4 vectors + 4 scalars per 16 FMAs
    (:func:`_tiles` loads one vector per FMA; measured ~20 GMAC/s, bound by the loads).

    The last ``n % 16`` outputs are one more 16-lane tile, as in :func:`_tiles`: it reads up to
    15 floats past ``xT[bb[j] + n]`` and writes up to 15 past ``acc4[q*ld + n]``, so the row
    stride ``ld`` is at least ``n`` rounded up to 16. (It was a scalar loop: ResNet-20's stride-2
    ``32 -> 64`` conv, 72 outputs = 64 + 8, took 139 us, 8.5 GMAC/s.)"""
    n64 = n - n % 64
    for s0 in range(0, n64, 64):
        a00 = vzero()
        a01 = vzero()
        a02 = vzero()
        a03 = vzero()
        a10 = vzero()
        a11 = vzero()
        a12 = vzero()
        a13 = vzero()
        a20 = vzero()
        a21 = vzero()
        a22 = vzero()
        a23 = vzero()
        a30 = vzero()
        a31 = vzero()
        a32 = vzero()
        a33 = vzero()
        for j in range(cnt):
            b = bb[j] + s0
            v0 = vload(xT, b + 0)
            v1 = vload(xT, b + 16)
            v2 = vload(xT, b + 32)
            v3 = vload(xT, b + 48)
            w = w4[j]
            a00 = vfma(a00, w, v0)
            a01 = vfma(a01, w, v1)
            a02 = vfma(a02, w, v2)
            a03 = vfma(a03, w, v3)
            w = w4[1 * cnt + j]
            a10 = vfma(a10, w, v0)
            a11 = vfma(a11, w, v1)
            a12 = vfma(a12, w, v2)
            a13 = vfma(a13, w, v3)
            w = w4[2 * cnt + j]
            a20 = vfma(a20, w, v0)
            a21 = vfma(a21, w, v1)
            a22 = vfma(a22, w, v2)
            a23 = vfma(a23, w, v3)
            w = w4[3 * cnt + j]
            a30 = vfma(a30, w, v0)
            a31 = vfma(a31, w, v1)
            a32 = vfma(a32, w, v2)
            a33 = vfma(a33, w, v3)
        vstore(acc4, s0 + 0, a00)
        vstore(acc4, s0 + 16, a01)
        vstore(acc4, s0 + 32, a02)
        vstore(acc4, s0 + 48, a03)
        vstore(acc4, 1 * ld + s0 + 0, a10)
        vstore(acc4, 1 * ld + s0 + 16, a11)
        vstore(acc4, 1 * ld + s0 + 32, a12)
        vstore(acc4, 1 * ld + s0 + 48, a13)
        vstore(acc4, 2 * ld + s0 + 0, a20)
        vstore(acc4, 2 * ld + s0 + 16, a21)
        vstore(acc4, 2 * ld + s0 + 32, a22)
        vstore(acc4, 2 * ld + s0 + 48, a23)
        vstore(acc4, 3 * ld + s0 + 0, a30)
        vstore(acc4, 3 * ld + s0 + 16, a31)
        vstore(acc4, 3 * ld + s0 + 32, a32)
        vstore(acc4, 3 * ld + s0 + 48, a33)
    # below 64 lanes: 32- and 16-lane tiles, the weights split over even / odd j into two
    # independent FMA chains per register (one chain per register left the FMA latency binding:
    # ~27 GMAC/s on HF MobileNetV2's 1x1 convs over 7 x 7 planes, 49 outputs)
    s0 = n64
    if n - s0 >= 32:
        a00 = vzero()
        a01 = vzero()
        a10 = vzero()
        a11 = vzero()
        a20 = vzero()
        a21 = vzero()
        a30 = vzero()
        a31 = vzero()
        for j in range(cnt):
            b = bb[j] + s0
            v0 = vload(xT, b)
            v1 = vload(xT, b + 16)
            w = w4[j]
            a00 = vfma(a00, w, v0)
            a01 = vfma(a01, w, v1)
            w = w4[1 * cnt + j]
            a10 = vfma(a10, w, v0)
            a11 = vfma(a11, w, v1)
            w = w4[2 * cnt + j]
            a20 = vfma(a20, w, v0)
            a21 = vfma(a21, w, v1)
            w = w4[3 * cnt + j]
            a30 = vfma(a30, w, v0)
            a31 = vfma(a31, w, v1)
        vstore(acc4, 0 * ld + s0, a00)
        vstore(acc4, 0 * ld + s0 + 16, a01)
        vstore(acc4, 1 * ld + s0, a10)
        vstore(acc4, 1 * ld + s0 + 16, a11)
        vstore(acc4, 2 * ld + s0, a20)
        vstore(acc4, 2 * ld + s0 + 16, a21)
        vstore(acc4, 3 * ld + s0, a30)
        vstore(acc4, 3 * ld + s0 + 16, a31)
        s0 += 32
    while s0 < n:
        a00 = vzero()
        a10 = vzero()
        a20 = vzero()
        a30 = vzero()
        b00 = vzero()
        b10 = vzero()
        b20 = vzero()
        b30 = vzero()
        j = 0
        while j + 2 <= cnt:
            v0 = vload(xT, bb[j] + s0)
            a00 = vfma(a00, w4[0 * cnt + j], v0)
            a10 = vfma(a10, w4[1 * cnt + j], v0)
            a20 = vfma(a20, w4[2 * cnt + j], v0)
            a30 = vfma(a30, w4[3 * cnt + j], v0)
            v1 = vload(xT, bb[j + 1] + s0)
            b00 = vfma(b00, w4[0 * cnt + j + 1], v1)
            b10 = vfma(b10, w4[1 * cnt + j + 1], v1)
            b20 = vfma(b20, w4[2 * cnt + j + 1], v1)
            b30 = vfma(b30, w4[3 * cnt + j + 1], v1)
            j += 2
        if j < cnt:
            v0 = vload(xT, bb[j] + s0)
            a00 = vfma(a00, w4[0 * cnt + j], v0)
            a10 = vfma(a10, w4[1 * cnt + j], v0)
            a20 = vfma(a20, w4[2 * cnt + j], v0)
            a30 = vfma(a30, w4[3 * cnt + j], v0)
        vstore(acc4, 0 * ld + s0, vadd(a00, b00))
        vstore(acc4, 1 * ld + s0, vadd(a10, b10))
        vstore(acc4, 2 * ld + s0, vadd(a20, b20))
        vstore(acc4, 3 * ld + s0, vadd(a30, b30))
        s0 += 16


def _dec(vals, tab, j):  # pragma: no cover - replaced by the overload below in compiled code
    """Stored weight j: ``tab[vals[j]]`` for uint8 codebook codes, else ``float(vals[j])``
    (int8 levels, float32 values; ``tab`` unused)."""
    return tab[vals[j]] if vals.dtype == np.uint8 else np.float32(vals[j])


@overload(_dec, inline="always", fastmath=FM)
def _dec_impl(vals, tab, j):
    if vals.dtype == numba.types.uint8:
        return lambda vals, tab, j: tab[vals[j]]
    return lambda vals, tab, j: np.float32(vals[j])


def _dec_row(vals, tab, nt, o, cols, wb, w0):  # pragma: no cover - replaced by the overload below
    """``wb[w0 + j] = _dec(vals, tab, o + j)`` for j < cols; uint8 codebook codes with a table
    of ``0 < nt <= 256`` entries decode sixteen per step by register look-ups (:func:`_lut`)."""
    for j in range(cols):
        wb[w0 + j] = _dec(vals, tab, o + j)


@overload(_dec_row, fastmath=FM)
def _dec_row_impl(vals, tab, nt, o, cols, wb, w0):
    if vals.dtype == numba.types.uint8:
        def impl(vals, tab, nt, o, cols, wb, w0):
            c16 = cols - cols % 16 if 0 < nt <= 256 else 0
            for j in range(0, c16, 16):
                vstore(wb, w0 + j, _lut(nt, tab, vals, o + j))
            for j in range(c16, cols):
                wb[w0 + j] = tab[vals[o + j]]
        return impl

    def impl_scalar(vals, tab, nt, o, cols, wb, w0):
        # int8 levels / float32: a convert loop over slices indexed from 0, which LLVM
        # vectorizes (indexed as vals[o + j] it ran scalar: ~1 ns per weight, 30 of the 89 us
        # of a 64 -> 64 3x3 int8-level conv on 8 x 8)
        src = vals[o:o + cols]
        dst = wb[w0:w0 + cols]
        for j in range(cols):
            dst[j] = np.float32(src[j])
    return impl_scalar


@numba.njit(cache=True, fastmath=FM)
def _ws_csr(ptr, col, vals, tab, xT, offs, y, n, r0, r1, ys, yr, wrow, wval):  # pragma: no cover
    cmax = 0
    for r in range(r0, r1):
        cmax = max(cmax, ptr[r + 1] - ptr[r])
    acc = np.empty(n + 16, np.float32)   # + 16: _tiles' last tile
    wb = np.empty(cmax, np.float32)
    bb = np.empty(cmax, np.int64)
    for r in range(r0, r1):
        j0 = np.uint64(ptr[r])
        cnt = np.uint64(ptr[r + 1]) - j0
        for t in range(cnt):
            wb[t] = _dec(vals, tab, j0 + t)
            bb[t] = offs[np.uint64(col[j0 + t])]
        _tiles(wb, bb, cnt, xT, n, acc)
        _store(acc, y, r, n, ys, yr, wrow, wval)


@numba.njit(cache=True, fastmath=FM)
def _ws_packed(ptr, pk, tab, nblk, b, xT, offs, y, n, r0, r1, ys, yr, wrow, wval):  # pragma: no cover
    """:func:`_ws_csr` for the packed layout (column ``blk*2^b + (p & (2^b-1))``, code ``p >> b``)."""
    cmax = 0
    for r in range(r0, r1):
        cmax = max(cmax, ptr[(r + 1) * nblk] - ptr[r * nblk])
    acc = np.empty(n + 16, np.float32)   # + 16: _tiles' last tile
    wb = np.empty(cmax, np.float32)
    bb = np.empty(cmax, np.int64)
    mask = np.uint64((1 << b) - 1)
    sh = np.uint64(b)
    for r in range(r0, r1):
        cnt = np.uint64(0)
        for blk in range(nblk):
            ob = offs[blk << b:]
            for j in range(np.uint64(ptr[r * nblk + blk]), np.uint64(ptr[r * nblk + blk + 1])):
                p = np.uint64(pk[j])   # unsigned: no wraparound tests in the decode
                wb[cnt] = tab[p >> sh]
                bb[cnt] = ob[p & mask]
                cnt += np.uint64(1)
        _tiles(wb, bb, cnt, xT, n, acc)
        _store(acc, y, r, n, ys, yr, wrow, wval)


@numba.njit(cache=True, fastmath=FM)
def _ws_sell4(sptr, data, srows, tab, b, xT, offs, y, n, r0, r1, ys, yr, wrow, wval):  # pragma: no cover
    """:func:`_ws_csr` for SELL-4: each slice lane decoded to its row's (w, base) pairs (the
    padding entries decode to w = 0); rows outside r0..r1-1 are skipped."""
    cmax = 0
    for s in range(sptr.shape[0] - 1):
        cmax = max(cmax, sptr[s + 1] - sptr[s])
    acc = np.empty(n + 16, np.float32)   # + 16: _tiles' last tile
    wb = np.empty(cmax, np.float32)
    bb = np.empty(cmax, np.int64)
    mask = np.uint64((1 << b) - 1)
    sh = np.uint64(b)
    for s in range(sptr.shape[0] - 1):
        k0 = np.uint64(sptr[s])
        cnt = np.uint64(sptr[s + 1]) - k0
        for q in range(4):
            r = srows[4 * s + q]
            if r < r0 or r >= r1:
                continue
            for t in range(cnt):
                p = np.uint64(data[(k0 + t) * np.uint64(4) + np.uint64(q)])
                wb[t] = tab[p >> sh]
                bb[t] = offs[p & mask]
            _tiles(wb, bb, cnt, xT, n, acc)
            _store(acc, y, r, n, ys, yr, wrow, wval)


@numba.njit(cache=True, fastmath=FM)
def _ws_dense(cols, vals, tab, nt, xT, offs, y, n, r0, r1, ys, yr, wrow, wval):  # pragma: no cover
    acc = np.empty(n + 16, np.float32)   # + 16: _tiles' last tile
    wb = np.empty(cols, np.float32)
    bb = np.empty(cols, np.int64)
    for j in range(cols):
        bb[j] = offs[j]
    w4 = np.empty(4 * cols, np.float32)
    ld = (n + 15) // 16 * 16   # _tiles4's row stride: its last 16-lane tile
    acc4 = np.empty(4 * ld, np.float32)
    # contiguous output rows of whole 16-lane tiles: the tiles store into y itself (no copy)
    direct = ys == 1 and wrow == 0 and n % 16 == 0 and yr == n
    r = r0
    while r + 4 <= r1:   # blocks of four rows: every input vector loaded once per four rows
        for q in range(4):   # codebook codes: register look-ups; int8 / float32: a convert loop
            _dec_row(vals, tab, nt, (r + q) * cols, cols, w4, q * cols)
        if direct:
            _tiles4(w4, bb, cols, xT, n, y[r * yr:], yr)
        else:
            _tiles4(w4, bb, cols, xT, n, acc4, ld)
            for q in range(4):
                _store(acc4[q * ld:q * ld + n], y, r + q, n, ys, yr, wrow, wval)
        r += 4
    for r in range(r, r1):
        _dec_row(vals, tab, nt, r * cols, cols, wb, 0)
        _tiles(wb, bb, cols, xT, n, acc)
        _store(acc, y, r, n, ys, yr, wrow, wval)


@numba.njit(cache=True, fastmath=FM)
def _ws_pq(op, codes, cb, xT, offs, y, n, r0, r1, ys, yr, wrow, wval):  # pragma: no cover - compiled
    """PQ weights decoded on the fly: ``w[r, m*d + t] = cb[m or 0, codes[m, r], t]``, four rows
    at a time into :func:`_tiles4` (each input vector loaded once per four rows, as dense)."""
    rows = op[C_ROWS]
    cols = op[C_COLS]
    M = op[C_M]
    k = op[C_K]
    d = op[C_D]
    shared = op[C_NCB] == 1
    acc = np.empty(n + 16, np.float32)   # + 16: _tiles' last tile
    wb = np.empty(4 * cols, np.float32)
    ld = (n + 15) // 16 * 16   # _tiles4's row stride: its last 16-lane tile
    acc4 = np.empty(4 * ld, np.float32)
    bb = np.empty(cols, np.int64)
    for j in range(cols):
        bb[j] = offs[j]
    r = r0
    while r < r1:
        q4 = 4 if r + 4 <= r1 else 1
        for q in range(q4):
            for m in range(M):
                c0 = ((0 if shared else m) * k + np.int64(codes[m * rows + r + q])) * d
                w0 = q * cols + m * d
                for t in range(min(d, cols - m * d)):
                    wb[w0 + t] = cb[c0 + t]
        if q4 == 4:
            _tiles4(wb, bb, cols, xT, n, acc4, ld)
            for q in range(4):
                _store(acc4[q * ld:q * ld + n], y, r + q, n, ys, yr, wrow, wval)
        else:
            _tiles(wb, bb, cols, xT, n, acc)
            _store(acc, y, r, n, ys, yr, wrow, wval)
        r += q4


@numba.njit(cache=True, fastmath=FM)
def _ws(op, B, F, xT, offs, y, n, r0, r1, ys, yr, wrow, wval):  # pragma: no cover - compiled
    """Dispatch on the weight format with typed views taken once."""
    nnz = op[C_NNZ]
    vf = op[C_VFMT]
    v0 = op[C_VAL]
    cols = op[C_COLS]
    tab = F[op[C_TAB]:op[C_TAB] + 256] if vf == V_TABLE else F[:0]
    if vf == V_PQ:
        cb = F[op[C_TAB]:op[C_TAB] + op[C_NCB] * op[C_K] * op[C_D]]
        if op[C_CODEW] == 1:
            _ws_pq(op, B[v0:v0 + nnz], cb, xT, offs, y, n, r0, r1, ys, yr, wrow, wval)
        else:
            _ws_pq(op, B[v0:v0 + 2 * nnz].view(np.uint16), cb, xT, offs, y, n, r0, r1, ys, yr, wrow, wval)
        return
    if op[C_LAYOUT] == L_DENSE:
        if vf == V_F32:
            _ws_dense(cols, F[v0:v0 + nnz], tab, op[C_NTAB], xT, offs, y, n, r0, r1, ys, yr, wrow, wval)
        elif vf == V_Q8:
            _ws_dense(cols, B[v0:v0 + nnz].view(np.int8), tab, op[C_NTAB], xT, offs, y, n, r0, r1, ys, yr, wrow, wval)
        else:
            _ws_dense(cols, B[v0:v0 + nnz], tab, op[C_NTAB], xT, offs, y, n, r0, r1, ys, yr, wrow, wval)
        return
    if op[C_COLW] == 3:
        sptr, data, srows = _sell4_views(op, B)
        _ws_sell4(sptr, data, srows, tab, op[C_PKB], xT, offs, y, n, r0, r1, ys, yr, wrow, wval)
        return
    if op[C_COLW] == 1:
        nblk = op[C_NBLK]
        ptr = B[op[C_PTR]:op[C_PTR] + 4 * (op[C_ROWS] * nblk + 1)].view(np.int32)
        _ws_packed(ptr, B[op[C_COL]:op[C_COL] + 2 * nnz].view(np.uint16), tab, nblk, op[C_PKB],
                   xT, offs, y, n, r0, r1, ys, yr, wrow, wval)
        return
    ptr = B[op[C_PTR]:op[C_PTR] + 4 * (op[C_ROWS] + 1)].view(np.int32)
    if op[C_COLW] == 4:
        col4 = B[op[C_COL]:op[C_COL] + 4 * nnz].view(np.int32)
        if vf == V_F32:
            _ws_csr(ptr, col4, F[v0:v0 + nnz], tab, xT, offs, y, n, r0, r1, ys, yr, wrow, wval)
        else:   # V_Q8 (codebook CSR weights are always packed)
            _ws_csr(ptr, col4, B[v0:v0 + nnz].view(np.int8), tab, xT, offs, y, n, r0, r1, ys, yr, wrow, wval)
    else:
        col = B[op[C_COL]:op[C_COL] + 2 * nnz].view(np.uint16)
        if vf == V_F32:
            _ws_csr(ptr, col, F[v0:v0 + nnz], tab, xT, offs, y, n, r0, r1, ys, yr, wrow, wval)
        else:   # V_Q8 (codebook CSR weights are always packed)
            _ws_csr(ptr, col, B[v0:v0 + nnz].view(np.int8), tab, xT, offs, y, n, r0, r1, ys, yr, wrow, wval)


@numba.njit(cache=True, fastmath=FM)
def _fc_batch(op, B, F, x, y, n, scr):  # pragma: no cover - compiled
    """Batch n > 1: transpose the inputs to ``xT (cols, m)`` once (m = n rounded up to 16,
    zero lanes), one weights-stationary pass into ``yT (rows, m)`` (each weight decoded once
    per n samples, contiguous stores), then ``y = yT[:, :n].T``. The transposes write the
    contiguous side innermost with unsigned indices (measured 9x faster than strided writes
    for 64 x 784)."""
    nin = op[C_NIN]
    nout = op[C_NOUT]
    m = -(-n // 16) * 16   # lanes padded to whole 16-lane registers (zero inputs): no scalar tail
    xT = scr[:nin * m]
    yT = scr[nin * m:(nin + nout) * m]
    _transpose(x, n, nin, nin, xT, m)
    mu = np.uint64(m)
    for j in range(np.uint64(nin)):
        for s in range(np.uint64(n), mu):
            xT[j * mu + s] = 0.0
    offs = (np.arange(nin) * m).astype(np.uint32)  # unsigned: no negative-index wraparound
    _ws(op, B, F, xT, offs, yT, m, 0, nout, 1, m, 0, 0)
    _epi(op, F, yT, m, 0, nout, 1, m)
    _transpose(yT, nout, n, m, y, nout)


@numba.njit(cache=True, fastmath=FM)
def _transpose(a, rows, cols, lda, b, ldb):  # pragma: no cover - compiled
    """``b[j * ldb + i] = a[i * lda + j]`` for i < rows, j < cols. Whole 16 x 16 blocks are
    transposed in registers (:func:`.simd.vtranspose16`: 16 row loads, four shuffle stages, 16 row
    stores; 0.10-0.26 ns per element against 0.38-0.50 for the scalar blocks, AVX-512 and AVX2
    builds alike, measured on 128 x 256 ... 576 x 196); the edges (rows past the last whole
    block, then columns) in scalar 16 x 16 blocks: every cache line of both sides is touched once
    per block. (Row by row, one side walks a column at a stride of ``lda`` floats: at 4 KiB
    strides the lines alias in L1, and the transposes of BERT's 128 x 1024 FC input took ~0.4 of
    its 1.05 ms.)"""
    la = np.uint64(lda)
    lb = np.uint64(ldb)
    R = np.uint64(rows)
    C = np.uint64(cols)
    sixteen = np.uint64(16)
    R16 = R // sixteen * sixteen
    C16 = C // sixteen * sixteen
    for i0 in range(np.uint64(0), R16, sixteen):
        for j0 in range(np.uint64(0), C16, sixteen):
            vtranspose16(a, i0 * la + j0, la, b, j0 * lb + i0, lb)
    _transpose_scalar(a, R16, R, np.uint64(0), C, la, b, lb)     # the last rows, every column
    _transpose_scalar(a, np.uint64(0), R16, C16, C, la, b, lb)   # the last columns of the others


@numba.njit(cache=True, fastmath=FM)
def _transpose_scalar(a, r0, r1, c0, c1, la, b, lb):  # pragma: no cover - compiled
    """:func:`_transpose` of rows ``r0:r1`` x columns ``c0:c1`` in scalar blocks (16 rows, or 8
    where source rows are a multiple of 4 KiB apart: 16 such rows evict each other from one L1
    set, BERT's 128 x 1024 FC input 149 -> ~50 us measured with the scalar blocks)."""
    bi = np.uint64(8) if la % np.uint64(1024) == np.uint64(0) else np.uint64(16)
    for i0 in range(r0, r1, bi):
        i1 = min(i0 + bi, r1)
        for j0 in range(c0, c1, np.uint64(16)):
            j1 = min(j0 + np.uint64(16), c1)
            for j in range(j0, j1):
                for i in range(i0, i1):
                    b[j * lb + i] = a[i * la + j]


@numba.njit(cache=True, fastmath=FM, error_model="numpy")
def _epi_rows(op, F, y, n, nout):  # pragma: no cover - compiled
    """The epilogue of ``n`` contiguous output rows ``y (n, nout)`` (a GEMM's output): per row
    ``y = act(alpha * y + beta)`` with alpha / beta vectors over the row, so every loop is
    contiguous and vectorizes (:func:`_epi` walks a column at stride ``nout`` per output: 0.9 ms
    of the 2.0 ms of a 128 x 256 -> 1024 FC + GELU measured)."""
    a0 = op[C_ALPHA]
    b0 = op[C_BETA]
    for s in range(n):
        yr = y[s * nout:(s + 1) * nout]
        if a0 >= 0:
            al = F[a0:a0 + nout]
            for j in range(nout):
                yr[j] *= al[j]
        if b0 >= 0:
            be = F[b0:b0 + nout]
            for j in range(nout):
                yr[j] += be[j]
        _act_vec(yr, op[C_ACT], F, op[C_ACTP])


@numba.njit(cache=True, fastmath=FM)
def _decode_dense(op, B, F, Wd, count):  # pragma: no cover - compiled
    """The first ``count`` weights of a DENSE-layout op, row-major, into ``Wd`` (float32)."""
    vf = op[C_VFMT]
    v0 = op[C_VAL]
    if vf == V_TABLE:
        # the table's own slice indexed by the uint8 codes (never negative: no wraparound
        # select per element), so LLVM emits vector gathers: 0.08 ms for 256 x 1024 codes,
        # 0.19 ms with F[t0 + code] (AVX-512 and AVX2 alike)
        tab = F[op[C_TAB]:op[C_TAB] + lut_len(op[C_NTAB])]
        codes = B[v0:v0 + count]
        for i in range(count):
            Wd[i] = tab[codes[i]]
    elif vf == V_Q8:
        q = B[v0:v0 + count].view(np.int8)
        for i in range(count):
            Wd[i] = np.float32(q[i])
    else:
        for i in range(count):
            Wd[i] = F[v0 + i]


@numba.njit(cache=True, fastmath=FM)
def _fc(op, B, F, x, y, n, scr):  # pragma: no cover - compiled
    nin = op[C_NIN]
    nout = op[C_NOUT]
    if op[C_SCR] == 1 and n >= GEMM_MIN_ROWS:
        # graph programs, a dense weight over many rows (a (T, D) sequence): decode the weight
        # from its codes into scratch (rows * cols look-ups per call), one BLAS GEMM, epilogue
        # (faster than the register tiles from ~384 rows: see GEMM_MIN_ROWS)
        Wd = scr[:nin * nout]
        _decode_dense(op, B, F, Wd, nin * nout)
        np.dot(x[:n * nin].reshape(n, nin), Wd.reshape(nout, nin).T, y[:n * nout].reshape(n, nout))
        _epi_rows(op, F, y, n, nout)
        return
    if n == 1:
        if op[C_CPTR] < 0 or not _fc1_csc(op, B, F, x[:nin], y[:nout], scr):
            _fc1(op, B, F, x[:nin], y[:nout])
        _epi(op, F, y, 1, 0, nout, 0, 1)
    elif op[C_LAYOUT] == L_DENSE and n < 16:
        # dense layers at a few samples: one long vectorized dot product per (sample, row)
        # (the register tiles of the weights-stationary pass need >= 16 samples; from there
        # the four-row tiles of :func:`_tiles4` run ~2.5x faster: 50 vs 19 GMAC/s measured on
        # the int8-level MLP at n = 64)
        for s in range(n):
            _fc1(op, B, F, x[s * nin:(s + 1) * nin], y[s * nout:(s + 1) * nout])
        _epi_rows(op, F, y, n, nout)
    else:
        _fc_batch(op, B, F, x, y, n, scr)


# ------------------------------------------------------------------------------------------
# product quantization (lookup tables)


@numba.njit(cache=True)
def lut_len(k):  # pragma: no cover - compiled (also called from Python by the plan)
    """Floats a k-entry table is padded to for the register look-ups (:func:`.simd.vlut32` ..
    ``vlut256``): k rounded up to 32, 64, 128 or 256; k itself above 256 (16-bit codes)."""
    if k > 256:
        return k
    kp = 32
    while kp < k:
        kp *= 2
    return kp


@numba.njit(cache=True, fastmath=FM)
def _pq_table(x, xb, tmax, cbT, cb, k, Tm):  # pragma: no cover - compiled
    """``Tm[j] = sum_{t < tmax} x[xb + t] * cbT[cb + t*k + j]`` for j < k: the k centroids of
    one sub-space in 64-lane register tiles (four independent FMA chains over the d inputs),
    then 16-lane tiles, then a scalar tail."""
    k64 = k - k % 64
    k16 = k - k % 16
    for c in range(0, k64, 64):
        a0 = vzero()
        a1 = vzero()
        a2 = vzero()
        a3 = vzero()
        for t in range(tmax):
            w = x[xb + t]
            b = cb + t * k + c
            a0 = vfma(a0, w, vload(cbT, b))
            a1 = vfma(a1, w, vload(cbT, b + 16))
            a2 = vfma(a2, w, vload(cbT, b + 32))
            a3 = vfma(a3, w, vload(cbT, b + 48))
        vstore(Tm, c, a0)
        vstore(Tm, c + 16, a1)
        vstore(Tm, c + 32, a2)
        vstore(Tm, c + 48, a3)
    for c in range(k64, k16, 16):
        a0 = vzero()
        for t in range(tmax):
            a0 = vfma(a0, x[xb + t], vload(cbT, cb + t * k + c))
        vstore(Tm, c, a0)
    for j in range(k16, k):
        v = np.float32(0.0)
        for t in range(tmax):
            v += x[xb + t] * cbT[cb + t * k + j]
        Tm[j] = v


@numba.njit(cache=True, fastmath=FM)
def _pq_look(Tm, cm, rows, k, acc):  # pragma: no cover - compiled
    """``acc[r] += Tm[cm[r]]`` for r < rows, 16 rows per step: the codes load as int32 lanes
    and :func:`.simd.vlut128` (etc.) selects their table entries in registers (AVX-512
    two-source permutes; Tm padded to the next power of two >= 32 entries)."""
    r16 = rows - rows % 16
    if k <= 32:
        for r0 in range(0, r16, 16):
            vstore(acc, r0, vadd(vload(acc, r0), vlut32(Tm, 0, vcodes(cm, r0))))
    elif k <= 64:
        for r0 in range(0, r16, 16):
            vstore(acc, r0, vadd(vload(acc, r0), vlut64(Tm, 0, vcodes(cm, r0))))
    elif k <= 128:
        for r0 in range(0, r16, 16):
            vstore(acc, r0, vadd(vload(acc, r0), vlut128(Tm, 0, vcodes(cm, r0))))
    else:
        for r0 in range(0, r16, 16):
            vstore(acc, r0, vadd(vload(acc, r0), vlut256(Tm, 0, vcodes(cm, r0))))
    for r in range(r16, rows):
        acc[r] += Tm[cm[r]]


@numba.njit(cache=True, fastmath=FM)
def _pq1_direct(op, cb, codes, x, y):  # pragma: no cover - compiled
    """One input from the centroids, no tables: ``y[r] = sum_m <cb[m or 0, codes[m, r]], x_m>``
    (rows x cols MACs, each a contiguous d-long dot; no k x cols table MACs). PQ layers with few
    rows run as FC ops through this (see :func:`pq_direct`)."""
    nin = op[C_NIN]
    rows = op[C_ROWS]
    M = op[C_M]
    k = op[C_K]
    d = op[C_D]
    shared = op[C_NCB] == 1
    mf = nin // d                 # whole sub-spaces; a last partial one (d does not divide nin) after
    for r in range(rows):
        a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = np.float32(0.0)
        if d == 8:                # the common sub-space: eight independent chains, no inner loop
            for m in range(mf):
                c0 = np.uint64(((0 if shared else m) * k + np.int64(codes[m * rows + r])) * 8)
                x0 = np.uint64(m * 8)
                a0 += x[x0] * cb[c0]
                a1 += x[x0 + 1] * cb[c0 + 1]
                a2 += x[x0 + 2] * cb[c0 + 2]
                a3 += x[x0 + 3] * cb[c0 + 3]
                a4 += x[x0 + 4] * cb[c0 + 4]
                a5 += x[x0 + 5] * cb[c0 + 5]
                a6 += x[x0 + 6] * cb[c0 + 6]
                a7 += x[x0 + 7] * cb[c0 + 7]
        else:
            for m in range(mf):
                c0 = np.uint64(((0 if shared else m) * k + np.int64(codes[m * rows + r])) * d)
                x0 = np.uint64(m * d)
                for t in range(np.uint64(d)):
                    a0 += x[x0 + t] * cb[c0 + t]
        for m in range(mf, M):
            c0 = ((0 if shared else m) * k + np.int64(codes[m * rows + r])) * d
            for t in range(nin - m * d):
                a1 += x[m * d + t] * cb[c0 + t]
        y[r] = ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))


def pq_direct(rows: int, k: int, d: int) -> bool:
    """Whether a PQ FC layer runs from its centroids (an FC op: :func:`_pq1_direct` at batch 1,
    the weights-stationary decode at batch N) rather than from lookup tables (a PQFC op).
    Per sub-space and input, tables cost ``k * d`` table MACs (~0.045 ns each) plus ``rows``
    look-ups (~0.13 ns), the direct dots ``rows * d`` MACs (~0.36 ns); rates fitted to the
    batch-1 profile of the LeNet PQ files (benchmarks/results/runtime.md). So direct iff
    ``rows * (36 d - 13) < 4.5 k d`` (d = 8, k = 128: fewer than 17 rows)."""
    return rows * (36 * d - 13) * 2 < 9 * k * d


@numba.njit(cache=True, fastmath=FM)
def _pq1(op, cbT, codes, x, Tm, acc):  # pragma: no cover - compiled
    """One input, per sub-space m: the table ``Tm[j] = <cb[m or 0, j], x_m> = sum_t
    x[m*d + t] * cbT[t, j]`` (:func:`_pq_table`), then ``acc[r] += Tm[codes[m, r]]``
    (:func:`_pq_look`: 16 rows per vector step for 8-bit codes; 16-bit codes scalar)."""
    nin = op[C_NIN]
    rows = op[C_NOUT]
    M = op[C_M]
    k = op[C_K]
    d = op[C_D]
    shared = op[C_NCB] == 1
    for r in range(rows):
        acc[r] = 0.0
    for m in range(M):
        cb = (0 if shared else m) * d * k
        _pq_table(x, m * d, min(d, nin - m * d), cbT, cb, k, Tm)
        cm = codes[m * rows:(m + 1) * rows]
        if op[C_CODEW] == 1:
            _pq_look(Tm, cm, rows, k, acc)
        else:
            for r in range(rows):
                acc[r] += Tm[cm[r]]


@numba.njit(cache=True, fastmath=FM)
def _pqn(op, cbT, codes, xT, mp, Tm, acc):  # pragma: no cover - compiled
    """mp inputs (a multiple of 16; ``xT (nin, mp)``), 16 samples at a time so the table and
    the accumulators stay in L1: per sub-space m the table ``Tm (k, 16)``,
    ``Tm[j] = sum_t cb[j, t] * xT[m*d + t, s0:s0+16]`` (four centroids per step: four FMA
    chains share each loaded input vector), then every row adds its code's table row,
    ``acc[r, s0:s0+16] += Tm[codes[m, r]]`` (one 16-lane add). ``acc (rows, mp)``."""
    nin = op[C_NIN]
    rows = op[C_NOUT]
    M = op[C_M]
    k = op[C_K]
    d = op[C_D]
    shared = op[C_NCB] == 1
    k4 = k - k % 4
    for i in range(rows * mp):
        acc[i] = 0.0
    for s0 in range(0, mp, 16):
        for m in range(M):
            cb = (0 if shared else m) * d * k
            tmax = min(d, nin - m * d)
            xb = m * d * mp + s0
            for j in range(0, k4, 4):
                a0 = vzero()
                a1 = vzero()
                a2 = vzero()
                a3 = vzero()
                for t in range(tmax):
                    xv = vload(xT, xb + t * mp)
                    c = cb + t * k + j
                    a0 = vfma(a0, cbT[c], xv)
                    a1 = vfma(a1, cbT[c + 1], xv)
                    a2 = vfma(a2, cbT[c + 2], xv)
                    a3 = vfma(a3, cbT[c + 3], xv)
                vstore(Tm, j * 16, a0)
                vstore(Tm, j * 16 + 16, a1)
                vstore(Tm, j * 16 + 32, a2)
                vstore(Tm, j * 16 + 48, a3)
            for j in range(k4, k):
                a0 = vzero()
                for t in range(tmax):
                    a0 = vfma(a0, cbT[cb + t * k + j], vload(xT, xb + t * mp))
                vstore(Tm, j * 16, a0)
            cm = codes[m * rows:(m + 1) * rows]
            for r in range(rows):
                o = r * mp + s0
                vstore(acc, o, vadd(vload(acc, o), vload(Tm, np.int64(cm[r]) * 16)))


@numba.njit(cache=True, fastmath=FM)
def _pqfc(op, B, F, x, y, n, scr):  # pragma: no cover - compiled
    nin = op[C_NIN]
    rows = op[C_NOUT]
    M = op[C_M]
    k = op[C_K]
    ncb = op[C_NCB]
    cbT = F[op[C_TAB]:op[C_TAB] + ncb * op[C_D] * k]          # (ncb, d, k): transposed codebooks
    if n == 1:
        kp = lut_len(k)
        Tm = scr[:kp]
        acc = scr[kp:kp + rows]
        if op[C_CODEW] == 1:
            _pq1(op, cbT, B[op[C_VAL]:op[C_VAL] + M * rows], x[:nin], Tm, acc)
        else:
            _pq1(op, cbT, B[op[C_VAL]:op[C_VAL] + 2 * M * rows].view(np.uint16), x[:nin], Tm, acc)
        for r in range(rows):
            y[r] = acc[r]
    else:
        mp = -(-n // 16) * 16   # samples padded to whole 16-lane registers (zero inputs)
        xT = scr[:nin * mp]
        Tm = scr[nin * mp:nin * mp + k * 16]
        acc = scr[nin * mp + k * 16:nin * mp + k * 16 + rows * mp]
        mu = np.uint64(mp)
        for j in range(np.uint64(nin)):
            for s in range(np.uint64(n)):
                xT[j * mu + s] = x[s * np.uint64(nin) + j]
            for s in range(np.uint64(n), mu):
                xT[j * mu + s] = 0.0
        if op[C_CODEW] == 1:
            _pqn(op, cbT, B[op[C_VAL]:op[C_VAL] + M * rows], xT, mp, Tm, acc)
        else:
            _pqn(op, cbT, B[op[C_VAL]:op[C_VAL] + 2 * M * rows].view(np.uint16), xT, mp, Tm, acc)
        _epi(op, F, acc, mp, 0, rows, 1, mp)
        for s in range(np.uint64(n)):
            for r in range(np.uint64(rows)):
                y[s * np.uint64(rows) + r] = acc[r * mu + s]
        return
    _epi(op, F, y, 1, 0, rows, rows, 1)


# ------------------------------------------------------------------------------------------
# convolution, pooling, element-wise


@numba.njit(cache=True)
def phase_dims(H, W, Ho, Wo, kh, kw, sh, sw, dh, dw, ph, pw):  # pragma: no cover - compiled
    """``(Hq, Wq, plane)`` of a convolution's phase planes (also called from Python for the
    scratch size). The zero-padded input ``Pp`` (``ph`` / ``pw`` zeros before the rows /
    columns; zeros after, as far as the outputs read: ``Hp = max(H + ph, (Ho-1) sh + (kh-1) dh
    + 1)``, so asymmetric padding works) is split into ``sh * sw`` phase planes
    ``Q[a, b][r, c] = Pp[r sh + a, c sw + b]`` of ``Hq x Wq`` (+ one zero row of margin):
    ``plane = (Hq + 1) Wq`` floats each. Tap ``(i, j)`` of output ``(oh, ow)`` reads
    ``Q[(i dh) % sh, (j dw) % sw][oh + (i dh) // sh, ow + (j dw) // sw]``: for every tap, the
    outputs computed over rows of width ``Wq`` read ONE contiguous run of a phase plane (no
    im2col copy, any stride; stride 1 is the padded plane itself)."""
    Hp = max(H + ph, (Ho - 1) * sh + (kh - 1) * dh + 1)
    Wp = max(W + pw, (Wo - 1) * sw + (kw - 1) * dw + 1)
    Hq = -(-Hp // sh)
    Wq = -(-Wp // sw)
    return Hq, Wq, (Hq + 1) * Wq


def phase_floats(H, W, Ho, Wo, kh, kw, sh, sw, dh, dw, ph, pw) -> tuple[int, int]:
    """(floats of one channel's phase planes, floats of the ``Ho x Wq`` output rows), at least
    those of the aligned layout of :func:`shift_dims` where it applies (the scratch size of
    every caller: :func:`_conv` takes that layout, :func:`_conv_dw` the phase planes)."""
    Hq, Wq, plane = phase_dims(H, W, Ho, Wo, kh, kw, sh, sw, dh, dw, ph, pw)
    Wa, Hs, aplane = shift_dims(H, W, Ho, Wo, kh, kw, sh, sw, dh, dw, ph, pw)
    return int(max(sh * sw * plane, sh * kw * aplane)), int(max(Ho * Wq, Ho * Wa))


@numba.njit(cache=True)
def shift_dims(H, W, Ho, Wo, kh, kw, sh, sw, dh, dw, ph, pw):  # pragma: no cover - compiled
    """``(Wa, Hs, plane)`` of the ALIGNED layout of an undilated ``kh x kw`` convolution
    (``kw > 1``, any stride), or ``(0, 0, 0)`` where it does not apply: per input channel,
    ``sh * kw`` copies of the zero-padded input ``Pp``, copy ``(a, j)`` holding ``C[r, q] =
    Pp[r sh + a, q sw + j]`` for ``r < Hs = Ho + (kh - 1) // sh``, ``q < Wo``, in rows of ``Wa``
    floats (``Wo`` rounded up to 16; ``plane >= Hs Wa`` floats, a multiple of 16). Tap ``(i, j)``
    then reads copy ``(i % sh, j)`` from row ``i // sh``: a run that starts on a 16-float
    boundary, so the vector loads of the weights-stationary tiles are aligned (in the phase
    planes of :func:`phase_dims` the tap's column shift makes most 64-byte loads split two
    cache lines: measured 17.7 vs 26.0 GMAC/s for one sparse row over 80 outputs, unaligned
    vs aligned). Used where it computes no more outputs per row than the phase planes
    (``Wa <= Wq``); where rows of 16 would, rows of 8 (ResNet-20's 8 x 8 planes: 64 outputs per
    channel instead of 80 (stride 1) or 72 (stride 2), the taps of even rows aligned)."""
    if dh != 1 or dw != 1 or kw < 2:
        return 0, 0, 0
    Hq, Wq, plane = phase_dims(H, W, Ho, Wo, kh, kw, sh, sw, dh, dw, ph, pw)
    Wa = (Wo + 15) // 16 * 16
    if Wa > Wq:
        Wa = (Wo + 7) // 8 * 8     # half-register rows
        if Wa > Wq:
            return 0, 0, 0
    Hs = Ho + (kh - 1) // sh
    return Wa, Hs, (Hs * Wa + 15) // 16 * 16


@numba.njit(cache=True)
def _shift_fill(xs, xc, H, W, P, base, Hs, Wa, plane, kw, sh, sw, ph, pw, Wo):  # pragma: no cover - compiled
    """One channel into its ``sh * kw`` copies (:func:`shift_dims`): ``P[base + (a kw + j) plane +
    r Wa + q] = x[r sh + a - ph, q sw + j - pw]`` where that is inside the input; everything else
    stays the zero the caller wrote once.

    Stride 1 with rows as wide as the input (``Wa == W``: every "same" conv of ResNet-20): copy
    ``j`` is the channel plane moved by ``ph W - (j - pw)`` floats, so it is ONE contiguous copy
    (vectorized), after which the ``|j - pw|`` columns that wrapped into the neighbouring row are
    zeroed again (row by row, the copies of 8-32 floats ran scalar: ~5 us of a 64-channel
    8 x 8 conv's 30 us)."""
    if sh == 1 and sw == 1 and Wa == W:
        Hw = min(H, Hs - ph)
        for j in range(kw):
            t = j - pw                               # copy j's column q reads input column q + t
            cb = base + j * plane
            d0 = cb + ph * W - t                     # P[d0 + k] = x[xc + k]
            k0 = max(0, t - ph * W)                  # nothing before the copy
            k1 = min(Hw * W, Hs * Wa - ph * W + t)   # nor past it
            if k1 > k0:
                du = np.uint64(d0 + k0)
                xu = np.uint64(xc + k0)
                for k in range(np.uint64(k1 - k0)):
                    P[du + k] = xs[xu + k]
            if t > 0:       # input columns < t wrapped to the previous row's last t columns
                for r in range(max(0, ph - 1), min(Hs, ph + Hw - 1)):
                    for q in range(W - t, W):
                        P[cb + r * Wa + q] = 0.0
            elif t < 0:     # columns >= W + t wrapped to the next row's first -t columns
                for r in range(ph + 1, min(Hs, ph + Hw + 1)):
                    for q in range(-t):
                        P[cb + r * Wa + q] = 0.0
        return
    for a in range(sh):
        for j in range(kw):
            # output columns whose input column q sw + j - pw is in [0, W)
            q0 = max(0, -((j - pw) // sw))
            q1 = min(Wo, (W - 1 - j + pw) // sw + 1)
            if q1 <= q0:
                continue
            cb = base + (a * kw + j) * plane
            for r in range(Hs):
                h = r * sh + a - ph
                if h < 0:
                    continue
                if h >= H:
                    break
                o = np.uint64(cb + r * Wa + q0)
                xu = np.uint64(xc + h * W + q0 * sw + j - pw)
                if sw == 1:
                    for q in range(np.uint64(q1 - q0)):
                        P[o + q] = xs[xu + q]
                else:
                    su = np.uint64(sw)
                    for q in range(np.uint64(q1 - q0)):
                        P[o + q] = xs[xu + q * su]


@numba.njit(cache=True, fastmath=FM)
def _phase_fill(xs, xc, H, W, P, base, sh, sw, ph, pw, Wq, plane, al=np.float32(1.0), be=np.float32(0.0),
                lo=-np.float32(np.inf), hi=np.float32(np.inf)):  # pragma: no cover - compiled
    """The channel plane ``xs[xc:xc + H*W]`` into its phase planes at ``P[base:]`` (interior
    positions only: the zero borders written once per call stay zero), each value as
    ``min(max(al * v + be, lo), hi)`` (the identity by default: the epilogue of a fused 1 x 1
    conv whose output this is, :func:`_conv_expand_dw`)."""
    for h in range(H):
        r = h + ph
        rowb = base + (r % sh) * sw * plane + (r // sh) * Wq
        xr = xc + h * W
        if sw == 1:
            o = np.uint64(rowb + pw)
            xu = np.uint64(xr)
            for w in range(np.uint64(W)):   # unsigned: a slice per row costs ~30 ns
                P[o + w] = min(max(xs[xu + w] * al + be, lo), hi)
        elif sw == 2:
            # input column w = 2k + e goes to phase (e + pw) % 2, column (w + pw) // 2: both
            # phases in one loop of constant stride 2, which LLVM vectorizes as interleaved loads
            # (one phase at a time at a run-time stride stayed scalar: HF MobileNetV2's 96 x 112 x
            # 112 stride-2 depthwise input, 427 -> 159 us measured)
            xu = np.uint64(xr)
            o0 = np.uint64(rowb + (pw % 2) * plane + pw // 2)
            o1 = np.uint64(rowb + ((pw + 1) % 2) * plane + (pw + 1) // 2)
            two = np.uint64(2)
            for k in range(np.uint64(W // 2)):
                P[o0 + k] = min(max(xs[xu + two * k] * al + be, lo), hi)
                P[o1 + k] = min(max(xs[xu + two * k + np.uint64(1)] * al + be, lo), hi)
            if W % 2 == 1:
                k = np.uint64(W // 2)
                P[o0 + k] = min(max(xs[xu + two * k] * al + be, lo), hi)
        else:
            for b in range(sw):
                # phase column q holds input column w = q sw + b - pw, for 0 <= w < W
                q0 = max(0, -((b - pw) // sw))
                q1 = (W - 1 - b + pw) // sw + 1
                if q1 <= q0:
                    continue
                o = np.uint64(rowb + b * plane + q0)
                xu = np.uint64(xr + q0 * sw + b - pw)
                su = np.uint64(sw)
                for q in range(np.uint64(q1 - q0)):   # unsigned: no floor-division / wraparound per element
                    P[o + q] = min(max(xs[xu + q * su] * al + be, lo), hi)


@numba.njit(cache=True)
def _tap_offset(i, j, sh, sw, dh, dw, Wq, plane):  # pragma: no cover - compiled
    """Offset in a channel's phase planes of the run tap ``(i, j)`` reads (see :func:`phase_dims`)."""
    return ((i * dh) % sh * sw + (j * dw) % sw) * plane + ((i * dh) // sh) * Wq + (j * dw) // sw


# depthwise convs with at most this many outputs per channel run channels-last. Measured on HF
# MobileNetV2 (1 thread, AVX-512, op by op against the per-channel path): 7 x 7 outputs 164 -> 57 us
# (960 channels), 14 x 14 outputs 113 -> 78 us (384) and 169 -> 129 us (576); 28 x 28 outputs
# 138 -> 174 us (192), slower: there the per-channel planes are large enough for the phase-plane
# tiles and the two transposes cost more than they save
DW_CL_MAX_OUT = 196
DW_CL_MIN_C = 16


@numba.njit(cache=True)
def dw_channels_last(C, Ho, Wo):  # pragma: no cover - compiled (also called from Python by the lowering)
    """Whether a depthwise conv runs channels-last (:func:`_conv_dw_cl`): small planes (MobileNets'
    14 x 14 and 7 x 7 stages) with channels to fill the vectors."""
    return Ho * Wo <= DW_CL_MAX_OUT and C >= DW_CL_MIN_C


def dw_cl_floats(C: int, H: int, W: int, Ho: int, Wo: int, kh: int, kw: int, sh: int = 1, sw: int = 1,
                 dh: int = 1, dw: int = 1, ph: int = 0, pw: int = 0) -> int:
    """Scratch floats of :func:`_conv_dw_cl`: the input channels-last, its zero-padded copy
    (:func:`dw_cl_pad`), the output channels-last, the decoded weights and their transpose."""
    Hp, Wp = dw_cl_pad(H, W, Ho, Wo, kh, kw, sh, sw, dh, dw, ph, pw)
    return C * (H * W + Hp * Wp + Ho * Wo + 2 * kh * kw) + 64


@numba.njit(cache=True)
def dw_cl_pad(H, W, Ho, Wo, kh, kw, sh, sw, dh, dw, ph, pw):  # pragma: no cover - compiled (also from Python)
    """``(Hp, Wp)``: the zero-padded input plane every tap of every output reads inside
    (``ph`` / ``pw`` zeros before, as many after as the outputs need)."""
    return (max(H + ph, (Ho - 1) * sh + (kh - 1) * dh + 1), max(W + pw, (Wo - 1) * sw + (kw - 1) * dw + 1))


@numba.njit(cache=True, fastmath=FM, error_model="numpy")
def _conv_dw_cl(op, B, F, x, y, n, scr):  # pragma: no cover - compiled
    """Depthwise convolution channels-last, for small planes (:func:`dw_channels_last`): per sample
    the input ``(C, H W)`` is transposed to ``XT (H W, C)`` and copied into the interior of a
    zero-padded ``XP (Hp Wp, C)`` (:func:`dw_cl_pad`), so every output reads all its taps; then
    ``Y[p, :] = sum_(i, j) w[:, i, j] * XP[q(p, i, j), :]``, 16 channels at a time: for 3 x 3
    taps the nine weight vectors stay in registers over all the positions (one load and one FMA
    per tap and position, two FMA chains), other tap counts load them per position;
    ``alpha * Y + beta`` and a ReLU / ReLU6 / hardtanh clamp in the registers (any other
    activation: one pass over ``Y``); the last ``C % 16`` channels scalar. ``Y (Ho Wo, C)`` is
    transposed into ``y (C, Ho Wo)``. (Per position with the taps inside the input listed and
    the weights loaded per tap, the loads bound it: 9 GMAC/s on HF MobileNetV2's 14 x 14 stage;
    on 7 x 7 planes the per-channel phase-plane path paid ~160 ns of fill, tile set-up and
    epilogue per channel for 441 MACs, 2.7 GMAC/s.)"""
    nin = op[C_NIN]
    nout = op[C_NOUT]
    C = op[C_CIN]
    H = op[C_H]
    W = op[C_W]
    Ho = op[C_HO]
    Wo = op[C_WO]
    kh = op[C_KH]
    kw = op[C_KW]
    sh = op[C_SH]
    sw = op[C_SW]
    dh = op[C_DH]
    dw = op[C_DW]
    ph = op[C_PH]
    pw = op[C_PW]
    Hp, Wp = dw_cl_pad(H, W, Ho, Wo, kh, kw, sh, sw, dh, dw, ph, pw)
    T = kh * kw
    HW = H * W
    L = Ho * Wo
    o = 0
    XT = scr[o:o + HW * C]
    o += HW * C
    XP = scr[o:o + Hp * Wp * C]
    o += Hp * Wp * C
    Y = scr[o:o + L * C]
    o += L * C
    WT = scr[o:o + T * C]
    o += T * C
    Wd = scr[o:o + T * C]
    _decode_dense(op, B, F, Wd, C * T)
    for c in range(C):
        for t in range(T):
            WT[t * C + c] = Wd[c * T + t]
    for r in range(Hp):   # the zero border only (the interior is overwritten per sample)
        row = XP[r * Wp * C:(r + 1) * Wp * C]
        if r < ph or r >= ph + H:
            row[:] = 0.0
        else:
            row[:pw * C] = 0.0
            row[(pw + W) * C:] = 0.0
    a0 = op[C_ALPHA]
    b0 = op[C_BETA]
    al = np.ones(C + 16, np.float32)    # alpha / beta per channel (1 / 0 where the op has none)
    be = np.zeros(C + 16, np.float32)
    if a0 >= 0:
        al[:C] = F[a0:a0 + C]
    if b0 >= 0:
        be[:C] = F[b0:b0 + C]
    act = op[C_ACT]
    p = op[C_ACTP]
    # ReLU / ReLU6 / hardtanh are applied in the registers; any other activation by one pass
    # over the output afterwards
    clamp = act == A_NONE or act == A_RELU or act == A_HARDTANH
    lo = F[p] if act == A_HARDTANH else (np.float32(0.0) if act == A_RELU else -np.float32(np.inf))
    hi = F[p + 1] if act == A_HARDTANH else np.float32(np.inf)
    C16 = C // 16 * 16
    to = np.empty(T, np.int64)   # tap offsets in XP (floats) from an output's top-left input
    for i in range(kh):
        for j in range(kw):
            to[i * kw + j] = (i * dh * Wp + j * dw) * C
    Cu = np.uint64(C)
    for s in range(n):
        _transpose(x[s * nin:], C, HW, HW, XT, C)
        for h in range(H):
            src = XT[h * W * C:(h + 1) * W * C]
            dst = XP[((h + ph) * Wp + pw) * C:((h + ph) * Wp + pw + W) * C]
            for k in range(np.uint64(W) * Cu):
                dst[k] = src[k]
        if T == 9:
            t0, t1, t2, t3, t4, t5, t6, t7, t8 = to[0], to[1], to[2], to[3], to[4], to[5], to[6], to[7], to[8]
            for c0 in range(0, C16, 16):
                w0 = vload(WT, c0)
                w1 = vload(WT, C + c0)
                w2 = vload(WT, 2 * C + c0)
                w3 = vload(WT, 3 * C + c0)
                w4 = vload(WT, 4 * C + c0)
                w5 = vload(WT, 5 * C + c0)
                w6 = vload(WT, 6 * C + c0)
                w7 = vload(WT, 7 * C + c0)
                w8 = vload(WT, 8 * C + c0)
                av = vload(al, c0)
                bv = vload(be, c0)
                for oh in range(Ho):
                    for ow in range(Wo):
                        q = (oh * sh * Wp + ow * sw) * C + c0
                        u = vmul(w0, vload(XP, q + t0))
                        v = vmul(w1, vload(XP, q + t1))
                        u = vfmav(u, w2, vload(XP, q + t2))
                        v = vfmav(v, w3, vload(XP, q + t3))
                        u = vfmav(u, w4, vload(XP, q + t4))
                        v = vfmav(v, w5, vload(XP, q + t5))
                        u = vfmav(u, w6, vload(XP, q + t6))
                        v = vfmav(v, w7, vload(XP, q + t7))
                        u = vfmav(u, w8, vload(XP, q + t8))
                        vstore(Y, (oh * Wo + ow) * C + c0, vclamp(vfmav(bv, vadd(u, v), av), lo, hi))
        else:
            for c0 in range(0, C16, 16):
                av = vload(al, c0)
                bv = vload(be, c0)
                for oh in range(Ho):
                    for ow in range(Wo):
                        q = (oh * sh * Wp + ow * sw) * C + c0
                        u = vzero()
                        for t in range(T):
                            u = vfmav(u, vload(WT, t * C + c0), vload(XP, q + to[t]))
                        vstore(Y, (oh * Wo + ow) * C + c0, vclamp(vfmav(bv, u, av), lo, hi))
        for c in range(C16, C):
            for oh in range(Ho):
                for ow in range(Wo):
                    q = (oh * sh * Wp + ow * sw) * C + c
                    v = np.float32(0.0)
                    for t in range(T):
                        v += WT[t * C + c] * XP[q + to[t]]
                    v = v * al[c] + be[c]
                    Y[(oh * Wo + ow) * C + c] = min(max(v, lo), hi)
        if not clamp:
            _act_vec(Y, act, F, p)
        _transpose(Y, L, C, C, y[s * nout:], L)


@numba.njit(cache=True, fastmath=FM, error_model="numpy")
def _conv_dw(op, B, F, x, y, n, scr, res):  # pragma: no cover - compiled
    """Depthwise convolution (groups == C_in == C_out, dense weight decoded per call: C * kh * kw
    look-ups). Per channel the plane goes into its phase planes (:func:`phase_dims`), then
    ``Yw[k] = sum_t w[c, t] Q[offset_t + k]`` over the ``Ho x Wq`` outputs by :func:`_tiles`
    (the taps as one row of weights; any stride, padding possibly asymmetric), and the ``Wo``
    valid columns of each row go to ``y`` through the epilogue. Graph programs only
    (``C_SCR == 2``; scratch: the phase planes, ``Yw`` (``Ho Wq + 16``) and ``C kh kw`` decoded
    weights). ``res``: a fused residual operand (``n x nout``, added before the activation) or
    empty."""
    nin = op[C_NIN]
    nout = op[C_NOUT]
    C = op[C_CIN]
    L = op[C_HO] * op[C_WO]
    P, Yw, Wd, bb = _dw_setup(op, B, F, scr)
    for s in range(n):
        for c in range(C):
            _dw_plane(op, F, x, s * nin + c * op[C_H] * op[C_W], c, P, Yw, Wd, bb,
                      y[s * nout + c * L:s * nout + (c + 1) * L],
                      res[s * nout + c * L:s * nout + (c + 1) * L] if res.shape[0] > 0 else res)


@numba.njit(cache=True, fastmath=FM)
def _dw_setup(op, B, F, scr):  # pragma: no cover - compiled
    """Scratch views of :func:`_conv_dw` from ``scr``: the zeroed phase planes ``P``, the
    widened output rows ``Yw``, the decoded weights ``Wd`` (C kh kw) and the tap offsets ``bb``."""
    Hq, Wq, plane = phase_dims(op[C_H], op[C_W], op[C_HO], op[C_WO], op[C_KH], op[C_KW], op[C_SH], op[C_SW],
                               op[C_DH], op[C_DW], op[C_PH], op[C_PW])
    np_ = op[C_SH] * op[C_SW] * plane
    M = op[C_HO] * Wq
    T = op[C_KH] * op[C_KW]
    P = scr[:np_]
    Yw = scr[np_:np_ + M + 16]   # + 16: _tiles' last tile
    Wd = scr[np_ + M + 16:np_ + M + 16 + op[C_CIN] * T]
    _decode_dense(op, B, F, Wd, op[C_CIN] * T)
    for i in range(np_):
        P[i] = 0.0
    bb = np.empty(T, np.int64)
    for i in range(op[C_KH]):
        for j in range(op[C_KW]):
            bb[i * op[C_KW] + j] = _tap_offset(i, j, op[C_SH], op[C_SW], op[C_DH], op[C_DW], Wq, plane)
    return P, Yw, Wd, bb


@numba.njit(cache=True, fastmath=FM)
def _dw_plane(op, F, x, xo, c, P, Yw, Wd, bb, yc, rc, ia=np.float32(1.0), ib=np.float32(0.0),
              ilo=-np.float32(np.inf), ihi=np.float32(np.inf)):  # pragma: no cover - compiled
    """Channel ``c`` of a depthwise conv: its input plane ``x[xo:xo + H W]`` into the phase
    planes (as ``min(max(ia v + ib, ilo), ihi)``: the identity by default), ``Yw[k] = sum_t
    w[c, t] P[bb[t] + k]`` over the ``Ho x Wq`` outputs, then the ``Wo`` valid columns of each
    row into ``yc`` (``Ho Wo``) through the epilogue; ``rc``: the channel's residual operand
    (added before the activation) or empty."""
    H = op[C_H]
    W = op[C_W]
    Ho = op[C_HO]
    Wo = op[C_WO]
    Hq, Wq, plane = phase_dims(H, W, Ho, Wo, op[C_KH], op[C_KW], op[C_SH], op[C_SW], op[C_DH], op[C_DW],
                               op[C_PH], op[C_PW])
    T = op[C_KH] * op[C_KW]
    a0 = op[C_ALPHA]
    b0 = op[C_BETA]
    act = op[C_ACT]
    p = op[C_ACTP]
    _phase_fill(x, xo, H, W, P, 0, op[C_SH], op[C_SW], op[C_PH], op[C_PW], Wq, plane, ia, ib, ilo, ihi)
    # Yw[k] = sum_t w[c, t] P[bb[t] + k]: the register tiles of the weights-stationary
    # pass with the plane's taps as the weights (a vector loop per tap used to stream Yw
    # through memory nine times, scalar past the last full vector: 2-9 GMAC/s measured
    # on HF MobileNetV2, 1.3 on its 7 x 7 planes)
    _tiles(Wd[c * T:(c + 1) * T], bb, T, P, Ho * Wq, Yw)
    al = F[a0 + c] if a0 >= 0 else np.float32(1.0)
    be = F[b0 + c] if b0 >= 0 else np.float32(0.0)
    if rc.shape[0] == 0 and (act == A_NONE or act == A_RELU or act == A_HARDTANH):
        # alpha, beta and a ReLU / ReLU6 / hardtanh in the one copy of the valid columns
        # (a second pass over the plane for the activation: 37 of 330 us, 144 x 56 x 56)
        lo = F[p] if act == A_HARDTANH else (np.float32(0.0) if act == A_RELU else -np.float32(np.inf))
        hi = F[p + 1] if act == A_HARDTANH else np.float32(np.inf)
        for oh in range(Ho):
            yo = np.uint64(oh * Wo)
            wo = np.uint64(oh * Wq)
            for ow in range(np.uint64(Wo)):
                yc[yo + ow] = min(max(Yw[wo + ow] * al + be, lo), hi)
        return
    for oh in range(Ho):
        yo = np.uint64(oh * Wo)
        wo = np.uint64(oh * Wq)
        for ow in range(np.uint64(Wo)):
            yc[yo + ow] = Yw[wo + ow] * al + be
    if rc.shape[0] > 0:
        for k in range(Ho * Wo):
            yc[k] += rc[k]
    _act_vec(yc, act, F, p)


FUSE_FLOATS = 65536   # expanded channels per block of _conv_expand_dw: <= 256 KiB (in L2) ...
FUSE_MIN_PLANE = 784  # ... on planes of 28 x 28 and up (smaller ones run their depthwise conv channels-last)


@numba.njit(cache=True)
def fuse_block(rows, L):  # pragma: no cover - compiled (also called from Python by the lowering)
    """Expanded channels per block of :func:`_conv_expand_dw`: a multiple of 4 (the four-row
    tiles) whose ``L``-float planes fill at most ``FUSE_FLOATS`` (at least 4)."""
    return max(4, min(rows, FUSE_FLOATS // max(1, L)) // 4 * 4)


def expand_dw_floats(rows: int, L: int, dw_fixed: int) -> int:
    """Scratch floats of :func:`_conv_expand_dw`: a block of expanded planes (+ 16) from a 64-byte
    boundary, then the depthwise conv's own scratch (``dw_fixed``) from the next one (two
    alignments of up to 15 floats each)."""
    return fuse_block(rows, L) * L + 16 + 2 * 15 + dw_fixed


@numba.njit(cache=True, fastmath=FM)
def _conv_expand_dw(opa, opb, B, F, x, y, n, scr):  # pragma: no cover - compiled
    """A dense 1 x 1 conv (``opa``: stride 1, no padding, one group) and the depthwise conv that
    is its only reader (``opb``) as one op: per block of ``cb`` expanded channels
    (:func:`fuse_block`), ``E = W_a[c0:c1] x`` (``cb x H W``, written by the four-row tiles
    straight into the block), then each channel of ``E`` through :func:`_dw_plane` into ``y``,
    the 1 x 1 conv's epilogue ``act_a(alpha_a E + beta_a)`` applied in the depthwise conv's
    phase-plane copy (ReLU / ReLU6 / hardtanh / none; another activation: a pass over the
    channel first). The expanded tensor (MobileNetV2: 96 x 112 x 112, 4.8 MB) is
    never written whole: each block is read back by the depthwise conv from L2 where the
    unfused pair wrote it to memory and read it again."""
    vf = opa[C_VFMT]
    v0 = opa[C_VAL]
    nnz = opa[C_NNZ]
    tab = F[opa[C_TAB]:opa[C_TAB] + 256] if vf == V_TABLE else F[:0]
    if vf == V_F32:
        _expand_dw(opa, opb, B, F, F[v0:v0 + nnz], tab, x, y, n, scr)
    elif vf == V_Q8:
        _expand_dw(opa, opb, B, F, B[v0:v0 + nnz].view(np.int8), tab, x, y, n, scr)
    else:
        _expand_dw(opa, opb, B, F, B[v0:v0 + nnz], tab, x, y, n, scr)


@numba.njit(cache=True, fastmath=FM)
def _expand_dw(opa, opb, B, F, vals, tab, x, y, n, scr):  # pragma: no cover - compiled
    nin = opa[C_NIN]
    nout = opb[C_NOUT]
    rows = opa[C_COUT]
    cols = opa[C_CIN]
    L = opa[C_HO] * opa[C_WO]
    Lb = opb[C_HO] * opb[C_WO]
    cb = fuse_block(rows, L)
    a0 = (16 - (scr.ctypes.data // 4) % 16) % 16   # E from a 64-byte boundary
    E = scr[a0:a0 + cb * L + 16]
    d0 = a0 + cb * L + 16
    d0 += (16 - d0 % 16) % 16
    P, Yw, Wd, bb = _dw_setup(opb, B, F, scr[d0:])
    offs = np.empty(cols, np.uint32)
    for c in range(cols):
        offs[c] = c * L
    al0 = opa[C_ALPHA]
    be0 = opa[C_BETA]
    act = opa[C_ACT]
    p = opa[C_ACTP]
    clamp = act == A_NONE or act == A_RELU or act == A_HARDTANH
    lo = F[p] if act == A_HARDTANH else (np.float32(0.0) if act == A_RELU else -np.float32(np.inf))
    hi = F[p + 1] if act == A_HARDTANH else np.float32(np.inf)
    for s in range(n):
        for c0 in range(0, rows, cb):
            c1 = min(rows, c0 + cb)
            _ws_dense(cols, vals[c0 * cols:], tab, opa[C_NTAB], x[s * nin:], offs, E, L, 0, c1 - c0, 1, L, 0, 0)
            for c in range(c0, c1):
                e = E[(c - c0) * L:(c - c0 + 1) * L]
                al = F[al0 + c] if al0 >= 0 else np.float32(1.0)
                be = F[be0 + c] if be0 >= 0 else np.float32(0.0)
                yc = y[s * nout + c * Lb:s * nout + (c + 1) * Lb]
                if clamp:   # the 1 x 1 conv's epilogue in the depthwise conv's copy of its input
                    _dw_plane(opb, F, E, (c - c0) * L, c, P, Yw, Wd, bb, yc, F[:0], al, be, lo, hi)
                    continue
                for k in range(L):
                    e[k] = e[k] * al + be
                _act_vec(e, act, F, p)
                _dw_plane(opb, F, E, (c - c0) * L, c, P, Yw, Wd, bb, yc, F[:0])


@numba.njit(cache=True, fastmath=FM)
def _conv(op, B, F, x, y, n, scr, res):  # pragma: no cover - compiled
    """Per sample and group, weights stationary over the output plane.

    The group's input channels go into their zero-padded phase planes (:func:`phase_dims`;
    stride 1: the padded plane ``(Hp, Wp)`` itself); tap ``(c, i, j)`` then reads ONE
    CONTIGUOUS run of its phase plane for all the outputs, computed over rows of width ``Wq``
    (the ``Wq - Wo`` extra columns are dropped), so there is no im2col copy at any stride
    (stride 2 used to unroll the input: 2.9-3.4 GMAC/s against ~11 at stride 1, ResNet-20).
    Scratch: ``cin_g`` channels of phase planes. ``res``: the residual operand of a fused add
    (``n x nout`` values, :func:`_epi_add`), empty when none.
    """
    if op[C_SCR] == 2:
        if res.shape[0] == 0 and dw_channels_last(op[C_CIN], op[C_HO], op[C_WO]):
            _conv_dw_cl(op, B, F, x, y, n, scr)
        else:
            _conv_dw(op, B, F, x, y, n, scr, res)
        return
    nin = op[C_NIN]
    nout = op[C_NOUT]
    cout_g = op[C_COUT] // op[C_GROUPS]
    cin_g = op[C_CIN] // op[C_GROUPS]
    H = op[C_H]
    W = op[C_W]
    Ho = op[C_HO]
    Wo = op[C_WO]
    kh = op[C_KH]
    kw = op[C_KW]
    L = Ho * Wo
    cols = op[C_COLS]
    sh = op[C_SH]
    sw = op[C_SW]
    Wa, Hs, aplane = shift_dims(H, W, Ho, Wo, kh, kw, sh, sw, op[C_DH], op[C_DW], op[C_PH], op[C_PW])
    offs = np.empty(cols, np.uint32)  # unsigned: lets LLVM vectorize xT[offs[c] + s]
    if Wa > 0:
        # the aligned shifted copies (shift_dims), from a 64-byte boundary of the scratch
        Wq, plane, cplane = Wa, aplane, sh * kw * aplane
        for c in range(cin_g):
            for i in range(kh):
                for j in range(kw):
                    offs[(c * kh + i) * kw + j] = c * cplane + ((i % sh) * kw + j) * plane + (i // sh) * Wq
        a0 = (16 - (scr.ctypes.data // 4) % 16) % 16
    else:
        Hq, Wq, plane = phase_dims(H, W, Ho, Wo, kh, kw, sh, sw, op[C_DH], op[C_DW], op[C_PH], op[C_PW])
        cplane = sh * sw * plane
        for c in range(cin_g):
            for i in range(kh):
                for j in range(kw):
                    offs[(c * kh + i) * kw + j] = c * cplane + _tap_offset(i, j, sh, sw, op[C_DH], op[C_DW], Wq, plane)
        a0 = 0
    # a 1 x 1 conv at stride 1 without padding reads its input planes where they are: no copy
    # into phase planes, no zeroing of them (MobileNets' expand / project convs; the tiles' last
    # 16-lane tile reads up to 15 floats past a plane, into lanes that are never stored)
    direct = kh == 1 and kw == 1 and sh == 1 and sw == 1 and op[C_PH] == 0 and op[C_PW] == 0 \
        and Ho == H and Wo == W
    if direct and op[C_RL] == 1:
        _conv1x1_rl(op, B, F, x, y, n, scr, res)
        return
    if direct:
        for c in range(cin_g):
            offs[c] = c * H * W
    P = scr[a0:a0 + (0 if direct else cin_g * cplane + 16)]
    for i in range(P.shape[0]):
        P[i] = 0.0
    for s in range(n):
        xs = x[s * nin:(s + 1) * nin]
        ys = y[s * nout:(s + 1) * nout]
        for g in range(op[C_GROUPS]):
            if direct:
                _ws(op, B, F, x[s * nin + g * cin_g * H * W:], offs, ys, L, g * cout_g, (g + 1) * cout_g, 1, L, 0, 0)
                continue
            for c in range(cin_g):
                if Wa > 0:
                    _shift_fill(xs, (g * cin_g + c) * H * W, H, W, P, c * cplane, Hs, Wa, plane, kw, sh, sw,
                                op[C_PH], op[C_PW], Wo)
                else:
                    _phase_fill(xs, (g * cin_g + c) * H * W, H, W, P, c * cplane, sh, sw, op[C_PH], op[C_PW],
                                Wq, plane)
            # outputs over rows of width Wq; the Wq - Wo extra columns are dropped
            _ws(op, B, F, P, offs, ys, Ho * Wq, g * cout_g, (g + 1) * cout_g, 1, L, Wq, Wo)
        if res.shape[0] > 0:
            _epi_add(op, F, ys, res[s * nout:(s + 1) * nout], L, op[C_COUT])
        else:
            _epi(op, F, ys, L, 0, op[C_COUT], 1, L)


RL_PANEL = 64   # output channels per panel of a rows-as-lanes 1 x 1 conv (four 16-lane vectors)
RL_KC = 64      # input channels decoded per step (a 16 KiB panel block, in L1)


def rl_conv1x1(L: int, rows: int) -> bool:
    """Whether a dense 1 x 1 conv (stride 1, no padding, one group) of ``L`` outputs per channel
    and ``rows`` output channels runs rows-as-lanes (:func:`_conv1x1_rl`): where the
    weights-stationary tiles (16 positions per lane group) would leave over 10% of their lanes
    idle (7 x 7 planes: 49 of 64 lanes) and the 64-row panels leave at most 1/6 idle (``rows``
    padded to a multiple of 64). Measured, HF MobileNetV2's 7 x 7 convs, AVX-512 (Zen 4), 1
    thread: 320 -> 1280 596 -> 384 us, 160 -> 960 221 -> 147, 960 -> 160 214 -> 171; at 14 x 14
    (196 of 208 lanes) 576 -> 96 was slower (212 -> 260 us), so those stay."""
    if L * 10 >= 9 * ((L + 15) // 16 * 16):
        return False
    rp = (rows + RL_PANEL - 1) // RL_PANEL * RL_PANEL
    return rows >= RL_PANEL and rows * 6 >= rp * 5


def rl_floats(L: int, rows: int) -> int:
    """Scratch floats of :func:`_conv1x1_rl`: ``YT`` (L x rows padded to the panels) and one
    decoded panel block."""
    rp = (rows + RL_PANEL - 1) // RL_PANEL * RL_PANEL
    return L * rp + RL_KC * RL_PANEL + 64


def rl_panels(val: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Row-major weights ``(rows, cols)`` (codes, levels or values, flat) as the 64-row panels
    :func:`_conv1x1_rl` reads: ``P[(p cols + j) 64 + l] = W[64 p + l, j]``, rows padded with
    zeros (code 0) to a multiple of 64."""
    rp = (rows + RL_PANEL - 1) // RL_PANEL * RL_PANEL
    w = np.zeros((rp, cols), val.dtype)
    w[:rows] = val.reshape(rows, cols)
    return np.ascontiguousarray(w.reshape(rp // RL_PANEL, RL_PANEL, cols).transpose(0, 2, 1)).reshape(-1)


@numba.njit(cache=True, fastmath=FM)
def _rl_panel(wp, x, xo, L, kc, YT, ldy, r0, first):  # pragma: no cover - compiled
    """``YT[s, r0:r0+64] (+)= sum_{j < kc} wp[j, 0:64] * x[xo + j L + s]`` for s < L: four
    positions x four 16-lane row vectors in 16 registers; per input channel four vector loads of
    the decoded panel and four broadcasts feed 16 FMAs. ``first``: the accumulators start at 0,
    else from ``YT``. The last ``L % 4`` positions one at a time."""
    L4 = L - L % 4
    for s0 in range(0, L4, 4):
        o0 = s0 * ldy + r0
        o1 = o0 + ldy
        o2 = o1 + ldy
        o3 = o2 + ldy
        if first:
            a00 = vzero()
            a01 = vzero()
            a02 = vzero()
            a03 = vzero()
            a10 = vzero()
            a11 = vzero()
            a12 = vzero()
            a13 = vzero()
            a20 = vzero()
            a21 = vzero()
            a22 = vzero()
            a23 = vzero()
            a30 = vzero()
            a31 = vzero()
            a32 = vzero()
            a33 = vzero()
        else:
            a00 = vload(YT, o0)
            a01 = vload(YT, o0 + 16)
            a02 = vload(YT, o0 + 32)
            a03 = vload(YT, o0 + 48)
            a10 = vload(YT, o1)
            a11 = vload(YT, o1 + 16)
            a12 = vload(YT, o1 + 32)
            a13 = vload(YT, o1 + 48)
            a20 = vload(YT, o2)
            a21 = vload(YT, o2 + 16)
            a22 = vload(YT, o2 + 32)
            a23 = vload(YT, o2 + 48)
            a30 = vload(YT, o3)
            a31 = vload(YT, o3 + 16)
            a32 = vload(YT, o3 + 32)
            a33 = vload(YT, o3 + 48)
        xb = xo + s0
        for j in range(kc):
            w0 = vload(wp, j * 64)
            w1 = vload(wp, j * 64 + 16)
            w2 = vload(wp, j * 64 + 32)
            w3 = vload(wp, j * 64 + 48)
            xj = xb + j * L
            v = x[xj]
            a00 = vfma(a00, v, w0)
            a01 = vfma(a01, v, w1)
            a02 = vfma(a02, v, w2)
            a03 = vfma(a03, v, w3)
            v = x[xj + 1]
            a10 = vfma(a10, v, w0)
            a11 = vfma(a11, v, w1)
            a12 = vfma(a12, v, w2)
            a13 = vfma(a13, v, w3)
            v = x[xj + 2]
            a20 = vfma(a20, v, w0)
            a21 = vfma(a21, v, w1)
            a22 = vfma(a22, v, w2)
            a23 = vfma(a23, v, w3)
            v = x[xj + 3]
            a30 = vfma(a30, v, w0)
            a31 = vfma(a31, v, w1)
            a32 = vfma(a32, v, w2)
            a33 = vfma(a33, v, w3)
        vstore(YT, o0, a00)
        vstore(YT, o0 + 16, a01)
        vstore(YT, o0 + 32, a02)
        vstore(YT, o0 + 48, a03)
        vstore(YT, o1, a10)
        vstore(YT, o1 + 16, a11)
        vstore(YT, o1 + 32, a12)
        vstore(YT, o1 + 48, a13)
        vstore(YT, o2, a20)
        vstore(YT, o2 + 16, a21)
        vstore(YT, o2 + 32, a22)
        vstore(YT, o2 + 48, a23)
        vstore(YT, o3, a30)
        vstore(YT, o3 + 16, a31)
        vstore(YT, o3 + 32, a32)
        vstore(YT, o3 + 48, a33)
    for s in range(L4, L):
        o0 = s * ldy + r0
        if first:
            a00 = vzero()
            a01 = vzero()
            a02 = vzero()
            a03 = vzero()
        else:
            a00 = vload(YT, o0)
            a01 = vload(YT, o0 + 16)
            a02 = vload(YT, o0 + 32)
            a03 = vload(YT, o0 + 48)
        for j in range(kc):
            v = x[xo + j * L + s]
            a00 = vfma(a00, v, vload(wp, j * 64))
            a01 = vfma(a01, v, vload(wp, j * 64 + 16))
            a02 = vfma(a02, v, vload(wp, j * 64 + 32))
            a03 = vfma(a03, v, vload(wp, j * 64 + 48))
        vstore(YT, o0, a00)
        vstore(YT, o0 + 16, a01)
        vstore(YT, o0 + 32, a02)
        vstore(YT, o0 + 48, a03)


@numba.njit(cache=True, fastmath=FM)
def _rl_rows(vals, tab, nt, rows, cols, x, L, YT, wp):  # pragma: no cover - compiled
    """``YT (L, rp) = (W x)^T`` for one sample, ``W`` in 64-row panels (:func:`rl_panels`): per
    panel, blocks of ``RL_KC`` input channels are decoded (:func:`_dec_row`: 16 codes per register
    look-up) into ``wp`` and accumulated by :func:`_rl_panel`."""
    rp = (rows + RL_PANEL - 1) // RL_PANEL * RL_PANEL
    for p in range(rp // RL_PANEL):
        for j0 in range(0, cols, RL_KC):
            kc = min(RL_KC, cols - j0)
            _dec_row(vals, tab, nt, (p * cols + j0) * RL_PANEL, kc * RL_PANEL, wp, 0)
            _rl_panel(wp, x, j0 * L, L, kc, YT, rp, p * RL_PANEL, j0 == 0)


@numba.njit(cache=True, fastmath=FM)
def _conv1x1_rl(op, B, F, x, y, n, scr, res):  # pragma: no cover - compiled
    """A dense 1 x 1 conv (stride 1, no padding, one group) with the output channels as the
    vector lanes, for small planes (:func:`rl_conv1x1`): per sample ``YT[s, r] = sum_j W[r, j]
    x[j, s]`` (:func:`_rl_rows`), transposed into ``y (rows, L)``, then the epilogue (and a fused
    residual) as in :func:`_conv`. The weights-stationary tiles put 16 positions in a vector,
    so a 7 x 7 plane (49 positions) filled 49 of 64 lanes and split most loads across cache
    lines; here every lane is a real output channel (the rows padded to 64 compute, never
    stored). Scratch: :func:`rl_floats`."""
    nin = op[C_NIN]
    nout = op[C_NOUT]
    rows = op[C_COUT]
    cols = op[C_CIN]
    L = op[C_HO] * op[C_WO]
    rp = (rows + RL_PANEL - 1) // RL_PANEL * RL_PANEL
    YT = scr[:L * rp + 16]
    wp = scr[L * rp + 16:L * rp + 16 + RL_KC * RL_PANEL + 16]
    vf = op[C_VFMT]
    v0 = op[C_VAL]
    m = rp * cols
    tab = F[op[C_TAB]:op[C_TAB] + 256] if vf == V_TABLE else F[:0]
    nt = op[C_NTAB]
    for s in range(n):
        xs = x[s * nin:(s + 1) * nin]
        ys = y[s * nout:(s + 1) * nout]
        if vf == V_F32:
            _rl_rows(F[v0:v0 + m], tab, nt, rows, cols, xs, L, YT, wp)
        elif vf == V_Q8:
            _rl_rows(B[v0:v0 + m].view(np.int8), tab, nt, rows, cols, xs, L, YT, wp)
        else:
            _rl_rows(B[v0:v0 + m], tab, nt, rows, cols, xs, L, YT, wp)
        _transpose(YT, L, rows, rp, ys, L)
        if res.shape[0] > 0:
            _epi_add(op, F, ys, res[s * nout:(s + 1) * nout], L, rows)
        else:
            _epi(op, F, ys, L, 0, rows, 1, L)


@numba.njit(cache=True, fastmath=FM)
def _pool(op, x, y, n):  # pragma: no cover - compiled
    """Max (NaN propagates) or average (padding counted, as torch's default) pooling."""
    C = op[C_CIN]
    H = op[C_H]
    W = op[C_W]
    Ho = op[C_HO]
    Wo = op[C_WO]
    kh = op[C_KH]
    kw = op[C_KW]
    sh = op[C_SH]
    sw = op[C_SW]
    ph = op[C_PH]
    pw = op[C_PW]
    nin = op[C_NIN]
    nout = op[C_NOUT]
    is_max = op[C_LAYOUT] == P_MAX
    inv = np.float32(1.0 / (kh * kw))
    if is_max and kh == 2 and kw == 2 and sh == 2 and sw == 2 and ph == 0 and pw == 0:
        for s in range(n):  # the common 2x2 / 2 max pool, no bounds checks
            for c in range(C):
                xo = s * nin + c * H * W
                yo = s * nout + c * Ho * Wo
                for oh in range(Ho):
                    # unsigned indices (no wraparound tests): measured ~3x faster
                    r0 = np.uint64(xo + 2 * oh * W)
                    r1 = np.uint64(xo + 2 * oh * W + W)
                    yr = np.uint64(yo + oh * Wo)
                    for ow in range(np.uint64(Wo)):
                        a = x[r0 + 2 * ow]
                        b = x[r0 + 2 * ow + 1]
                        cc = x[r1 + 2 * ow]
                        d = x[r1 + 2 * ow + 1]
                        m1 = a if not a < b else b
                        m2 = cc if not cc < d else d
                        y[yr + ow] = m1 if not m1 < m2 else m2
        return
    for s in range(n):
        for c in range(C):
            xo = s * nin + c * H * W
            yo = s * nout + c * Ho * Wo
            for oh in range(Ho):
                i0 = max(0, oh * sh - ph)
                i1 = min(H, oh * sh - ph + kh)
                for ow in range(Wo):
                    j0 = max(0, ow * sw - pw)
                    j1 = min(W, ow * sw - pw + kw)
                    if is_max:
                        v = np.float32(-np.inf)
                        for ih in range(i0, i1):
                            for iw in range(j0, j1):
                                e = x[xo + ih * W + iw]
                                if not e <= v:
                                    v = e
                        y[yo + oh * Wo + ow] = v
                    else:
                        a = np.float32(0.0)
                        for ih in range(i0, i1):
                            for iw in range(j0, j1):
                                a += x[xo + ih * W + iw]
                        y[yo + oh * Wo + ow] = a * inv


@numba.njit(cache=True, fastmath=FM)
def _ew(op, F, x, y, n):  # pragma: no cover - compiled
    nin = op[C_NIN]
    C = op[C_CIN]
    per = nin // C
    for i in range(n * nin):
        y[i] = x[i]
    for s in range(n):
        _epi(op, F, y[s * nin:(s + 1) * nin], per, 0, C, 1, per)


@numba.njit(cache=True)
def _actq(op, F, x, y, n):  # pragma: no cover - compiled (no fastmath: exact torch arithmetic)
    nin = op[C_NIN]
    L = np.float32(op[C_K])
    clip = F[op[C_TAB]]
    for i in range(n * nin):
        v = x[i]
        v = v if v > 0.0 else np.float32(0.0)
        v = v if v < clip else clip
        y[i] = np.rint((v / clip) * L) / L * clip


# ------------------------------------------------------------------------------------------
# program execution


# ------------------------------------------------------------------------------------------
# LSTM (see lstm.py)

LSTM_CHUNK = 64
N_NONE, N_LAYER = 0, 1


@numba.njit(cache=True, fastmath=FM)
def _product(op, B, F, x, y, n, scr):  # pragma: no cover - compiled
    """``y (n, rows) = op(x (n, cols))`` in chunks of <= LSTM_CHUNK samples (the scratch size)."""
    nin = op[C_NIN]
    nout = op[C_NOUT]
    for n0 in range(0, n, LSTM_CHUNK):
        n1 = min(n, n0 + LSTM_CHUNK)
        xs = x[n0 * nin:n1 * nin]
        ys = y[n0 * nout:n1 * nout]
        if op[C_KIND] == K_PQFC:
            _pqfc(op, B, F, xs, ys, n1 - n0, scr)
        else:
            _fc(op, B, F, xs, ys, n1 - n0, scr)


@numba.njit(cache=True, fastmath=FM)
def _gate_ln(g, n, H, w, b, eps):  # pragma: no cover - compiled
    """In place: LayerNorm over each of the 4 gate blocks of H units of the n rows of ``g``."""
    for s in range(n):
        for k in range(4):
            o = s * 4 * H + k * H
            m = 0.0
            for u in range(H):
                m += g[o + u]
            m /= H
            v = 0.0
            for u in range(H):
                d = g[o + u] - m
                v += d * d
            inv = 1.0 / math.sqrt(v / H + eps)
            for u in range(H):
                g[o + u] = np.float32((g[o + u] - m) * inv) * w[k * H + u] + b[k * H + u]


@numba.njit(cache=True, fastmath=FM)
def _sigmoid(v):  # pragma: no cover - compiled
    return np.float32(1.0) / (np.float32(1.0) + np.float32(math.exp(-v)))


@numba.njit(cache=True)
def _cell16(gx, gh, c, h, out, bias, add_bias, gxo, gho, co, oo, H):  # pragma: no cover - compiled
    """The LSTM cell for units ``u < H - H % 16``, sixteen per step:
    ``c = sigma(f) c + sigma(i) tanh(g)``, ``h = sigma(o) tanh(c)`` with the gate pre-activations
    ``gx + gh (+ bias)`` (vector exp: :func:`.simd.vsigmoid`, :func:`.simd.vtanh`)."""
    for u in range(0, H - H % 16, 16):
        gi = vadd(vload(gx, gxo + u), vload(gh, gho + u))
        gf = vadd(vload(gx, gxo + H + u), vload(gh, gho + H + u))
        gg = vadd(vload(gx, gxo + 2 * H + u), vload(gh, gho + 2 * H + u))
        go = vadd(vload(gx, gxo + 3 * H + u), vload(gh, gho + 3 * H + u))
        if add_bias:
            gi = vadd(gi, vload(bias, u))
            gf = vadd(gf, vload(bias, H + u))
            gg = vadd(gg, vload(bias, 2 * H + u))
            go = vadd(go, vload(bias, 3 * H + u))
        cv = vfmav(vmul(vsigmoid(gi), vtanh(gg)), vsigmoid(gf), vload(c, co + u))
        vstore(c, co + u, cv)
        hv = vmul(vsigmoid(go), vtanh(cv))
        vstore(h, co + u, hv)
        vstore(out, oo + u, hv)


@numba.njit(cache=True)
def lstm_forward(op_ih, op_hh, B, F, x, T, nb, h, c, out, gx, gh, scr, norm, ln, bias, add_bias, eps):  # pragma: no cover
    """Run T steps. ``x (T*nb*I)`` time-major flattened, ``h, c (nb*H)`` updated in place,
    ``out (T*nb*H)``; ``gx (T*nb*4H)``, ``gh (nb*4H)``, ``scr`` work buffers. With
    ``norm == N_LAYER``, ``ln`` = [w_ih, b_ih, w_hh, b_hh] (4 x 4H); ``add_bias``: add
    ``bias`` = b_ih + b_hh to the gates (after a norm)."""
    G = op_ih[C_NOUT]
    H = G // 4
    _product(op_ih, B, F, x, gx, T * nb, scr)
    if norm == N_LAYER:
        _gate_ln(gx, T * nb, H, ln[0], ln[1], eps)
    for t in range(T):
        _product(op_hh, B, F, h, gh, nb, scr)
        if norm == N_LAYER:
            _gate_ln(gh, nb, H, ln[2], ln[3], eps)
        for s in range(nb):
            gxo = (t * nb + s) * G
            gho = s * G
            _cell16(gx, gh, c, h, out, bias, add_bias, gxo, gho, s * H, (t * nb + s) * H, H)
            for u in range(H - H % 16, H):   # the last H % 16 units
                gi = gx[gxo + u] + gh[gho + u]
                gf = gx[gxo + H + u] + gh[gho + H + u]
                gg = gx[gxo + 2 * H + u] + gh[gho + 2 * H + u]
                go = gx[gxo + 3 * H + u] + gh[gho + 3 * H + u]
                if add_bias:
                    gi += bias[u]
                    gf += bias[H + u]
                    gg += bias[2 * H + u]
                    go += bias[3 * H + u]
                cv = _sigmoid(gf) * c[s * H + u] + _sigmoid(gi) * np.float32(math.tanh(gg))
                c[s * H + u] = cv
                hv = _sigmoid(go) * np.float32(math.tanh(cv))
                h[s * H + u] = hv
                out[(t * nb + s) * H + u] = hv



@numba.njit(cache=True)
def run_chunk(ops, B, F, x, out, work, half, scr_off):  # pragma: no cover - compiled
    """Run every op on the ``n = x.shape[0]`` samples ``x`` (n, nin0); result into ``out``.

    ``work`` holds two activation halves of ``half`` floats and op scratch from ``scr_off``.
    """
    n = x.shape[0]
    nin0 = ops[0, C_NIN]
    src = work[:half]
    dst = work[half:2 * half]
    scr = work[scr_off:]
    xf = x.reshape(-1)
    for i in range(n * nin0):
        src[i] = xf[i]
    for k in range(ops.shape[0]):
        op = ops[k]
        kind = op[C_KIND]
        if kind == K_FC:
            _fc(op, B, F, src, dst, n, scr)
        elif kind == K_CONV:
            _conv(op, B, F, src, dst, n, scr, F[:0])
        elif kind == K_POOL:
            _pool(op, src, dst, n)
        elif kind == K_EW:
            _ew(op, F, src, dst, n)
        elif kind == K_ACTQ:
            _actq(op, F, src, dst, n)
        elif kind == K_PQFC:
            _pqfc(op, B, F, src, dst, n, scr)
        src, dst = dst, src
    nout = ops[ops.shape[0] - 1, C_NOUT]
    of = out.reshape(-1)
    for i in range(n * nout):
        of[i] = src[i]


@numba.njit(cache=True)
def run_serial(ops, B, F, x, out, work, half, scr_off, chunk):  # pragma: no cover - compiled
    """All samples on the calling thread, ``chunk`` samples at a time (``work`` (1, size))."""
    N = x.shape[0]
    for n0 in range(0, N, chunk):
        n1 = min(N, n0 + chunk)
        run_chunk(ops, B, F, x[n0:n1], out[n0:n1], work[0], half, scr_off)


@numba.njit(cache=True, parallel=True)
def run_parallel(ops, B, F, x, out, work, half, scr_off, chunk):  # pragma: no cover - compiled
    """One parallel region per forward: chunk ``t`` of the batch runs the whole program on a
    thread of its own with ``work[t]`` (weights are shared read-only)."""
    N = x.shape[0]
    nch = (N + chunk - 1) // chunk
    for t in prange(nch):
        n0 = t * chunk
        n1 = min(N, n0 + chunk)
        run_chunk(ops, B, F, x[n0:n1], out[n0:n1], work[t], half, scr_off)


# ------------------------------------------------------------------------------------------
# graph ops (see lower.py): residual / gate arithmetic, index maps, norms, attention, embeddings


@numba.njit(cache=True, fastmath=FM, inline="always")
def _binop(a, b, mode):  # pragma: no cover - compiled
    if mode == B_ADD:
        return a + b
    if mode == B_MUL:
        return a * b
    if mode == B_SUB:
        return a - b
    if mode == B_DIV:
        return a / b
    if mode == B_RSUB:
        return b - a
    return b / a


@numba.njit(cache=True, fastmath=FM)
def _bin(op, F, x, x2, s2, y, n):  # pragma: no cover - compiled
    """``y[s, j] = act(x[s, j] OP x2[s * s2 + (j // inner) % n2])`` (``s2 = 0``: a constant;
    ``inner = C_K``, ``n2 = C_M``: the broadcast of x2 over the output)."""
    N = op[C_NOUT]
    inner = op[C_K]
    n2 = op[C_M]
    mode = op[C_LAYOUT]
    act = op[C_ACT]
    p = op[C_ACTP]
    for s in range(n):
        xo = s * N
        o2 = s * s2
        if inner == 1 and n2 == N:
            # slices indexed from 0 (no wraparound test per element): the loops vectorize
            # (ResNet-20's residual add + ReLU of 16 x 32 x 32 values: 4.5 us with x[xo + j])
            xa = x[xo:xo + N]
            xb = x2[o2:o2 + N]
            ya = y[xo:xo + N]
            if mode == B_ADD and act == A_RELU:
                for j in range(N):
                    v = xa[j] + xb[j]
                    ya[j] = v if v > 0.0 else np.float32(0.0)
            elif mode == B_ADD and act == A_NONE:
                for j in range(N):
                    ya[j] = xa[j] + xb[j]
            elif mode == B_MUL and act == A_NONE:
                for j in range(N):
                    ya[j] = xa[j] * xb[j]
            else:
                for j in range(N):
                    ya[j] = _act(_binop(xa[j], xb[j], mode), act, F, p)
        elif n2 == 1:
            b = x2[o2]
            for j in range(N):
                y[xo + j] = _act(_binop(x[xo + j], b, mode), act, F, p)
        else:
            nb = N // inner
            for blk in range(nb):
                b = x2[o2 + blk % n2]
                bo = xo + blk * inner
                if mode == B_MUL and act == A_NONE:
                    for j in range(inner):
                        y[bo + j] = x[bo + j] * b
                elif mode == B_ADD and act == A_NONE:
                    for j in range(inner):
                        y[bo + j] = x[bo + j] + b
                else:
                    for j in range(inner):
                        y[bo + j] = _act(_binop(x[bo + j], b, mode), act, F, p)


@numba.njit(cache=True)
def _gather(op, B, F, x, y, n):  # pragma: no cover - compiled
    """Index map ``y[s, p] = x[s, idx[p]]`` (int32 ``idx`` (nout,) at ``C_PTR``); ``idx < 0``:
    the fill value ``F[C_TAB]`` (pads), or left as is when ``C_LAYOUT == 1`` (one input of a
    concatenation). With ``C_NNZ = R > 0`` the map is ``R`` runs ``(q0, i0, length)`` at
    ``C_COL`` instead (``lower.gather_runs``): one copy / fill loop per run."""
    nin = op[C_NIN]
    nout = op[C_NOUT]
    skip = op[C_LAYOUT] == 1
    fill = F[op[C_TAB]]
    R = op[C_NNZ]
    if R > 0:
        runs = B[op[C_COL]:op[C_COL] + 12 * R].view(np.int32)
        for s in range(n):
            for k in range(R):
                yo = np.uint64(s * nout + runs[3 * k])
                ln = np.uint64(runs[3 * k + 2])
                i0 = runs[3 * k + 1]
                if i0 >= 0:
                    xo = np.uint64(s * nin + i0)
                    for t in range(ln):
                        y[yo + t] = x[xo + t]
                elif not skip:
                    for t in range(ln):
                        y[yo + t] = fill
        return
    idx = B[op[C_PTR]:op[C_PTR] + 4 * nout].view(np.int32)
    for s in range(n):
        xo = s * nin
        yo = s * nout
        for q in range(nout):
            i = idx[q]
            if i >= 0:
                y[yo + q] = x[xo + i]
            elif not skip:
                y[yo + q] = fill


@numba.njit(cache=True)
def _pad(op, F, x, y, n):  # pragma: no cover - compiled
    """Constant padding (or cropping, negative amounts) of a ``(C, H, W)`` sample to
    ``(Co, Ho, Wo)``: ``y[c, h, w] = x[c - c0, h - h0, w - w0]`` inside ``x``, else ``F[C_TAB]``
    (``c0, h0, w0`` = C_KH, C_PH, C_PW: the amounts added before each dimension)."""
    C = op[C_CIN]
    H = op[C_H]
    W = op[C_W]
    Co = op[C_COUT]
    Ho = op[C_HO]
    Wo = op[C_WO]
    c0 = op[C_KH]
    h0 = op[C_PH]
    w0 = op[C_PW]
    fill = F[op[C_TAB]]
    nin = C * H * W
    nout = Co * Ho * Wo
    for s in range(n):
        for c in range(Co):
            ci = c - c0
            for h in range(Ho):
                hi = h - h0
                # unsigned indices: no wraparound test per element and no slice object per
                # row (~30 ns each: ResNet-20's channel-padding shortcuts took 5-7 us)
                yo = np.uint64(s * nout + (c * Ho + h) * Wo)
                if ci < 0 or ci >= C or hi < 0 or hi >= H:
                    for w in range(np.uint64(Wo)):
                        y[yo + w] = fill
                    continue
                a = min(max(w0, 0), Wo)          # output columns [a, b) come from x
                b = min(max(w0 + W, a), Wo)
                xo = np.uint64(s * nin + (ci * H + hi) * W + a - w0)
                for w in range(np.uint64(a)):
                    y[yo + w] = fill
                ya = yo + np.uint64(a)
                for w in range(np.uint64(b - a)):
                    y[ya + w] = x[xo + w]
                for w in range(np.uint64(b), np.uint64(Wo)):
                    y[yo + w] = fill


@numba.njit(cache=True, fastmath=FM, error_model="numpy")
def _norm(op, F, x, y, rows):  # pragma: no cover - compiled
    """Per row of D = C_COLS: LayerNorm ``(x - mean) / sqrt(var + eps) * g + b`` (biased
    variance, as torch) or RMSNorm ``x / sqrt(mean(x^2) + eps) * g``; the moments accumulated
    in float64, the row then in float32 loops that vectorize."""
    D = op[C_COLS]
    g0 = op[C_ALPHA]
    b0 = op[C_BETA]
    eps = F[op[C_TAB]]
    rms = op[C_LAYOUT] == NORM_RMS
    act = op[C_ACT]
    for r in range(rows):
        xr = x[r * D:(r + 1) * D]
        yr = y[r * D:(r + 1) * D]
        mu = 0.0
        if not rms:
            for j in range(D):
                mu += xr[j]
            mu /= D
        var = 0.0
        for j in range(D):
            d = xr[j] - mu
            var += d * d
        var /= D
        m32 = np.float32(mu)
        inv = np.float32(1.0 / math.sqrt(var + eps))
        for j in range(D):
            yr[j] = (xr[j] - m32) * inv
        if g0 >= 0:
            g = F[g0:g0 + D]
            for j in range(D):
                yr[j] *= g[j]
        if b0 >= 0:
            b = F[b0:b0 + D]
            for j in range(D):
                yr[j] += b[j]
        _act_vec(yr, act, F, op[C_ACTP])


@numba.njit(cache=True, fastmath=FM, error_model="numpy")
def _softmax_row(a):  # pragma: no cover - compiled
    """``a = softmax(a)`` in place (max subtracted; exp by :func:`_fexp`, vectorized)."""
    n = a.shape[0]
    m = np.float32(-np.inf)
    for j in range(n):
        m = max(m, a[j])
    t = np.float32(0.0)
    for j in range(n):
        e = _fexp(a[j] - m)
        a[j] = e
        t += e
    inv = np.float32(1.0) / t
    for j in range(n):
        a[j] *= inv


@numba.njit(cache=True, fastmath=FM, error_model="numpy")
def _softmax(op, x, y, rows):  # pragma: no cover - compiled
    D = op[C_COLS]
    for r in range(rows):
        yr = y[r * D:(r + 1) * D]
        yr[:] = x[r * D:(r + 1) * D]
        _softmax_row(yr)


@numba.njit(cache=True, fastmath=FM)
def _reduce(op, x, y, rows):  # pragma: no cover - compiled
    D = op[C_COLS]
    mode = op[C_LAYOUT]
    for r in range(rows):
        o = r * D
        if mode == R_MAX:
            m = x[o]
            for j in range(1, D):
                m = max(m, x[o + j])
            y[r] = m
        else:
            t = 0.0
            for j in range(D):
                t += x[o + j]
            y[r] = np.float32(t / D) if mode == R_MEAN else np.float32(t)


@numba.njit(cache=True, fastmath=FM, error_model="numpy")
def _attn(op, F, q, k, v, y, n, scr):  # pragma: no cover - compiled
    """Scaled dot-product attention per sample and head: ``q (Hq, Tq, dh)``, ``k (Hk, Tk, dh)``,
    ``v (Hk, Tk, dv)`` -> ``y (Hq, Tq, dv)``, query head h reads key head ``h // (Hq / Hk)``;
    ``S = scale * Q K^T + mask`` (additive float mask ``(Hm, Tq, Tk)`` at ``C_BETA``, Hm = 1 or
    Hq; ``C_LAYOUT == 1``: causal, row i sees keys ``j < i + 1 + Tk - Tq``), ``P = softmax(S)``
    per row, ``Y = P V``.

    Both products run in the register tiles, four query rows at a time (:func:`_tiles4`; the
    last ``Tq % 4`` rows by :func:`_tiles`): ``S[i, :] = sum_d q[i, d] K^T[d, :]`` over ``K^T
    (dh, Tk)``, transposed once per key head, and ``Y[i, :] = sum_j P[i, j] V[j, :]``. (They were
    two BLAS GEMMs per head: 34 GMAC/s for HF BERT's 128 x 64 heads, the tiles ~50.) Rows of
    ``S`` are ``ld = Tk`` rounded up to 16 apart (the tiles' last 16-lane tile)."""
    Hq = op[C_H]
    Tq = op[C_W]
    Tk = op[C_KH]
    dh = op[C_KW]
    dv = op[C_SH]
    Hk = op[C_COUT]
    hm = op[C_CIN]
    scale = F[op[C_TAB]]
    m0 = op[C_BETA]
    causal = op[C_LAYOUT] == 1
    rep = Hq // Hk
    ld = (Tk + 15) // 16 * 16
    ldv = (dv + 15) // 16 * 16
    S = np.empty(Tq * ld, np.float32)
    KT = np.zeros(dh * Tk + 16, np.float32)     # + 16: the tiles read up to 15 past a row
    V2 = np.zeros(Tk * dv + 16, np.float32)
    w4 = np.empty(4 * Tk, np.float32)
    Y4 = np.empty(4 * ldv, np.float32)
    acc = np.empty(ldv + 16, np.float32)
    bbk = np.arange(dh) * Tk
    bbv = np.arange(Tk) * dv
    for s in range(n):
        for hk in range(Hk):
            kb = ((s * Hk + hk) * Tk) * dh
            vb = ((s * Hk + hk) * Tk) * dv
            _transpose(k[kb:kb + Tk * dh], Tk, dh, dh, KT, Tk)
            V2[:Tk * dv] = v[vb:vb + Tk * dv]
            for h in range(hk * rep, (hk + 1) * rep):
                qb = ((s * Hq + h) * Tq) * dh
                yb = ((s * Hq + h) * Tq) * dv
                qh = q[qb:qb + Tq * dh]
                i = 0
                while i + 4 <= Tq:
                    _tiles4(qh[i * dh:(i + 4) * dh], bbk, dh, KT, Tk, S[i * ld:], ld)
                    i += 4
                while i < Tq:
                    _tiles(qh[i * dh:(i + 1) * dh], bbk, dh, KT, Tk, S[i * ld:])
                    i += 1
                for i in range(Tq):
                    tk = min(Tk, i + 1 + Tk - Tq) if causal else Tk
                    row = S[i * ld:i * ld + Tk]
                    sci = row[:tk]
                    if m0 >= 0:
                        mrow = F[m0 + ((h if hm > 1 else 0) * Tq + i) * Tk:]
                        for j in range(tk):
                            sci[j] = sci[j] * scale + mrow[j]
                    else:
                        for j in range(tk):
                            sci[j] = sci[j] * scale
                    _softmax_row(sci)
                    for j in range(tk, Tk):
                        row[j] = 0.0
                i = 0
                while i + 4 <= Tq:
                    for r in range(4):
                        w4[r * Tk:(r + 1) * Tk] = S[(i + r) * ld:(i + r) * ld + Tk]
                    _tiles4(w4, bbv, Tk, V2, dv, Y4, ldv)
                    for r in range(4):
                        y[yb + (i + r) * dv:yb + (i + r + 1) * dv] = Y4[r * ldv:r * ldv + dv]
                    i += 4
                while i < Tq:
                    _tiles(S[i * ld:i * ld + Tk], bbv, Tk, V2, dv, acc)
                    y[yb + i * dv:yb + (i + 1) * dv] = acc[:dv]
                    i += 1


@numba.njit(cache=True, fastmath=FM)
def _emb(op, B, F, x, y, n):  # pragma: no cover - compiled
    """Embedding rows ``y[s, t, :] = W[ids[s, t], :]`` (ids stored as floats, checked in range
    by the caller); W (V, D) from codebook codes (``V_TABLE``, uint8 ``C_VAL``, table ``C_TAB``)
    or float32 (``V_F32`` at ``C_VAL`` in F)."""
    T = op[C_REP]
    D = op[C_COLS]
    tab_fmt = op[C_VFMT] == V_TABLE
    tab = F[op[C_TAB]:op[C_TAB] + (op[C_NTAB] if tab_fmt else 0)]
    for s in range(n):
        for t in range(T):
            r = np.int64(x[s * T + t])
            yo = (s * T + t) * D
            if tab_fmt:
                codes = B[op[C_VAL] + r * D:op[C_VAL] + (r + 1) * D]
                for j in range(D):
                    y[yo + j] = tab[codes[j]]
            else:
                wo = op[C_VAL] + r * D
                for j in range(D):
                    y[yo + j] = F[wo + j]


@numba.njit(cache=True)
def run_graph_chunk(ops, B, F, x, out, work, chunk, io, scr_off):  # pragma: no cover - compiled
    """Run a graph program on the ``n = x.shape[0] <= chunk`` samples ``x``.

    Every value lives in a slot of the work buffer at ``offset * chunk`` (offsets per sample,
    from :mod:`.lower`); ``io = (input offset, input floats, output offset, output floats)``
    per sample. Op scratch from ``scr_off``.
    """
    n = x.shape[0]
    xf = x.reshape(-1)
    b0 = io[0] * chunk
    for i in range(n * io[1]):
        work[b0 + i] = xf[i]
    scr = work[scr_off:]
    for k in range(ops.shape[0]):
        op = ops[k]
        kind = op[C_KIND]
        rows = n * op[C_REP]
        xs = work[op[C_XS] * chunk:]
        ys = work[op[C_YS] * chunk:]
        if kind == K_FC:
            _fc(op, B, F, xs, ys, rows, scr)
        elif kind == K_CONV:
            if op[C_FUSE] == 1 and k + 1 < ops.shape[0]:   # this 1 x 1 conv and the depthwise conv after it
                _conv_expand_dw(op, ops[k + 1], B, F, xs, work[ops[k + 1][C_YS] * chunk:], n, scr)
            elif op[C_FUSE] != 2:   # (2: run by the op before; a 1 x 1 conv run alone writes its own output)
                _conv(op, B, F, xs, ys, n, scr, work[op[C_X2S] * chunk:] if op[C_X2S] >= 0 else F[:0])
        elif kind == K_BIN:
            if op[C_X2S] >= 0:
                _bin(op, F, xs, work[op[C_X2S] * chunk:], op[C_D], ys, n)
            else:
                _bin(op, F, xs, F[op[C_TAB]:], 0, ys, n)
        elif kind == K_GATHER:
            if op[C_XS] >= 0:
                _gather(op, B, F, xs, ys, n)
            else:   # a constant (one sample in F, C_NIN == 0: the same for every sample)
                _gather(op, B, F, F[op[C_VAL]:], ys, n)
        elif kind == K_POOL:
            _pool(op, xs, ys, n)
        elif kind == K_EW:
            _ew(op, F, xs, ys, n)
        elif kind == K_PAD:
            _pad(op, F, xs, ys, n)
        elif kind == K_NORM:
            _norm(op, F, xs, ys, rows)
        elif kind == K_SOFTMAX:
            _softmax(op, xs, ys, rows)
        elif kind == K_REDUCE:
            _reduce(op, xs, ys, rows)
        elif kind == K_ATTN:
            _attn(op, F, xs, work[op[C_X2S] * chunk:], work[op[C_X3S] * chunk:], ys, n, scr)
        elif kind == K_EMB:
            _emb(op, B, F, xs, ys, n)
        elif kind == K_PQFC:
            _pqfc(op, B, F, xs, ys, rows, scr)
        elif kind == K_ACTQ:
            _actq(op, F, xs, ys, n)
    b1 = io[2] * chunk
    of = out.reshape(-1)
    for i in range(n * io[3]):
        of[i] = work[b1 + i]


@numba.njit(cache=True)
def run_graph(ops, B, F, x, out, work, chunk, io, scr_off):  # pragma: no cover - compiled
    """All samples on the calling thread, ``chunk`` at a time (``work`` (1, size))."""
    N = x.shape[0]
    for n0 in range(0, N, chunk):
        n1 = min(N, n0 + chunk)
        run_graph_chunk(ops, B, F, x[n0:n1], out[n0:n1], work[0], chunk, io, scr_off)


@numba.njit(cache=True, parallel=True)
def run_graph_parallel(ops, B, F, x, out, work, chunk, io, scr_off):  # pragma: no cover - compiled
    """One parallel region per forward: chunk ``t`` runs the whole graph with ``work[t]``."""
    N = x.shape[0]
    nch = (N + chunk - 1) // chunk
    for t in prange(nch):
        n0 = t * chunk
        n1 = min(N, n0 + chunk)
        run_graph_chunk(ops, B, F, x[n0:n1], out[n0:n1], work[t], chunk, io, scr_off)
