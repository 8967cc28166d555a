"""Inference layers that run from compressed forms instead of dense fp32 weights.

``SparseLinear``: ``y = x W^T + b`` with ``W`` (out x in) in CSR form. Batch 1 goes through a
numba kernel ``y_r = b_r + sum_{j in row r} v_j x_{col_j}`` (cost ~ nnz instead of out*in);
larger batches use ``torch.sparse.mm``. Other packed layers (lookup-table PQ layers) register
a converter with :func:`register_converter`.
"""
from __future__ import annotations

from typing import Any, Callable

import numba
import numpy as np
import torch
from torch import nn

_CONVERTERS: dict[str, Callable[[nn.Module, str, dict[str, Any], str], nn.Module | None]] = {}


def register_converter(name: str):
    """Register ``fn(module, module_name, formats, mode) -> replacement or None``."""

    def deco(fn):
        _CONVERTERS[name] = fn
        return fn

    return deco


@numba.njit(cache=True, fastmath=False)
def _csr_matvec(crow, col, val, x, bias, out):  # pragma: no cover - compiled
    for r in range(crow.shape[0] - 1):
        s = bias[r]
        for j in range(crow[r], crow[r + 1]):
            s += val[j] * x[col[j]]
        out[r] = s
    return out


class SparseLinear(nn.Module):
    """A pruned ``nn.Linear`` stored as CSR (``crow`` (out+1,), ``col`` (nnz,), ``val`` (nnz,))."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.out_features, self.in_features = weight.shape
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
        if x.dim() == 2 and x.shape[0] == 1 and not x.requires_grad and x.dtype == torch.float32:
            out = np.empty(self.out_features, dtype=np.float32)
            _csr_matvec(self._crow, self._col, self._val, x[0].contiguous().numpy(), self._bias, out)
            return torch.from_numpy(out).unsqueeze(0)
        flat = x.reshape(-1, self.in_features)
        y = torch.addmm(self.bias.unsqueeze(1), self.weight_csr, flat.T).T
        return y.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, nnz={self.nnz}"


def _sparse_linear_converter(module: nn.Module, name: str, formats: dict[str, Any], mode: str):
    if type(module) is not nn.Linear:
        return None
    density = float((module.weight != 0).float().mean())
    if mode in ("sparse", "auto") and density <= 0.5:
        return SparseLinear(module.weight, module.bias)
    return None


register_converter("sparse_linear")(_sparse_linear_converter)


def convert(model: nn.Module, formats: dict[str, Any], mode: str) -> nn.Module:
    """Swap layers of ``model`` in place for packed runtime layers, where a converter applies."""
    for name, module in list(model.named_modules()):
        if not name:
            continue
        for conv in _CONVERTERS.values():
            new = conv(module, name, formats, mode)
            if new is not None:
                parent_name, _, child = name.rpartition(".")
                parent = model.get_submodule(parent_name) if parent_name else model
                setattr(parent, child, new)
                break
    return model
