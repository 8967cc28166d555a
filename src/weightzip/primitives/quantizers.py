"""Low-bit weight and activation quantizers for quantization-aware training (pure functions).

Every quantizer returns the quantized value in the forward pass and a straight-through
estimator (STE) gradient in the backward pass, so the latent fp32 weights keep training.
Shapes: any; the output has the shape of the input. ``mask`` (optional, same shape, {0,1})
marks kept weights: statistics (``mean |W|``, ``max |tanh W|``) are taken over kept entries
only and the output is multiplied by the mask, so pruned weights stay exactly 0.

Weights (``L = 2^k - 1``):

* DoReFa, k >= 2 bits (Zhou et al. 2016)::

      t  = tanh(W) / (2 max|tanh W|) + 1/2                 in [0, 1]
      Wq = 2 round(t L) / L - 1                            2^k levels in [-1, 1]

  gradient: ``round`` is passed straight through, the ``tanh`` normalisation is
  differentiated (``dWq/dW = 2 dt/dW``), as in DoReFa.
* 1 bit (binary with scale): ``Wq = sign(W) * mean|W|`` with ``sign(0) = +1``; STE identity.
* ternary (TWN, Li & Liu 2016): ``delta = 0.7 mean|W|``, ``I = {i : |W_i| > delta}``,
  ``alpha = mean_{i in I} |W_i|``, ``Wq = alpha sign(W) [|W| > delta]``; STE identity.

Activations:

* clipped uniform: ``aq = round(clip(a, 0, c)/c L) / L * c`` (``c = 1`` in DoReFa); the
  gradient is 1 inside ``[0, c]`` and 0 in the clipped regions.
* PACT (Choi et al. 2018): the same with a learned clip ``alpha`` (a tensor); gradients
  ``d aq / d a = 1[0 <= a < alpha]`` and ``d aq / d alpha = 1[a >= alpha]``.

Example::

    >>> w = torch.linspace(-2, 2, 9)
    >>> dorefa_weight(w, 2).unique().tolist()
    [-1.0, -0.3333333134651184, 0.3333333730697632, 1.0]
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "WEIGHT_QUANTIZERS",
    "ste",
    "dorefa_weight",
    "binary_weight",
    "ternary_weight",
    "quantize_weight",
    "weight_storage_bits",
    "quantize_activation",
    "pact_activation",
    "activation_levels",
]

#: names accepted by :func:`quantize_weight` (``dorefa`` falls back to ``binary`` at 1 bit)
WEIGHT_QUANTIZERS = ("dorefa", "ternary", "binary")

_EPS = 1e-12


def ste(x: Tensor, xq: Tensor) -> Tensor:
    """Straight-through estimator: the value of ``xq``, the gradient of the identity in ``x``.

    Written ``xq + (x - x)`` (with ``xq`` and the subtracted ``x`` detached) rather than
    ``x + (xq - x)``: ``x - x`` is exactly 0 in floating point, so the forward value is
    bit-exactly ``xq`` and a k-bit quantizer yields exactly its 2^k levels (the codec stores
    unique values; one ulp of noise would multiply them).
    """
    return xq.detach() + (x - x.detach())


def _kept_mean_abs(w: Tensor, mask: Tensor | None) -> Tensor:
    """``mean |W|`` over kept entries (all entries without a mask); a 0-dim tensor."""
    a = w.abs()
    if mask is None:
        return a.mean()
    return (a * mask).sum() / mask.sum().clamp_min(1.0)


def _apply_mask(wq: Tensor, mask: Tensor | None) -> Tensor:
    return wq if mask is None else wq * mask


def dorefa_weight(w: Tensor, bits: int, mask: Tensor | None = None) -> Tensor:
    """DoReFa k-bit weights (k >= 2): ``2 round(t (2^k-1)) / (2^k-1) - 1`` with
    ``t = tanh(W) / (2 max|tanh W|) + 1/2``; STE on ``round``.

    The result has at most ``2^k`` distinct values, symmetric in ``[-1, 1]``, none of them 0
    (pruned entries are set to 0 by ``mask`` afterwards).
    """
    bits = int(bits)
    if bits < 2:
        raise ValueError(f"DoReFa weights need bits >= 2 (got {bits}); use binary_weight for 1 bit")
    levels = 2 ** bits - 1
    th = torch.tanh(w)
    th_max = (th.abs() if mask is None else th.abs() * mask).max().detach().clamp_min(_EPS)
    t = th / (2 * th_max) + 0.5                                 # in [0, 1]
    t_q = ste(t, torch.round(t * levels) / levels)               # round passed straight through
    return _apply_mask(2 * t_q - 1, mask)


def binary_weight(w: Tensor, mask: Tensor | None = None) -> Tensor:
    """1-bit weights with a scale: ``sign(W) mean|W|`` (``sign(0) = +1``); STE identity."""
    alpha = _kept_mean_abs(w, mask).detach()
    wq = torch.where(w >= 0, alpha, -alpha)
    return _apply_mask(ste(w, wq), mask)


def ternary_weight(w: Tensor, mask: Tensor | None = None, delta_factor: float = 0.7) -> Tensor:
    """Ternary weights (TWN): ``alpha sign(W) [|W| > delta]`` with ``delta = 0.7 mean|W|`` and
    ``alpha`` the mean ``|W|`` above ``delta``; three levels ``{-alpha, 0, alpha}``; STE identity.
    """
    a = w.detach().abs()
    delta = delta_factor * _kept_mean_abs(w.detach(), mask)
    big = a > delta
    if mask is not None:
        big = big & (mask > 0)
    alpha = (a * big).sum() / big.sum().clamp_min(1)
    wq = torch.sign(w.detach()) * big * alpha
    return _apply_mask(ste(w, wq), mask)


def quantize_weight(w: Tensor, quantizer: str, bits: int, mask: Tensor | None = None) -> Tensor:
    """Dispatch: ``quantizer`` in :data:`WEIGHT_QUANTIZERS`; ``dorefa`` at 1 bit is ``binary``
    (as in the DoReFa paper). ``ternary`` ignores ``bits`` (3 levels, stored in 2 bits).
    """
    if quantizer == "dorefa":
        return binary_weight(w, mask) if int(bits) == 1 else dorefa_weight(w, bits, mask)
    if quantizer == "binary":
        return binary_weight(w, mask)
    if quantizer == "ternary":
        return ternary_weight(w, mask)
    raise ValueError(f"unknown weight quantizer {quantizer!r}; valid: {', '.join(WEIGHT_QUANTIZERS)}")


def weight_storage_bits(quantizer: str, bits: int) -> int:
    """Bits per kept weight: ``bits`` (DoReFa), 1 (binary), 2 (ternary: 3 levels)."""
    if quantizer == "binary":
        return 1
    if quantizer == "ternary":
        return 2
    return int(bits)


def activation_levels(bits: int, clip: float = 1.0) -> Tensor:
    """The ``2^k`` representable activation values ``j c / (2^k - 1)``, ``j = 0..2^k-1``."""
    levels = 2 ** int(bits) - 1
    return torch.arange(levels + 1, dtype=torch.float32) / levels * clip


def quantize_activation(a: Tensor, bits: int, clip: float = 1.0) -> Tensor:
    """``round(clip(a, 0, c)/c (2^k-1)) / (2^k-1) c``; gradient 1 on ``[0, c]``, 0 outside.

    Same arithmetic as the runtime's activation hook (:func:`weightzip.core.parametrize.
    install_activation_quant`), so a quantizer trained here evaluates identically from a file.
    """
    if not clip > 0:
        raise ValueError(f"activation clip must be > 0, got {clip}")
    levels = 2 ** int(bits) - 1
    ac = torch.clamp(a, 0.0, clip) / clip                       # in [0, 1], grad 0 outside
    aq = torch.round(ac * levels) / levels * clip
    return ste(ac * clip, aq)


def pact_activation(a: Tensor, alpha: Tensor, bits: int) -> Tensor:
    """PACT: ``y = clip(a, 0, alpha)``, ``yq = round(y / alpha (2^k-1)) / (2^k-1) alpha``.

    ``alpha`` is a positive 0-dim tensor (a Parameter). STE on ``round``: ``dyq/da = 1`` on
    ``[0, alpha)``, ``dyq/dalpha = 1`` where ``a >= alpha`` (and 0 elsewhere).
    """
    levels = 2 ** int(bits) - 1
    y = torch.where(a >= alpha, alpha.expand_as(a), torch.clamp(a, min=0.0))
    scale = alpha.detach().clamp_min(_EPS)
    yq = torch.round(y.detach() / scale * levels) / levels * scale
    return ste(y, yq)
