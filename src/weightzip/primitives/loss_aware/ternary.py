"""Ternary projections: loss-aware LAT (exact / alternating), two-scale LAT2 and the TWN baseline."""
from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from .core import _D_MIN, Projection, _alternate, _out, _prep, _rows, _start_codes, _ternary


@torch.no_grad()
def twn_project(w: Tensor, *, blocks: int = 1, delta_factor: float = 0.7) -> Projection:
    """Ternary weight network: ``delta = 0.7 mean|w|``; ``b = sign(w) [|w| > delta]``;
    ``alpha = mean of |w| over |w| > delta`` (0 for an all-zero block)."""
    W, _ = _prep(w, None, blocks)
    A = W.abs()
    delta = delta_factor * A.mean(1, keepdim=True)  # (G x 1)
    keep = (A > delta).to(W.dtype)  # (G x N)
    n = keep.sum(1)
    alpha = torch.where(n > 0, (A * keep).sum(1) / n.clamp_min(1), torch.zeros_like(n))
    return _out(W, alpha, torch.sign(W) * keep, w.shape)


twn = twn_project


@torch.no_grad()
def lat_approx_project(w: Tensor, d: Tensor | None = None, *, blocks: int = 1,
                       prev: Tensor | None = None, max_iter: int = 10, tol: float = 1e-6,
                       _mask: Tensor | None = None) -> Projection:
    """Loss-aware ternarization by alternation (LAT approximate).

    Start ``b = sign(prev)`` (the previous projection; TWN-style code when absent); then
    at most ``max_iter`` times::

        alpha = sum(d |b| |w|) / sum(d |b|) ;   b = sign(w) [|w| > alpha / 2]

    stopping a block once ``|alpha_new - alpha| < tol``. Each step does not increase (*).
    """
    W, D = _prep(w, d, blocks)
    M = None if _mask is None else _rows(_mask, blocks, "mask").to(W.dtype)
    alpha, b = _alternate(W, D, _start_codes(W, prev, blocks), M, _ternary, max_iter=max_iter, tol=tol)
    return _out(W, alpha, b, w.shape, M)


def _sort_desc(A: Tensor) -> tuple[Tensor, Tensor]:
    """``A >= 0`` sorted descending along dim 1, with the permutation.

    Non-negative IEEE floats order like their bit patterns read as integers, and torch sorts
    1-D integer keys several times faster than floats on the CPU, so the key is the int view.
    """
    if A.dtype == torch.float32:
        key = A.view(torch.int32)
    elif A.dtype == torch.float64:
        key = A.view(torch.int64)
    else:
        key = A
    # one 1-D sort per row: torch's 1-D integer sort is much faster than a batched one
    idx = torch.stack([torch.sort(k).indices for k in key]).flip(1)  # (G x N)
    return torch.gather(A, 1, idx), idx


def _exact_threshold(A: Tensor, D: Tensor) -> Tensor:
    """Optimal ternary threshold ``delta`` per row for magnitudes ``A >= 0`` ``[G, N]``.

    Sort ``A`` descending (``a_(1) >= a_(2) >= ...``, ``d`` permuted alike); with
    ``S_j = sum_{i<=j} d a``, ``D_j = sum_{i<=j} d`` and ``c_j = S_j / (2 D_j)``, keeping the
    top ``j`` entries at scale ``2 c_j`` lowers (*) by ``4 c_j^2 D_j``; only ``j`` with
    ``(a_(j) - c_j)(a_(j+1) - c_j) < 0`` (``a_(N+1) = 0``) are consistent, i.e. their support is
    exactly ``{a > c_j}``. ``delta = c_{j*}``, ``j* = argmax_J c_j^2 D_j``. The unrestricted
    argmax always lies in J unless ``c = 0``; a row where J is empty (all zero) falls back to it.
    """
    a_sorted, idx = _sort_desc(A)  # (G x N)
    d_sorted = torch.gather(D, 1, idx)  # (G x N)
    S = torch.cumsum(d_sorted * a_sorted, dim=1)  # (G x N)
    Dc = torch.cumsum(d_sorted, dim=1)  # (G x N)
    c = S / (2 * Dc)  # (G x N)
    a_next = torch.cat([a_sorted[:, 1:], torch.zeros_like(a_sorted[:, :1])], dim=1)  # (G x N)
    J = (a_sorted - c) * (a_next - c) < 0  # (G x N)
    score = c * c * Dc  # (G x N)
    masked = torch.where(J, score, torch.full_like(score, -1.0))
    j_star = torch.where(J.any(1), masked.argmax(1), score.argmax(1))  # (G)
    return torch.gather(c, 1, j_star[:, None]).squeeze(1)  # (G)


@torch.no_grad()
def lat_exact_project(w: Tensor, d: Tensor | None = None, *, blocks: int = 1,
                      _mask: Tensor | None = None) -> Projection:
    """Loss-aware ternarization, exact (closed form by sorting; the global minimiser of (*)).

    ``delta`` from the sorted cumulative sums (see :func:`_exact_threshold`),
    ``alpha = 2 delta``, ``w_hat = alpha sign(w) [|w| > delta]``.
    """
    W, D = _prep(w, d, blocks)
    M = None if _mask is None else _rows(_mask, blocks, "mask").to(W.dtype)
    Wm = W if M is None else W * M  # entries outside the support are never chosen
    delta = _exact_threshold(Wm.abs(), D)  # (G)
    b = torch.sign(Wm) * (Wm.abs() > delta[:, None])
    return _out(W, 2 * delta, b, w.shape, M)


# ---------------------------------------------------------------------------------------------
# two-scale ternary (alpha+ for w > 0, alpha- for w < 0)


