"""Unstructured magnitude pruning: one-shot (threshold ``s * std(W)``, target sparsity or a
sensitivity scan), iterative prune-retrain, and gradual pruning on the AGP schedule.

Every method prunes through :class:`~weightzip.core.parametrize.Mask` (``W' = W * m``). A tensor has
at most one Mask: pruning it again ANDs the new mask into the existing one (:func:`set_mask`),
so pruned weights never come back and a chain never grows a stack of masks. Retraining keeps
masks fixed, because the Mask zeroes the gradient of pruned weights.

Per-layer values (``s``, ``sparsity``, and ``bits`` in weight sharing) are either one number
for every selected tensor or an ordered mapping from layer patterns to numbers, resolved by
:func:`per_layer_value`::

    s: {"layers.4": 1.0, "type:Conv2d": 0.6, "re:^classifier": 1.4, default: 1.2}

Keys: a module name or glob (``features.*``), a regex ``re:<regex>``, ``type:<ClassName>``,
or ``default``; the first key that matches a module wins (in the order written), ``default``
last. A key that matches no selected module is an error (almost always a typo).

Methods registered here:

* ``prune_magnitude``: ``s`` (threshold ``tau = s * std(W)``, Han et al. 2015), ``sparsity``
  (keep the largest ``1 - p``), or ``sensitivity`` (choose ``s`` per layer from a scan);
* ``prune_iterative``: ``rounds`` x (prune to a growing threshold -> retrain with masks fixed);
* ``prune_gradual``: the cubic AGP schedule (Zhu & Gupta 2017) during training, mask updated
  every ``frequency`` optimizer steps by a Trainer callback.
"""
from __future__ import annotations

import json
import math
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from torch import Tensor, nn

from ..core import parametrize
from ..errors import RecipeError
from ..primitives.sparsity import (
    agp_is_update_step,
    agp_sparsity,
    magnitude_mask,
    sparsity_of,
    std_threshold,
    threshold_mask,
)
from ..core.registry import register_method
from ..core.select import layer_matches, per_layer_value, qualified, select
from .base import Method, MethodConfig, StageContext

__all__ = [
    "per_layer_value",
    "check_layer_patterns",
    "set_mask",
    "current_mask",
    "plot_sensitivity",
    "MagnitudePrune",
    "IterativePrune",
    "GradualPrune",
    "AGPCallback",
]

PerLayer = float | dict[str, float]


# ---------------------------------------------------------------------------------------------
# Per-layer values


_key_matches = layer_matches  # the per-layer key rule lives in select.py


def check_layer_patterns(value: Any, selected: list[tuple[str, nn.Module, str]], field: str,
                         where: str) -> None:
    """Refuse keys of a per-layer mapping that match none of the ``selected`` modules."""
    if not isinstance(value, dict):
        return
    names = [m for m, _, _ in selected]
    for key in value:
        if key == "default":
            continue
        if not any(_key_matches(key, m, mod) for m, mod, _ in selected):
            raise RecipeError(f"{where}: field '{field}': layer pattern {key!r} matches no selected layer; "
                              f"selected layers: {', '.join(dict.fromkeys(names))} (patterns: module name, "
                              "glob, 're:<regex>', 'type:<ClassName>', 'default')")


def _check_values(v: Any, lo: float, hi: float, name: str, hi_open: bool = False) -> Any:
    vals = v.values() if isinstance(v, dict) else [v]
    for x in vals:
        if x is None or not isinstance(x, (int, float)) or math.isnan(float(x)):
            raise ValueError(f"{name} must be a number (or a mapping of layer patterns to numbers), got {x!r}")
        bad = x < lo or (x >= hi if hi_open else x > hi)
        if bad:
            rng = f"[{lo}, {hi})" if hi_open else f"[{lo}, {hi}]"
            raise ValueError(f"{name} must be in {rng}, got {x}")
    return v


# ---------------------------------------------------------------------------------------------
# Masks on the model


