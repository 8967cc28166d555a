"""Pruned ``nn.Linear`` layers run from CSR instead of dense fp32 weights.

``SparseLinear``: ``y = x W^T + b`` with ``W`` (out x in) in CSR form. Batch 1 goes through a
numba kernel ``y_r = b_r + sum_{j in row r} v_j x_{col_j}`` (cost ~ nnz instead of out*in);
larger batches use ``torch.sparse.mm``. ``FusedSparseMLP`` runs a whole ``Sequential`` of such
layers (with ReLU) as one compiled CSR chain at batch 1.

Converters (registered, in order, by :mod:`weightzip.runtime.convert`):
:func:`fuse_sequential` (a sparse-enough Linear/ReLU/Dropout ``Sequential``) and
:func:`sparse_linear_converter` (one Linear of density <= ``MAX_DENSITY``), both in modes
``sparse`` and ``auto``.
"""
from __future__ import annotations

import warnings
from typing import Any

import numba
import numpy as np
import torch
from torch import nn

from .stack import linear_relu_stack

__all__ = ["SparseLinear", "FusedSparseMLP", "fuse_sequential", "sparse_linear_converter", "MAX_DENSITY"]

MAX_DENSITY = 0.5  # a layer (or stack) with more non-zeros than this runs dense


# ---------------------------------------------------------------------------------------------
# Kernels


@numba.njit(cache=True, fastmath=False)
def _csr_matvec(crow, col, val, x, bias, out):  # pragma: no cover - compiled
    """``out[r] = bias[r] + sum_{j in crow[r]:crow[r+1]} val[j] x[col[j]]``."""
    for r in range(crow.shape[0] - 1):
        s = bias[r]
        for j in range(crow[r], crow[r + 1]):
            s += val[j] * x[col[j]]
        out[r] = s
    return out


@numba.njit(cache=True, fastmath=False)
def _fused_csr_chain(crow, col, val, bias, row_off, nnz_off, bias_off, sizes, relu, x, buf_a, buf_b):  # pragma: no cover
    """Layers l = 0..L-1: h <- act_l(W_l h + b_l) with every W_l in one concatenated CSR."""
    src = buf_a
    for i in range(sizes[0]):
        src[i] = x[i]
    dst = buf_b
    for layer in range(sizes.shape[0] - 1):
        r0 = row_off[layer]
        n0 = nnz_off[layer]
        b0 = bias_off[layer]
        for r in range(sizes[layer + 1]):
            s = bias[b0 + r]
            for j in range(crow[r0 + r], crow[r0 + r + 1]):
                s += val[n0 + j] * src[col[n0 + j]]
            if relu[layer] and s < 0.0:
                s = 0.0
            dst[r] = s
        src, dst = dst, src
    return src


def _batch1_fast(x: torch.Tensor) -> bool:
    """The compiled kernels take one float32 input without autograd."""
    return x.dim() == 2 and x.shape[0] == 1 and not x.requires_grad and x.dtype == torch.float32


# ---------------------------------------------------------------------------------------------
# Layers


