"""The :class:`MixedFixedPoint` parametrization (per-element cluster -> fixed-point format) and
the helpers that attach it and summarise what it stores."""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor, nn

from ...core import parametrize
from ...core.parametrize import WzParametrization, register_parametrization
from ...errors import WeightzipError
from ...primitives.fixed_point import MAX_FXP_BITS, IntBitsRule, frac_bits_for, fxp_apply, fxp_format

# ---------------------------------------------------------------------------------------------
# The parametrization


@register_parametrization
class MixedFixedPoint(WzParametrization):
    """Per-element fixed point: element ``e`` of cluster ``c = cluster[e]`` is stored as
    ``fxp(W[e], bits[c], frac_bits[c])``; gradients pass straight through (STE).

    ``cluster``: int8 tensor of W's shape (values ``0..K-1``, 0 = most important);
    ``bits``, ``frac_bits``: int32 tensors ``(K,)``. ``bits[c] = 0`` prunes the cluster.
    """

    kind = "mixed_fixed"

    def __init__(self, cluster: Tensor, bits: Tensor | Sequence[int], frac_bits: Tensor | Sequence[int]):
        super().__init__()
        bits_t = torch.as_tensor(bits, dtype=torch.int32).reshape(-1).clone()
        frac_t = torch.as_tensor(frac_bits, dtype=torch.int32).reshape(-1).clone()
        if bits_t.shape != frac_t.shape:
            raise ValueError(f"MixedFixedPoint: bits {bits_t.tolist()} and frac_bits {frac_t.tolist()} differ in length")
        if bits_t.numel() > 127:
            raise ValueError(f"MixedFixedPoint: at most 127 clusters (int8 ids), got {bits_t.numel()}")
        if bits_t.numel() and (int(bits_t.min()) < 0 or int(bits_t.max()) > MAX_FXP_BITS):
            raise ValueError(f"MixedFixedPoint: bits must be in [0, {MAX_FXP_BITS}], got {bits_t.tolist()}")
        cl = torch.as_tensor(cluster).detach()
        if cl.numel() and (int(cl.min()) < 0 or int(cl.max()) >= max(1, bits_t.numel())):
            raise ValueError(f"MixedFixedPoint: cluster ids must be in [0, {bits_t.numel() - 1}]")
        self.register_buffer("cluster", cl.to(torch.int8).clone())
        self.register_buffer("bits", bits_t)
        self.register_buffer("frac_bits", frac_t)

    @classmethod
    def from_spec(cls, args, shapes):
        k = shapes["bits"][0]
        return cls(torch.zeros(shapes["cluster"], dtype=torch.int8), [0] * k, [0] * k)

    def element_formats(self) -> tuple[Tensor, Tensor]:
        """Per-element ``(bits, frac_bits)`` as int64 tensors of W's shape."""
        c = self.cluster.long()
        return self.bits.long()[c], self.frac_bits.long()[c]

    def _element_format(self, w: Tensor):
        """Per-element ``(2^f, lo, hi)``, cached until a buffer changes (version counters)."""
        key = (self.cluster._version, self.bits._version, self.frac_bits._version, self.cluster.data_ptr(),
               self.bits.data_ptr(), self.frac_bits.data_ptr(), w.dtype, w.device)
        cache = getattr(self, "_fmt_cache", None)
        if cache is None or cache[0] != key:
            b, f = self.element_formats()
            cache = (key, fxp_format(w, b, f))
            self._fmt_cache = cache
        return cache[1]

    def forward(self, w: Tensor) -> Tensor:
        wq = fxp_apply(w, self._element_format(w))
        return w + (wq - w).detach()                              # STE, as fxp_ste

    def storage_hint(self) -> dict[str, Any]:
        """``{"kind": "mixed_fixed", "cluster", "bits", "frac_bits"}``; a pruned (0-bit) cluster
        is reported as 1 bit with ``f = 0``: it holds no non-zero, so nothing of it is stored."""
        bits = [max(1, int(v)) for v in self.bits]
        frac = [int(f) if int(b) > 0 else 0 for b, f in zip(self.bits, self.frac_bits)]
        return {"kind": "mixed_fixed", "cluster": self.cluster.detach().cpu().clone(), "bits": bits,
                "frac_bits": frac}


def _pop_mixed(module: nn.Module, tname: str) -> None:
    """Remove a MixedFixedPoint at the end of the tensor's chain (latent weights stay latent)."""
    ch = parametrize.chain(module, tname)
    if not ch or not isinstance(ch[-1], MixedFixedPoint):
        if any(isinstance(p, MixedFixedPoint) for p in ch):
            raise WeightzipError(f"{tname}: a MixedFixedPoint sits inside a chain of parametrizations; "
                                 "mixed fixed point must be the last one - re-order the recipe stages")
        return
    if len(ch) == 1:
        parametrize.remove_all(module, tname, bake=False)
    else:
        del module.parametrizations[tname][len(ch) - 1]


def _attach_mixed(module: nn.Module, tname: str, cluster: Tensor, bits: Sequence[int],
                  frac_bits: Sequence[int]) -> MixedFixedPoint:
    _pop_mixed(module, tname)
    p = MixedFixedPoint(cluster, bits, frac_bits).to(parametrize.original(module, tname).device)
    parametrize.attach(module, tname, p)
    return p


def _layer_frac_bits(w: Tensor, bits: Sequence[int], rule: IntBitsRule) -> list[int]:
    """``f_c = b_c - i_layer`` for every cluster (``0`` for pruned clusters with ``b_c = 0``)."""
    return [frac_bits_for(w, b, rule) if b > 0 else 0 for b in bits]


def _summary(model: nn.Module, entries, bits: Sequence[int]) -> dict[str, Any]:
    """Per-cluster counts / non-zeros and the mean bits per stored non-zero (no ratios here)."""
    k = len(bits)
    count = [0] * k
    nnz = [0] * k
    total = 0
    for mname, mod, t in entries:
        p = parametrize.find(mod, t, MixedFixedPoint)
        w = getattr(mod, t).detach()
        cl = p.cluster.long()
        for c in range(k):
            sel = cl == c
            count[c] += int(sel.sum())
            nnz[c] += int((w[sel] != 0).sum())
        total += w.numel()
    nz = sum(nnz)
    return {"bits": list(bits), "cluster_count": count, "cluster_nnz": nnz, "params": total,
            "nonzero": nz, "sparsity": 1 - nz / max(1, total),
            "mean_value_bits": sum(b * n for b, n in zip(bits, nnz)) / max(1, nz)}