def current_mask(module: nn.Module, tname: str) -> Tensor | None:
    """The tensor's Mask buffer (float32 {0,1}), or None when it is not pruned."""
    m = parametrize.find(module, tname, parametrize.Mask)
    return None if m is None else m.mask


@torch.no_grad()
def set_mask(module: nn.Module, tname: str, mask: Tensor) -> parametrize.Mask:
    """Prune ``module.<tname>`` with ``mask`` ({0,1}, the tensor's shape): ``m <- m AND mask``.

    Updates the buffer of the tensor's existing :class:`~weightzip.core.parametrize.Mask`, or
    attaches one. The latent weights at pruned positions are set to zero as well (so that the
    stored latent tensor agrees with the effective one). Refuses a tensor already shared by a
    :class:`~weightzip.core.parametrize.Codebook` (prune before sharing).
    """
    name = tname
    if parametrize.find(module, tname, parametrize.Codebook) is not None:
        raise RecipeError(f"cannot prune {type(module).__name__}.{name}: it is already shared by a "
                          "Codebook (kmeans_share); put the pruning stages before weight sharing")
    ref = getattr(module, tname)
    if tuple(mask.shape) != tuple(ref.shape):
        raise ValueError(f"mask shape {tuple(mask.shape)} differs from {name} shape {tuple(ref.shape)}")
    mask = mask.detach().to(device=ref.device, dtype=torch.float32)
    existing = parametrize.find(module, tname, parametrize.Mask)
    if existing is None:
        existing = parametrize.Mask(mask)
        parametrize.attach(module, tname, existing)
    else:
        existing.mask.mul_(mask)
    parametrize.original(module, tname).mul_(existing.mask.to(parametrize.original(module, tname).dtype))
    return existing


def _effective(module: nn.Module, tname: str) -> Tensor:
    with torch.no_grad():
        return getattr(module, tname).detach()


def _summary(selected) -> dict[str, Any]:
    """Per-tensor and total sparsity of the selected tensors (effective weights)."""
    per, zeros, total = {}, 0, 0
    for mname, mod, t in selected:
        w = _effective(mod, t)
        per[qualified(mname, t)] = sparsity_of(w)
        zeros += int((w == 0).sum())
        total += w.numel()
    return {"sparsity": per, "total_sparsity": zeros / max(1, total)}


# ---------------------------------------------------------------------------------------------
# Sensitivity scan


class SensitivityConfig(BaseModel):
    """Threshold scan: for each layer alone and each ``s`` in ``grid``, prune it with
    ``tau = s * std(W)`` and measure the quality on ``metric`` (the split: ``val`` or ``test``,
    on at most ``max_eval_batches`` batches); keep the largest ``s`` whose drop is at most
    ``max_drop`` (classification: accuracy points, i.e. percent; language models: perplexity
    increase). A layer for which no ``s`` qualifies is not pruned (``s = 0``)."""

    model_config = ConfigDict(extra="forbid")
    grid: list[float] = [0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0]
    max_drop: float = Field(0.5, ge=0)
    metric: Literal["val", "test"] = "val"
    max_eval_batches: int | None = Field(20, ge=1)
    plot: bool = True

    @field_validator("grid")
    @classmethod
    def _grid(cls, v: list[float]) -> list[float]:
        if not v:
            raise ValueError("sensitivity grid must list at least one threshold factor s")
        _check_values({str(i): x for i, x in enumerate(v)}, 0.0, math.inf, "sensitivity grid value")
        return sorted(float(x) for x in v)


def _quality(model: nn.Module, ctx: StageContext, split: str, max_batches: int | None) -> float:
    """Accuracy in percent (classify) or perplexity (lm) on a capped number of batches."""
    from ..training.evaluate import evaluate
    loader = ctx.require(split, f"the sensitivity scan measures quality on the {split!r} split "
                                f"(metric: {split}); or prune with `s` or `sparsity` instead")
    out = evaluate(model, loader, ctx.task, ctx.device, max_steps=max_batches)
    return 100.0 * out["accuracy"] if "accuracy" in out else out["perplexity"]


