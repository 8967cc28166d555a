"""``loss_aware``: train with binary, ternary or m-bit weights chosen by the loss (Hou & Kwok).

One stage does everything: it attaches a :class:`LossAwareQuant` parametrization to every
selected tensor (default: all Linear / Conv2d weights and the LSTM gate weights, first and
last layer included; biases and BatchNorm stay fp32) and trains the model with Adam. Per step::

    forward   W_hat = prox(W, d)                     (cached; recomputed only after W or d change)
    backward  dL/dW := dL/dW_hat                     (straight-through estimator)
    Adam step on the latent W                        (no weight decay)
    callback  d = sqrt(v) + 1e-8 ;  W = clip(W, -1, 1) ;  W_hat = prox(W, d)

``v`` is Adam's second moment of the latent tensor (``exp_avg_sq``), so the forward of step
``t`` uses ``d`` from ``v_{t-1}`` (``d = 1`` before the first step). ``prox`` is the projection
of the ``mode`` (:mod:`weightzip.primitives.loss_aware`): ``lab`` (binary), ``lat`` / ``lat2``
(ternary, one or two scales; ``exact`` or alternating), ``laq`` (``bits``, ``levels`` linear or
log, ``scale_form`` code or exact), and the baselines ``bc`` (BinaryConnect), ``bwn``, ``twn``
(which ignore ``d``). One scale per tensor; LSTM weights ``[4H, *]`` get one per gate block
(``per_gate: auto``). ``sparsity > 0`` adds a support constraint (the entries with the largest
``d w^2`` are kept) - **[reconstructed]**, see METHODS.md.

Recipe example::

    stages:
      - method: loss_aware
        mode: laq
        bits: 3
        levels: log
        train: {epochs: 10, lr: 0.01, optimizer: adam, loss: squared_hinge,
                schedule: multistep, milestones: [4, 7]}

Latent initialisation: the latent weights must lie in ``[-1, 1]`` (they are clipped after every
step). A tensor with ``max |W| > 1`` is divided by ``max |W|`` when the stage starts
(``latent_init: rescale``, default: the sign pattern, the ordering of ``|W|`` and hence every
code are unchanged, only the scale shrinks - the following BatchNorm or the learned scales absorb
it) or clipped (``latent_init: clip``).

The baked tensor takes only ``2`` (binary), ``3`` (ternary) or ``2^m - 1`` (m-bit) distinct values
per scale block, and equals ``s_g * q`` with integer codes ``q`` and a per-block step ``s_g``
bit for bit, so it is hinted as ``{"kind": "uniform", "scale": [s_g]}``: the codec stores 1-, 2-
or m-bit codes plus one float per block (a codebook of the distinct values would need 3 bits
for a binary LSTM weight with 4 gate scales).
"""
from __future__ import annotations

import math
import weakref
from typing import Any, Literal

import torch
from pydantic import Field, field_validator, model_validator
from torch import Tensor, nn

from ..core import parametrize as P
from ..errors import WeightzipError
from ..primitives.loss_aware import MODES, nominal_bits, project, uniform_step
from ..core.registry import register_method
from ..core.select import qualified, select, type_name
from .base import Method, MethodConfig, StageContext

__all__ = ["LossAwareQuant", "LossAwareCallback", "LossAware", "gate_blocks"]

LSTM_TYPES = ("LSTMLayer", "LSTM", "LSTMCell")


