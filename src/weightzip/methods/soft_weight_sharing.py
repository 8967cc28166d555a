"""Soft weight-sharing (Ullrich, Meeds & Welling, ICLR 2017): retrain under a learned
Gaussian-mixture prior, then quantize every weight to its component's mean.

Stage ``soft_weight_sharing`` (math in :mod:`weightzip.primitives.mixture`):

1. A mixture of ``components = J + 1`` Gaussians is initialized over the selected weights
   (component 0 at zero with the fixed mixing weight ``pi_zero``; J means spaced evenly over
   ``[-max|w|, max|w|]``; all log-variances ``init_log_var``).
2. The model is retrained (``train``, through the Trainer) with the loss

       L = CE(batch) + tau / N * C(w, theta),
       C = - sum_i log p(w_i | theta) - sum_j log Gamma(lambda_j | alpha_j, beta_j)

   (``N`` training examples; ``theta`` = means, log-variances, mixing logits, learned jointly
   with the weights by Adam, each with its own learning rate). The gradient of the complexity
   term is added in the ``on_step`` callback (after ``loss.backward()``), so the Trainer is
   unchanged; with ``prior_every = k`` it is added every k-th step, times k (an unbiased,
   cheaper schedule: the prior's (n, K) pass costs about as much as a LeNet-300-100 step). The first ``warmup_epochs`` of ``train`` keep ``theta`` fixed (weights adapt to
   the initial prior first).
3. With ``quantize: mask`` the weights of the zero component are pruned (a Mask) and the
   others are left to later stages (masked retraining, ``kmeans_share``): the mixture prior
   then acts as a learned sparsifier. With ``quantize: means`` (the paper):
   components whose means are closer than ``merge_tol`` are merged; each weight becomes the
   mean of its most responsible component (component 0 -> exactly 0: pruned) and the tensor
   gets a :class:`~weightzip.parametrize.Codebook` (its used means; mask = non-zero), stored by
   the codec as sparse codes + a small codebook.
4. Optional ``finetune`` (a TrainConfig) trains the per-layer codebooks (the means) and the
   unshared tensors (biases).

**Collapse** (the complexity term winning over the data): after each epoch (and each step for
NaN) the stage checks that every mixture parameter is finite and that no selected tensor has
all of its weights in the zero component; otherwise it raises :class:`MixtureCollapseError`
naming the stage and epoch, and nothing is written (the pipeline stops before ``save``).
"""
from __future__ import annotations

import math
from typing import Any, Literal

import torch
from pydantic import Field
from torch import nn

from ..core import parametrize
from ..errors import WeightzipError
from ..primitives import mixture
from ..core.registry import register_method
from ..core.select import qualified, select
from .base import Method, MethodConfig, StageContext

__all__ = ["MixtureCollapseError", "MixturePrior", "SoftWeightSharing"]


class MixtureCollapseError(WeightzipError):
    """The mixture prior collapsed (NaN parameters, or a layer pruned entirely)."""

    def __init__(self, stage: str, epoch: int, what: str):
        self.stage, self.epoch, self.what = stage, epoch, what
        super().__init__(
            f"stage {stage!r}: the mixture prior collapsed at epoch {epoch}: {what}; nothing was "
            "written. Lower `tau` (the complexity weight) or `pi_zero`, lower the prior learning "
            "rates, or start from a better-trained model")


