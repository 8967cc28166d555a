"""Shared pieces of the loss-aware projections: the :class:`Projection` result, blocks, the
curvature ``d``, codes -> scale, alternation steps (formulas in :mod:`weightzip.primitives.loss_aware`)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

MODES = ("lab", "lat", "lat2", "laq", "bc", "bwn", "twn")
_D_MIN = 1e-20


@dataclass
class Projection:
    """Result of a projection.

    ``w_hat``: projected tensor, ``w``'s shape. ``alpha``: scales, ``[G]`` (one per block) or
    ``[G, 2]`` = ``(alpha+, alpha-)`` for two-scale LAT2. ``b``: the normalised codes, ``w``'s
    shape, values in the method's code set (``w_hat = alpha * b`` blockwise). ``mask``: the
    support allowed by a sparsity budget (``None`` when no budget was given).
    """

    w_hat: Tensor
    alpha: Tensor
    b: Tensor
    mask: Tensor | None = None


# ---------------------------------------------------------------------------------------------
# helpers: blocks, d, codes -> scale


def _rows(x: Tensor, blocks: int, name: str = "w") -> Tensor:
    """``x`` as ``[G, N]`` (G = blocks along dim 0); raises if dim 0 is not divisible."""
    if blocks < 1:
        raise ValueError(f"blocks must be >= 1, got {blocks}")
    lead = x.shape[0] if x.dim() > 0 else 1
    if lead % blocks:
        raise ValueError(f"{name} of shape {tuple(x.shape)} cannot be split into {blocks} blocks "
                         f"along dim 0 ({lead} is not divisible by {blocks}); use blocks=1")
    return x.reshape(blocks, -1)


def _prep(w: Tensor, d: Tensor | None, blocks: int) -> tuple[Tensor, Tensor]:
    """``(W [G, N], D [G, N])`` in float32 (or w's float dtype), ``D >= 1e-20``."""
    if not w.is_floating_point():
        raise TypeError(f"w must be a floating-point tensor, got {w.dtype}")
    W = _rows(w.detach(), blocks)
    if d is None:
        D = torch.ones_like(W)
    else:
        if d.shape != w.shape:
            raise ValueError(f"d has shape {tuple(d.shape)} but w has {tuple(w.shape)}; "
                             "d is a per-weight curvature estimate of w's shape")
        D = _rows(d.detach().to(W.dtype), blocks, "d").clamp_min(_D_MIN)
    return W, D


def _sign(x: Tensor) -> Tensor:
    """``sign`` with ``sign(0) = +1`` (binary codes never vanish)."""
    return torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))


def _out(W: Tensor, alpha: Tensor, b: Tensor, shape: torch.Size, mask: Tensor | None = None) -> Projection:
    w_hat = (alpha[:, None] * b).reshape(shape)  # (G x N) -> w's shape
    return Projection(w_hat, alpha, b.reshape(shape), None if mask is None else mask.reshape(shape))


def _code_scale(W: Tensor, D: Tensor, b: Tensor, form: str = "code", *, DA: Tensor | None = None,
                fallback: Tensor | None = None) -> Tensor:
    """Scale given codes, per row ``[G]``.

    ``code`` (released code):   alpha = sum(d |b| |w|) / sum(d |b|)
    ``exact`` (weighted LSQ):   alpha = sum(d b w)     / sum(d b^2)
    Identical for b in {0, +-1}. A row whose codes are all 0 gets the LAB scale
    ``sum(d |w|) / sum(d)`` (so an alternation can restart from it). ``DA = d |w|`` and
    ``fallback`` may be passed precomputed (loops).
    """
    if form == "code":
        bb = b.abs()
        num = ((D * W.abs()) if DA is None else DA).mul(bb).sum(1)  # (G)
        den = D.mul(bb).sum(1)  # (G)
    elif form == "exact":
        num = (D * b * W).sum(1)
        den = (D * b * b).sum(1)
    else:
        raise ValueError(f"unknown scale_form {form!r}; valid: code, exact")
    if fallback is None:
        fallback = (D * W.abs()).sum(1) / D.sum(1)
    alpha = torch.where(den > 0, num / den.clamp_min(_D_MIN), fallback)
    return alpha.clamp_min(0.0)


def _start_codes(W: Tensor, prev: Tensor | None, blocks: int) -> Tensor:
    """Initial codes of an alternation: ``sign(prev)`` (0 stays 0).

    A row without a usable previous projection (``prev`` None, or all zero in that row) starts
    from the TWN-style ternary code ``sign(w) [|w| > 0.7 mean|w|]`` (what the released code
    initialises its ``Wb`` with).
    """
    twn = torch.sign(W) * (W.abs() > 0.7 * W.abs().mean(1, keepdim=True))
    if prev is None:
        return twn
    if prev.numel() != W.numel():
        raise ValueError(f"prev has {prev.numel()} elements but w has {W.numel()}; pass the previous "
                         "projection of this same tensor (or None)")
    P = torch.sign(_rows(prev.detach().to(W.dtype), blocks, "prev"))
    usable = (P != 0).any(1, keepdim=True)
    return torch.where(usable, P, twn)


def _ternary(W: Tensor, alpha: Tensor) -> Tensor:
    """``b = sign(w) [|w| > alpha / 2]`` per row."""
    return torch.sign(W) * (W.abs() > alpha[:, None] / 2)


def _alternate(W: Tensor, D: Tensor, b: Tensor, M: Tensor | None, quantize, *, form: str = "code",
               max_iter: int = 10, tol: float = 1e-6) -> tuple[Tensor, Tensor]:
    """Alternate ``alpha = _code_scale(W, D, b)`` and ``b = quantize(W, alpha)`` per row
    (``G x N``), at most ``max_iter`` times, a row stopping once ``|alpha_new - alpha| < tol``;
    codes outside the mask ``M`` stay 0. Returns ``(alpha [G], b [G x N])``."""
    if M is not None:
        b = b * M
    DA = D * W.abs()  # (G x N)
    fallback = DA.sum(1) / D.sum(1)  # (G)
    alpha = torch.zeros(W.shape[0], dtype=W.dtype, device=W.device)
    active = torch.ones(W.shape[0], dtype=torch.bool, device=W.device)
    for it in range(max_iter):
        a_new = _code_scale(W, D, b, form, DA=DA, fallback=fallback)
        b_new = quantize(W, a_new)
        if M is not None:
            b_new = b_new * M
        alpha, b, active = _advance(alpha, b, a_new, b_new, active, it, tol)
        if not active.any():
            break
    return alpha, b


def _advance(alpha: Tensor, b: Tensor, a_new: Tensor, b_new: Tensor, active: Tensor, it: int, tol: float):
    """One alternation step for the still-active rows; a row stops once ``|da| < tol``."""
    converged = (a_new - alpha).abs() < tol if it > 0 else torch.zeros_like(active)
    if bool(active.all()):
        alpha, b = a_new, b_new
    else:
        alpha = torch.where(active, a_new, alpha)
        b = torch.where(active[:, None], b_new, b)
    return alpha, b, active & ~converged