@P.register_parametrization
class LossAwareQuant(P.WzParametrization):
    """``W' = prox(W, d)`` with a straight-through gradient to ``W``.

    Buffers (saved with the model): ``d`` (W's shape, the curvature, 1 until the optimizer
    has a second moment), ``w_hat`` (W's shape, the cached projection), ``alpha`` (``[G]`` or
    ``[G, 2]`` for ``lat2``: the scales of the G blocks along dim 0).

    The projection is recomputed only when the input tensor or ``d`` changed since the last
    one (tracked by tensor identity and version counter: an optimizer step, a clip, a
    ``load_state_dict`` all bump it), so a forward pass - in training or eval - costs one
    addition. After ``load_state_dict`` the loaded ``w_hat`` is trusted, so a resumed run
    continues from exactly the saved projection. When this parametrization is stacked after
    another one, its input is a fresh tensor each time and the projection is recomputed on
    every access.

    Value and gradient: ``forward(W) = w_hat + (W - W.detach())`` - exactly ``w_hat``
    (``x - x = 0``), with ``dW'/dW = I``.
    """

    kind = "loss_aware"

    def __init__(self, d: Tensor, w_hat: Tensor | None = None, alpha: Tensor | None = None, *,
                 mode: str = "lab", bits: int | None = None, levels: str = "linear",
                 exact: bool = False, scale_form: str = "code", keep: float = 1.0, blocks: int = 1,
                 max_iter: int = 10, negative_side: str = "correct"):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"unknown loss-aware mode {mode!r}; valid modes: {', '.join(MODES)}")
        self.mode, self.bits, self.levels, self.exact = mode, bits, levels, bool(exact)
        self.scale_form, self.keep, self.blocks = scale_form, float(keep), int(blocks)
        self.max_iter, self.negative_side = int(max_iter), negative_side
        nominal_bits(mode, bits)  # validates bits for laq
        d = d.detach()
        if not d.is_floating_point():
            d = d.to(torch.float32)
        self.register_buffer("d", d.clone())
        self.register_buffer("w_hat", torch.zeros_like(d) if w_hat is None else w_hat.detach().clone())
        a_shape = (self.blocks, 2) if mode == "lat2" else (self.blocks,)
        self.register_buffer("alpha", torch.zeros(a_shape) if alpha is None else alpha.detach().clone().reshape(a_shape))
        self._has_prev = w_hat is not None and bool(w_hat.ne(0).any())
        self._src: weakref.ref | None = None
        self._src_version = -1
        self._d_version = -1
        self._trust_loaded = False

    @classmethod
    def for_tensor(cls, w: Tensor, **kw: Any) -> "LossAwareQuant":
        """A parametrization for ``w`` with ``d = 1`` (its projection is computed on attach)."""
        return cls(torch.ones_like(w), **kw)

    def init_args(self) -> dict[str, Any]:
        return {"mode": self.mode, "bits": self.bits, "levels": self.levels, "exact": self.exact,
                "scale_form": self.scale_form, "keep": self.keep, "blocks": self.blocks,
                "max_iter": self.max_iter, "negative_side": self.negative_side}

    # ---- the cache ---------------------------------------------------------------------
    def _stale(self, w: Tensor) -> bool:
        src = self._src() if self._src is not None else None
        if self._trust_loaded:
            self._remember(w)
            self._trust_loaded = False
            return False
        return not (src is w and w._version == self._src_version and self.d._version == self._d_version)

    def _remember(self, w: Tensor) -> None:
        self._src = weakref.ref(w)
        self._src_version = w._version
        self._d_version = self.d._version

    def invalidate(self) -> None:
        """Force a new projection at the next access (after changing W by ``.data =``)."""
        self._src = None

    @torch.no_grad()
    def refresh(self, w: Tensor) -> None:
        """Recompute ``w_hat`` and ``alpha`` from ``w`` and ``d`` (previous ``w_hat`` as start)."""
        proj = project(w.detach(), self.d, mode=self.mode, exact=self.exact, bits=self.bits,
                       levels=self.levels, scale_form=self.scale_form, keep=self.keep,
                       blocks=self.blocks, prev=self.w_hat if self._has_prev else None,
                       max_iter=self.max_iter, negative_side=self.negative_side)
        self.w_hat.copy_(proj.w_hat)
        self.alpha.copy_(proj.alpha.reshape(self.alpha.shape))
        self._has_prev = True
        self._remember(w)

    def __getstate__(self):  # weak references do not pickle; a copy recomputes its projection
        state = super().__getstate__()
        state["_src"] = None
        return state

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if prefix + "w_hat" in state_dict:
            self._trust_loaded = True
            self._has_prev = True

    def forward(self, w: Tensor) -> Tensor:
        if self._stale(w):
            self.refresh(w)
        return self.w_hat + (w - w.detach())  # value w_hat exactly; gradient identity to w

    # ---- storage ----------------------------------------------------------------------
    def storage_hint(self) -> dict[str, Any]:
        """``{"kind": "uniform", "scale": s (float, or [G] per block), "code_bits": b}``.

        ``w_hat = s_g * q`` with integer codes q (:func:`uniform_step`), bit-exact in float32,
        so the codec stores codes of 1 (binary), 2 (ternary) or m bits with one scale per
        block - LSTM gate blocks included. Two-scale ``lat2`` (values ``{alpha+, 0, -alpha-}``)
        is hinted as a codebook of its distinct values.
        """
        w = self.w_hat.detach()
        code_bits = nominal_bits(self.mode, self.bits)
        step = uniform_step(self.alpha, self.mode, self.bits, self.levels)
        if step is None:
            n = int(torch.unique(w).numel())
            return {"kind": "codebook", "bits": max(1, math.ceil(math.log2(max(n, 1)))), "code_bits": code_bits}
        step = torch.where(step > 0, step, torch.ones_like(step)).detach().cpu()  # an all-zero block: any s
        scale: Any = float(step[0]) if step.numel() == 1 else [float(x) for x in step]
        return {"kind": "uniform", "scale": scale, "code_bits": code_bits}


