"""Loss-aware weight projections (LAB / LAT / LAT2 / LAQ) and the plain baselines they beat.

Every projection solves, for one weight tensor ``w`` and a positive curvature estimate ``d``
of the same shape (Adam's ``sqrt(v) + 1e-8``), the diagonal-Hessian proximal step

    min_{alpha >= 0, b in Q}  sum_i d_i (alpha b_i - w_i)^2          (*)

with ``Q`` the code set of the method:

===========  ===========================================  ==============================
function     codes ``b``                                  scale
===========  ===========================================  ==============================
lab          {-1, +1} (b = sign(w), sign(0) = +1)         alpha = sum d|w| / sum d (exact)
lat_*        {-1, 0, +1}                                  exact (sorted cumsum) or alternating
lat2_*       {-1, 0, +1} with alpha+ for w>0, alpha- <0   per side, as LAT
laq          linear {0, +-1/k, ..., +-1} or log           alternating, <= max_iter times
             {0, +-2^-(k-1), ..., +-1/2, +-1}, k=2^(m-1)-1
binaryconnect {-1, +1}                                    alpha = 1 (no scale)
bwn          {-1, +1}                                     alpha = mean |w|   (= lab, d = 1)
twn          {-1, 0, +1}, |w| > 0.7 mean|w|               alpha = mean of |w| above delta
===========  ===========================================  ==============================

``d`` only enters through ratios, so any positive per-block constant factor (Adam's bias
correction, for instance) leaves every result unchanged. ``d=None`` means ``d = 1``. Entries
of ``d`` are clamped to at least ``1e-20`` so an all-zero ``d`` (an empty Adam state, a
placeholder buffer) behaves like ``d = 1`` instead of dividing by zero.

Blocks: ``blocks=G`` splits ``w`` along dim 0 into ``G`` equal blocks (``w.reshape(G, -1)``)
and projects each with its own scale - an LSTM weight ``[4H, I]`` with ``blocks=4`` gets one
scale per gate (i, f, g, o). Everything is vectorised over the blocks.

Every function returns a :class:`Projection` ``(w_hat, alpha, b, mask)`` with
``w_hat = alpha_g * b`` blockwise (two-scale: ``alpha+`` where ``b > 0``, ``alpha-`` where
``b < 0``). All functions are pure, run without autograd, and never modify their inputs.

Formulas follow ``shared/METHODS.md`` section D (Hou & Kwok's released code): see each
function. The sparsified projection (:func:`sparse_project`) is **[reconstructed]**.

Example::

    >>> w = torch.tensor([0.9, -0.2, 0.05, -0.7]); d = torch.tensor([1., 1., 4., 1.])
    >>> lab_project(w, d).w_hat          # alpha = (0.9+0.2+0.2+0.7)/7
    tensor([ 0.2857, -0.2857,  0.2857, -0.2857])
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

__all__ = [
    "Projection",
    "lab_project",
    "binaryconnect",
    "bwn_project",
    "bwn",
    "twn_project",
    "twn",
    "lat_approx_project",
    "lat_exact_project",
    "lat2_approx_project",
    "lat2_exact_project",
    "laq_levels",
    "laq_quantize",
    "laq_project",
    "sparse_project",
    "project",
    "MODES",
    "nominal_bits",
    "uniform_step",
    "support_mask",
]

MODES = ("lab", "lat", "lat2", "laq", "bc", "bwn", "twn")
_D_MIN = 1e-20
_LOG_OFFSET = 0.0849625  # log2(1.5) - 1/2: round(log2|x| - offset) puts the cut at 1.5 * 2^e


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


# ---------------------------------------------------------------------------------------------
# binary


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


# ---------------------------------------------------------------------------------------------
# ternary


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
    b = _start_codes(W, prev, blocks)
    if M is not None:
        b = b * M
    DA = D * W.abs()  # (G x N)
    fallback = DA.sum(1) / D.sum(1)  # (G)
    alpha = torch.zeros(W.shape[0], dtype=W.dtype, device=W.device)
    active = torch.ones(W.shape[0], dtype=torch.bool, device=W.device)
    for it in range(max_iter):
        a_new = _code_scale(W, D, b, DA=DA, fallback=fallback)
        b_new = _ternary(W, a_new)
        if M is not None:
            b_new = b_new * M
        alpha, b, active = _advance(alpha, b, a_new, b_new, active, it, tol)
        if not active.any():
            break
    return _out(W, alpha, b, w.shape, M)


def _advance(alpha: Tensor, b: Tensor, a_new: Tensor, b_new: Tensor, active: Tensor, it: int, tol: float):
    """One alternation step for the still-active rows; a row stops once ``|da| < tol``."""
    converged = (a_new - alpha).abs() < tol if it > 0 else torch.zeros_like(active)
    if bool(active.all()):
        alpha, b = a_new, b_new
    else:
        alpha = torch.where(active, a_new, alpha)
        b = torch.where(active[:, None], b_new, b)
    return alpha, b, active & ~converged


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


# ---------------------------------------------------------------------------------------------
# m-bit


def laq_levels(bits: int, levels: Literal["linear", "log"] = "linear") -> Tensor:
    """The normalised level set of LAQ with ``m = bits``, ``k = 2^(m-1) - 1``, sorted.

    linear: ``{0, +-1/k, +-2/k, ..., +-1}``;  log: ``{0, +-2^-(k-1), ..., +-1/2, +-1}``.
    Both have ``2k + 1 = 2^m - 1`` elements. ``bits=2`` gives ``{-1, 0, 1}`` for both.
    """
    k = _k(bits)
    if levels == "linear":
        pos = torch.arange(1, k + 1, dtype=torch.float32) / k
    elif levels == "log":
        pos = torch.pow(2.0, -torch.arange(k - 1, -1, -1, dtype=torch.float32))
    else:
        raise ValueError(f"unknown levels {levels!r}; valid: linear, log")
    return torch.cat([-pos.flip(0), torch.zeros(1), pos])


def _k(bits: int) -> int:
    if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 8:
        raise ValueError(f"LAQ needs an integer bits in [2, 8], got {bits!r} "
                         "(for 1 bit use LAB, mode 'lab')")
    return 2 ** (bits - 1) - 1


def laq_quantize(x: Tensor, bits: int, levels: Literal["linear", "log"] = "linear") -> Tensor:
    """``P(x)``: the nearest level of :func:`laq_levels` (x is clipped to [-1, 1] first).

    linear: ``P(x) = round(clip(x, -1, 1) k) / k``.
    log: ``P(x) = sign(x) 2^round(log2|x| - 0.0849625)`` if ``|x| >= 2^-k`` else 0, results
    below ``2^-(k-1)`` lifted to ``2^-(k-1)`` (``0.0849625 = log2(1.5) - 1/2`` puts each cut
    at the midpoint ``1.5 * 2^e`` between neighbouring powers of two).
    """
    k = _k(bits)
    xc = x.clamp(-1.0, 1.0)
    if levels == "linear":
        return torch.round(xc * k) / k
    if levels == "log":
        a = xc.abs()
        e = torch.round(torch.log2(a.clamp_min(2.0 ** -(k + 2))) - _LOG_OFFSET).clamp(-(k - 1), 0)
        mag = torch.pow(2.0, e).to(x.dtype)
        return torch.where(a >= 2.0 ** -k, torch.sign(xc) * mag, torch.zeros_like(xc))
    raise ValueError(f"unknown levels {levels!r}; valid: linear, log")


@torch.no_grad()
def laq_project(w: Tensor, d: Tensor | None = None, *, bits: int, levels: Literal["linear", "log"] = "linear",
                scale_form: Literal["code", "exact"] = "code", blocks: int = 1, prev: Tensor | None = None,
                max_iter: int = 10, tol: float = 1e-6, _mask: Tensor | None = None) -> Projection:
    """Loss-aware m-bit quantization (LAQ): alternate, at most ``max_iter`` times,

        alpha = sum(d |b| |w|) / sum(d |b|)     (scale_form="code", the released code)
              = sum(d b w) / sum(d b^2)         (scale_form="exact", weighted least squares)
        b     = P(w / alpha)                    (:func:`laq_quantize`)

    from ``b = sign(prev)`` (TWN-style code when absent); a block stops once
    ``|alpha_new - alpha| < tol``. ``b`` takes values in ``laq_levels(bits, levels)``.
    """
    _k(bits)
    W, D = _prep(w, d, blocks)
    M = None if _mask is None else _rows(_mask, blocks, "mask").to(W.dtype)
    b = _start_codes(W, prev, blocks)
    if M is not None:
        b = b * M
    DA = D * W.abs()  # (G x N)
    fallback = DA.sum(1) / D.sum(1)  # (G)
    alpha = torch.zeros(W.shape[0], dtype=W.dtype, device=W.device)
    active = torch.ones(W.shape[0], dtype=torch.bool, device=W.device)
    for it in range(max_iter):
        a_new = _code_scale(W, D, b, scale_form, DA=DA, fallback=fallback)
        b_new = laq_quantize(W / a_new.clamp_min(_D_MIN)[:, None], bits, levels)
        if M is not None:
            b_new = b_new * M
        alpha, b, active = _advance(alpha, b, a_new, b_new, active, it, tol)
        if not active.any():
            break
    if levels == "linear":  # w_hat = (alpha / k) q with integer q: the same float32 values a
        k = _k(bits)        # decoder computes from the integer codes and the step alpha / k
        q = torch.round(b * k)  # (G x N) integers in [-k, k]
        w_hat = (uniform_step(alpha, "laq", bits, levels)[:, None] * q).reshape(w.shape)
        return Projection(w_hat, alpha, b.reshape(w.shape), None if M is None else M.reshape(w.shape))
    return _out(W, alpha, b, w.shape, M)


def uniform_step(alpha: Tensor, mode: str, bits: int | None = None, levels: str = "linear") -> Tensor | None:
    """Per-block grid step ``s`` with ``w_hat = s * q``, ``q`` integer (``None`` for ``lat2``).

    lab, bwn, lat, twn: ``s = alpha`` (q in {-1, 0, 1}); bc: ``s = 1``; laq linear:
    ``s = alpha / k`` (q in [-k, k]); laq log: ``s = alpha 2^-(k-1)`` (q in {0, +-1, +-2, ...,
    +-2^(k-1)}). The projections compute ``w_hat`` so that ``float32(q) * s`` reproduces it
    bit for bit - a uniform codec with per-block scales stores it exactly.
    """
    if mode in ("lab", "bwn", "lat", "twn"):
        return alpha
    if mode == "bc":
        return torch.ones_like(alpha)
    if mode == "laq":
        k = _k(bits)
        if levels == "linear":
            return alpha / k
        return alpha * 2.0 ** -(k - 1)
    if mode == "lat2":
        return None
    raise ValueError(f"unknown mode {mode!r}; valid modes: {', '.join(MODES)}")


# ---------------------------------------------------------------------------------------------
# quantization + sparsification [reconstructed]


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


# ---------------------------------------------------------------------------------------------
# dispatcher


def nominal_bits(mode: str, bits: int | None = None) -> int:
    """Bits per weight of a mode's codes: 1 (lab, bc, bwn), 2 (lat, lat2, twn), m (laq)."""
    if mode in ("lab", "bc", "bwn"):
        return 1
    if mode in ("lat", "lat2", "twn"):
        return 2
    if mode == "laq":
        _k(bits)
        return int(bits)
    raise ValueError(f"unknown mode {mode!r}; valid modes: {', '.join(MODES)}")


