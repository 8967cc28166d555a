"""Lookup-table (LUT) inference for product-quantized layers (Quantized-CNN, Wu et al. 2016).

A PQ weight (rows = C_out, cols = C_in' = C_in*kh*kw) is stored as ``codes`` (rows, M) and
``codebooks`` (n_cb, k, d) (``n_cb`` = M, or 1 shared); sub-space ``m`` covers the input
entries ``m*d:(m+1)*d`` (the last one cut at ``cols`` when padded). For an input vector ``x``
(cols,)::

    T[m, j] = < C_{m or 0}[j], x[m*d:(m+1)*d] >        for every m, j     (k * cols MACs)
    y[r]    = b[r] + sum_m T[m, codes[r, m]]                              (rows * M lookups)

instead of ``rows * cols`` MACs for ``W x``: the FC speed-up is bounded by
``rows*cols / (k*cols + rows*M)``. Centroids that are exactly zero (the reserved zero code
of ``mask_mode: subvector`` PQ) give ``T = 0`` and are skipped, so a pruned layer costs
``k*cols + (#kept sub-vectors)`` operations. The layers never hold the dense weight.

Kernels (numba, float32, single-threaded):

* ``_lut_matvec`` (one input): the table is built with axpy's over the ``k`` centroids of the
  transposed codebook (``k`` contiguous, vectorized; zero inputs are skipped - post-ReLU
  inputs are about half zeros), then each row sums its lookups (CSR list of flat table
  indices ``m*k + code``, zero centroids left out).
* ``_lut_matmat`` (many inputs; conv positions are inputs): the same on blocks of ``nb``
  inputs, ``T[m*k + j, b]`` with ``b`` contiguous so that every lookup adds a vector.
* a torch path (``index_select`` + sum) for autograd, non-CPU tensors or other dtypes.

Masked PQ (``mask_mode: element``) multiplies the reconstruction by a per-weight mask; a LUT
entry ``T[m, j]`` is shared by all rows and cannot apply row ``r``'s mask, so a layer whose
file stores a mask (the codec stores one only when the codes alone do not reproduce the zeros)
is NOT converted: it runs as the decoded dense layer and the converter logs why. Layers with
``groups != 1``, non-zero ``padding_mode`` or string padding stay dense as well.

Modes (see :func:`weightzip.runtime.load.load`): ``lut`` converts every PQ layer it can;
``auto`` wraps each convertible layer whose cost-model bound ``rows*cols / (k*cols + lookups)``
is at least ``AUTO_MIN_BOUND`` (0.5) in :class:`FastestOf`, which times the LUT layer, the dense
layer and what the other converters offer on the first input of each shape and then runs the
fastest for that shape; layers below the bound are left to the other converters (dense).
"""
from __future__ import annotations

import logging
import time
from typing import Any

import numba
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import layers as _layers
from .layers import register_converter

__all__ = ["LUTLinear", "LUTConv2d", "FusedLUTMLP", "FastestOf", "lut_from_parts", "lut_tables"]

log = logging.getLogger("weightzip.runtime.lut")


# ---------------------------------------------------------------------------------------------
# Kernels
#
# A layer is "packed" as: cbT (flat float32, the transposed codebooks (n_cb, d, k) row-major),
# geo = (rows, cols, M, d, k, n_cb), indptr (rows+1) int32 and fidx (nnz) int32 (per row the flat
# table indices m*k + code of its non-zero-centroid sub-vectors), bias (rows). A chain of layers
# concatenates the packs; offsets say where each layer's part starts.