@torch.no_grad()
def reinitialize(model: nn.Module, seed: int = 0) -> None:
    """Give ``model`` fresh initial weights: a zoo model (``wz_config``) is rebuilt with the same
    arguments and its state copied in (the zoo's own init); otherwise every submodule's
    ``reset_parameters()`` is called. Seeded by ``seed``; parametrized models are refused."""
    if any(True for _ in P.parametrized_tensors(model)):
        raise WeightzipError("from_scratch: the model already carries parametrizations from an earlier "
                             "stage; put the loss_aware stage first or drop from_scratch")
    torch.manual_seed(seed)
    cfg = getattr(model, "wz_config", None)
    if cfg and cfg.get("name"):
        from ..core.registry import create_model

        fresh = create_model(cfg["name"], **(cfg.get("kwargs") or {}))
        model.load_state_dict(fresh.state_dict())
        return
    for m in model.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()


def gate_blocks(module: nn.Module, tensor_name: str, w: Tensor, per_gate: bool | str = "auto") -> int:
    """Scale blocks of a tensor: 4 (one per gate i, f, g, o) for LSTM gate weights, else 1.

    ``per_gate="auto"``: 4 for ``weight_*`` tensors of LSTM modules whose dim 0 divides by 4;
    ``True``: the same, but an indivisible LSTM weight is an error; ``False``: always 1.
    """
    is_gate = type_name(module) in LSTM_TYPES and tensor_name.startswith("weight")
    if per_gate is False or not is_gate:
        return 1
    if w.shape[0] % 4:
        if per_gate is True:
            raise WeightzipError(f"{type(module).__name__}.{tensor_name} of shape {tuple(w.shape)} does "
                                 "not split into 4 gate blocks along dim 0; set per_gate: false")
        return 1
    return 4


