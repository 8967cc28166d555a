"""Quantization + sparsification **[reconstructed]**: the projections restricted to a support."""
from __future__ import annotations

import torch
from torch import Tensor

from .core import Projection, _out, _prep, _rows, _sign
from .multibit import laq_project
from .ternary import lat2_approx_project, lat2_exact_project, lat_approx_project, lat_exact_project


def support_mask(w: Tensor, d: Tensor | None, keep: float, *, blocks: int = 1) -> Tensor:
    """The top ``n = round(keep * N_block)`` entries of ``d w^2`` per block as a {0,1} mask.

    Exactly ``n`` ones per block (ties broken by ``torch.topk``); ``keep`` in (0, 1].
    """
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"keep must be in (0, 1], got {keep}")
    W, D = _prep(w, d, blocks)
    n = max(1, int(round(keep * W.shape[1])))
    idx = torch.topk(D * W * W, n, dim=1).indices  # (G x n)
    mask = torch.zeros_like(W).scatter_(1, idx, 1.0)
    return mask.reshape(w.shape)


@torch.no_grad()
def sparse_project(w: Tensor, d: Tensor | None = None, *, keep: float, mode: str = "lab",
                   exact: bool = False, bits: int | None = None, levels: str = "linear",
                   scale_form: str = "code", blocks: int = 1, prev: Tensor | None = None,
                   max_iter: int = 10, negative_side: str = "correct") -> Projection:
    """Quantization + sparsification **[reconstructed]**: (*) with ``||b||_0 <= kappa``.

    Support: the ``kappa = round(keep * N)`` entries with the largest ``d_i w_i^2`` per block
    (:func:`support_mask`); then the mode's projection restricted to it - LAB:
    ``b = sign(w) m``, ``alpha = sum(d m |w|) / sum(d m)``; LAT / LAT2: the threshold search
    on ``w m``; LAQ: alternate ``alpha`` and ``b = P(w / alpha) m``. Entries outside the
    support are exactly 0; at most ``kappa`` entries per block are non-zero.
    """
    mask = support_mask(w, d, keep, blocks=blocks)
    if mode == "lab":
        W, D = _prep(w, d, blocks)
        M = _rows(mask, blocks, "mask")
        b = _sign(W) * M
        alpha = (D * M * W.abs()).sum(1) / (D * M).sum(1)
        return _out(W, alpha, b, w.shape, M)
    if mode == "lat":
        if exact:
            return lat_exact_project(w, d, blocks=blocks, _mask=mask)
        return lat_approx_project(w, d, blocks=blocks, prev=prev, max_iter=max_iter, _mask=mask)
    if mode == "lat2":
        if exact:
            return lat2_exact_project(w, d, blocks=blocks, negative_side=negative_side, _mask=mask)
        return lat2_approx_project(w, d, blocks=blocks, prev=prev, max_iter=max_iter, _mask=mask)
    if mode == "laq":
        if bits is None:
            raise ValueError("sparse_project(mode='laq') needs bits")
        return laq_project(w, d, bits=bits, levels=levels, scale_form=scale_form, blocks=blocks,
                           prev=prev, max_iter=max_iter, _mask=mask)
    raise ValueError(f"sparsification is defined for the loss-aware modes lab, lat, lat2, laq; got {mode!r}")