@numba.njit(cache=True, fastmath=True)
def _build_table(x, cbT, M, d, cols, T):  # pragma: no cover - compiled
    """``T[m*k + j] = sum_t cbT[c(m), t, j] x[m*d + t]`` (axpy over the k contiguous centroids;
    zero inputs skipped). ``cbT`` (n_cb, d, k), ``x`` (>= cols,), ``T`` (>= M*k,)."""
    ncb, _, k = cbT.shape
    for m in range(M):
        c = 0 if ncb == 1 else m
        base = m * k
        for j in range(k):
            T[base + j] = 0.0
        tmax = min(d, cols - m * d)
        for t in range(tmax):
            xv = x[m * d + t]
            if xv != 0.0:
                for j in range(k):
                    T[base + j] += cbT[c, t, j] * xv


@numba.njit(cache=True, fastmath=True)
def _gather_rows(T, indptr, fidx, bias, relu, out):  # pragma: no cover - compiled
    """``out[r] = act(bias[r] + sum_{p in row r} T[fidx[p]])`` with four independent partial sums."""
    for r in range(indptr.shape[0] - 1):
        e = indptr[r + 1]
        s0 = np.float32(0.0)
        s1 = np.float32(0.0)
        s2 = np.float32(0.0)
        s3 = np.float32(0.0)
        p = indptr[r]
        while p + 4 <= e:
            s0 += T[fidx[p]]
            s1 += T[fidx[p + 1]]
            s2 += T[fidx[p + 2]]
            s3 += T[fidx[p + 3]]
            p += 4
        while p < e:
            s0 += T[fidx[p]]
            p += 1
        v = (s0 + s1) + (s2 + s3) + bias[r]
        if relu and v < 0.0:
            v = 0.0
        out[r] = v


@numba.njit(cache=True, fastmath=True)
def _gather_cols(T, fidxT, M, bias, relu, out):  # pragma: no cover - compiled
    """Sub-space-major gather for large tables: ``out[r] = act(bias[r] + sum_m T[fidxT[m*R + r]])``.

    Sub-space ``m`` only touches its own ``k`` table entries (in L1) and the row sums
    ``out`` (R,), so no lookup misses the cache however large ``M*k`` is; zero codes are
    looked up (their entry is 0) instead of skipped.
    """
    R = bias.shape[0]
    for r in range(R):
        out[r] = bias[r]
    for m in range(M):
        base = m * R
        for r in range(R):
            out[r] += T[fidxT[base + r]]
    if relu:
        for r in range(R):
            if out[r] < 0.0:
                out[r] = 0.0


@numba.njit(cache=True, fastmath=True)
def _dense_rows(W, x, bias, relu, out):  # pragma: no cover - compiled
    """``out[r] = act(bias[r] + sum_i W[r, i] x[i])`` (a small dense layer inside a chain)."""
    for r in range(W.shape[0]):
        s = np.float32(0.0)
        for i in range(W.shape[1]):
            s += W[r, i] * x[i]
        v = s + bias[r]
        if relu and v < 0.0:
            v = 0.0
        out[r] = v


@numba.njit(cache=True, fastmath=True)
def _lut_chain(x, cbT, cb_off, geo, indptr, ip_off, fidx, fi_off, bias, b_off, relu):  # pragma: no cover
    """One input ``x`` (cols_0,) through L packed layers: ``h <- act_l(LUT_l(h) + b_l)``.

    ``geo[l] = (rows, cols, M, d, k, n_cb, kind)``; ``kind`` 1 marks a small dense layer kept
    in the chain (its weight, row-major, in ``cbT``), 0 a LUT layer: :func:`_build_table` then
    :func:`_gather_rows` (row-wise, zero codes skipped), 2 a LUT layer with a table too large for
    L1: :func:`_build_table` then :func:`_gather_cols` (sub-space-major). Returns the last layer's output as a new (1, rows) array.
    """
    L = geo.shape[0]
    width = x.shape[0]
    tsize = 1
    for l in range(L):
        width = max(width, geo[l, 0])
        tsize = max(tsize, geo[l, 2] * geo[l, 4])
    src = np.empty(width, dtype=np.float32)
    dst = np.empty(width, dtype=np.float32)
    T = np.empty(tsize, dtype=np.float32)
    src[:x.shape[0]] = x
    for l in range(L):
        rows = geo[l, 0]
        cols = geo[l, 1]
        M = geo[l, 2]
        d = geo[l, 3]
        k = geo[l, 4]
        ncb = geo[l, 5]
        co = cb_off[l]
        b = bias[b_off[l]:b_off[l] + rows]
        if geo[l, 6] == 1:
            _dense_rows(cbT[co:co + rows * cols].reshape((rows, cols)), src, b, relu[l], dst)
        else:
            _build_table(src, cbT[co:co + ncb * d * k].reshape((ncb, d, k)), M, d, cols, T)
            if geo[l, 6] == 2:
                _gather_cols(T, fidx[fi_off[l]:fi_off[l] + M * rows], M, b, relu[l], dst)
            else:
                io = ip_off[l]
                _gather_rows(T, indptr[io:io + rows + 1], fidx[fi_off[l]:], b, relu[l], dst)
        src, dst = dst, src
    n = geo[L - 1, 0]
    return src[:n].copy().reshape((1, n))