class LossAwareCallback:
    """Trainer callback coupling the projections with Adam (see the module docstring).

    ``on_after_step``: for every quantized tensor, ``d = sqrt(exp_avg_sq) + eps`` (left at 1
    while the optimizer has no second moment for it, e.g. SGD), clip the latent tensor to
    ``[-clip, clip]``, and recompute the cached projection.
    """

    def __init__(self, targets: list[tuple[str, nn.Module, str, LossAwareQuant]], clip: float = 1.0,
                 eps: float = 1e-8, log=print):
        self.targets = list(targets)
        self.clip = float(clip)
        self.eps = float(eps)
        self.log = log
        self.steps_with_curvature = 0

    def on_train_begin(self, trainer) -> None:
        in_opt = {id(q) for g in trainer.optimizer.param_groups for q in g["params"]}
        missing = [qualified(n, t) for n, mod, t, _ in self.targets if id(P.original(mod, t)) not in in_opt]
        if missing:
            raise WeightzipError(f"loss_aware: the optimizer does not train the latent tensors {missing}; "
                                 "build the optimizer after the stage attached its parametrizations")
        if not isinstance(trainer.optimizer, (torch.optim.Adam, torch.optim.AdamW)):
            self.log(f"  loss_aware: optimizer {type(trainer.optimizer).__name__} has no second moment; "
                     "d stays 1 (the projections reduce to their d = 1 forms); use optimizer: adam")

    @torch.no_grad()
    def on_after_step(self, trainer, step: int) -> None:
        state = trainer.optimizer.state
        got = False
        for _, mod, t, p in self.targets:
            latent = P.original(mod, t)
            v = state.get(latent, {}).get("exp_avg_sq")
            if v is not None:
                p.d.copy_(v.sqrt().add_(self.eps))
                got = True
            latent.clamp_(-self.clip, self.clip)
            getattr(mod, t)  # recompute the cached projection now (eval and the next step reuse it)
        self.steps_with_curvature += int(got)

    def state_dict(self) -> dict[str, Any]:
        return {"steps_with_curvature": self.steps_with_curvature}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps_with_curvature = int(state.get("steps_with_curvature", 0))


