"""``structured_qat``: coarse-grain block sparsity co-trained with k-bit weights AND activations.

Method B of METHODS.md (after Yin et al. 2017 and Kadetotad et al.'s coarse-grain
sparsification, CGS). Per selected weight ``W`` (``out x in``, conv: ``C_out x C_in`` with whole
kernels), in this order on the tensor::

    W_eff = Q_k( BlockMask(W) )      BlockMask: W * expand(M)   M: bool [R, C] block mask
                                     Q_k: DoReFa k-bit | ternary | binary, times the mask again

1. **Blocks** (:mod:`weightzip.primitives.blocks`): ``B x B`` blocks, every block row keeps
   ``max(1, C // c)`` blocks, chosen once - at random (seeded) or by block L2 norm after
   ``warmup_epochs`` of dense QAT - and then fixed for the rest of training (pruned latent
   weights are zeroed and get zero gradient).
2. **Weights** (:mod:`weightzip.primitives.quantizers`): DoReFa ``k >= 2`` bits, ternary (TWN,
   2 bits of storage) or binary ``sign(W) mean|W|`` (1 bit); straight-through gradients into
   latent fp32 weights. ``w_bits: 32`` leaves weights in float (sparsity only).
3. **Activations**: the INPUT of every selected layer but the first (whose input is the data)
   is quantized to ``a_bits``: ``round(clip(a, 0, c)/c (2^k-1)) / (2^k-1) c`` with ``c =
   a_clip`` (``activation: clip``) or a per-layer clip learned by PACT (``activation: pact``;
   after training the learned clips are frozen into plain floats). The quantizers are
   installed with :func:`weightzip.core.parametrize.install_activation_quant`, so they are written
   to the ``.wz`` manifest and the runtime re-applies them. ``a_bits: 32`` = no quantization.
4. **First / last layer** weight precision: ``first_last_bits`` (one int for both, or
   ``[first, last]``; ``None`` = ``w_bits``; 32 = float); whether they are block-sparse:
   ``sparsify_first`` / ``sparsify_last``.

Storage hint of a selected weight (merged along the chain): ``{"mask": bool[W.shape],
"block": (B, B), "block_mask": bool[R, C]}`` (conv: ``block = (B, B kh kw)`` on the 2-D view
``[C_out, C_in kh kw]``, the codec's convention) from the block mask (the codec stores a block
bitmap + the dense kept blocks, no per-weight index) and ``{"kind": "codebook", "bits": k}``
from the quantizer (the kept values take exactly ``2^k`` levels; 3 for ternary).

[reconstructed] details (configurable, not claimed as the thesis's): the per-row count
``max(1, C // c)``; padding of partial last blocks; which layers are sparse / quantized by
default; PACT as the learned-clip option; ``warmup_epochs`` being extra epochs before
``train.epochs`` of masked training.

Recipe::

    - method: structured_qat
      block: 16
      compression: 4
      selection: random
      w_bits: 2
      a_bits: 2
      weight_quantizer: dorefa
      first_last_bits: [2, 8]
      train: {epochs: 10, lr: 0.001, optimizer: adam}
"""
from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field, field_validator, model_validator
from torch import Tensor, nn

from ..core import parametrize as P
from ..core.parametrize import Mask, WzParametrization, register_parametrization
from ..primitives import blocks as B
from ..primitives.quantizers import pact_activation, quantize_weight, weight_storage_bits
from ..core.registry import register_method
from ..core.select import qualified, select, type_name
from .base import Method, MethodConfig, StageContext

__all__ = ["BlockMask", "DoReFaWeight", "TernaryWeight", "BinaryWeight", "StructuredQAT",
           "weight_quantizer_for", "FLOAT_BITS"]

FLOAT_BITS = 32


# ---------------------------------------------------------------------------------------------
# Parametrizations