def sensitivity_scan(model: nn.Module, selected, ctx: StageContext, cfg: SensitivityConfig) -> dict[str, Any]:
    """Per-layer quality-vs-sparsity curves; returns ``{"baseline", "layers": {name: curve}}``.

    ``curve = {"s": [...], "sparsity": [...], "quality": [...], "drop": [...], "chosen_s"}``.
    Each point prunes ONE layer (on top of its existing mask) and restores it afterwards.
    """
    lm = ctx.task == "lm"
    base = _quality(model, ctx, cfg.metric, cfg.max_eval_batches)
    layers: dict[str, Any] = {}
    for mname, mod, t in selected:
        w = _effective(mod, t)  # (shape): current weights, earlier pruning included
        latent = parametrize.original(mod, t)
        saved = latent.detach().clone()
        curve = {"s": [], "tau": [], "sparsity": [], "quality": [], "drop": []}
        try:
            for s in cfg.grid:
                tau = std_threshold(w, s)
                m = threshold_mask(w, tau)
                with torch.no_grad():
                    latent.mul_(m.to(latent.dtype))
                q = _quality(model, ctx, cfg.metric, cfg.max_eval_batches)
                with torch.no_grad():
                    latent.copy_(saved)
                drop = (q - base) if lm else (base - q)
                for key, v in (("s", s), ("tau", tau), ("sparsity", sparsity_of(w * m)), ("quality", q),
                               ("drop", drop)):
                    curve[key].append(float(v))
        finally:
            with torch.no_grad():
                latent.copy_(saved)
        ok = [s for s, d in zip(curve["s"], curve["drop"]) if d <= cfg.max_drop]
        curve["chosen_s"] = max(ok) if ok else 0.0
        layers[qualified(mname, t)] = curve
        ctx.log(f"  sensitivity {qualified(mname, t)}: s={curve['chosen_s']} "
                f"(drops {', '.join(f'{d:.2f}' for d in curve['drop'])})")
    return {"baseline": base, "quantity": "perplexity" if lm else "accuracy_percent",
            "max_drop": cfg.max_drop, "split": cfg.metric, "max_eval_batches": cfg.max_eval_batches,
            "layers": layers}