def _two_scale_out(W: Tensor, a_pos: Tensor, a_neg: Tensor, b: Tensor, shape, mask=None) -> Projection:
    w_hat = torch.where(b > 0, a_pos[:, None], torch.where(b < 0, -a_neg[:, None], torch.zeros_like(W)))
    return Projection(w_hat.reshape(shape), torch.stack([a_pos, a_neg], dim=1), b.reshape(shape),
                      None if mask is None else mask.reshape(shape))


@torch.no_grad()
def lat2_exact_project(w: Tensor, d: Tensor | None = None, *, blocks: int = 1,
                       negative_side: Literal["correct", "released"] = "correct",
                       _mask: Tensor | None = None) -> Projection:
    """Two-scale exact LAT: (*) separates into ``w > 0`` (codes {0, 1}, scale ``alpha+``) and
    ``w < 0`` (codes {0, -1}, ``alpha-``); each side is the exact threshold search of
    :func:`lat_exact_project` on ``max(w, 0)`` resp. ``max(-w, 0)`` (zeros are never chosen).

    ``negative_side="released"`` reproduces the released Theano code's bug: the negative
    side's score ``c_j^2 D_j`` takes ``c_j`` from the POSITIVE side's cumulative sums
    (over ``w`` sorted descending, with ``|d w|``) instead of its own; the chosen threshold is
    still the negative side's ``c_{j*}``. Only for comparison with published numbers.
    """
    W, D = _prep(w, d, blocks)
    M = None if _mask is None else _rows(_mask, blocks, "mask").to(W.dtype)
    Wm = W if M is None else W * M
    d_pos = _exact_threshold(Wm.clamp_min(0), D)  # (G)
    if negative_side == "correct":
        d_neg = _exact_threshold((-Wm).clamp_min(0), D)
    elif negative_side == "released":
        d_neg = _released_negative_threshold(Wm, D)
    else:
        raise ValueError(f"unknown negative_side {negative_side!r}; valid: correct, released")
    b = (Wm > d_pos[:, None]).to(W.dtype) - (Wm < -d_neg[:, None]).to(W.dtype)
    return _two_scale_out(W, 2 * d_pos, 2 * d_neg, b, w.shape, M)


def _released_negative_threshold(W: Tensor, D: Tensor) -> Tensor:
    """The released code's negative-side threshold (score uses the positive side's ``c``)."""
    _, idx1 = torch.sort(W, dim=1, descending=True)  # signed order, as the released code
    c1 = torch.cumsum((torch.gather(D, 1, idx1) * torch.gather(W, 1, idx1)).abs(), 1) / (
        2 * torch.cumsum(torch.gather(D, 1, idx1), 1))  # (G x N) positive side's c
    A = (-W).clamp_min(0)
    a_sorted, idx = _sort_desc(A)
    d_sorted = torch.gather(D, 1, idx)
    Dc = torch.cumsum(d_sorted, 1)
    c = torch.cumsum(d_sorted * a_sorted, 1) / (2 * Dc)
    a_next = torch.cat([a_sorted[:, 1:], torch.zeros_like(a_sorted[:, :1])], dim=1)
    J = (a_sorted - c) * (a_next - c) < 0
    score = torch.where(J, c1 * c1 * Dc, torch.full_like(c, -1.0))
    j_star = torch.where(J.any(1), score.argmax(1), (c * c * Dc).argmax(1))
    return torch.gather(c, 1, j_star[:, None]).squeeze(1)


@torch.no_grad()
def lat2_approx_project(w: Tensor, d: Tensor | None = None, *, blocks: int = 1,
                        prev: Tensor | None = None, max_iter: int = 10, tol: float = 1e-6,
                        _mask: Tensor | None = None) -> Projection:
    """Two-scale LAT by alternation, each side on its own::

        alpha+ = sum(d b+ w) / sum(d b+),  b+ = [w > alpha+ / 2]      (b+ in {0, 1})
        alpha- = sum(d b- |w|) / sum(d b-), b- = [w < -alpha- / 2]    (b- in {0, 1})

    started from ``sign(prev)`` (TWN-style code when absent), at most ``max_iter`` times.
    """
    W, D = _prep(w, d, blocks)
    M = None if _mask is None else _rows(_mask, blocks, "mask").to(W.dtype)
    b0 = _start_codes(W, prev, blocks)
    alphas, codes = [], []
    for side in (1.0, -1.0):
        Ws = (side * W).clamp_min(0)  # magnitudes on this side, 0 elsewhere  (G x N)
        Ws = Ws if M is None else Ws * M
        on_side = (Ws > 0).to(W.dtype)  # (G x N)
        # a row with no start code on this side restarts from the side's d-weighted mean
        fallback = (D * Ws).sum(1) / (D * on_side).sum(1).clamp_min(_D_MIN)  # (G)
        b = (side * b0 > 0).to(W.dtype) * on_side
        alpha = torch.zeros(W.shape[0], dtype=W.dtype, device=W.device)
        active = torch.ones(W.shape[0], dtype=torch.bool, device=W.device)
        for it in range(max_iter):
            den = (D * b).sum(1)
            a_new = torch.where(den > 0, (D * b * Ws).sum(1) / den.clamp_min(_D_MIN), fallback)
            b_new = (Ws > a_new[:, None] / 2).to(W.dtype) * on_side
            converged = (a_new - alpha).abs() < tol if it > 0 else torch.zeros_like(active)
            alpha = torch.where(active, a_new, alpha)
            b = torch.where(active[:, None], b_new, b)
            active = active & ~converged
            if not active.any():
                break
        alphas.append(torch.where(b.any(1), alpha, torch.zeros_like(alpha)))
        codes.append(b)
    return _two_scale_out(W, alphas[0], alphas[1], codes[0] - codes[1], w.shape, M)
