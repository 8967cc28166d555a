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
``cols`` (nnz)) or ``DENSE`` (all rows*cols, row-major); value format

* ``TABLE``: ``w = tab[code]``, ``code`` uint8 (codebook / weight sharing);
* ``Q8``:    ``w = float(q)``, ``q`` int8 (fixed-point / binary / ternary levels; the level's
  scale is folded into the per-row ``alpha``);
* ``F32``:   ``w`` float32 (decoded dense values: the reference representation);
* ``PQ``:    ``w[r, m*d + t] = cb[m or 0, code[r, m], t]`` (product quantization).

Every op ends with the epilogue ``y[r] = act(alpha[r] * acc[r] + beta[r])``.

Per op kind (x: one sample's input, y: its output):

* ``FC``:   ``acc[r] = sum_j w[r, j] x[j]``. Batch 1: one row at a time, a gather-reduction
  over the row's non-zeros. Batch n > 1 (weights stationary): the n inputs are transposed to
  ``xT (cols, n)`` once, then every non-zero adds ``w * xT[col, :]`` (n contiguous) to the row
  accumulator, so each weight is decoded once per n samples.
* ``PQFC``: lookup tables ``T[m, j] = <cb[m or 0, j], x[m*d:(m+1)*d]>`` (k*cols MACs, axpy over
  the k contiguous centroids of the transposed codebook, zero inputs skipped), then sub-space
  major ``acc[r] += T[m, code[m, r]]`` (codes stored (M, rows): T's row m stays in L1).
* ``CONV``: direct sparse convolution: every stored tap ``(o, c, i, j, w)`` adds
  ``w * x[c, oh*sh - ph + i*dh, ow*sw - pw + j*dw]`` to the output plane ``o`` (the valid
  ``ow`` range is computed, so the inner loop is a contiguous axpy when ``sw == 1``).
* ``POOL``: max / average pooling (``avg`` counts padding as torch's default).
* ``EW``:   element-wise ``act(alpha[c] * x + beta[c])`` with ``c = i // (features / C)``
  (standalone BatchNorm / activation).
* ``ACTQ``: ``round(clip(x, 0, c) / c * L) / L * c`` (k-bit activation quantizer, L = 2^k - 1).
"""
from __future__ import annotations

import math

import numba
import numpy as np
from numba import prange

FM = {"reassoc", "contract", "nsz"}  # reassociation lets LLVM vectorize the reductions

# op kinds
K_FC, K_CONV, K_POOL, K_EW, K_ACTQ, K_PQFC = 1, 2, 3, 4, 5, 6
# weight layouts / value formats
L_CSR, L_DENSE = 0, 1
V_TABLE, V_Q8, V_F32, V_PQ = 0, 1, 2, 3
# activations
A_NONE, A_RELU, A_HARDTANH, A_LEAKY, A_TANH, A_SIGMOID, A_ELU, A_GELU, A_SILU = 0, 1, 2, 3, 4, 5, 6, 7, 8

# op table columns
C_KIND, C_NIN, C_NOUT, C_ACT, C_ACTP, C_ALPHA, C_BETA = 0, 1, 2, 3, 4, 5, 6
C_LAYOUT, C_VFMT, C_PTR, C_COL, C_COLW, C_VAL, C_TAB, C_NNZ = 7, 8, 9, 10, 11, 12, 13, 14
C_CIN, C_H, C_W, C_COUT, C_KH, C_KW, C_SH, C_SW, C_PH, C_PW, C_DH, C_DW, C_GROUPS, C_HO, C_WO = range(15, 30)
C_M, C_K, C_D, C_NCB, C_CODEW, C_SCR = 30, 31, 32, 33, 34, 35
C_ROWS, C_COLS = 36, 37
OPW = 38
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
    return v


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


# ------------------------------------------------------------------------------------------
# fully connected


@numba.njit(cache=True, fastmath=FM)
def _csr_rows_tab(op, F, ptr, col, codes, tab, x, y):  # pragma: no cover - compiled
    """Batch 1: ``y[r] = finish(sum_{j in row r} tab[codes_j] x[col_j])`` (numba specialises
    it per index dtype)."""
    for r in range(ptr.shape[0] - 1):
        # four independent partial sums: the gather-FMA chain is latency bound otherwise
        # (LLVM does not vectorize the gathers); measured 2.6x faster than one sum
        s0 = np.float32(0.0)
        s1 = np.float32(0.0)
        s2 = np.float32(0.0)
        s3 = np.float32(0.0)
        j = ptr[r]
        e = ptr[r + 1]
        while j + 4 <= e:
            s0 += tab[codes[j]] * x[col[j]]
            s1 += tab[codes[j + 1]] * x[col[j + 1]]
            s2 += tab[codes[j + 2]] * x[col[j + 2]]
            s3 += tab[codes[j + 3]] * x[col[j + 3]]
            j += 4
        while j < e:
            s0 += tab[codes[j]] * x[col[j]]
            j += 1
        y[r] = _finish(op, F, r, (s0 + s1) + (s2 + s3))


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
        y[r] = _finish(op, F, r, (s0 + s1) + (s2 + s3))


@numba.njit(cache=True, fastmath=FM)
def _dense_rows_tab(op, F, rows, cols, codes, tab, x, y):  # pragma: no cover - compiled
    for r in range(rows):
        s = np.float32(0.0)
        o = r * cols
        for j in range(cols):
            s += tab[codes[o + j]] * x[j]
        y[r] = _finish(op, F, r, s)


@numba.njit(cache=True, fastmath=FM)
def _dense_rows_val(op, F, rows, cols, vals, x, y):  # pragma: no cover - compiled
    for r in range(rows):
        s = np.float32(0.0)
        o = r * cols
        for j in range(cols):
            s += np.float32(vals[o + j]) * x[j]
        y[r] = _finish(op, F, r, s)


@numba.njit(cache=True, fastmath=FM)
def _fc1(op, B, F, x, y):  # pragma: no cover - compiled
    """Batch-1 FC: take the typed views once, then one specialised row loop."""
    nnz = op[C_NNZ]
    vf = op[C_VFMT]
    rows = op[C_ROWS]
    cols = op[C_COLS]
    v0 = op[C_VAL]
    if op[C_LAYOUT] == L_DENSE:
        if vf == V_F32:
            _dense_rows_val(op, F, rows, cols, F[v0:v0 + nnz], x, y)
        elif vf == V_Q8:
            _dense_rows_val(op, F, rows, cols, B[v0:v0 + nnz].view(np.int8), x, y)
        else:
            _dense_rows_tab(op, F, rows, cols, B[v0:v0 + nnz], F[op[C_TAB]:op[C_TAB] + 256], x, y)
        return
    ptr = B[op[C_PTR]:op[C_PTR] + 4 * (rows + 1)].view(np.int32)
    if op[C_COLW] == 2:
        col = B[op[C_COL]:op[C_COL] + 2 * nnz].view(np.uint16)
        if vf == V_F32:
            _csr_rows_val(op, F, ptr, col, F[v0:v0 + nnz], x, y)
        elif vf == V_Q8:
            _csr_rows_val(op, F, ptr, col, B[v0:v0 + nnz].view(np.int8), x, y)
        else:
            _csr_rows_tab(op, F, ptr, col, B[v0:v0 + nnz], F[op[C_TAB]:op[C_TAB] + 256], x, y)
    else:
        col4 = B[op[C_COL]:op[C_COL] + 4 * nnz].view(np.int32)
        if vf == V_F32:
            _csr_rows_val(op, F, ptr, col4, F[v0:v0 + nnz], x, y)
        elif vf == V_Q8:
            _csr_rows_val(op, F, ptr, col4, B[v0:v0 + nnz].view(np.int8), x, y)
        else:
            _csr_rows_tab(op, F, ptr, col4, B[v0:v0 + nnz], F[op[C_TAB]:op[C_TAB] + 256], x, y)


@numba.njit(cache=True, fastmath=FM)
def _weight(op, B, F, j):  # pragma: no cover - compiled
    """Value of stored entry ``j`` (CSR order, or row-major for DENSE)."""
    vf = op[C_VFMT]
    if vf == V_TABLE:
        return F[op[C_TAB] + B[op[C_VAL] + j]]
    if vf == V_Q8:
        return np.float32(B[op[C_VAL]:op[C_VAL] + op[C_NNZ]].view(np.int8)[j])
    return F[op[C_VAL] + j]


@numba.njit(cache=True, fastmath=FM)
def _fc_batch(op, B, F, x, y, n, scr):  # pragma: no cover - compiled
    """Weights-stationary batch: ``xT (cols, n)`` in scratch, row accumulators of n floats."""
    nin = op[C_NIN]
    nout = op[C_NOUT]
    xT = scr[:nin * n]
    acc = scr[nin * n:nin * n + n]
    for s in range(n):
        for j in range(nin):
            xT[j * n + s] = x[s * nin + j]
    dense = op[C_LAYOUT] == L_DENSE
    vf = op[C_VFMT]
    if not dense:
        ptr = B[op[C_PTR]:op[C_PTR] + 4 * (nout + 1)].view(np.int32)
    for r in range(nout):
        for s in range(n):
            acc[s] = 0.0
        if dense:
            j0 = r * nin
            j1 = j0 + nin
        else:
            j0 = ptr[r]
            j1 = ptr[r + 1]
        for j in range(j0, j1):
            if dense:
                c = j - j0
            elif op[C_COLW] == 2:
                c = np.int64(B[op[C_COL] + 2 * j]) | (np.int64(B[op[C_COL] + 2 * j + 1]) << 8)
            else:
                c = np.int64(B[op[C_COL]:op[C_COL] + 4 * op[C_NNZ]].view(np.int32)[j])
            if vf == V_TABLE:
                w = F[op[C_TAB] + B[op[C_VAL] + j]]
            elif vf == V_Q8:
                w = np.float32(np.int8(B[op[C_VAL] + j]))
            else:
                w = F[op[C_VAL] + j]
            if w != 0.0:
                base = c * n
                for s in range(n):
                    acc[s] += w * xT[base + s]
        for s in range(n):
            y[s * nout + r] = _finish(op, F, r, acc[s])


@numba.njit(cache=True, fastmath=FM)
def _fc(op, B, F, x, y, n, scr):  # pragma: no cover - compiled
    nin = op[C_NIN]
    nout = op[C_NOUT]
    if n == 1:
        _fc1(op, B, F, x[:nin], y[:nout])
    else:
        _fc_batch(op, B, F, x, y, n, scr)


# ------------------------------------------------------------------------------------------
# product quantization (lookup tables)


@numba.njit(cache=True, fastmath=FM)
def _pqfc(op, B, F, x, y, n, scr):  # pragma: no cover - compiled
    nin = op[C_NIN]
    rows = op[C_NOUT]
    M = op[C_M]
    k = op[C_K]
    d = op[C_D]
    ncb = op[C_NCB]
    cbT = F[op[C_TAB]:op[C_TAB] + ncb * d * k]          # (ncb, d, k): transposed codebooks
    T = scr[:M * k]
    acc = scr[M * k:M * k + rows]
    if op[C_CODEW] == 1:
        codes8 = B[op[C_VAL]:op[C_VAL] + M * rows]
    else:
        codes16 = B[op[C_VAL]:op[C_VAL] + 2 * M * rows].view(np.uint16)
    for s in range(n):
        xs = x[s * nin:(s + 1) * nin]
        for m in range(M):
            base = m * k
            cb = (0 if ncb == 1 else m) * d * k
            for j in range(k):
                T[base + j] = 0.0
            tmax = min(d, nin - m * d)
            for t in range(tmax):
                xv = xs[m * d + t]
                if xv != 0.0:
                    o = cb + t * k
                    for j in range(k):
                        T[base + j] += cbT[o + j] * xv
        for r in range(rows):
            acc[r] = 0.0
        for m in range(M):
            Tm = T[m * k:(m + 1) * k]
            if op[C_CODEW] == 1:
                cm = codes8[m * rows:(m + 1) * rows]
                for r in range(rows):
                    acc[r] += Tm[cm[r]]
            else:
                cm16 = codes16[m * rows:(m + 1) * rows]
                for r in range(rows):
                    acc[r] += Tm[cm16[r]]
        for r in range(rows):
            y[s * rows + r] = _finish(op, F, r, acc[r])


# ------------------------------------------------------------------------------------------
# convolution, pooling, element-wise


@numba.njit(cache=True, fastmath=FM)
def _tap(op, xs, ys, c, i, j, w):  # pragma: no cover - compiled
    """``ys[oh, ow] += w * xs[c, oh*sh - ph + i*dh, ow*sw - pw + j*dw]`` over the valid range."""
    H = op[C_H]
    W = op[C_W]
    Ho = op[C_HO]
    Wo = op[C_WO]
    sh = op[C_SH]
    sw = op[C_SW]
    offh = i * op[C_DH] - op[C_PH]
    offw = j * op[C_DW] - op[C_PW]
    # ow valid where 0 <= ow*sw + offw < W
    ow0 = 0 if offw >= 0 else (-offw + sw - 1) // sw
    ow1 = (W - 1 - offw) // sw + 1 if W - 1 - offw >= 0 else 0
    if ow1 > Wo:
        ow1 = Wo
    if ow1 <= ow0:
        return
    xc = c * H * W
    for oh in range(Ho):
        ih = oh * sh + offh
        if ih < 0 or ih >= H:
            continue
        xr = xc + ih * W + offw
        yr = oh * Wo
        if sw == 1:
            for ow in range(ow0, ow1):
                ys[yr + ow] += w * xs[xr + ow]
        else:
            for ow in range(ow0, ow1):
                ys[yr + ow] += w * xs[xr + ow * sw]


@numba.njit(cache=True, fastmath=FM)
def _conv(op, B, F, x, y, n, scr):  # pragma: no cover - compiled
    nin = op[C_NIN]
    nout = op[C_NOUT]
    cout = op[C_COUT]
    groups = op[C_GROUPS]
    cin_g = op[C_CIN] // groups
    cout_g = cout // groups
    kh = op[C_KH]
    kw = op[C_KW]
    khw = kh * kw
    plane = op[C_HO] * op[C_WO]
    vf = op[C_VFMT]
    cols = op[C_COLS]
    dense = op[C_LAYOUT] == L_DENSE
    if vf != V_PQ and not dense:
        ptr = B[op[C_PTR]:op[C_PTR] + 4 * (cout + 1)].view(np.int32)
    for s in range(n):
        xs = x[s * nin:(s + 1) * nin]
        ys = y[s * nout:(s + 1) * nout]
        for o in range(cout):
            yo = ys[o * plane:(o + 1) * plane]
            for p in range(plane):
                yo[p] = 0.0
            g = o // cout_g
            if vf == V_PQ:
                M = op[C_M]
                k = op[C_K]
                d = op[C_D]
                for m in range(M):
                    if op[C_CODEW] == 1:
                        code = np.int64(B[op[C_VAL] + m * cout + o])
                    else:
                        code = np.int64(B[op[C_VAL] + 2 * (m * cout + o)]) | (
                            np.int64(B[op[C_VAL] + 2 * (m * cout + o) + 1]) << 8)
                    cb = op[C_TAB] + (((0 if op[C_NCB] == 1 else m) * k + code) * d)
                    for t in range(d):
                        col = m * d + t
                        if col >= cols:
                            break
                        w = F[cb + t]
                        if w != 0.0:
                            cl = col // khw
                            rem = col - cl * khw
                            ki = rem // kw
                            _tap(op, xs, yo, g * cin_g + cl, ki, rem - ki * kw, w)
            else:
                if dense:
                    j0 = o * cols
                    j1 = j0 + cols
                else:
                    j0 = ptr[o]
                    j1 = ptr[o + 1]
                for jj in range(j0, j1):
                    if dense:
                        col = jj - j0
                    elif op[C_COLW] == 2:
                        col = np.int64(B[op[C_COL] + 2 * jj]) | (np.int64(B[op[C_COL] + 2 * jj + 1]) << 8)
                    else:
                        col = np.int64(B[op[C_COL]:op[C_COL] + 4 * op[C_NNZ]].view(np.int32)[jj])
                    w = _weight(op, B, F, jj)
                    if w != 0.0:
                        cl = col // khw
                        rem = col - cl * khw
                        ki = rem // kw
                        _tap(op, xs, yo, g * cin_g + cl, ki, rem - ki * kw, w)
            for p in range(plane):
                yo[p] = _finish(op, F, o, yo[p])


@numba.njit(cache=True, fastmath=FM)
def _pool(op, x, y, n):  # pragma: no cover - compiled
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
    for s in range(n):
        for c in range(C):
            xo = s * nin + c * H * W
            yo = s * nout + c * Ho * Wo
            for oh in range(Ho):
                for ow in range(Wo):
                    if is_max:
                        v = -np.inf
                    else:
                        v = 0.0
                    for i in range(kh):
                        ih = oh * sh - ph + i
                        if ih < 0 or ih >= H:
                            continue
                        for j in range(kw):
                            iw = ow * sw - pw + j
                            if iw < 0 or iw >= W:
                                continue
                            e = x[xo + ih * W + iw]
                            if is_max:
                                if e > v or e != e:
                                    v = e
                            else:
                                v += e
                    if not is_max:
                        v = v / (kh * kw)
                    y[yo + oh * Wo + ow] = v


@numba.njit(cache=True, fastmath=FM)
def _ew(op, F, x, y, n):  # pragma: no cover - compiled
    nin = op[C_NIN]
    C = op[C_CIN]
    per = nin // C
    for s in range(n):
        for c in range(C):
            o = s * nin + c * per
            for i in range(per):
                y[o + i] = _finish(op, F, c, x[o + i])


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
            _conv(op, B, F, src, dst, n, scr)
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