@numba.njit(cache=True, fastmath=True)
def _lut_gather_block(T, indptr, fidx, bias, outT, n0):  # pragma: no cover - compiled
    """``outT[r, n0 + b] = bias[r] + sum_{p in row r} T[fidx[p], b]`` for a block ``T`` (M*k, nb)."""
    R = outT.shape[0]
    w = T.shape[1]
    acc = np.empty(w, dtype=np.float32)
    for r in range(R):
        for b in range(w):
            acc[b] = bias[r]
        for p in range(indptr[r], indptr[r + 1]):
            f = fidx[p]
            for b in range(w):
                acc[b] += T[f, b]
        for b in range(w):
            outT[r, n0 + b] = acc[b]
    return outT


# ---------------------------------------------------------------------------------------------
# Tables shared by the layers


def lut_tables(codes: np.ndarray, codebooks: np.ndarray) -> dict[str, Any]:
    """Precompute what the kernels need from ``codes`` (rows, M) and ``codebooks`` (n_cb, k, d).

    Returns ``cbT`` (n_cb, d, k) float32 (transposed codebooks), ``indptr`` (rows+1,) and
    ``fidx`` (nnz,) int32: per row the flat table indices ``m*k + codes[r, m]`` of its
    sub-vectors whose centroid is not exactly zero (zero centroids contribute nothing), and
    ``nnz`` (lookups per input).
    """
    codes = np.asarray(codes, dtype=np.int64)
    cbs = np.ascontiguousarray(codebooks, dtype=np.float32)
    rows, M = codes.shape
    ncb, k, d = cbs.shape
    if M * k >= 2 ** 31:
        raise ValueError(f"PQ table of M*k = {M * k} entries is too large for the LUT runtime")
    zero = ~np.any(cbs != 0, axis=2)                                  # (n_cb, k)
    cb_of_m = np.zeros(M, dtype=np.int64) if ncb == 1 else np.arange(M)
    skip = zero[cb_of_m[None, :], codes]                              # (rows, M)
    flat = (np.arange(M, dtype=np.int64)[None, :] * k + codes)        # (rows, M)
    keep = ~skip
    indptr = np.zeros(rows + 1, dtype=np.int32)
    np.cumsum(keep.sum(1), out=indptr[1:])
    fidx = flat[keep].astype(np.int32)                                # row-major: rows in order
    return {"cbT": np.ascontiguousarray(cbs.transpose(0, 2, 1)), "indptr": indptr, "fidx": fidx,
            "nnz": int(fidx.size)}


