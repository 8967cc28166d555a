"""Fixed-point and uniform quantization as pure tensor functions (no module state).

Signed fixed point with ``b`` total bits and ``f`` fraction bits represents the values
``k * 2^-f`` for the integer codes ``k`` in ``[-2^(b-1), 2^(b-1) - 1]``::

    fxp(x, b, f) = clamp(round(x * 2^f), -2^(b-1), 2^(b-1) - 1) * 2^-f

``round`` is round-half-to-even (``torch.round``), so a tie ``x * 2^f = n + 1/2`` goes to the
even code. Values with ``|x| < 2^-(f+1)`` (and the tie ``|x| = 2^-(f+1)``) become exactly
``+0.0``: they are *pruned* - a sparse format stores only the non-zeros. Every step is exact in
floating point (scaling by a power of two, rounding, clamping), so ``fxp`` is idempotent and
the codes ``k`` are recovered exactly by :func:`fxp_codes`.

``b = 0`` is accepted and means "no bits": the value is 0 (the element is pruned). This is an
extension for bit vectors such as ``[8, 4, 0]`` whose last cluster is dropped.

Integer bits of a layer (per tensor, from its range ``m = max|x|``):

* ``"thesis"`` (default, the METHODS.md formula, [reconstructed]):
  ``i = 1 + max(0, ceil(log2 m))``, so ``i >= 1`` and ``f = b - i <= b - 1``; a layer with
  ``m <= 1`` gets ``i = 1`` (range ``[-1, 1 - 2^-(b-1)]``).
* ``"tight"``: ``i = 1 + ceil(log2 m)`` without the floor at 1, so ``i`` can be 0 or negative
  for layers with ``m <= 0.5`` and then ``f = b - i > b - 1``: the codes cover
  ``[-2^(i-1), 2^(i-1))`` which still contains ``[-m, m]`` (up to the top code), and small
  layers keep more precision for the same bits.

In both modes a layer with ``m = 2^j`` exactly gets ``i = j + 1``; the top code is
``2^(b-1) - 1``, so ``+m`` itself clamps to ``m - 2^-f`` (one step below) while ``-m`` is
exact. An all-zero tensor gets ``i = 1``.

Example::

    >>> x = torch.tensor([0.30, -0.07, 0.02, -0.6])
    >>> i = integer_bits(x)                  # max|x| = 0.6 -> 1 + max(0, ceil(-0.74)) = 1
    >>> fxp_quantize(x, 4, 4 - i)            # f = 3: step 1/8, codes in [-8, 7]
    tensor([ 0.2500, -0.1250,  0.0000, -0.6250])
"""
from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

__all__ = [
    "IntBitsRule",
    "integer_bits",
    "frac_bits_for",
    "fxp_quantize",
    "fxp_codes",
    "fxp_format",
    "fxp_apply",
    "fxp_ste",
    "fxp_layer",
    "pow2_scale",
    "maxabs_scale",
    "uniform_quantize",
    "MAX_FXP_BITS",
]

IntBitsRule = Literal["thesis", "tight"]
MAX_FXP_BITS = 24  # float32 holds every code k * 2^-f exactly up to 24 significant bits


def _max_abs(x: Tensor) -> float:
    return float(x.detach().abs().max()) if x.numel() else 0.0


def integer_bits(x: Tensor | float, rule: IntBitsRule = "thesis") -> int:
    """Integer bits ``i`` (sign included) needed for the range of ``x``.

    ``m = max|x|`` (or ``x`` itself when a number is given);
    ``thesis``: ``i = 1 + max(0, ceil(log2 m))``; ``tight``: ``i = 1 + ceil(log2 m)`` (may be
    <= 0 for ``m <= 0.5``). ``m = 0`` gives ``i = 1`` in both rules.
    """
    m = abs(float(x)) if not isinstance(x, Tensor) else _max_abs(x)
    if not math.isfinite(m):
        raise ValueError(f"integer_bits: max|x| is {m}; the tensor holds NaN/Inf - repair it before quantizing")
    if m == 0.0:
        return 1
    e = math.ceil(math.log2(m))  # math.log2 is exact at powers of two
    if rule == "thesis":
        return 1 + max(0, e)
    if rule == "tight":
        return 1 + e
    raise ValueError(f"unknown integer-bits rule {rule!r}; use 'thesis' or 'tight'")


def frac_bits_for(x: Tensor | float, bits: int, rule: IntBitsRule = "thesis") -> int:
    """Fraction bits ``f = b - i`` of a ``b``-bit fixed-point format for the range of ``x``."""
    return int(bits) - integer_bits(x, rule)


def _check_bits(bits: Tensor | int) -> None:
    lo, hi = (int(bits), int(bits)) if not isinstance(bits, Tensor) else (
        (int(bits.min()), int(bits.max())) if bits.numel() else (0, 0))
    if lo < 0 or hi > MAX_FXP_BITS:
        raise ValueError(f"fixed-point bits must be in [0, {MAX_FXP_BITS}], got range [{lo}, {hi}]")


