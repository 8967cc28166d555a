"""Schedules as pure functions of training progress (nanoGPT's ``get_lr(it)`` style).

No state lives here: a schedule is a function of the position in training, so a run resumed
from a checkpoint computes exactly the values an uninterrupted run would. The one schedule
that depends on the past, ``plateau``, is written as a pure *update*
(:func:`plateau_update`) whose small state the caller keeps (and checkpoints).

Position is measured in epochs as a float: ``t = epoch + batch_index / batches_per_epoch``,
i.e. ``t = 0`` before the first step, ``t = 1.5`` halfway through the second epoch. Decay
schedules that change "at epoch m" therefore apply from the first step of epoch ``m`` (index
from 0), like ``torch.optim.lr_scheduler.MultiStepLR`` stepped once per epoch.

Learning-rate schedules (``lr`` = base rate ``lr_0``, ``g`` = ``gamma``):

* ``constant``:  ``lr(t) = lr_0``
* ``step``:      ``lr(t) = lr_0 * g ** floor(t / step_size)``
* ``multistep``: ``lr(t) = lr_0 * g ** #{m in milestones : m <= t}``
* ``cosine``:    ``lr(t) = min_lr + (lr_0 - min_lr) * (1 + cos(pi * u)) / 2``,
  ``u = clip((t - warmup) / (epochs - warmup), 0, 1)`` (the cosine starts after the warmup)
* ``plateau``:   ``lr(t) = lr_0 * scale`` where ``scale`` is multiplied by ``g`` each time the
  validation loss fails to improve (PyTorch word-LM example: ``g = 1/4``)

Every schedule is then multiplied by a linear warmup factor during the first ``warmup_epochs``:
``w(t) = s + (1 - s) * t / warmup_epochs`` for ``t < warmup_epochs`` (``s`` =
``warmup_start_factor``, the fraction of the rate used on the first step), else 1.

Example::

    >>> cfg = {"lr": 0.1, "schedule": "multistep", "milestones": [2, 4], "gamma": 0.1}
    >>> [round(lr_at(t, cfg), 6) for t in (0, 1.9, 2.0, 4.5)]
    [0.1, 0.1, 0.01, 0.001]

The gradual-pruning sparsity schedule (AGP) lives with the pruning primitives
(:func:`weightzip.primitives.sparsity.agp_sparsity`).
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

__all__ = [
    "SCHEDULES",
    "constant_lr",
    "step_lr",
    "multistep_lr",
    "cosine_lr",
    "warmup_factor",
    "lr_at",
    "plateau_init",
    "plateau_update",
]

SCHEDULES = ("constant", "step", "multistep", "cosine", "plateau")

# Defaults used when a config (mapping or object) does not define a field.
_DEFAULTS: dict[str, Any] = {
    "schedule": "constant",
    "milestones": (),
    "gamma": 0.1,
    "step_size": 1,
    "warmup_epochs": 0.0,
    "warmup_start_factor": 0.1,
    "min_lr": 0.0,
    "epochs": 1,
}


def _get(cfg: Any, name: str) -> Any:
    if isinstance(cfg, Mapping):
        value = cfg.get(name, _DEFAULTS.get(name))
    else:
        value = getattr(cfg, name, _DEFAULTS.get(name))
    if value is None and name in _DEFAULTS:
        value = _DEFAULTS[name]
    return value


def constant_lr(t: float, lr: float) -> float:
    """``lr(t) = lr`` for every ``t``."""
    return float(lr)


def step_lr(t: float, lr: float, step_size: float, gamma: float) -> float:
    """``lr * gamma ** floor(t / step_size)``: decay by ``gamma`` every ``step_size`` epochs."""
    if step_size <= 0:
        raise ValueError(f"step_size must be positive, got {step_size}")
    return float(lr) * float(gamma) ** math.floor(max(t, 0.0) / step_size)


def multistep_lr(t: float, lr: float, milestones: Sequence[float], gamma: float) -> float:
    """``lr * gamma ** k`` with ``k`` = number of milestones ``m <= t``."""
    k = sum(1 for m in milestones if m <= t)
    return float(lr) * float(gamma) ** k


def cosine_lr(t: float, lr: float, total: float, start: float = 0.0, min_lr: float = 0.0) -> float:
    """Half-cosine from ``lr`` at ``t = start`` down to ``min_lr`` at ``t = total``.

    ``u = clip((t - start) / (total - start), 0, 1)``; ``min_lr + (lr - min_lr)(1 + cos(pi u)) / 2``.
    """
    span = float(total) - float(start)
    u = 1.0 if span <= 0 else min(max((t - start) / span, 0.0), 1.0)
    return float(min_lr) + (float(lr) - float(min_lr)) * 0.5 * (1.0 + math.cos(math.pi * u))


def warmup_factor(t: float, warmup: float, start_factor: float = 0.1) -> float:
    """Linear warmup multiplier: ``s + (1 - s) * t / warmup`` for ``t < warmup``, else 1."""
    if warmup <= 0 or t >= warmup:
        return 1.0
    return float(start_factor) + (1.0 - float(start_factor)) * max(t, 0.0) / float(warmup)


def lr_at(t: float, cfg: Any, plateau_scale: float = 1.0) -> float:
    """Learning rate at training position ``t`` (in epochs, float) for a schedule config.

    ``cfg`` is a :class:`weightzip.training.config.TrainConfig` or any mapping / object with the fields
    ``lr, schedule, milestones, gamma, step_size, warmup_epochs, warmup_start_factor, min_lr,
    epochs`` (missing fields take the module defaults). ``plateau_scale`` is the multiplier
    kept by :func:`plateau_update` (used only by ``schedule="plateau"``). See the module
    docstring for the formulas.
    """
    lr = float(_get(cfg, "lr"))
    name = _get(cfg, "schedule")
    warmup = float(_get(cfg, "warmup_epochs"))
    if name == "constant":
        base = constant_lr(t, lr)
    elif name == "step":
        base = step_lr(t, lr, float(_get(cfg, "step_size")), float(_get(cfg, "gamma")))
    elif name == "multistep":
        base = multistep_lr(t, lr, list(_get(cfg, "milestones")), float(_get(cfg, "gamma")))
    elif name == "cosine":
        base = cosine_lr(t, lr, float(_get(cfg, "epochs")), start=warmup, min_lr=float(_get(cfg, "min_lr")))
    elif name == "plateau":
        base = lr * float(plateau_scale)
    else:
        raise ValueError(f"unknown schedule {name!r}; valid schedules: {', '.join(SCHEDULES)}")
    return base * warmup_factor(t, warmup, float(_get(cfg, "warmup_start_factor")))


def plateau_init() -> dict[str, float]:
    """Initial state of the plateau schedule: ``{"scale": 1.0, "best": inf, "bad_epochs": 0}``."""
    return {"scale": 1.0, "best": math.inf, "bad_epochs": 0}


def plateau_update(state: Mapping[str, float], val_loss: float, gamma: float = 0.25,
                   patience: int = 0, threshold: float = 0.0) -> dict[str, float]:
    """One end-of-epoch update of the plateau schedule (a pure function: returns a new state).

    If ``val_loss < best - threshold`` the best loss is updated and the bad-epoch count reset;
    otherwise the count grows and, once it exceeds ``patience``, ``scale *= gamma`` and the count
    is reset. With ``patience=0`` this is the PyTorch word-LM rule "divide the learning rate by
    4 whenever the validation loss does not improve" (``gamma = 0.25``).
    """
    scale = float(state.get("scale", 1.0))
    best = float(state.get("best", math.inf))
    bad = int(state.get("bad_epochs", 0))
    if val_loss < best - threshold:
        return {"scale": scale, "best": float(val_loss), "bad_epochs": 0}
    bad += 1
    if bad > patience:
        return {"scale": scale * float(gamma), "best": best, "bad_epochs": 0}
    return {"scale": scale, "best": best, "bad_epochs": bad}
