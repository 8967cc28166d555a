"""``quantize_uniform``: plain per-layer uniform (fixed-point) quantization, the baseline.

Every selected tensor gets a :class:`~weightzip.core.parametrize.UniformQuant`::

    W' = clamp(round(W / s), -2^(b-1), 2^(b-1) - 1) * s        (at most 2^b distinct values)

with ``b`` bits per layer (``bits``, overridden per tensor by ``layer_bits``) and a scale
chosen once from the layer's latent weights:

* ``scale: pow2`` (default): ``s = 2^-f``, ``f = b - i``, ``i = 1 + max(0, ceil(log2 max|W|))``
  (fixed point; ``int_bits: tight`` drops the ``max(0, .)``, see
  :mod:`weightzip.primitives.fixed_point`);
* ``scale: maxabs``: ``s = max|W| / (2^(b-1) - 1)``.

Training afterwards (a ``finetune`` stage) updates the latent weights through the STE while the
scale stays fixed, so the stored codes remain exact. Example (YAML)::

    - method: quantize_uniform
      bits: 8
      layer_bits: {"fc3.*": 6}
      scale: maxabs
"""
from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import field_validator

from ..core import parametrize
from ..primitives.fixed_point import IntBitsRule, maxabs_scale, pow2_scale
from ..core.registry import register_method
from ..core.select import _match, qualified, select
from .base import Method, MethodConfig, StageContext


def bits_for(name: str, default: int, layer_bits: dict[str, int]) -> int:
    """Bits of tensor ``name`` (``"fc1.weight"``): the first ``layer_bits`` pattern that matches
    the tensor name or its module name (glob, or ``re:<regex>``), else ``default``."""
    module = name.rpartition(".")[0]
    for pattern, b in layer_bits.items():
        if _match(name, pattern) or (module and _match(module, pattern)):
            return int(b)
    return int(default)


@register_method("quantize_uniform")
class QuantizeUniform(Method):
    """Attach a uniform fake quantizer (STE) with per-layer bits and a pow2 or max-abs scale."""

    class Config(MethodConfig):
        bits: int = 8
        layer_bits: dict[str, int] = {}
        scale: Literal["pow2", "maxabs"] = "pow2"
        int_bits: IntBitsRule = "thesis"

        @field_validator("bits")
        @classmethod
        def _bits(cls, v):
            if not 2 <= v <= 16:
                raise ValueError(f"bits must be in [2, 16] (UniformQuant), got {v}")
            return v

        @field_validator("layer_bits")
        @classmethod
        def _layer_bits(cls, v):
            bad = {k: b for k, b in v.items() if not 2 <= b <= 16}
            if bad:
                raise ValueError(f"layer_bits must be in [2, 16], got {bad}")
            return v

    def apply(self, model, ctx: StageContext) -> dict[str, Any]:
        c = self.config
        layers = {}
        for mname, mod, t in select(model, c.select):
            name = qualified(mname, t)
            b = bits_for(name, c.bits, c.layer_bits)
            w = parametrize.original(mod, t).detach()
            s = pow2_scale(w, b, c.int_bits) if c.scale == "pow2" else maxabs_scale(w, b)
            q = parametrize.UniformQuant(b, torch.tensor(s, dtype=torch.float32, device=w.device))
            parametrize.attach(mod, t, q)
            layers[name] = {"bits": b, "scale": float(q.scale)}  # the float32 scale actually used
        return {"layers": layers, "val": ctx.evaluate(model)}