@torch.no_grad()
def project(w: Tensor, d: Tensor | None = None, *, mode: str = "lab", exact: bool = False,
            bits: int | None = None, levels: str = "linear", scale_form: str = "code",
            keep: float = 1.0, blocks: int = 1, prev: Tensor | None = None, max_iter: int = 10,
            negative_side: str = "correct") -> Projection:
    """Dispatch to the projection of ``mode`` (one of :data:`MODES`).

    ``exact`` picks the exact LAT/LAT2 (else alternating); ``bits``/``levels``/``scale_form``
    configure LAQ; ``keep < 1`` restricts the loss-aware modes to a support of that fraction
    (:func:`sparse_project`). The baselines ``bc``, ``bwn`` and ``twn`` ignore ``d``.
    """
    if keep < 1.0:
        return sparse_project(w, d, keep=keep, mode=mode, exact=exact, bits=bits, levels=levels,
                              scale_form=scale_form, blocks=blocks, prev=prev, max_iter=max_iter,
                              negative_side=negative_side)
    if mode == "lab":
        return lab_project(w, d, blocks=blocks)
    if mode == "lat":
        if exact:
            return lat_exact_project(w, d, blocks=blocks)
        return lat_approx_project(w, d, blocks=blocks, prev=prev, max_iter=max_iter)
    if mode == "lat2":
        if exact:
            return lat2_exact_project(w, d, blocks=blocks, negative_side=negative_side)
        return lat2_approx_project(w, d, blocks=blocks, prev=prev, max_iter=max_iter)
    if mode == "laq":
        if bits is None:
            raise ValueError("mode 'laq' needs bits (2..8)")
        return laq_project(w, d, bits=bits, levels=levels, scale_form=scale_form, blocks=blocks,
                           prev=prev, max_iter=max_iter)
    if mode == "bc":
        return binaryconnect(w, blocks=blocks)
    if mode == "bwn":
        return bwn_project(w, blocks=blocks)
    if mode == "twn":
        return twn_project(w, blocks=blocks)
    raise ValueError(f"unknown mode {mode!r}; valid modes: {', '.join(MODES)}")