@register_parametrization
class BlockMask(Mask):
    """CGS block mask: ``W' = W * m`` with ``m = expand(block_mask)`` (a :class:`Mask`).

    Buffers: ``mask`` (float, W's shape) and ``block_mask`` (bool ``[R, C]``); ``block`` is the
    ``(B_r, B_c)`` block size over dims (0, 1) (conv kernels whole).
    """

    kind = "block_mask"

    def __init__(self, mask: Tensor, block_mask: Tensor, block):
        super().__init__(mask)
        self.block = list(B.as_block(block))
        self.register_buffer("block_mask", block_mask.detach().to(torch.bool).clone())

    @classmethod
    def build(cls, block_mask: Tensor, shape, block) -> "BlockMask":
        """From a ``[R, C]`` block mask for a weight of ``shape``."""
        return cls(B.expand_block_mask(block_mask, shape, block), block_mask, block)

    def init_args(self) -> dict[str, Any]:
        return {"block": list(self.block)}

    @torch.no_grad()
    def set_block_mask(self, block_mask: Tensor) -> None:
        """Replace the block mask in place (used once, after a norm warm-up)."""
        self.block_mask.copy_(block_mask.to(torch.bool))
        self.mask.copy_(B.expand_block_mask(block_mask, self.mask.shape, self.block))

    def storage_hint(self) -> dict[str, Any]:
        """``mask``, and the block bitmap in the codec's convention: blocks of the 2-D view
        ``[C_out, numel / C_out]``, so a conv block is ``(B_r, B_c * kh * kw)`` (whole kernels)."""
        k = 1
        for d in self.mask.shape[2:]:
            k *= int(d)
        return {"mask": self.mask.bool(), "block": (self.block[0], self.block[1] * k),
                "block_mask": self.block_mask.clone()}


class _WeightQuant(WzParametrization):
    """k-bit weight fake quantization with STE on latent fp32 weights, pruned entries kept 0.

    ``mask`` (buffer, W's shape) is the element mask of the block mask below in the chain (all
    ones without one): statistics use kept weights only and the output is re-masked, because
    DoReFa has no zero level (it would turn pruned zeros into ``+-1/(2^k-1)``).
    """

    quantizer = ""

    def __init__(self, bits: int, mask: Tensor):
        super().__init__()
        self.bits = int(bits)
        self.register_buffer("mask", mask.detach().to(torch.float32).clone())

    def init_args(self) -> dict[str, Any]:
        return {"bits": self.bits}

    def forward(self, w: Tensor) -> Tensor:
        return quantize_weight(w, self.quantizer, self.bits, self.mask)

    def storage_hint(self) -> dict[str, Any]:
        return {"kind": "codebook", "bits": weight_storage_bits(self.quantizer, self.bits)}


@register_parametrization
class DoReFaWeight(_WeightQuant):
    """DoReFa k-bit weights (k >= 2; 1 bit = binary): see :func:`~weightzip.primitives.quantizers.dorefa_weight`."""

    kind = "dorefa"
    quantizer = "dorefa"


@register_parametrization
class TernaryWeight(_WeightQuant):
    """TWN ternary weights ``{-alpha, 0, alpha}``, stored in 2 bits."""

    kind = "ternary"
    quantizer = "ternary"

    def __init__(self, bits: int, mask: Tensor):
        super().__init__(2, mask)


@register_parametrization
class BinaryWeight(_WeightQuant):
    """1-bit weights ``sign(W) mean|W|``."""

    kind = "binary"
    quantizer = "binary"

    def __init__(self, bits: int, mask: Tensor):
        super().__init__(1, mask)


def weight_quantizer_for(bits: int, weight_quantizer: str) -> type[_WeightQuant] | None:
    """The parametrization class for a layer at ``bits`` (None = keep float)."""
    bits = int(bits)
    if bits >= FLOAT_BITS:
        return None
    if bits == 1:
        return BinaryWeight
    if weight_quantizer == "ternary" and bits == 2:
        return TernaryWeight
    return DoReFaWeight


# ---------------------------------------------------------------------------------------------
# PACT: learned activation clips during training, frozen into plain floats afterwards


class _PACTHooks:
    """Forward pre-hooks ``x -> pact(x, alpha_m, k)``; the alphas live in ``model.wz_pact``
    (an ``nn.ParameterDict``) so the Trainer's optimizer trains them; :meth:`freeze` removes
    both and returns the learned clips."""

    def __init__(self, model: nn.Module, modules: list[str], bits: int, init_clip: float):
        self.model = model
        model.wz_pact = nn.ParameterDict({
            _key(m): nn.Parameter(torch.tensor(float(init_clip))) for m in modules})
        named = dict(model.named_modules())
        self.handles = []
        for m in modules:
            alpha = model.wz_pact[_key(m)]
            self.handles.append(named[m].register_forward_pre_hook(_pact_hook(alpha, bits)))
        self.modules = modules

    def freeze(self, min_clip: float = 1e-3) -> dict[str, float]:
        clips = {m: max(float(self.model.wz_pact[_key(m)].detach()), min_clip) for m in self.modules}
        for h in self.handles:
            h.remove()
        del self.model.wz_pact
        return clips


def _key(module_name: str) -> str:
    return module_name.replace(".", "__") or "_root"


def _pact_hook(alpha: nn.Parameter, bits: int):
    def hook(module, args):
        return (pact_activation(args[0], alpha, bits),) + tuple(args[1:])
    return hook


