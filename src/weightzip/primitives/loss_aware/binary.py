"""Binary projections: loss-aware LAB and the BinaryConnect / BWN baselines."""
from __future__ import annotations

import torch
from torch import Tensor

from .core import Projection, _out, _prep, _sign


@torch.no_grad()
def lab_project(w: Tensor, d: Tensor | None = None, *, blocks: int = 1) -> Projection:
    """Loss-aware binarization (LAB): the exact minimiser of (*) over ``b in {-1,+1}``.

    ``b = sign(w)`` (``sign(0) = +1``); ``alpha = sum(d |w|) / sum(d)`` per block.
    For b = sign(w) fixed, (*) is a quadratic in alpha with this minimiser; and for any alpha >= 0
    sign(w) is the best binary code, so the pair is the global optimum.
    With ``d = 1`` this is BWN (``alpha = mean |w|``).
    """
    W, D = _prep(w, d, blocks)
    b = _sign(W)  # (G x N)
    alpha = (D * W.abs()).sum(1) / D.sum(1)  # (G)
    return _out(W, alpha, b, w.shape)


@torch.no_grad()
def binaryconnect(w: Tensor, *, blocks: int = 1) -> Projection:
    """Deterministic BinaryConnect: ``w_hat = sign(w)`` (``sign(0) = +1``), ``alpha = 1``."""
    W, _ = _prep(w, None, blocks)
    return _out(W, torch.ones(W.shape[0], dtype=W.dtype, device=W.device), _sign(W), w.shape)


@torch.no_grad()
def bwn_project(w: Tensor, *, blocks: int = 1) -> Projection:
    """Binary-weight network: ``b = sign(w)``, ``alpha = mean |w|`` per block."""
    W, _ = _prep(w, None, blocks)
    return _out(W, W.abs().mean(1), _sign(W), w.shape)


bwn = bwn_project  # short names of the baselines
