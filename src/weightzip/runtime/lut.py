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

The compiled kernels (one input: the chain kernel; many inputs, e.g. conv positions: blocks of
inputs) are in :mod:`weightzip.runtime.lut_kernels`; a torch path (``index_select`` + sum) runs
autograd, non-CPU tensors and other dtypes.

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
The converter is :func:`pq_lut_converter`, registered (first) by :mod:`weightzip.runtime.convert`.
"""
from __future__ import annotations

import logging
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .fastest import FastestOf
from .lut_kernels import lut_chain, lut_gather_block, lut_tables, pack_chain
from .stack import linear_relu_stack

__all__ = ["LUTLinear", "LUTConv2d", "FusedLUTMLP", "FastestOf", "lut_from_parts", "lut_tables",
           "pq_lut_converter", "AUTO_MIN_BOUND"]

log = logging.getLogger("weightzip.runtime.lut")


# ---------------------------------------------------------------------------------------------
# Layers


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
        self._pack = pack_chain([self], [False])
        self._flat = None
        # inputs per block of the batched path: the table block T (M*k, nb) stays within ~1 MB
        self._nb = int(max(8, min(256, (1 << 18) // max(1, M * k))))

    def lut_matmul(self, x2: torch.Tensor) -> torch.Tensor:
        """``x2`` (N, cols) -> (N, rows) = x2 W^T + b through the lookup tables.

        CPU float32 without autograd: N = 1 (or N < 8) runs the compiled chain kernel per
        input; larger N builds the tables of blocks of inputs with one batched matmul
        (``T[m] = C_m X_m^T``, (M, k, nb)) and gathers with :func:`lut_gather_block`.
        Anything else goes through the differentiable torch path.
        """
        n = x2.shape[0]
        if not _fast_path(x2):
            return self._torch_matmul(x2)
        xd = x2.detach()
        if n < 8:
            xc = xd.contiguous().numpy()
            if n == 1:
                return torch.from_numpy(lut_chain(xc[0], *self._pack))
            return torch.from_numpy(np.concatenate([lut_chain(xc[i], *self._pack) for i in range(n)]))
        outT = np.empty((self.rows, n), dtype=np.float32)
        xp = F.pad(xd, (0, self.M * self.d - self.cols)) if self.M * self.d != self.cols else xd
        X3 = xp.reshape(n, self.M, self.d).permute(1, 2, 0)                        # (M, d, N)
        nb = self._nb
        for n0 in range(0, n, nb):
            T = torch.matmul(self.codebooks, X3[:, :, n0:n0 + nb])                   # (M, k, nb)
            lut_gather_block(T.reshape(self.M * self.k, -1).numpy(), self._indptr, self._fidx, self._bias,
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
    matvec inside the chain. At batch 1 the whole stack is a single :func:`lut_chain` call (no
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
        self._pack = pack_chain(list(layers), self.relu_after)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2 and x.shape[0] == 1 and _fast_path(x):
            return torch.from_numpy(lut_chain(x.detach().reshape(-1).numpy(), *self._pack))
        for layer, relu in zip(self.layers, self.relu_after):
            x = layer(x)
            if relu:
                x = torch.relu(x)
        return x

    def extra_repr(self) -> str:
        return f"relu_after={self.relu_after}"



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
    """The codec's PQ parts (codes, codebooks, mask) of ``name``'s weight, or None if not PQ."""
    fmt = formats.get(f"{name}.weight" if name else "weight")
    if fmt is None or getattr(fmt, "kind", None) != "pq":
        return None
    from ..codec import decode_parts

    return decode_parts(fmt)


def _lut_layer(module: nn.Module, name: str, formats: dict[str, Any]) -> nn.Module | None:
    """The LUT layer of one PQ ``Linear`` / ``Conv2d``; None (logged) where the file's PQ form
    cannot run by lookup tables, None (silently) where the weight is not product-quantized."""
    parts = _pq_parts(module, name, formats)
    if parts is None:
        return None
    lut, why = lut_from_parts(module, parts)
    if lut is None:
        log.warning("%s: product-quantized layer kept dense: %s", name, why)
    return lut


def _lut_sequential(module: nn.Module, name: str, formats: dict[str, Any]) -> nn.Module | None:
    """A :class:`FusedLUTMLP` for a Sequential of Linear / ReLU / Dropout layers of which at least
    one is product-quantized (the others run as dense matvecs in the chain), or None."""
    stack = linear_relu_stack(module)
    if stack is None or not stack.chains():
        return None
    layers = []
    for pos, child in zip(stack.positions, stack.linears):
        lut = _lut_layer(child, f"{name}.{pos}" if name else str(pos), formats)
        layers.append(child if lut is None else lut)
    if not any(isinstance(x, LUTLinear) for x in layers):
        return None
    return FusedLUTMLP(layers, stack.relu_after)


AUTO_MIN_BOUND = 0.5


def _bound(lay: nn.Module) -> float:
    """METHODS.md's cost-model speed-up of a LUT layer, ``rows*cols / (k*cols + lookups)``; for a
    fused chain the ratio of the summed costs (dense layers of the chain cost rows*cols in both)."""
    parts = lay.layers if isinstance(lay, FusedLUTMLP) else [lay]
    dense = sum(p.weight.numel() if isinstance(p, nn.Linear) else p.rows * p.cols for p in parts)
    table = sum(p.weight.numel() if isinstance(p, nn.Linear) else p.k * p.cols + p.nnz for p in parts)
    return dense / max(1, table)


def pq_lut_converter(module: nn.Module, name: str, formats: dict[str, Any], mode: str,
                     others: Callable[[], dict[str, nn.Module]] | None = None) -> nn.Module | None:
    """``lut``: the LUT layer (or fused chain) of a PQ ``Linear`` / ``Conv2d`` / ``Sequential``;
    ``auto``: a :class:`FastestOf` over the LUT layer, ``module`` itself (dense) and ``others()``
    (what the other converters offer, asked only when the cost-model bound is >= ``AUTO_MIN_BOUND``).
    """
    if mode not in ("lut", "auto"):
        return None
    if type(module) is nn.Sequential:
        lut = _lut_sequential(module, name, formats)
    elif type(module) in (nn.Linear, nn.Conv2d):
        lut = _lut_layer(module, name, formats)
    else:
        return None
    if lut is None:
        return None
    if mode == "lut":
        return lut
    if _bound(lut) < AUTO_MIN_BOUND:
        return None  # the tables cost more than twice the dense product: not worth timing
    return FastestOf({"lut": lut, "dense": module, **(others() if others is not None else {})})