class MixturePrior(nn.Module):
    """The learned prior: ``means`` (K,) with means[0] == 0, ``log_vars`` (K,), mixing logits (J,).

    Parameters: ``free_means`` (J,), ``log_vars`` (K,), ``logits`` (J,); buffers ``alpha``,
    ``beta`` (K,) of the Gamma hyper-prior on the precisions, and the fixed ``pi_zero``.
    """

    def __init__(self, means: torch.Tensor, log_var: float, pi_zero: float,
                 gamma_zero: tuple[float, float], gamma_other: tuple[float, float]):
        super().__init__()
        k = means.numel()
        self.pi_zero = float(pi_zero)
        self.free_means = nn.Parameter(means[1:].detach().clone().float())
        self.log_vars = nn.Parameter(torch.full((k,), float(log_var)))
        self.logits = nn.Parameter(torch.zeros(k - 1))
        self.register_buffer("alpha", torch.tensor([gamma_zero[0]] + [gamma_other[0]] * (k - 1)))
        self.register_buffer("beta", torch.tensor([gamma_zero[1]] + [gamma_other[1]] * (k - 1)))

    def means(self) -> torch.Tensor:
        return torch.cat([self.free_means.new_zeros(1), self.free_means])

    def log_pi(self) -> torch.Tensor:
        return mixture.mixing_log_proportions(self.logits, self.pi_zero)

    def complexity(self, weights: list[torch.Tensor]) -> torch.Tensor:
        return mixture.fast_complexity(weights, self.means(), self.log_vars, self.log_pi(), self.alpha, self.beta)

    def finite(self) -> bool:
        return all(bool(torch.isfinite(p).all()) for p in self.parameters())


class _PriorCallback:
    """Adds ``tau / N * dC/d(w, theta)`` to the gradients after each backward; checks collapse."""

    def __init__(self, prior: MixturePrior, tensors, scale: float, stage: str, warmup_epochs: int,
                 log_var_range: tuple[float, float], log, every: int = 1):
        self.prior, self.tensors, self.scale, self.stage = prior, tensors, scale, stage
        self.every = every
        self.warmup, self.range, self.log = warmup_epochs, log_var_range, log
        self.epoch = 0
        self.history: list[dict[str, Any]] = []

    def weights(self) -> list[torch.Tensor]:
        return [getattr(mod, t) for _, mod, t in self.tensors]

    def kept_weights(self) -> list[torch.Tensor]:
        """The weights the prior acts on: the unpruned ones (a Mask's zeros stay zero anyway, and
        after pruning they are most of the tensor: skipping them makes the prior far cheaper)."""
        from .prune import current_mask

        out = []
        for (_, mod, t), w in zip(self.tensors, self.weights()):
            m = current_mask(mod, t)
            out.append(w if m is None else w[m.bool()])
        return out

    def on_epoch_begin(self, trainer, epoch):
        self.epoch = epoch + 1
        frozen = epoch < self.warmup
        for p in self.prior.parameters():
            p.requires_grad_(not frozen)

    def on_step(self, trainer, step):
        if step % self.every:
            return
        c = self.prior.complexity(self.kept_weights()) * (self.scale * self.every)
        if not torch.isfinite(c):
            raise MixtureCollapseError(self.stage, self.epoch, f"complexity term is {c.item()} "
                                       f"(mixture parameters finite: {self.prior.finite()})")
        c.backward()

    @torch.no_grad()
    def on_after_step(self, trainer, step):
        self.prior.log_vars.clamp_(*self.range)

    @torch.no_grad()
    def check(self) -> dict[str, Any]:
        """Raise MixtureCollapseError if collapsed; else per-tensor zero fractions."""
        if not self.prior.finite():
            bad = [n for n, p in self.prior.named_parameters() if not torch.isfinite(p).all()]
            raise MixtureCollapseError(self.stage, self.epoch, f"non-finite mixture parameters {bad}")
        means, lv, lpi = self.prior.means(), self.prior.log_vars, self.prior.log_pi()
        zero = {}
        for (mname, mod, t), w in zip(self.tensors, self.weights()):
            if not torch.isfinite(w).all():
                raise MixtureCollapseError(self.stage, self.epoch, f"non-finite weights in {qualified(mname, t)}")
            comp = mixture.assign_components(w, means, lv, lpi)
            zero[qualified(mname, t)] = float((comp == 0).float().mean())
        dead = [k for k, v in zero.items() if v >= 1.0]
        if dead:
            raise MixtureCollapseError(self.stage, self.epoch, f"every weight of {dead} went to the zero component")
        return zero

    def on_epoch_end(self, trainer, epoch, metrics):
        zero = self.check()
        n = sum(w.numel() for w in self.weights())
        frac = sum(zero[qualified(m, t)] * getattr(mod, t).numel() for m, mod, t in self.tensors) / n
        row = {"epoch": epoch + 1, "zero_fraction": frac, "val_accuracy": metrics.get("val_accuracy"),
               "sigma_zero": math.exp(0.5 * float(self.prior.log_vars[0].detach()))}
        self.history.append(row)
        self.log(f"  sws epoch {epoch + 1}: zero fraction {frac:.4f}, val acc {row['val_accuracy']}, "
                 f"sigma_0 {row['sigma_zero']:.4g}")

    def state_dict(self):
        return {"prior": self.prior.state_dict(), "history": list(self.history)}

    def load_state_dict(self, d):
        self.prior.load_state_dict(d["prior"])
        self.history = list(d.get("history", []))


