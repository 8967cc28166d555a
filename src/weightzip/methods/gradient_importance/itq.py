"""``grad_itq``: in-training quantization of the low-importance group (V1 reproject / V2 freeze)."""
from __future__ import annotations

from typing import Any, Callable, Literal, Sequence

import torch
from pydantic import field_validator, model_validator
from torch import Tensor

from ...core import parametrize
from ...core.registry import register_method
from ...core.select import qualified, select
from ...primitives.fixed_point import MAX_FXP_BITS, IntBitsRule, frac_bits_for, fxp_quantize
from ...primitives.importance import quantile_threshold
from ..base import Method, StageContext
from .mixed_fixed import _attach_mixed, _pop_mixed, _summary
from .ptq import _BitsConfig
from .tracking import STATE_KEY, ImportanceTracker, importance_tensors


class ITQCallback:
    """End of each schedule epoch: project the low-importance group to ``b_low`` bits.

    ``entries``: selected ``(module_name, module, tensor_name)``; ``importance_fn()`` returns the
    current importance per entry. At the end of epoch ``e < len(quantiles)`` the low group
    ``A <= quantile(all A, q_e)`` is projected in place on the latent weights:

    * ``reproject`` (V1): the group is recomputed from scratch and re-projected every epoch,
      everything keeps training in between;
    * ``freeze`` (V2, INQ-like): the group only grows; its elements are frozen: zero gradient in
      ``on_step`` (so their importance stops growing too) and their values restored after every
      optimizer step (momentum and weight decay would move them otherwise).

    Epochs after the schedule (recovery, ``recovery_epochs`` of :class:`GradITQ`) keep the final
    low group frozen and call ``on_recovery()`` once at their start (GradITQ attaches the final
    formats there so the high group trains through its fake quantization).

    After training ``low[i]`` is the bool mask of entry i's low group and ``frac_low[i]`` its
    fraction bits. Put this callback BEFORE the :class:`ImportanceTracker` in the callback list:
    frozen entries get zero gradient before ``A`` accumulates.
    """

    def __init__(self, entries, importance_fn: Callable[[], list[Tensor]], quantiles: Sequence[float],
                 b_low: int, variant: Literal["reproject", "freeze"] = "reproject",
                 rule: IntBitsRule = "thesis", log: Callable[[str], None] | None = None,
                 on_recovery: Callable[["ITQCallback"], None] | None = None):
        self.entries = list(entries)
        self.importance_fn = importance_fn
        self.quantiles = list(quantiles)
        self.b_low = int(b_low)
        self.variant = variant
        self.rule = rule
        self.log = log
        self.on_recovery = on_recovery
        self.low: list[Tensor | None] = [None] * len(self.entries)
        self.frac_low: list[int | None] = [None] * len(self.entries)
        self.frozen_values: list[Tensor | None] = [None] * len(self.entries)
        self.thresholds: list[float] = []
        self.freeze_active = False
        self.recovering = False

    def _latent(self, i: int) -> Tensor:
        _, mod, t = self.entries[i]
        return parametrize.original(mod, t)

    def q_at(self, epoch: int) -> float:
        return self.quantiles[min(epoch, len(self.quantiles) - 1)]

    def _frac(self, w: Tensor) -> int:
        return frac_bits_for(w, self.b_low, self.rule) if self.b_low > 0 else 0

    @torch.no_grad()
    def project(self, epoch: int) -> float:
        """Split at the importance quantile of this epoch and project the low group; returns the threshold."""
        imp = self.importance_fn()
        thr = quantile_threshold(imp, self.q_at(epoch))
        self.thresholds.append(thr)
        for i, a in enumerate(imp):
            w = self._latent(i)
            low = a <= thr                                                     # (W.shape) bool
            if self.variant == "freeze":
                if self.low[i] is not None:
                    low = low | self.low[i]                                    # frozen stays frozen
                if self.frac_low[i] is None:                                   # one grid for all frozen values
                    self.frac_low[i] = self._frac(w)
                new = low & ~self.low[i] if self.low[i] is not None else low
                w[new] = fxp_quantize(w[new], self.b_low, self.frac_low[i])
            else:
                self.frac_low[i] = self._frac(w)
                w[low] = fxp_quantize(w[low], self.b_low, self.frac_low[i])
            self.low[i] = low
            self.frozen_values[i] = w.detach().clone()
        return thr

    @torch.no_grad()
    def on_step(self, trainer, step: int) -> None:
        if not self.freeze_active:
            return
        for i, low in enumerate(self.low):
            g = self._latent(i).grad
            if g is not None:
                g.masked_fill_(low, 0.0)

    @torch.no_grad()
    def on_after_step(self, trainer, step: int) -> None:
        if not self.freeze_active:
            return
        for i, low in enumerate(self.low):  # momentum / weight decay must not move frozen values
            w = self._latent(i)
            w.copy_(torch.where(low, self.frozen_values[i], w))

    def on_epoch_end(self, trainer, epoch: int, metrics: dict[str, float]) -> None:
        if epoch >= len(self.quantiles):
            return
        thr = self.project(epoch)
        n_low = sum(int(l.sum()) for l in self.low)
        n = sum(l.numel() for l in self.low)
        metrics["itq_low_fraction"] = n_low / n
        if self.log:
            self.log(f"  itq epoch {epoch + 1}: q={self.q_at(epoch)} threshold={thr:.4g} low={n_low / n:.3f}")
        if self.variant == "freeze" or epoch + 1 >= len(self.quantiles):
            self.freeze_active = True

    def on_epoch_begin(self, trainer, epoch: int) -> None:
        if epoch >= len(self.quantiles) and not self.recovering:
            self.recovering = True
            if self.on_recovery is not None:
                self.on_recovery(self)

    def state_dict(self) -> dict[str, Any]:
        return {"low": [l.cpu() if l is not None else torch.zeros(0, dtype=torch.bool) for l in self.low],
                "frac_low": [f if f is not None else -999 for f in self.frac_low],
                "frozen": [v.cpu() if v is not None else torch.zeros(0) for v in self.frozen_values],
                "thresholds": list(self.thresholds), "freeze_active": self.freeze_active,
                "recovering": self.recovering}

    def load_state_dict(self, st: dict[str, Any]) -> None:
        for i, (l, f, v) in enumerate(zip(st["low"], st["frac_low"], st["frozen"])):
            dev = self._latent(i).device
            self.low[i] = l.to(dev) if l.numel() else None
            self.frac_low[i] = None if f == -999 else int(f)
            self.frozen_values[i] = v.to(dev) if v.numel() else None
        self.thresholds = list(st.get("thresholds", []))
        self.freeze_active = bool(st.get("freeze_active", False))
        self.recovering = bool(st.get("recovering", False))