# ---------------------------------------------------------------------------------------------
# The method


@register_method("structured_qat")
class StructuredQAT(Method):
    """Coarse-grain block sparsity + k-bit weight and activation QAT (module docstring)."""

    class Config(MethodConfig):
        block: int | tuple[int, int] = Field(16, description="block size B (or [B_rows, B_cols])")
        compression: int = Field(4, ge=1, description="keep 1/c of the blocks of every block row (1 = dense)")
        selection: Literal["random", "norm"] = Field("random", description="how blocks are chosen (once)")
        warmup_epochs: int = Field(0, ge=0, description="norm: dense QAT epochs before blocks are chosen")
        w_bits: int = Field(2, ge=1, le=FLOAT_BITS, description="weight bits; 32 = float")
        a_bits: int = Field(2, ge=1, le=FLOAT_BITS, description="activation bits; 32 = not quantized")
        weight_quantizer: Literal["dorefa", "ternary", "binary"] = "dorefa"
        first_last_bits: int | tuple[int, int] | None = Field(
            None, description="weight bits of the first and last layer: one int or [first, last]; None = w_bits")
        sparsify_first: bool = Field(True, description="block-sparsify the first selected layer")
        sparsify_last: bool = Field(False, description="block-sparsify the last selected layer")
        activation: Literal["clip", "pact"] = Field("clip", description="fixed clip or PACT learned clip")
        a_clip: float = Field(1.0, gt=0, description="activation clip c (PACT: initial alpha)")
        seed: int | None = Field(None, description="seed of the random block choice (None = the run seed)")
        train: dict[str, Any] = {"epochs": 10, "lr": 1e-3, "optimizer": "adam"}

        @field_validator("block")
        @classmethod
        def _block(cls, v):
            return B.as_block(v)

        @field_validator("first_last_bits")
        @classmethod
        def _fl_bits(cls, v):
            if v is None:
                return v
            pair = (v, v) if isinstance(v, int) else tuple(v)
            if any(not 1 <= int(b) <= FLOAT_BITS for b in pair):
                raise ValueError(f"first_last_bits must be in [1, 32], got {v}")
            return pair

        @model_validator(mode="after")
        def _check(self):
            if self.weight_quantizer == "ternary" and self.w_bits != 2:
                raise ValueError(f"ternary weights take 2 bits of storage; set w_bits: 2 (got {self.w_bits})")
            if self.weight_quantizer == "binary" and self.w_bits != 1:
                raise ValueError(f"binary weights take 1 bit; set w_bits: 1 (got {self.w_bits})")
            if self.warmup_epochs and self.selection != "norm":
                raise ValueError("warmup_epochs only applies to selection: norm (random blocks need no warm-up)")
            return self

    # ---- per-layer plan ----------------------------------------------------------------
    def plan(self, model: nn.Module) -> list[dict[str, Any]]:
        """Per selected tensor: ``{module, tensor, key, bits, sparse}`` (no model change)."""
        c = self.config
        targets = select(model, c.select)
        first, last = c.first_last_bits or (c.w_bits, c.w_bits)
        out = []
        for i, (mname, mod, tname) in enumerate(targets):
            bits, sparse = c.w_bits, c.compression > 1
            if i == 0:
                bits, sparse = first, sparse and c.sparsify_first
            if i == len(targets) - 1:
                bits, sparse = last, sparse and c.sparsify_last
            w = getattr(mod, tname)
            if w.dim() < 2:
                sparse = False
            out.append({"module": mname, "mod": mod, "tensor": tname, "key": qualified(mname, tname),
                        "bits": int(bits), "sparse": bool(sparse), "shape": tuple(w.shape)})
        return out

    def apply(self, model: nn.Module, ctx: StageContext) -> dict[str, Any]:
        c = self.config
        plan = self.plan(model)
        seed = ctx.seed if c.seed is None else c.seed
        gen = torch.Generator().manual_seed(int(seed))
        dev = next((p.device for p in model.parameters()), torch.device("cpu"))
        # 1. block masks (all blocks kept until chosen) and weight quantizers
        for item in plan:
            mod, t = item["mod"], item["tensor"]
            if P.chain(mod, t):
                raise ValueError(f"structured_qat: {item['key']} already has parametrizations "
                                 f"{[p.kind for p in P.chain(mod, t)]}; apply structured_qat to an "
                                 "unparametrized model (it adds its own block mask and quantizer)")
            if item["sparse"]:
                grid = B.block_grid(item["shape"], c.block)
                initial = (torch.ones(grid, dtype=torch.bool) if c.selection == "norm"
                           else B.random_block_mask(grid, c.compression, generator=gen))
                P.attach(mod, t, BlockMask.build(initial, item["shape"], c.block).to(dev))
            qcls = weight_quantizer_for(item["bits"], c.weight_quantizer)
            item["quantizer"] = qcls.kind if qcls else "float"
            if qcls is not None:
                bm = P.find(mod, t, BlockMask)
                mask = bm.mask if bm is not None else torch.ones(item["shape"])
                P.attach(mod, t, qcls(item["bits"], mask).to(dev))
        # 2. activation quantizers on the inputs of every selected module but the first
        # (an Embedding's input is token indices, not an activation: never quantized)
        act_modules = [m for m in list(dict.fromkeys(i["module"] for i in plan))[1:]
                       if type_name(model.get_submodule(m)) != "Embedding"]
        pact = None
        if c.a_bits < FLOAT_BITS and act_modules:
            if c.activation == "pact":
                pact = _PACTHooks(model, act_modules, c.a_bits, c.a_clip)
            else:
                P.install_activation_quant(
                    model, [{"module": m, "bits": c.a_bits, "clip": c.a_clip} for m in act_modules])
        history = []
        # 3. norm selection after a dense QAT warm-up
        if c.selection == "norm":
            if c.warmup_epochs:
                warm = {**c.train, "epochs": c.warmup_epochs}
                history += _history(ctx.fit(model, warm, tag="structured_qat warm-up"))
            for item in plan:
                if item["sparse"]:
                    bm = B.norm_block_mask(P.original(item["mod"], item["tensor"]), c.block, c.compression)
                    self._set_mask(item, bm)
        else:
            for item in plan:
                if item["sparse"]:
                    self._set_mask(item, P.find(item["mod"], item["tensor"], BlockMask).block_mask)
        # 4. co-training with the fixed block masks
        history += _history(ctx.fit(model, c.train, tag="structured_qat"))
        clips = None
        if pact is not None:
            clips = pact.freeze()
            P.install_activation_quant(
                model, [{"module": m, "bits": c.a_bits, "clip": clips[m]} for m in act_modules])
        return {
            "val": ctx.evaluate(model),
            "layers": {i["key"]: self._layer_metrics(i) for i in plan},
            "a_bits": c.a_bits if act_modules else FLOAT_BITS,
            "activation_quant": list((getattr(model, "wz_runtime", {}) or {}).get("activation_quant", [])),
            "pact_clips": clips,
            "memory": _memory(model, ctx),
            "train_history": history,
        }

    @staticmethod
    @torch.no_grad()
    def _set_mask(item: dict[str, Any], block_mask: Tensor) -> None:
        """Fix the block mask of one tensor: both buffers, and zero the pruned latent weights."""
        mod, t = item["mod"], item["tensor"]
        bmask = P.find(mod, t, BlockMask)
        bmask.set_block_mask(block_mask)
        q = P.find(mod, t, _WeightQuant)
        if q is not None:
            q.mask.copy_(bmask.mask)
        P.original(mod, t).mul_(bmask.mask)

    @staticmethod
    def _layer_metrics(item: dict[str, Any]) -> dict[str, Any]:
        bm = P.find(item["mod"], item["tensor"], BlockMask)
        out = {"w_bits": item["bits"], "quantizer": item["quantizer"], "sparse": item["sparse"]}
        if bm is not None:
            out.update({"block_grid": list(bm.block_mask.shape),
                        "blocks_kept_per_row": int(bm.block_mask[0].sum()),
                        "density": float(bm.mask.mean())})
        return out


def _history(fit_out: Any) -> list:
    return list(fit_out.get("history", [])) if isinstance(fit_out, dict) else []


def _memory(model: nn.Module, ctx: StageContext) -> dict[str, Any] | None:
    """Memory-model totals (bits) for one example of the training data, when there is one."""
    from ..analysis.memory import memory_report

    example = None
    loader = getattr(ctx.loaders, "train", None)
    if loader is not None:
        try:
            x, _ = next(iter(loader))
            example = x[:1].cpu()
        except (StopIteration, TypeError, ValueError):
            example = None
    if example is None or not example.is_floating_point():
        rep = memory_report(model)
    else:
        rep = memory_report(model, example=example)
    keys = ("weight_memory_bits", "kept_weight_bits", "block_mask_bits", "float_param_bits",
            "fp32_weight_memory_bits", "weight_memory_reduction", "activation_memory_bits",
            "peak_activation_memory_bits", "total_memory_bits")
    return {k: rep.get(k) for k in keys}