@register_method("loss_aware")
class LossAware(Method):
    """Loss-aware binarization / ternarization / m-bit quantization, trained with Adam."""

    class Config(MethodConfig):
        mode: Literal["lab", "lat", "lat2", "laq", "bc", "bwn", "twn"] = Field(
            "lab", description="lab (binary), lat/lat2 (ternary, 1 or 2 scales), laq (m-bit); "
                               "baselines bc (BinaryConnect), bwn, twn")
        bits: int | None = Field(None, description="laq: bits m in [2, 8] (2^m - 1 levels); "
                                                   "others: implied (1 binary, 2 ternary)")
        levels: Literal["linear", "log"] = Field("linear", description="laq level set")
        exact: bool = Field(False, description="lat/lat2: exact sorted closed form instead of alternation")
        scale_form: Literal["code", "exact"] = Field(
            "code", description="laq scale: released-code sum(d|b||w|)/sum(d|b|) or exact sum(dbw)/sum(db^2)")
        sparsity: float = Field(0.0, ge=0.0, lt=1.0, description="[reconstructed] fraction of each "
                                "block forced to 0 (support = largest d w^2); loss-aware modes only")
        per_gate: bool | Literal["auto"] = Field("auto", description="one scale per LSTM gate block")
        negative_side: Literal["correct", "released"] = Field(
            "correct", description="exact lat2: 'released' reproduces the released code's negative-side bug")
        max_iter: int = Field(10, ge=1, le=100, description="alternations of lat/lat2/laq")
        clip: float = Field(1.0, gt=0, description="latent weights are kept in [-clip, clip]")
        latent_init: Literal["rescale", "clip"] = Field(
            "rescale", description="bring latent weights with max|W| > clip into range by scaling or clipping")
        eps: float = Field(1e-8, gt=0, description="d = sqrt(v) + eps")
        from_scratch: bool = Field(False, description="re-initialise the model first (the papers train "
                                   "quantized nets from scratch); default: start from the given weights")
        train: dict[str, Any] = Field(
            default_factory=lambda: {"epochs": 1, "lr": 0.01, "optimizer": "adam"},
            description="TrainConfig fields; Adam without weight decay unless given; epochs: 0 = "
                        "project only (no training)")

        @field_validator("train")
        @classmethod
        def _train_dict(cls, v):
            return dict(v or {})

        @model_validator(mode="after")
        def _check(self):
            if self.mode == "laq":
                nominal_bits("laq", self.bits)
            elif self.bits is not None and self.bits != nominal_bits(self.mode):
                raise ValueError(f"mode {self.mode!r} stores {nominal_bits(self.mode)} bit(s) per weight; "
                                 f"drop `bits` or use mode laq for {self.bits} bits")
            if self.sparsity > 0 and self.mode in ("bc", "bwn", "twn"):
                raise ValueError(f"sparsity applies to the loss-aware modes lab, lat, lat2, laq; not {self.mode!r}")
            return self

    def make_parametrization(self, module: nn.Module, tensor_name: str, w: Tensor) -> LossAwareQuant:
        """The parametrization this stage attaches to ``module.<tensor_name>`` (value ``w``)."""
        c = self.config
        return LossAwareQuant.for_tensor(
            w, mode=c.mode, bits=c.bits, levels=c.levels, exact=c.exact, scale_form=c.scale_form,
            keep=1.0 - c.sparsity, blocks=gate_blocks(module, tensor_name, w, c.per_gate),
            max_iter=c.max_iter, negative_side=c.negative_side)

    def attach(self, model: nn.Module, log=print) -> list[tuple[str, nn.Module, str, LossAwareQuant]]:
        """Bring latent weights into range and attach the parametrizations; returns the targets."""
        c = self.config
        targets = []
        for mname, mod, t in select(model, c.select):
            if P.find(mod, t, LossAwareQuant) is not None:
                raise WeightzipError(f"{qualified(mname, t)} is already loss-aware quantized; "
                                     "use one loss_aware stage per tensor (or finetune to keep training)")
            latent = P.original(mod, t)
            with torch.no_grad():
                m = float(latent.abs().max()) if latent.numel() else 0.0
                if m > c.clip:
                    if c.latent_init == "rescale":
                        latent.mul_(c.clip / m)
                    else:
                        latent.clamp_(-c.clip, c.clip)
                    log(f"  loss_aware: {qualified(mname, t)} max|W| = {m:.3g} > {c.clip}: {c.latent_init}d")
                current = getattr(mod, t).detach()
            p = self.make_parametrization(mod, t, current)
            P.attach(mod, t, p)
            targets.append((mname, mod, t, p))
        return targets

    def apply(self, model: nn.Module, ctx: StageContext) -> dict[str, Any]:
        c = self.config
        if c.from_scratch:
            reinitialize(model, ctx.seed)
        targets = self.attach(model, ctx.log)
        train = {"optimizer": "adam", "weight_decay": 0.0, **c.train}
        history: Any = []
        fit: dict[str, Any] = {}
        if int(train.get("epochs", 1)) > 0:
            if train["optimizer"] != "adam":
                ctx.log("  loss_aware: optimizer is not adam; d stays 1 (the paper trains with Adam)")
            if float(train.get("weight_decay", 0.0)) > 0:
                ctx.log("  loss_aware: weight_decay > 0 (the paper uses none)")
            cb = LossAwareCallback(targets, clip=c.clip, eps=c.eps, log=ctx.log)
            fit = ctx.fit(model, train, callbacks=[cb], tag=f"loss_aware[{c.mode}]") or {}
            history = fit.get("history", []) if isinstance(fit, dict) else []
        tensors = {}
        for mname, mod, t, p in targets:
            w = getattr(mod, t).detach()
            tensors[qualified(mname, t)] = {
                "alpha": p.alpha.flatten().tolist(),
                "blocks": p.blocks,
                "distinct": int(torch.unique(w).numel()),
                "nonzero_fraction": float((w != 0).float().mean()),
                "code_bits": nominal_bits(p.mode, p.bits),
            }
        out = {"mode": c.mode, "tensors": tensors, "train_history": history, "val": ctx.evaluate(model)}
        if isinstance(fit, dict) and fit.get("test") is not None:
            out["test"] = fit["test"]
        return out