@register_method("grad_itq")
class GradITQ(Method):
    """In-training quantization of the low accumulated-gradient group (V1 reproject / V2 freeze).

    Trains ``len(quantiles) + recovery_epochs`` epochs (``train.epochs``, if given, must match).
    After training each tensor gets a :class:`MixedFixedPoint` with two clusters:
    0 = high group (``b_high`` bits [reconstructed]), 1 = low group (``b_low`` bits, the fraction
    bits used by the last projection).

    ``recovery_epochs`` [reconstructed, not in the thesis]: epochs after the last projection in
    which the final formats are already attached (the high group trains through its ``b_high``
    fake quantization with the STE) and the low group stays frozen on its grid - without them
    the last projection and the ``b_high`` rounding are never trained through.
    """

    class Config(_BitsConfig):
        train: dict[str, Any] = {"lr": 0.01, "optimizer": "sgd", "momentum": 0.9}
        quantiles: list[float] = [0.5, 0.75, 0.875]
        b_low: int = 4
        b_high: int = 8
        variant: Literal["reproject", "freeze"] = "reproject"
        recovery_epochs: int = 0

        @field_validator("quantiles")
        @classmethod
        def _q(cls, v):
            if not v or any(not 0 < q < 1 for q in v):
                raise ValueError(f"quantiles must be a non-empty list of numbers in (0, 1), got {v}")
            return v

        @field_validator("b_low", "b_high")
        @classmethod
        def _b(cls, v):
            if not 0 <= v <= MAX_FXP_BITS:
                raise ValueError(f"bits must be in [0, {MAX_FXP_BITS}], got {v}")
            return v

        @field_validator("recovery_epochs")
        @classmethod
        def _r(cls, v):
            if v < 0:
                raise ValueError(f"recovery_epochs must be >= 0, got {v}")
            return v

        @model_validator(mode="after")
        def _epochs(self):
            n = len(self.quantiles) + self.recovery_epochs
            if "epochs" in self.train and self.train["epochs"] != n:
                raise ValueError(f"train.epochs={self.train['epochs']} but the schedule needs "
                                 f"len(quantiles) + recovery_epochs = {n}; leave train.epochs out")
            return self

    def _attach_final(self, entries, itq: ITQCallback) -> None:
        c = self.config
        bits = [c.b_high, c.b_low]
        for i, (_, mod, t) in enumerate(entries):
            w = parametrize.original(mod, t).detach()
            low = itq.low[i] if itq.low[i] is not None else torch.zeros_like(w, dtype=torch.bool)
            f_high = frac_bits_for(w, c.b_high, c.int_bits) if c.b_high > 0 else 0
            f_low = itq.frac_low[i] if itq.frac_low[i] is not None else 0
            _attach_mixed(mod, t, low.to(torch.int8), bits, [f_high, f_low])

    def apply(self, model, ctx: StageContext) -> dict[str, Any]:
        c = self.config
        entries = select(model, c.select)
        for _, mod, t in entries:  # train the latent weights directly (earlier mixed formats dropped)
            _pop_mixed(mod, t)
        store = ctx.state.setdefault(STATE_KEY, {})
        names = [qualified(m, t) for m, _, t in entries]
        if c.importance == "gradient" and not all(n in store for n in names):
            ctx.log("  grad_itq: no importance from earlier stages; accumulating from this stage's first epoch")
        tracker = ImportanceTracker(store)

        def importance_fn():
            return importance_tensors(model, entries, ctx.state, c.importance)

        itq = ITQCallback(entries, importance_fn, c.quantiles, c.b_low, c.variant, c.int_bits, log=ctx.log,
                          on_recovery=lambda cb: self._attach_final(entries, cb))
        train = {**c.train, "epochs": len(c.quantiles) + c.recovery_epochs}
        hist = ctx.fit(model, train, callbacks=[itq, tracker], tag="grad_itq")
        if not itq.recovering:
            self._attach_final(entries, itq)
        bits = [c.b_high, c.b_low]
        out = _summary(model, entries, bits)
        out.update({"thresholds": itq.thresholds, "quantiles": c.quantiles, "variant": c.variant,
                    "recovery_epochs": c.recovery_epochs, "val": ctx.evaluate(model),
                    "train_history": hist.get("history", []) if isinstance(hist, dict) else []})
        return out