def plot_sensitivity(curves: dict[str, Any], path) -> None:
    """Plot the per-layer quality-vs-sparsity curves of :func:`sensitivity_scan` to ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for name, c in curves["layers"].items():
        ax.plot([100 * s for s in c["sparsity"]], c["quality"], marker="o", ms=3,
                label=f"{name} (s={c['chosen_s']:g})")
    base = curves["baseline"]
    lm = curves.get("quantity") == "perplexity"
    limit = base + curves["max_drop"] if lm else base - curves["max_drop"]
    ax.axhline(base, color="gray", lw=0.8, ls="--", label="unpruned")
    ax.axhline(limit, color="red", lw=0.8, ls=":", label=f"allowed drop ({curves['max_drop']:g})")
    ax.set_xlabel("sparsity of the layer (%)")
    ax.set_ylabel(f"{curves.get('split', 'val')} {'perplexity' if lm else 'accuracy (%)'}")
    if not lm:
        lo = min(min(c["quality"]) for c in curves["layers"].values())
        ax.set_ylim(max(lo, limit - 5 * max(curves["max_drop"], 0.1)), base + 0.5)
    ax.set_title("pruning sensitivity (one layer at a time, tau = s * std(W))")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------
# prune_magnitude


@register_method("prune_magnitude")
class MagnitudePrune(Method):
    """One-shot magnitude pruning of the selected tensors; exactly one criterion:

    * ``s``: threshold ``tau_l = s_l * std(W_l)``, prune ``|w| <= tau_l`` (Han et al. 2015);
    * ``sparsity``: prune the ``round(p_l n_l)`` smallest magnitudes of each tensor;
    * ``sensitivity``: choose ``s_l`` per layer by a threshold scan (see
      :class:`SensitivityConfig`), then prune with those. The curves go to the metrics, to
      ``<workdir>/sensitivity.json`` and ``sensitivity.png``.

    Retrain afterwards with a ``finetune`` stage (masks stay fixed).
    """

    class Config(MethodConfig):
        s: PerLayer | None = Field(None, description="threshold factor: tau = s * std(W), per layer")
        sparsity: PerLayer | None = Field(None, description="fraction of weights pruned, per layer")
        sensitivity: SensitivityConfig | None = Field(None, description="choose s per layer by a scan")

        @field_validator("s")
        @classmethod
        def _s(cls, v):
            return v if v is None else _check_values(v, 0.0, math.inf, "threshold factor s")

        @field_validator("sparsity")
        @classmethod
        def _p(cls, v):
            return v if v is None else _check_values(v, 0.0, 1.0, "sparsity")

        @model_validator(mode="after")
        def _one(self):
            given = [k for k in ("s", "sparsity", "sensitivity") if getattr(self, k) is not None]
            if len(given) != 1:
                raise ValueError("give exactly one of `s` (tau = s * std), `sparsity` or `sensitivity`; "
                                 f"got {given or 'none'}")
            return self

    def needs_data(self) -> dict[str, str]:
        """The sensitivity scan reads its ``metric`` split; ``s`` / ``sparsity`` need no data."""
        if self.config.sensitivity is None:
            return {}
        split = self.config.sensitivity.metric
        return {split: f"the sensitivity scan measures quality on the {split!r} split; "
                       "or prune with `s` or `sparsity` instead"}

    def apply(self, model: nn.Module, ctx: StageContext) -> dict[str, Any]:
        c = self.config
        sel = select(model, c.select)
        where = f"stage {self.name}"
        check_layer_patterns(c.s, sel, "s", where)
        check_layer_patterns(c.sparsity, sel, "sparsity", where)
        metrics: dict[str, Any] = {}
        if c.sensitivity is not None:
            curves = sensitivity_scan(model, sel, ctx, c.sensitivity)
            metrics["sensitivity"] = curves
            s_of = {qualified(m, t): curves["layers"][qualified(m, t)]["chosen_s"] for m, _, t in sel}
            if ctx.workdir is not None:
                (ctx.workdir / "sensitivity.json").write_text(json.dumps(curves, indent=2))
                if c.sensitivity.plot:
                    plot_sensitivity(curves, ctx.workdir / "sensitivity.png")
        chosen: dict[str, float] = {}
        for mname, mod, t in sel:
            key = qualified(mname, t)
            w = _effective(mod, t)
            if c.sparsity is not None:
                p = float(per_layer_value(c.sparsity, mname, mod, "sparsity"))
                mask = magnitude_mask(w, p)
                chosen[key] = p
            else:
                s = s_of[key] if c.sensitivity is not None else float(per_layer_value(c.s, mname, mod, "s"))
                mask = threshold_mask(w, std_threshold(w, s))
                chosen[key] = s
            set_mask(mod, t, mask)
        metrics["sparsity" if c.sparsity is not None else "s"] = chosen
        out = _summary(sel)
        metrics["layer_sparsity"] = out["sparsity"]
        metrics["total_sparsity"] = out["total_sparsity"]
        ctx.log(f"  pruned to {100 * out['total_sparsity']:.1f}% sparsity: "
                + ", ".join(f"{k} {100 * v:.1f}%" for k, v in out["sparsity"].items()))
        return metrics


# ---------------------------------------------------------------------------------------------
# prune_iterative


@register_method("prune_iterative")
class IterativePrune(Method):
    """``rounds`` x (prune -> retrain with masks fixed), Han et al. 2015's iterative pruning.

    Round ``r = 1..R`` prunes towards the final target [reconstructed: the spacing of the
    rounds is ours]: with ``s``, ``tau_r = (r / R) s_l std(W_l^0)`` where ``std(W_l^0)`` is
    measured once before the first round (so thresholds grow even though pruned weights are
    zero); with ``sparsity``, ``spacing: geometric`` keeps the same fraction of the remaining
    weights each round, ``1 - p_r = (1 - p_l)^(r / R)``, and ``spacing: linear`` uses
    ``p_r = (r / R) p_l``. After each round the model is retrained with ``train`` (a
    TrainConfig; Han et al. use about 0.1x the original learning rate).
    """

    class Config(MethodConfig):
        rounds: int = Field(3, ge=1)
        s: PerLayer | None = None
        sparsity: PerLayer | None = None
        spacing: Literal["geometric", "linear"] = "geometric"
        train: dict[str, Any] = {"epochs": 1, "lr": 0.01, "optimizer": "sgd", "momentum": 0.9}

        @field_validator("s")
        @classmethod
        def _s(cls, v):
            return v if v is None else _check_values(v, 0.0, math.inf, "threshold factor s")

        @field_validator("sparsity")
        @classmethod
        def _p(cls, v):
            return v if v is None else _check_values(v, 0.0, 1.0, "sparsity")

        @model_validator(mode="after")
        def _one(self):
            if (self.s is None) == (self.sparsity is None):
                raise ValueError("give exactly one of `s` (final threshold factor) or `sparsity` (final target)")
            return self

    def apply(self, model: nn.Module, ctx: StageContext) -> dict[str, Any]:
        c = self.config
        sel = select(model, c.select)
        where = f"stage {self.name}"
        check_layer_patterns(c.s, sel, "s", where)
        check_layer_patterns(c.sparsity, sel, "sparsity", where)
        std0 = {qualified(m, t): std_threshold(_effective(mod, t), 1.0) for m, mod, t in sel}
        history = []
        for r in range(1, c.rounds + 1):
            frac = r / c.rounds
            for mname, mod, t in sel:
                w = _effective(mod, t)
                if c.s is not None:
                    s = frac * float(per_layer_value(c.s, mname, mod, "s"))
                    mask = threshold_mask(w, s * std0[qualified(mname, t)])
                else:
                    p = float(per_layer_value(c.sparsity, mname, mod, "sparsity"))
                    p_r = 1.0 - (1.0 - p) ** frac if c.spacing == "geometric" else frac * p
                    mask = magnitude_mask(w, p_r)
                set_mask(mod, t, mask)
            pruned = ctx.evaluate(model)
            ctx.fit(model, c.train, tag=f"retrain round {r}/{c.rounds}")
            after = ctx.evaluate(model)
            summ = _summary(sel)
            history.append({"round": r, "total_sparsity": summ["total_sparsity"], "val_pruned": pruned,
                            "val_retrained": after, "layer_sparsity": summ["sparsity"]})
            ctx.log(f"  round {r}: sparsity {100 * summ['total_sparsity']:.1f}%, "
                    f"val {_fmt_q(pruned)} -> {_fmt_q(after)} after retraining")
        summ = _summary(sel)
        return {"rounds": history, "layer_sparsity": summ["sparsity"], "total_sparsity": summ["total_sparsity"]}


def _fmt_q(m: dict[str, float]) -> str:
    if "accuracy" in m:
        return f"{100 * m['accuracy']:.2f}%"
    return f"ppl {m.get('perplexity', float('nan')):.2f}"


# ---------------------------------------------------------------------------------------------
# prune_gradual (AGP)


class AGPCallback:
    """Trainer callback pruning the selected tensors on the AGP schedule (after optimizer steps).

    At every update step ``t = t_0 + j dt`` (``j = 0..n``) each tensor's mask becomes
    ``magnitude_mask(W_eff, s_t)`` ANDed into the current one, with
    ``s_t = agp_sparsity(t, s_f(layer), initial=s_i, begin=t_0, n=n, dt=dt)``.
    ``n = None``: chosen at the start of training so that the ramp ends after ``ramp`` of all
    steps: ``n = max(1, floor((ramp * total_steps - t_0) / dt))``.
    """

    def __init__(self, targets: list[tuple[nn.Module, str, float]], *, initial: float, begin: int,
                 dt: int, n: int | None, ramp: float = 0.75, log=print):
        self.targets = targets
        self.initial, self.begin, self.dt, self.n, self.ramp = initial, begin, dt, n, ramp
        self.log = log
        self.updates = 0
        self.last_sparsity = initial

    def on_train_begin(self, trainer) -> None:
        if self.n is None:
            try:
                per_epoch = len(trainer.loaders.train)
            except TypeError as e:
                raise RecipeError("prune_gradual: the train loader has no length; set `n_updates`") from e
            if trainer.config.max_steps_per_epoch is not None:
                per_epoch = min(per_epoch, trainer.config.max_steps_per_epoch)
            total = per_epoch * trainer.config.epochs
            self.n = max(1, int((self.ramp * total - self.begin) // self.dt))

    def on_after_step(self, trainer, step: int) -> None:
        if not agp_is_update_step(step, begin=self.begin, n=self.n, dt=self.dt):
            return
        for mod, t, final in self.targets:
            target = agp_sparsity(step, final, initial=self.initial, begin=self.begin, n=self.n, dt=self.dt)
            set_mask(mod, t, magnitude_mask(_effective(mod, t), target))
            self.last_sparsity = target
        self.updates += 1

    def state_dict(self) -> dict[str, Any]:
        return {"updates": self.updates, "n": self.n}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.updates = int(state.get("updates", 0))
        self.n = state.get("n", self.n)


@register_method("prune_gradual")
class GradualPrune(Method):
    """Gradual magnitude pruning during training (AGP, Zhu & Gupta 2017).

    Trains with ``train`` (a TrainConfig) while an :class:`AGPCallback` raises each tensor's
    sparsity along ``s_t = s_f + (s_i - s_f)(1 - (t - t_0)/(n dt))^3`` (``t`` = optimizer step
    of this training run), updating masks every ``frequency`` = ``dt`` steps from
    ``begin_step`` = ``t_0``, ``n_updates`` = ``n`` times; ``sparsity`` = ``s_f`` per layer.
    """

    class Config(MethodConfig):
        sparsity: PerLayer = Field(..., description="final sparsity s_f per layer")
        initial_sparsity: float = Field(0.0, ge=0.0, le=1.0)
        begin_step: int = Field(0, ge=0)
        frequency: int = Field(100, ge=1, description="dt: optimizer steps between mask updates")
        n_updates: int | None = Field(None, ge=1, description="n; default: ramp over `ramp` of training")
        ramp: float = Field(0.75, gt=0.0, le=1.0)
        train: dict[str, Any] = {"epochs": 5, "lr": 0.01, "optimizer": "sgd", "momentum": 0.9}

        @field_validator("sparsity")
        @classmethod
        def _p(cls, v):
            return _check_values(v, 0.0, 1.0, "sparsity")

    def apply(self, model: nn.Module, ctx: StageContext) -> dict[str, Any]:
        c = self.config
        sel = select(model, c.select)
        check_layer_patterns(c.sparsity, sel, "sparsity", f"stage {self.name}")
        targets = []
        for mname, mod, t in sel:
            final = float(per_layer_value(c.sparsity, mname, mod, "sparsity"))
            if final < c.initial_sparsity:
                raise RecipeError(f"stage {self.name}: field 'sparsity': final sparsity {final} of {mname} is below "
                                  f"initial_sparsity {c.initial_sparsity}")
            set_mask(mod, t, torch.ones_like(_effective(mod, t)))  # masks exist before the optimizer
            targets.append((mod, t, final))
        cb = AGPCallback(targets, initial=c.initial_sparsity, begin=c.begin_step, dt=c.frequency,
                         n=c.n_updates, ramp=c.ramp, log=ctx.log)
        hist = ctx.fit(model, c.train, callbacks=[cb], tag="gradual pruning")
        done = cb.updates
        if done < (cb.n or 0) + 1:
            ctx.log(f"  warning: AGP schedule incomplete ({done} of {cb.n + 1} updates); "
                    "train longer or lower n_updates/frequency")
        summ = _summary(sel)
        return {"layer_sparsity": summ["sparsity"], "total_sparsity": summ["total_sparsity"],
                "agp": {"n": cb.n, "dt": c.frequency, "begin": c.begin_step, "updates": done},
                "train_history": hist.get("history", []) if isinstance(hist, dict) else []}
