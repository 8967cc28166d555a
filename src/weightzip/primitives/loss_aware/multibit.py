"""m-bit loss-aware quantization (LAQ): level sets, the nearest-level map, the projection, grid steps."""
from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from .core import _D_MIN, MODES, Projection, _alternate, _out, _prep, _rows, _start_codes

_LOG_OFFSET = 0.0849625  # log2(1.5) - 1/2: round(log2|x| - offset) puts the cut at 1.5 * 2^e


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
    alpha, b = _alternate(W, D, _start_codes(W, prev, blocks), M,
                          lambda W, a: laq_quantize(W / a.clamp_min(_D_MIN)[:, None], bits, levels),
                          form=scale_form, max_iter=max_iter, tol=tol)
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