def _pack_chain(layers: list, relu: list[bool]) -> tuple:
    """Concatenate the packed tables of ``layers`` (LUT layers or plain ``nn.Linear``) for
    :func:`_lut_chain`."""
    cb, ip, fi, bs = [], [], [], []
    cb_off, ip_off, fi_off, b_off, geo = [], [], [], [], []
    n_cb = n_ip = n_fi = n_b = 0
    for lay in layers:
        if isinstance(lay, _LUTBase):
            vals, indptr, bias = lay._cbT.ravel(), lay._indptr, lay._bias
            colmajor = lay._fidxT is not None
            fidx = lay._fidxT if colmajor else lay._fidx
            geo.append((lay.rows, lay.cols, lay.M, lay.d, lay.k, lay.n_codebooks, 2 if colmajor else 0))
        else:  # nn.Linear: dense row-major weight
            w = lay.weight.detach().to(torch.float32).contiguous().numpy()
            vals, indptr, fidx = w.ravel(), np.zeros(1, np.int32), np.zeros(0, np.int32)
            bias = (np.zeros(w.shape[0], np.float32) if lay.bias is None
                    else lay.bias.detach().to(torch.float32).numpy())
            geo.append((w.shape[0], w.shape[1], 0, 0, 0, 0, 1))
        cb_off.append(n_cb)
        ip_off.append(n_ip)
        fi_off.append(n_fi)
        b_off.append(n_b)
        cb.append(vals)
        ip.append(indptr)
        fi.append(fidx)
        bs.append(bias)
        n_cb += vals.size
        n_ip += indptr.size
        n_fi += fidx.size
        n_b += bias.size
    i64 = np.int64
    return (np.concatenate(cb).astype(np.float32), np.asarray(cb_off, i64), np.asarray(geo, i64),
            np.concatenate(ip).astype(np.int32), np.asarray(ip_off, i64), np.concatenate(fi).astype(np.int32),
            np.asarray(fi_off, i64), np.concatenate(bs).astype(np.float32), np.asarray(b_off, i64),
            np.asarray(relu, np.bool_))


COLMAJOR_MIN_TABLE = 16384


def _fast_path(x: torch.Tensor) -> bool:
    return x.device.type == "cpu" and x.dtype == torch.float32 and not (x.requires_grad and torch.is_grad_enabled())