@register_method("soft_weight_sharing")
class SoftWeightSharing(Method):
    """Soft weight-sharing: mixture-prior retraining, then quantization to component means."""

    class Config(MethodConfig):
        components: int = Field(17, ge=2, le=257, description="mixture components including the zero one")
        pi_zero: float = Field(0.99, gt=0.0, lt=1.0, description="fixed mixing weight of the zero component")
        tau: float = Field(0.005, gt=0.0, description="weight of the complexity term (times 1/N)")
        init_log_var: float = Field(-7.0, description="initial log sigma^2 of every component")
        log_var_range: tuple[float, float] = (-20.0, 0.0)
        gamma_zero: tuple[float, float] = Field((5000.0, 2.0), description="Gamma(alpha, beta) on the zero precision")
        gamma_other: tuple[float, float] = Field((250.0, 0.1), description="Gamma(alpha, beta) on the other precisions")
        lr_means: float = Field(1e-4, ge=0.0)
        lr_log_vars: float = Field(3e-3, ge=0.0)
        lr_mixing: float = Field(3e-3, ge=0.0)
        warmup_epochs: int = Field(0, ge=0, description="epochs with the prior fixed")
        prior_every: int = Field(1, ge=1, description="add the complexity gradient (times this) every k steps")
        merge_tol: float = Field(0.0, ge=0.0, description="merge components whose means are this close")
        quantize: Literal["means", "mask"] = Field(
            "means", description="means: weights -> component means (Codebook); mask: only prune the "
                                 "zero component (Mask) and leave the rest to later stages")
        train: dict[str, Any] = Field(default_factory=lambda: {"epochs": 10, "lr": 5e-4, "optimizer": "adam",
                                                              "weight_decay": 0.0, "schedule": "constant"})
        finetune: dict[str, Any] | None = Field(None, description="train the component means (codebooks) afterwards")

    def apply(self, model: nn.Module, ctx: StageContext) -> dict[str, Any]:
        from ..training.config import TrainConfig

        c = self.config
        stage = c.label or self.name
        sel = list(select(model, c.select))
        if not sel:
            raise WeightzipError(f"stage {stage!r}: the selection matches no tensor")
        weights = [getattr(mod, t).detach() for _, mod, t in sel]
        prior = MixturePrior(mixture.init_means(weights, c.components - 1), c.init_log_var, c.pi_zero,
                             c.gamma_zero, c.gamma_other).to(ctx.device)
        n_train = len(ctx.require("train", "soft weight-sharing retrains under the mixture prior").dataset)
        cb = _PriorCallback(prior, sel, c.tau / n_train, stage, c.warmup_epochs, c.log_var_range, ctx.log,
                            c.prior_every)
        cfg = TrainConfig(**c.train)
        extra = {"weight_decay": 0.0}
        groups = [{"params": [p for p in model.parameters() if p.requires_grad], "lr": cfg.lr,
                   "weight_decay": cfg.weight_decay},
                  {"params": [prior.free_means], "lr": c.lr_means, **extra},
                  {"params": [prior.log_vars], "lr": c.lr_log_vars, **extra},
                  {"params": [prior.logits], "lr": c.lr_mixing, **extra}]
        opt = torch.optim.Adam(groups, lr=cfg.lr) if cfg.optimizer == "adam" else \
            torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
        hist = ctx.fit(model, cfg, callbacks=[cb], optimizer=opt, tag="soft weight-sharing")
        cb.epoch = cfg.epochs
        cb.check()
        metrics: dict[str, Any] = {"epochs": cfg.epochs, "sws_history": cb.history,
                                   "val_retrained": ctx.evaluate(model)}
        if c.quantize == "mask":
            metrics.update(self.prune(model, sel, prior, stage, cfg.epochs, ctx))
        else:
            metrics.update(self.quantize(model, sel, prior, stage, cfg.epochs, ctx))
        metrics["val_quantized"] = ctx.evaluate(model)
        if c.finetune is not None:
            h = ctx.fit(model, c.finetune, tag="codebook fine-tuning")
            metrics["finetune_epochs"] = len(h.get("history", [])) if isinstance(h, dict) else None
        metrics["val"] = ctx.evaluate(model)
        return metrics

    @torch.no_grad()
    def prune(self, model, sel, prior: MixturePrior, stage: str, epoch: int, ctx) -> dict[str, Any]:
        """Prune (Mask) the weights whose most responsible component is the zero one."""
        from .prune import set_mask

        means, lv, lpi = prior.means(), prior.log_vars, prior.log_pi()
        layers: dict[str, Any] = {}
        for mname, mod, t in sel:
            keep = mixture.assign_components(getattr(mod, t).detach(), means, lv, lpi) != 0
            if not bool(keep.any()):
                raise MixtureCollapseError(stage, epoch, f"every weight of {qualified(mname, t)} is pruned")
            set_mask(mod, t, keep.float())
            layers[qualified(mname, t)] = {"nonzero": int(keep.sum()), "density": float(keep.float().mean())}
        n = sum(v["nonzero"] for v in layers.values())
        total = sum(getattr(mod, t).numel() for _, mod, t in sel)
        ctx.log(f"  pruned by the zero component: {n}/{total} weights kept ({100 * n / total:.2f}%)")
        return {"layers": layers, "density": n / total}

    @torch.no_grad()
    def quantize(self, model, sel, prior: MixturePrior, stage: str, epoch: int, ctx) -> dict[str, Any]:
        """Merge close components; attach a Codebook per tensor (weight -> its component mean)."""
        means, lv, lpi = prior.means(), prior.log_vars, prior.log_pi()
        group, merged = mixture.merge_components(means, lpi, self.config.merge_tol)
        group, merged = group.to(means.device), merged.to(means.device)
        layers: dict[str, Any] = {}
        used_all: set[int] = set()
        for mname, mod, t in sel:
            w = getattr(mod, t).detach()
            g = group[mixture.assign_components(w, means, lv, lpi)]
            keep = g != 0
            if not bool(keep.any()):
                raise MixtureCollapseError(stage, epoch, f"every weight of {qualified(mname, t)} is quantized to 0")
            used = torch.unique(g[keep])
            used_all.update(int(u) for u in used)
            local = torch.zeros_like(g)
            local[keep] = torch.searchsorted(used, g[keep])
            parametrize.attach(mod, t, parametrize.Codebook(merged[used].float(), local, keep.float()))
            layers[qualified(mname, t)] = {"k": int(used.numel()), "nonzero": int(keep.sum()),
                                           "density": float(keep.float().mean())}
        n = sum(v["nonzero"] for v in layers.values())
        total = sum(getattr(mod, t).numel() for _, mod, t in sel)
        ctx.log(f"  quantized: {len(used_all)} shared values, {n}/{total} weights non-zero "
                f"({100 * n / total:.2f}%)")
        return {"layers": layers, "components_used": len(used_all), "groups": int(merged.numel()),
                "density": n / total, "means": merged.tolist()}