def fxp_format(x: Tensor, bits: Tensor | int, frac_bits: Tensor | int):
    """``(2^f, lo, hi)`` in x's dtype and device: Python numbers for int formats, tensors for
    per-element ones (``lo = -2^(b-1)``, ``hi = 2^(b-1) - 1``; ``b = 0`` -> ``lo = hi = 0``).
    Precompute it once when the same per-element formats are applied many times."""
    _check_bits(bits)
    if not isinstance(bits, Tensor) and not isinstance(frac_bits, Tensor):
        b, f = int(bits), int(frac_bits)
        lo, hi = (-(2 ** (b - 1)), 2 ** (b - 1) - 1) if b > 0 else (0, 0)
        return 2.0 ** f, float(lo), float(hi)
    b = torch.as_tensor(bits, device=x.device)
    f = torch.as_tensor(frac_bits, device=x.device).to(x.dtype)
    half = torch.exp2((b - 1).to(x.dtype))
    zero = torch.zeros((), dtype=x.dtype, device=x.device)
    lo = torch.where(b > 0, -half, zero)
    hi = torch.where(b > 0, half - 1, zero)                    # b = 0 -> range [0, 0]
    return torch.exp2(f), lo, hi


def _round_clamp(xs: Tensor, lo, hi) -> Tensor:
    k = torch.round(xs)
    if isinstance(lo, Tensor):
        return torch.minimum(torch.maximum(k, lo), hi)
    return torch.clamp(k, lo, hi)


def fxp_codes(x: Tensor, bits: Tensor | int, frac_bits: Tensor | int) -> Tensor:
    """Integer codes ``k = clamp(round(x * 2^f), -2^(b-1), 2^(b-1) - 1)`` (int32, x's shape).

    ``bits`` and ``frac_bits`` are ints or integer tensors broadcastable to ``x`` (per-element
    formats, e.g. ``bits[cluster]``). ``b = 0`` gives code 0. Scaling by ``2^f`` is exact in
    floating point (for ``|f| <= 60`` and finite ``x``), so the codes are exact.
    """
    s, lo, hi = fxp_format(x, bits, frac_bits)
    return _round_clamp(x.detach() * s, lo, hi).to(torch.int32)


def fxp_quantize(x: Tensor, bits: Tensor | int, frac_bits: Tensor | int) -> Tensor:
    """``fxp(x, b, f) = clamp(round(x 2^f), -2^(b-1), 2^(b-1)-1) 2^-f`` in x's dtype and shape.

    Values that round to zero are exactly ``+0.0`` (pruned). ``bits``/``frac_bits`` may be
    per-element integer tensors (broadcast to ``x``). No gradient flows (see :func:`fxp_ste`).
    """
    return fxp_apply(x, fxp_format(x, bits, frac_bits))


def fxp_apply(x: Tensor, fmt) -> Tensor:
    """:func:`fxp_quantize` with a precomputed :func:`fxp_format` ``(2^f, lo, hi)``."""
    s, lo, hi = fmt
    q = _round_clamp(x.detach() * s, lo, hi) / s                 # division by 2^f: exact
    return q + 0.0  # -0.0 -> +0.0 so pruned entries are bitwise zero


def fxp_ste(x: Tensor, bits: Tensor | int, frac_bits: Tensor | int) -> Tensor:
    """Fixed-point fake quantization with the straight-through estimator.

    Forward value ``fxp(x, b, f)``; backward ``d out / d x = 1`` (identity) for every element,
    including pruned and clamped ones, so the latent weights keep learning.
    """
    return x + (fxp_quantize(x, bits, frac_bits) - x).detach()


def fxp_layer(x: Tensor, bits: int, rule: IntBitsRule = "thesis") -> tuple[Tensor, int]:
    """Quantize a whole layer with ``b`` bits and its own integer bits; returns ``(q, f)``."""
    f = frac_bits_for(x, bits, rule)
    return fxp_quantize(x, bits, f), f


# ---------------------------------------------------------------------------------------------
# Uniform symmetric quantization with a scale (the plain per-layer baseline)


def pow2_scale(x: Tensor, bits: int, rule: IntBitsRule = "thesis") -> float:
    """Power-of-two scale ``s = 2^-f`` with ``f = b - integer_bits(x)`` (fixed point)."""
    return float(2.0 ** (-frac_bits_for(x, bits, rule)))


def maxabs_scale(x: Tensor, bits: int) -> float:
    """Max-abs scale ``s = max|x| / (2^(b-1) - 1)`` so that ``+-max|x|`` are codes ``+-qmax``.

    An all-zero tensor gets ``s = 1`` (every code is 0 anyway).
    """
    qmax = 2 ** (int(bits) - 1) - 1
    if qmax < 1:
        raise ValueError(f"max-abs scaling needs bits >= 2, got {bits}")
    m = _max_abs(x)
    return m / qmax if m > 0 else 1.0


def uniform_quantize(x: Tensor, bits: int, scale: float | Tensor) -> Tensor:
    """``clamp(round(x / s), -2^(b-1), 2^(b-1) - 1) * s`` - at most ``2^b`` distinct values."""
    qmax = 2 ** (int(bits) - 1) - 1
    s = torch.as_tensor(scale, dtype=x.dtype, device=x.device)
    return torch.clamp(torch.round(x / s), -qmax - 1, qmax) * s