class _LUTBase(nn.Module):
    """Holds codes + codebooks (as buffers) and the kernel tables; no dense weight."""

    def _setup(self, codes, codebooks, cols: int, bias) -> None:
        codes_t = torch.as_tensor(np.asarray(codes), dtype=torch.int64)
        cbs_t = torch.as_tensor(np.asarray(codebooks, dtype=np.float32))
        rows, M = codes_t.shape
        ncb, k, d = cbs_t.shape
        if ncb not in (1, M) or not (M - 1) * d < cols <= M * d:
            raise ValueError(f"PQ geometry codes {tuple(codes_t.shape)} / codebooks {tuple(cbs_t.shape)} "
                             f"does not cover {cols} input columns")
        self.rows, self.cols, self.M, self.k, self.d, self.n_codebooks = rows, cols, M, k, d, ncb
        self.register_buffer("codes", codes_t, persistent=False)
        self.register_buffer("codebooks", cbs_t, persistent=False)
        b = torch.zeros(rows) if bias is None else torch.as_tensor(bias).detach().to(torch.float32).reshape(rows)
        self.register_buffer("bias", b.clone(), persistent=False)
        self.has_bias = bias is not None
        tabs = lut_tables(codes_t.numpy(), cbs_t.numpy())
        self._cbT, self._indptr, self._fidx = tabs["cbT"], tabs["indptr"], tabs["fidx"]
        self.nnz = tabs["nnz"]
        # a table larger than L2-friendly (M*k > 16384 floats) with mostly non-zero codes:
        # sub-space-major gather (every lookup hits the current sub-space's k entries) instead
        # of row-wise with zero codes skipped
        self._fidxT = None
        if M * k > COLMAJOR_MIN_TABLE and self.nnz > 0.75 * rows * M:
            flat = np.arange(M, dtype=np.int64)[:, None] * k + codes_t.numpy().T      # (M, rows)
            self._fidxT = np.ascontiguousarray(flat.ravel(), dtype=np.int32)
        self._bias = self.bias.numpy()
        self._pack = _pack_chain([self], [False])
        self._flat = None
        # inputs per block of the batched path: the table block T (M*k, nb) stays within ~1 MB
        self._nb = int(max(8, min(256, (1 << 18) // max(1, M * k))))

    def lut_matmul(self, x2: torch.Tensor) -> torch.Tensor:
        """``x2`` (N, cols) -> (N, rows) = x2 W^T + b through the lookup tables.

        CPU float32 without autograd: N = 1 (or N < 8) runs the compiled chain kernel per
        input; larger N builds the tables of blocks of inputs with one batched matmul
        (``T[m] = C_m X_m^T``, (M, k, nb)) and gathers with :func:`_lut_gather_block`.
        Anything else goes through the differentiable torch path.
        """
        n = x2.shape[0]
        if not _fast_path(x2):
            return self._torch_matmul(x2)
        xd = x2.detach()
        if n < 8:
            xc = xd.contiguous().numpy()
            if n == 1:
                return torch.from_numpy(_lut_chain(xc[0], *self._pack))
            return torch.from_numpy(np.concatenate([_lut_chain(xc[i], *self._pack) for i in range(n)]))
        outT = np.empty((self.rows, n), dtype=np.float32)
        xp = F.pad(xd, (0, self.M * self.d - self.cols)) if self.M * self.d != self.cols else xd
        X3 = xp.reshape(n, self.M, self.d).permute(1, 2, 0)                        # (M, d, N)
        nb = self._nb
        for n0 in range(0, n, nb):
            T = torch.matmul(self.codebooks, X3[:, :, n0:n0 + nb])                   # (M, k, nb)
            _lut_gather_block(T.reshape(self.M * self.k, -1).numpy(), self._indptr, self._fidx, self._bias,
                              outT, n0)
        return torch.from_numpy(outT).T

    def _torch_matmul(self, x2: torch.Tensor) -> torch.Tensor:
        """Differentiable / any-device path: ``T = einsum(x_m, C_m)``, gather, sum over m."""
        n = x2.shape[0]
        cbs = self.codebooks.to(device=x2.device, dtype=x2.dtype)
        xp = F.pad(x2, (0, self.M * self.d - self.cols)).reshape(n, self.M, self.d)   # (N, M, d)
        if self.n_codebooks == 1:
            T = xp @ cbs[0].T                                                          # (N, M, k)
        else:
            T = torch.einsum("nmd,mkd->nmk", xp, cbs)                                   # (N, M, k)
        if self._flat is None or self._flat.device != x2.device:
            self._flat = (torch.arange(self.M, device=x2.device).unsqueeze(0) * self.k
                          + self.codes.to(x2.device)).reshape(-1)                      # (rows*M,)
        y = T.reshape(n, self.M * self.k).index_select(1, self._flat).reshape(n, self.rows, self.M).sum(-1)
        return y + self.bias.to(device=x2.device, dtype=x2.dtype)

    def dense_weight(self) -> torch.Tensor:
        """The decoded weight matrix (rows, cols), for checks only (the layer never uses it)."""
        if self.n_codebooks == 1:
            sub = self.codebooks[0][self.codes]
        else:
            sub = self.codebooks[torch.arange(self.M).unsqueeze(0), self.codes]
        return sub.reshape(self.rows, -1)[:, :self.cols]


class LUTLinear(_LUTBase):
    """``nn.Linear`` run from PQ codes + codebooks by lookup tables (see the module docstring).

    ``codes`` (out, M) int, ``codebooks`` (n_cb, k, d) float32 covering ``in_features``
    columns, ``bias`` (out,) or None. ``forward(x [..., in]) -> [..., out]``.
    """

    def __init__(self, codes, codebooks, in_features: int, bias=None):
        super().__init__()
        self._setup(codes, codebooks, int(in_features), bias)
        self.in_features, self.out_features = self.cols, self.rows

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        y = self.lut_matmul(x.reshape(-1, self.in_features))
        return y.reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, M={self.M}, "
                f"k={self.k}, d={self.d}, codebooks={self.n_codebooks}, lookups={self.nnz}")


class LUTConv2d(_LUTBase):
    """``nn.Conv2d`` (groups=1, zero padding) run by im2col + lookup tables.

    ``x`` (B, C_in, H, W) -> ``F.unfold`` (B, C_in*kh*kw, L) -> every position is an input of
    the LUT product -> (B, C_out, H_out, W_out). Codes/codebooks cover ``C_in*kh*kw`` columns
    in the weight's row-major order (c, i, j), which is also unfold's order.
    """

    def __init__(self, codes, codebooks, in_channels: int, out_channels: int, kernel_size, stride=1,
                 padding=0, dilation=1, bias=None):
        super().__init__()
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size = tuple(np.broadcast_to(np.asarray(kernel_size), 2).tolist())
        self.stride = tuple(np.broadcast_to(np.asarray(stride), 2).tolist())
        self.padding = tuple(np.broadcast_to(np.asarray(padding), 2).tolist())
        self.dilation = tuple(np.broadcast_to(np.asarray(dilation), 2).tolist())
        cols = self.in_channels * self.kernel_size[0] * self.kernel_size[1]
        self._setup(codes, codebooks, cols, bias)
        if self.rows != self.out_channels:
            raise ValueError(f"codes have {self.rows} rows for {self.out_channels} output channels")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batched = x.dim() == 4
        if not batched:
            x = x.unsqueeze(0)
        B, _, H, W = x.shape
        kh, kw = self.kernel_size
        ho = (H + 2 * self.padding[0] - self.dilation[0] * (kh - 1) - 1) // self.stride[0] + 1
        wo = (W + 2 * self.padding[1] - self.dilation[1] * (kw - 1) - 1) // self.stride[1] + 1
        cols = F.unfold(x, self.kernel_size, dilation=self.dilation, padding=self.padding,
                        stride=self.stride)                                   # (B, cols, L)
        X = cols.transpose(1, 2).reshape(B * ho * wo, self.cols)             # (B*L, cols)
        Y = self.lut_matmul(X)                                                 # (B*L, C_out)
        y = Y.reshape(B, ho * wo, self.out_channels).transpose(1, 2).reshape(B, self.out_channels, ho, wo)
        return y if batched else y[0]

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, M={self.M}, "
                f"k={self.k}, d={self.d}, codebooks={self.n_codebooks}, lookups={self.nnz}")


class FusedLUTMLP(nn.Module):
    """A ``Sequential`` of ``Linear`` (+ ``ReLU`` / ``Dropout``) layers as ONE compiled LUT chain.

    The product-quantized layers are :class:`LUTLinear`; a layer the codec stored otherwise
    (e.g. a tiny classifier kept as a codebook) stays an ``nn.Linear`` and runs as a dense
    matvec inside the chain. At batch 1 the whole stack is a single :func:`_lut_chain` call (no
    per-layer framework dispatch, ReLU fused); other inputs run layer by layer. Same outputs as
    the dense stack up to float summation order.
    """

    def __init__(self, layers: list[LUTLinear | nn.Linear], relu_after: list[bool]):
        super().__init__()
        if not any(isinstance(lay, LUTLinear) for lay in layers):
            raise ValueError("FusedLUTMLP needs at least one LUTLinear layer")
        for a, b in zip(layers, layers[1:]):
            if a.out_features != b.in_features:
                raise ValueError(f"cannot chain {a.out_features} outputs into {b.in_features} inputs")
        self.layers = nn.ModuleList(layers)
        self.relu_after = [bool(r) for r in relu_after]
        self._pack = _pack_chain(list(layers), self.relu_after)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2 and x.shape[0] == 1 and _fast_path(x):
            return torch.from_numpy(_lut_chain(x.detach().reshape(-1).numpy(), *self._pack))
        for layer, relu in zip(self.layers, self.relu_after):
            x = layer(x)
            if relu:
                x = torch.relu(x)
        return x

    def extra_repr(self) -> str:
        return f"relu_after={self.relu_after}"


# ---------------------------------------------------------------------------------------------
# Per-shape choice


class FastestOf(nn.Module):
    """Runs the fastest of several equivalent modules, chosen per input shape.

    On the first input of a given (shape, dtype, device, grad) key each candidate runs
    ``repeats`` times (after one warm-up, interleaved with the others) under
    ``torch.inference_mode``; the one with the smallest median wall time is used for that key
    from then on. ``choices`` records the
    decisions and ``timings`` the medians (seconds).
    """

    def __init__(self, candidates: dict[str, nn.Module], repeats: int = 15):
        super().__init__()
        if not candidates:
            raise ValueError("FastestOf needs at least one candidate module")
        self.candidates = nn.ModuleDict(candidates)
        self.repeats = int(repeats)
        self.choices: dict[tuple, str] = {}
        self.timings: dict[tuple, dict[str, float]] = {}

    def _key(self, x: torch.Tensor) -> tuple:
        return (x.shape, x.dtype, x.device.type, x.requires_grad and torch.is_grad_enabled())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        key = self._key(x)
        name = self.choices.get(key)
        if name is None:
            name = self._choose(key, x)
        return self.candidates[name](x)

    def _choose(self, key: tuple, x: torch.Tensor) -> str:
        ts: dict[str, list[float]] = {name: [] for name in self.candidates}
        with torch.inference_mode():
            xi = x.detach()
            for mod in self.candidates.values():
                mod(xi)                                   # warm-up (and numba compilation)
            for _ in range(self.repeats):                 # interleaved, so load drifts hit all alike
                for name, mod in self.candidates.items():
                    t0 = time.perf_counter()
                    mod(xi)
                    ts[name].append(time.perf_counter() - t0)
        times = {name: float(np.median(v)) for name, v in ts.items()}
        best = min(times, key=times.get)
        self.choices[key] = best
        self.timings[key] = times
        return best

    def extra_repr(self) -> str:
        return f"choices={ {k[0]: v for k, v in self.choices.items()} }"


# ---------------------------------------------------------------------------------------------
# Converter (runtime.load with mode "lut" / "auto")


def lut_from_parts(module: nn.Module, parts: dict[str, Any]) -> tuple[nn.Module | None, str]:
    """A LUT layer for ``module`` from the codec's PQ parts (``decode_parts``), or (None, reason)."""
    if parts.get("mask") is not None:
        return None, ("the file stores a per-weight mask that the codes do not reproduce (masked PQ, "
                      "mask_mode=element): a shared lookup table cannot apply per-row masks")
    codes, cbs = parts["codes"], parts["codebooks"]
    bias = None if module.bias is None else module.bias.detach()
    if type(module) is nn.Linear:
        return LUTLinear(codes, cbs, module.in_features, bias), "ok"
    if type(module) is nn.Conv2d:
        if module.groups != 1:
            return None, f"groups={module.groups} (the LUT conv supports groups=1)"
        if module.padding_mode != "zeros":
            return None, f"padding_mode={module.padding_mode!r} (the LUT conv supports zero padding)"
        padding = module.padding
        if isinstance(padding, str):
            if padding != "valid":
                return None, f"padding={padding!r} (give explicit padding)"
            padding = (0, 0)
        return LUTConv2d(codes, cbs, module.in_channels, module.out_channels, module.kernel_size,
                         module.stride, padding, module.dilation, bias), "ok"
    return None, f"{type(module).__name__} has no LUT layer"


def _pq_parts(module: nn.Module, name: str, formats: dict[str, Any]) -> dict[str, Any] | None:
    fmt = formats.get(f"{name}.weight" if name else "weight")
    if fmt is None or getattr(fmt, "kind", None) != "pq":
        return None
    from ..codec.formats import decode_parts

    return decode_parts(fmt)


def _alternatives(module: nn.Module, name: str, formats: dict[str, Any], mode: str) -> dict[str, nn.Module]:
    """What the OTHER registered converters would put in place of ``module`` (for auto mode)."""
    out: dict[str, nn.Module] = {}
    for key, fn in list(_layers._CONVERTERS.items()):
        if key in _OURS:
            continue
        alt = fn(module, name, formats, mode)
        if alt is not None:
            out[key] = alt
    return out


def _lut_sequential(module: nn.Module, name: str, formats: dict[str, Any]) -> nn.Module | None:
    """A :class:`FusedLUTMLP` for a Sequential of PQ Linear / ReLU / Dropout layers, or None."""
    linears, relu_after = [], []
    for i, child in enumerate(module):
        if type(child) is nn.Linear:
            cname = f"{name}.{i}" if name else str(i)
            parts = _pq_parts(child, cname, formats)
            lut, why = (None, "not product-quantized") if parts is None else lut_from_parts(child, parts)
            if lut is None and parts is not None:
                log.warning("%s: product-quantized layer kept dense: %s", cname, why)
            linears.append(child if lut is None else lut)
            relu_after.append(False)
        elif type(child) is nn.ReLU and linears and not relu_after[-1]:
            relu_after[-1] = True
        elif type(child) is nn.Dropout:
            continue
        else:
            return None
    if len(linears) < 2 or not any(isinstance(x, LUTLinear) for x in linears) \
            or any(a.out_features != b.in_features for a, b in zip(linears, linears[1:])):
        return None
    return FusedLUTMLP(linears, relu_after)


def _pq_lut_converter(module: nn.Module, name: str, formats: dict[str, Any], mode: str):
    """``lut``: the LUT layer (or fused chain); ``auto``: :class:`FastestOf` LUT / dense / others."""
    if mode not in ("lut", "auto"):
        return None
    if type(module) is nn.Sequential:
        lut = _lut_sequential(module, name, formats)
    elif type(module) in (nn.Linear, nn.Conv2d):
        parts = _pq_parts(module, name, formats)
        if parts is None:
            return None
        lut, why = lut_from_parts(module, parts)
        if lut is None:
            log.warning("%s: product-quantized layer kept dense: %s", name, why)
    else:
        return None
    if lut is None:
        return None
    if mode == "lut":
        return lut
    if _bound(lut) < AUTO_MIN_BOUND:
        return None  # the tables cost more than twice the dense product: not worth timing
    return FastestOf({"lut": lut, "dense": module, **_alternatives(module, name, formats, mode)})


AUTO_MIN_BOUND = 0.5


def _bound(lay: nn.Module) -> float:
    """METHODS.md's cost-model speed-up of a LUT layer, ``rows*cols / (k*cols + lookups)``; for a
    fused chain the ratio of the summed costs (dense layers of the chain cost rows*cols in both)."""
    parts = lay.layers if isinstance(lay, FusedLUTMLP) else [lay]
    dense = sum(p.weight.numel() if isinstance(p, nn.Linear) else p.rows * p.cols for p in parts)
    table = sum(p.weight.numel() if isinstance(p, nn.Linear) else p.k * p.cols + p.nnz for p in parts)
    return dense / max(1, table)


_OURS = ("pq_lut",)
register_converter("pq_lut")(_pq_lut_converter)
# A PQ format is more specific than "a Linear with zeros": run this converter before the others
# (the sparse one would otherwise claim pruned PQ layers in auto mode; FastestOf compares it).
_order = [("pq_lut", _layers._CONVERTERS.pop("pq_lut"))] + list(_layers._CONVERTERS.items())
_layers._CONVERTERS.clear()
_layers._CONVERTERS.update(_order)
