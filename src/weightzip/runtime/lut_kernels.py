"""Compiled (numba, float32, single-threaded) kernels of the lookup-table runtime (:mod:`.lut`).

A PQ weight (rows = C_out, cols = C_in' = C_in*kh*kw) is stored as ``codes`` (rows, M) and
``codebooks`` (n_cb, k, d) (``n_cb`` = M, or 1 shared); sub-space ``m`` covers the input
entries ``m*d:(m+1)*d`` (the last one cut at ``cols`` when padded). For an input ``x`` (cols,)::

    T[m, j] = < C_{m or 0}[j], x[m*d:(m+1)*d] >        for every m, j     (k * cols MACs)
    y[r]    = b[r] + sum_m T[m, codes[r, m]]                              (rows * M lookups)

* :func:`lut_chain` (one input through one or more packed layers): the table is built with
  axpy's over the ``k`` centroids of the transposed codebook (:func:`build_table`; ``k``
  contiguous, vectorized; zero inputs are skipped - post-ReLU inputs are about half zeros),
  then each row sums its lookups (:func:`gather_rows`: CSR list of flat table indices
  ``m*k + code``, zero centroids left out) or, for tables too large for L1, sub-space-major
  (:func:`gather_cols`).
* :func:`lut_gather_block` (many inputs; conv positions are inputs): the gather on blocks of
  ``nb`` inputs, ``T[m*k + j, b]`` with ``b`` contiguous so that every lookup adds a vector.

:func:`lut_tables` precomputes the per-layer tables, :func:`pack_chain` concatenates them for
:func:`lut_chain`.
"""
from __future__ import annotations

from typing import Any

import numba
import numpy as np
import torch
from torch import nn

__all__ = ["build_table", "gather_rows", "gather_cols", "dense_rows", "lut_chain", "lut_gather_block",
           "lut_tables", "pack_chain"]

# ---------------------------------------------------------------------------------------------
# Kernels
#
# A layer is "packed" as: cbT (flat float32, the transposed codebooks (n_cb, d, k) row-major),
# geo = (rows, cols, M, d, k, n_cb), indptr (rows+1) int32 and fidx (nnz) int32 (per row the flat
# table indices m*k + code of its non-zero-centroid sub-vectors), bias (rows). A chain of layers
# concatenates the packs; offsets say where each layer's part starts.


@numba.njit(cache=True, fastmath=True)
def build_table(x, cbT, M, d, cols, T):  # pragma: no cover - compiled
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
def gather_rows(T, indptr, fidx, bias, relu, out):  # pragma: no cover - compiled
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
def gather_cols(T, fidxT, M, bias, relu, out):  # pragma: no cover - compiled
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
def dense_rows(W, x, bias, relu, out):  # pragma: no cover - compiled
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
def lut_chain(x, cbT, cb_off, geo, indptr, ip_off, fidx, fi_off, bias, b_off, relu):  # pragma: no cover
    """One input ``x`` (cols_0,) through L packed layers: ``h <- act_l(LUT_l(h) + b_l)``.

    ``geo[l] = (rows, cols, M, d, k, n_cb, kind)``; ``kind`` 1 marks a small dense layer kept
    in the chain (its weight, row-major, in ``cbT``), 0 a LUT layer: :func:`build_table` then
    :func:`gather_rows` (row-wise, zero codes skipped), 2 a LUT layer with a table too large for
    L1: :func:`build_table` then :func:`gather_cols` (sub-space-major). Returns the last layer's output as a new (1, rows) array.
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
            dense_rows(cbT[co:co + rows * cols].reshape((rows, cols)), src, b, relu[l], dst)
        else:
            build_table(src, cbT[co:co + ncb * d * k].reshape((ncb, d, k)), M, d, cols, T)
            if geo[l, 6] == 2:
                gather_cols(T, fidx[fi_off[l]:fi_off[l] + M * rows], M, b, relu[l], dst)
            else:
                io = ip_off[l]
                gather_rows(T, indptr[io:io + rows + 1], fidx[fi_off[l]:], b, relu[l], dst)
        src, dst = dst, src
    n = geo[L - 1, 0]
    return src[:n].copy().reshape((1, n))


@numba.njit(cache=True, fastmath=True)
def lut_gather_block(T, indptr, fidx, bias, outT, n0):  # pragma: no cover - compiled
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


def pack_chain(layers: list, relu: list[bool]) -> tuple:
    """Concatenate the packed tables of ``layers`` (LUT layers or plain ``nn.Linear``) for
    :func:`lut_chain`: returns the arguments after ``x``, ``(cbT, cb_off, geo, indptr, ip_off,
    fidx, fi_off, bias, b_off, relu)``."""
    cb, ip, fi, bs = [], [], [], []
    cb_off, ip_off, fi_off, b_off, geo = [], [], [], [], []
    n_cb = n_ip = n_fi = n_b = 0
    for lay in layers:
        if isinstance(lay, nn.Linear):  # dense row-major weight
            w = lay.weight.detach().to(torch.float32).contiguous().numpy()
            vals, indptr, fidx = w.ravel(), np.zeros(1, np.int32), np.zeros(0, np.int32)
            bias = (np.zeros(w.shape[0], np.float32) if lay.bias is None
                    else lay.bias.detach().to(torch.float32).numpy())
            geo.append((w.shape[0], w.shape[1], 0, 0, 0, 0, 1))
        else:  # a LUT layer (lut._LUTBase): its precomputed tables
            vals, indptr, bias = lay._cbT.ravel(), lay._indptr, lay._bias
            colmajor = lay._fidxT is not None
            fidx = lay._fidxT if colmajor else lay._fidx
            geo.append((lay.rows, lay.cols, lay.M, lay.d, lay.k, lay.n_codebooks, 2 if colmajor else 0))
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
