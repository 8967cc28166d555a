"""Sparse variational dropout (Molchanov et al. 2017) as a learned, probabilistic sparsifier.

Stage ``variational_dropout`` (math in :mod:`weightzip.primitives.variational_dropout`):

1. Every selected tensor gets a :class:`VDNoise` parametrization with a trainable
   ``log_sigma2`` (shape of W, initialized to ``init_log_sigma2``). In training mode its output
   is ``W + sigma * eps`` (``eps ~ N(0, 1)``, one sample per step shared by the batch: the
   parametrization acts on weights, so the local reparametrization trick, which acts on
   activations, is not available; the additive reparametrization keeps the variance moderate);
   in eval mode ``W * [log alpha < threshold]``.
2. The model is trained (``train``) with ``loss = CE + kl_weight(t) / N * sum KL``, the KL
   gradient added in the ``on_step`` callback; ``kl_weight`` ramps linearly from 0 to 1 over
   ``kl_warmup_epochs`` (the paper's annealing).
3. The noise is removed and the weights with ``log alpha >= threshold`` are pruned with a
   :class:`~weightzip.parametrize.Mask`, ready for masked retraining / sharing / coding.

Why variational dropout rather than L0 / hard-concrete gates (Louizos et al. 2018): both learn
one extra parameter per weight, but SVD reaches far higher sparsity on exactly these nets
(LeNet-300-100 68x, LeNet-5 280x fewer weights in the paper, against L0's ~10x), its pruning
criterion (``log alpha``) ranks weights for free, and it needs no temperature / stretch
hyper-parameters. The cost is training time: the paper trains for 200 epochs.
"""
from __future__ import annotations

from typing import Any

import torch
from pydantic import Field
from torch import nn

from ..core import parametrize
from ..errors import InvalidModelError
from ..primitives import variational_dropout as vd
from ..core.registry import register_method
from ..core.select import qualified, select
from .base import Method, MethodConfig, StageContext
from .prune import set_mask

__all__ = ["VDNoise", "VariationalDropout"]


@parametrize.register_parametrization
class VDNoise(parametrize.WzParametrization):
    """``W + exp(log_sigma2 / 2) * eps`` in training, ``W * [log alpha < threshold]`` in eval."""

    kind = "variational_dropout"

    def __init__(self, log_sigma2: torch.Tensor, threshold: float = 3.0):
        super().__init__()
        self.threshold = float(threshold)
        self.log_sigma2 = nn.Parameter(log_sigma2.detach().float().clone())

    def init_args(self) -> dict[str, Any]:
        return {"threshold": self.threshold}

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if self.training:
            return w + torch.exp(0.5 * self.log_sigma2) * torch.randn_like(w)
        return w * vd.keep_mask(w, self.log_sigma2, self.threshold)


class _KLCallback:
    def __init__(self, tensors, n_train: int, warmup_epochs: float, steps_per_epoch: int):
        self.tensors, self.n, self.warmup, self.spe = tensors, n_train, warmup_epochs, max(1, steps_per_epoch)

    def on_step(self, trainer, step):
        t = step / self.spe
        weight = 1.0 if self.warmup <= 0 else min(1.0, t / self.warmup)
        if weight == 0:
            return
        kl = sum(vd.kl_approx(vd.log_alpha(parametrize.original(mod, tn), p.log_sigma2))
                 for mod, tn, p in self.tensors)
        if not torch.isfinite(kl):
            raise InvalidModelError(f"variational dropout diverged: KL is {kl.item()} at step {step}")
        (kl * (weight / self.n)).backward()


@register_method("variational_dropout")
class VariationalDropout(Method):
    """Sparse variational dropout: train with weight noise + KL, then prune ``log alpha >= threshold``."""

    class Config(MethodConfig):
        threshold: float = Field(3.0, description="prune weights with log alpha above this")
        init_log_sigma2: float = Field(-10.0, description="initial log sigma^2 of every weight")
        kl_warmup_epochs: float = Field(1.0, ge=0.0, description="epochs of linear KL annealing 0 -> 1")
        train: dict[str, Any] = Field(default_factory=lambda: {"epochs": 5, "lr": 1e-3, "optimizer": "adam",
                                                              "weight_decay": 0.0, "schedule": "constant"})

    def apply(self, model: nn.Module, ctx: StageContext) -> dict[str, Any]:
        c = self.config
        train = ctx.require("train", "variational dropout trains the noise with the KL term")
        sel = list(select(model, c.select))
        tensors = []
        for _, mod, t in sel:
            w = getattr(mod, t).detach()
            p = VDNoise(torch.full_like(w, c.init_log_sigma2), c.threshold)
            parametrize.attach(mod, t, p)
            tensors.append((mod, t, p))
        spe = len(train)
        cb = _KLCallback(tensors, len(train.dataset), c.kl_warmup_epochs, spe)
        hist = ctx.fit(model, c.train, callbacks=[cb], tag="variational dropout")
        metrics: dict[str, Any] = {"val_noisy_model_eval": ctx.evaluate(model)}
        layers = {}
        with torch.no_grad():
            for (mname, mod, t), (_, _, p) in zip(sel, tensors):
                chain = parametrize.chain(mod, t)
                if chain[-1] is not p:
                    raise InvalidModelError(f"{qualified(mname, t)}: variational dropout must be the last "
                                            "parametrization on the tensor")
                theta = parametrize.original(mod, t).detach().clone()
                prior = [q for q in chain if q is not p]
                if prior and any(not isinstance(q, parametrize.Mask) for q in prior):
                    raise InvalidModelError(f"{qualified(mname, t)}: variational dropout runs before sharing/quantization")
                keep = vd.keep_mask(theta, p.log_sigma2, c.threshold)
                for q in prior:
                    keep = keep * q.mask
                parametrize.remove_all(mod, t, bake=False)
                getattr(mod, t).copy_(theta)
                set_mask(mod, t, keep)
                layers[qualified(mname, t)] = {"density": float(keep.mean()), "nonzero": int(keep.sum())}
        n = sum(v["nonzero"] for v in layers.values())
        total = sum(getattr(mod, t).numel() for _, mod, t in sel)
        ctx.log(f"  variational dropout: {n}/{total} weights kept ({100 * n / total:.2f}%)")
        metrics.update({"layers": layers, "density": n / total, "val": ctx.evaluate(model),
                        "train_history": hist.get("history", []) if isinstance(hist, dict) else []})
        return metrics
