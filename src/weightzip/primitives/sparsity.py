"""Pruning masks and sparsity schedules as pure tensor functions.

Masks are float32 {0, 1} tensors of the weight's shape: ``W' = W * m``; ``1`` keeps a weight.

* Threshold pruning (Han et al. 2015): ``tau = s * std(W)``, ``m = |W| > tau``. ``s`` is the
  per-layer "quality parameter"; ``std`` is ``torch.std`` (unbiased, ``correction=1``) over
  every entry of the tensor as given (already-pruned zeros included).
* Target-sparsity pruning: keep the ``n - round(p n)`` largest magnitudes (``p`` = sparsity).
* AGP, the cubic gradual-pruning schedule (Zhu & Gupta 2017, "To prune, or not to prune")::

      s_t = s_f + (s_i - s_f) (1 - (t - t_0) / (n dt))^3,   t in {t_0, t_0 + dt, ..., t_0 + n dt}

  ``s_i`` initial sparsity, ``s_f`` final, ``t_0`` first pruning step, ``dt`` steps between mask
  updates, ``n`` number of updates after the first. Between updates the sparsity stays at the
  last update's value; before ``t_0`` it is ``s_i`` (no update has happened), after
  ``t_0 + n dt`` it is ``s_f``.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "std_threshold",
    "threshold_mask",
    "std_threshold_mask",
    "magnitude_mask",
    "sparsity_of",
    "agp_sparsity",
    "agp_is_update_step",
]


def std_threshold(w: Tensor, s: float) -> float:
    """Han et al.'s pruning threshold ``tau = s * std(W)`` (``std`` unbiased, over all entries)."""
    if s < 0:
        raise ValueError(f"the threshold factor s must be >= 0, got s={s}")
    w = w.detach().reshape(-1).to(torch.float64)
    std = float(w.std()) if w.numel() > 1 else 0.0
    return float(s) * std


def threshold_mask(w: Tensor, tau: float) -> Tensor:
    """``m = (|W| > tau)`` as float32 of W's shape: weights with ``|w| <= tau`` are pruned."""
    return (w.detach().abs() > tau).to(torch.float32)


def std_threshold_mask(w: Tensor, s: float) -> Tensor:
    """``threshold_mask(w, s * std(w))`` (see :func:`std_threshold`)."""
    return threshold_mask(w, std_threshold(w, s))


def magnitude_mask(w: Tensor, sparsity: float) -> Tensor:
    """Mask pruning the ``round(sparsity * n)`` smallest-magnitude entries of ``w`` (any shape).

    Ties are broken deterministically: among equal magnitudes the lower flat index is pruned
    first. ``sparsity`` in [0, 1]; returns float32 {0, 1} of ``w``'s shape.
    """
    if not 0.0 <= float(sparsity) <= 1.0:
        raise ValueError(f"sparsity must be in [0, 1], got {sparsity}")
    flat = w.detach().reshape(-1).abs().cpu()  # (n)
    n_prune = int(round(float(sparsity) * flat.numel()))
    mask = torch.ones(flat.numel(), dtype=torch.float32)
    if n_prune <= 0:
        return mask.reshape(w.shape).to(w.device)
    if bool(torch.isnan(flat).any()):   # NaN sorts last: the slow exact order
        order = torch.argsort(flat, stable=True)  # (n): ascending magnitude
        mask[order[:n_prune]] = 0.0
        return mask.reshape(w.shape).to(w.device)
    # the same entries as a stable ascending argsort, in O(n) instead of a full sort (BERT-base,
    # 50%: 16 s -> a few s): everything below the n_prune-th smallest magnitude, then the
    # lowest flat indices among the entries equal to it
    thr = flat.kthvalue(n_prune).values
    below = flat < thr
    mask[below] = 0.0
    need = n_prune - int(below.sum())
    if need > 0:
        mask[torch.nonzero(flat == thr).reshape(-1)[:need]] = 0.0
    return mask.reshape(w.shape).to(w.device)


def sparsity_of(t: Tensor) -> float:
    """Fraction of exactly-zero entries of ``t`` (a mask or a weight tensor)."""
    return float((t == 0).sum()) / max(1, t.numel())


def agp_sparsity(step: int, final: float, *, initial: float = 0.0, begin: int = 0, n: int = 10,
                 dt: int = 100) -> float:
    """Target sparsity of the cubic AGP schedule at optimizer step ``step`` (module docstring).

    Example (s_i = 0, s_f = 0.9, t_0 = 0, n = 3, dt = 10)::

        >>> [round(agp_sparsity(t, 0.9, n=3, dt=10), 4) for t in (0, 9, 10, 20, 30, 99)]
        [0.0, 0.0, 0.6333, 0.8667, 0.9, 0.9]
    """
    if n < 0 or dt < 1:
        raise ValueError(f"AGP needs n >= 0 updates and dt >= 1 steps between them, got n={n}, dt={dt}")
    for name, v in (("initial", initial), ("final", final)):
        if not 0.0 <= float(v) <= 1.0:
            raise ValueError(f"AGP {name} sparsity must be in [0, 1], got {v}")
    if step < begin:
        return float(initial)
    if n == 0:
        return float(final)
    j = min((int(step) - int(begin)) // int(dt), n)  # index of the last update done
    if j == 0:
        return float(initial)  # exact, without rounding through the formula
    u = j / n  # = (t - t_0) / (n dt) at that update
    return float(final) + (float(initial) - float(final)) * (1.0 - u) ** 3


def agp_is_update_step(step: int, *, begin: int = 0, n: int = 10, dt: int = 100) -> bool:
    """Whether the mask is recomputed at ``step``: ``step = t_0 + j dt`` for some ``j in 0..n``."""
    if step < begin:
        return False
    j, r = divmod(int(step) - int(begin), int(dt))
    return r == 0 and j <= n
