"""``grad_ptq``: post-training mixed-bit fixed point by clustered importance."""
from __future__ import annotations

from typing import Any, Literal, Sequence

from pydantic import field_validator, model_validator
from torch import Tensor, nn

from ...core import parametrize
from ...core.registry import register_method
from ...core.select import Selection, select
from ...primitives.fixed_point import MAX_FXP_BITS, IntBitsRule
from ...primitives.importance import cluster_importance
from ..base import Method, MethodConfig, StageContext
from .mixed_fixed import _attach_mixed, _layer_frac_bits, _pop_mixed, _summary
from .tracking import ImportanceKind, importance_tensors

ALL_TENSORS = Selection(tensors=["*"], types=["Linear", "Conv2d"])


class _BitsConfig(MethodConfig):
    select: Selection = ALL_TENSORS
    importance: ImportanceKind = "gradient"
    int_bits: IntBitsRule = "thesis"


def ptq_quantize(model: nn.Module, entries, importance: Sequence[Tensor], bits: Sequence[int], *,
                 clustering: Literal["kmeans", "quantile"] = "kmeans", fractions: Sequence[float] | None = None,
                 rule: IntBitsRule = "thesis", eps: float = 1e-12, seed: int = 0) -> list[Tensor]:
    """Cluster ``importance`` (all tensors together) and attach :class:`MixedFixedPoint` to each entry.

    Cluster j gets ``bits[j]``; ``frac_bits`` per (tensor, cluster) from the tensor's latent range.
    Returns the cluster ids per entry.
    """
    ids = cluster_importance(importance, len(bits), clustering, fractions, eps, seed)
    for (mname, mod, t), cl in zip(entries, ids):
        _pop_mixed(mod, t)
        w = parametrize.original(mod, t)
        _attach_mixed(mod, t, cl, bits, _layer_frac_bits(w.detach(), bits, rule))
    return ids


@register_method("grad_ptq")
class GradPTQ(Method):
    """Post-training mixed-bit fixed point by clustered accumulated-gradient importance."""

    class Config(_BitsConfig):
        bits: list[int] = [8, 6, 4, 2]
        clustering: Literal["kmeans", "quantile"] = "kmeans"
        fractions: list[float] | None = None
        eps: float = 1e-12

        @field_validator("bits")
        @classmethod
        def _bits(cls, v):
            if not v or len(v) > 127:
                raise ValueError("bits needs 1 to 127 entries (one per cluster, most important first)")
            if any(b < 0 or b > MAX_FXP_BITS for b in v):
                raise ValueError(f"every bit width must be in [0, {MAX_FXP_BITS}], got {v}")
            if any(a < b for a, b in zip(v, v[1:])):
                raise ValueError(f"bits must be non-increasing (most important cluster first), got {v}")
            return v

        @model_validator(mode="after")
        def _fractions(self):
            if self.fractions is not None:
                if self.clustering != "quantile":
                    raise ValueError("`fractions` needs clustering: quantile")
                if len(self.fractions) != len(self.bits):
                    raise ValueError(f"fractions has {len(self.fractions)} entries but bits has {len(self.bits)}")
                if any(f < 0 for f in self.fractions) or abs(sum(self.fractions) - 1) > 1e-6:
                    raise ValueError(f"fractions must be non-negative and sum to 1, got {self.fractions}")
            return self

    def apply(self, model, ctx: StageContext) -> dict[str, Any]:
        c = self.config
        entries = select(model, c.select)
        imp = importance_tensors(model, entries, ctx.state, c.importance)
        ptq_quantize(model, entries, imp, c.bits, clustering=c.clustering, fractions=c.fractions,
                     rule=c.int_bits, eps=c.eps, seed=ctx.seed)
        out = _summary(model, entries, c.bits)
        out["val"] = ctx.evaluate(model)
        return out