class SparseLinear(nn.Module):
    """A pruned ``nn.Linear`` stored as CSR (``crow`` (out+1,), ``col`` (nnz,), ``val`` (nnz,))."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.out_features, self.in_features = weight.shape
        with warnings.catch_warnings():  # "sparse CSR support is in beta"
            warnings.simplefilter("ignore")
            csr = weight.detach().to(torch.float32).to_sparse_csr()
        self.register_buffer("weight_csr", csr, persistent=False)
        self._crow = csr.crow_indices().numpy().astype(np.int32)
        self._col = csr.col_indices().numpy().astype(np.int32)
        self._val = csr.values().numpy().astype(np.float32)
        b = bias.detach().to(torch.float32) if bias is not None else torch.zeros(self.out_features)
        self.register_buffer("bias", b, persistent=False)
        self._bias = b.numpy()

    @property
    def nnz(self) -> int:
        return int(self._val.shape[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _batch1_fast(x):
            out = np.empty(self.out_features, dtype=np.float32)
            _csr_matvec(self._crow, self._col, self._val, x[0].contiguous().numpy(), self._bias, out)
            return torch.from_numpy(out).unsqueeze(0)
        flat = x.reshape(-1, self.in_features)
        y = torch.addmm(self.bias.unsqueeze(1), self.weight_csr, flat.T).T
        return y.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, nnz={self.nnz}"


class FusedSparseMLP(nn.Module):
    """A ``Sequential`` of ``Linear`` (+ ``ReLU``/``Dropout``) layers run as ONE compiled CSR chain.

    At batch 1 the whole stack is a single numba call (no per-layer framework dispatch), cost
    ~ total nnz; other batch sizes run layer by layer with ``torch.sparse.mm``. Same outputs as
    the dense stack up to float summation order.
    """

    def __init__(self, linears: list[nn.Linear], relu_after: list[bool]):
        super().__init__()
        self.layers = nn.ModuleList(SparseLinear(l.weight, l.bias) for l in linears)
        self.relu_after = list(relu_after)
        self._concatenate()
        self._relu = np.asarray(relu_after, np.bool_)
        width = int(self._sizes.max())
        self._buf_a = np.empty(width, np.float32)
        self._buf_b = np.empty(width, np.float32)

    def _concatenate(self) -> None:
        """One CSR for the chain: layer ``l``'s crow (rows+1 entries, from 0) starts at
        ``row_off[l]``, its col/val at ``nnz_off[l]``, its bias at ``bias_off[l]``."""
        crows, cols, vals, biases = [], [], [], []
        row_off, nnz_off, bias_off = [0], [0], [0]
        for sl in self.layers:
            crows.append(sl._crow)
            cols.append(sl._col)
            vals.append(sl._val)
            biases.append(sl._bias)
            row_off.append(row_off[-1] + sl.out_features + 1)  # each layer keeps its own crow (rows+1)
            nnz_off.append(nnz_off[-1] + sl.nnz)
            bias_off.append(bias_off[-1] + sl.out_features)
        self._crow = np.concatenate(crows).astype(np.int32)
        self._col = np.concatenate(cols).astype(np.int32)
        self._val = np.concatenate(vals).astype(np.float32)
        self._bias = np.concatenate(biases).astype(np.float32)
        self._row_off = np.asarray(row_off[:-1], np.int64)
        self._nnz_off = np.asarray(nnz_off[:-1], np.int64)
        self._bias_off = np.asarray(bias_off[:-1], np.int64)
        self._sizes = np.asarray([self.layers[0].in_features] + [l.out_features for l in self.layers], np.int64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _batch1_fast(x):
            out = _fused_csr_chain(self._crow, self._col, self._val, self._bias, self._row_off, self._nnz_off,
                                   self._bias_off, self._sizes, self._relu, x[0].contiguous().numpy(),
                                   self._buf_a, self._buf_b)
            return torch.from_numpy(out[: self._sizes[-1]].copy()).unsqueeze(0)
        for layer, relu in zip(self.layers, self.relu_after):
            x = layer(x)
            if relu:
                x = torch.relu(x)
        return x


# ---------------------------------------------------------------------------------------------
# Converters: fn(module, module_name, formats, mode) -> replacement or None


def fuse_sequential(module: nn.Module, name: str, formats: dict[str, Any], mode: str):
    """Fuse a Sequential made only of sparse-enough Linear / ReLU / Dropout layers."""
    if mode not in ("sparse", "auto"):
        return None
    stack = linear_relu_stack(module)
    if stack is None or not stack.chains():
        return None
    linears = stack.linears
    density = sum(int((l.weight != 0).sum()) for l in linears) / sum(l.weight.numel() for l in linears)
    if density > MAX_DENSITY:
        return None
    return FusedSparseMLP(linears, stack.relu_after)


def sparse_linear_converter(module: nn.Module, name: str, formats: dict[str, Any], mode: str):
    """A :class:`SparseLinear` for an ``nn.Linear`` of density <= ``MAX_DENSITY``."""
    if type(module) is not nn.Linear:
        return None
    density = float((module.weight != 0).float().mean())
    if mode in ("sparse", "auto") and density <= MAX_DENSITY:
        return SparseLinear(module.weight, module.bias)
    return None
