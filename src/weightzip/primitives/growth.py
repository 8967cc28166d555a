"""Growing a sparse layer: where new connections go (preferential attachment or uniform).

A sparse fully connected layer is a 0/1 mask ``M`` of shape ``(n_out, n_in)``: ``M[j, i] = 1``
when input unit ``i`` feeds output unit ``j``. Growing it by ``k`` connections draws ``k``
absent positions (``M[j, i] = 0``) without replacement, each draw with probability
proportional to an attachment score among the positions not drawn yet::

    P(next = (j, i)) = s[j, i] / sum_{(j', i') absent, not drawn} s[j', i']

with the scores of the preferential-attachment rules (Barabasi & Albert 1999; Price's offset
``c`` lets a unit of degree 0 be chosen at all)::

    product   s[j, i] = (d_j + c) (d_i + c)        both end units attract
    sum       s[j, i] = d_j + d_i + c              either end unit attracts
    uniform   s[j, i] = 1                          the control: no attachment preference

``d_j`` is the current degree of output unit ``j`` and ``d_i`` that of input unit ``i`` (which
degree - within the layer or over the whole network - is the caller's choice; see
:mod:`weightzip.training.continual`). For ``k = 1`` the drawn position has exactly the probability above;
for ``k > 1`` the draws are successive sampling without replacement (``torch.multinomial``),
so the inclusion probability of a position is the sum over the orders in which it can be drawn
(for two draws: ``P({a, b}) = s_a/S * s_b/(S - s_a) + s_b/S * s_a/(S - s_b)``).

Pure tensor functions; no module state.
"""
from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

__all__ = ["ATTACHMENT_RULES", "attachment_scores", "grow_mask"]

AttachmentRule = Literal["product", "sum", "uniform"]
ATTACHMENT_RULES: tuple[str, ...] = ("product", "sum", "uniform")


def attachment_scores(out_unit_degree: Tensor, in_unit_degree: Tensor, rule: AttachmentRule = "product",
                      offset: float = 1.0) -> Tensor:
    """Attachment score of every position of an ``(n_out, n_in)`` layer (module docstring).

    ``out_unit_degree``: ``(n_out,)`` degrees ``d_j`` of the layer's output units;
    ``in_unit_degree``: ``(n_in,)`` degrees ``d_i`` of its input units (non-negative).
    Returns float64 ``(n_out, n_in)``: ``(d_j + c)(d_i + c)``, ``d_j + d_i + c`` or ones.

    >>> attachment_scores(torch.tensor([0., 2.]), torch.tensor([1., 0., 3.]), "product").tolist()
    [[2.0, 1.0, 4.0], [6.0, 3.0, 12.0]]
    """
    if rule not in ATTACHMENT_RULES:
        raise ValueError(f"unknown attachment rule {rule!r}; valid: {', '.join(ATTACHMENT_RULES)}")
    d_out = torch.as_tensor(out_unit_degree, dtype=torch.float64).reshape(-1)  # (n_out,)
    d_in = torch.as_tensor(in_unit_degree, dtype=torch.float64).reshape(-1)    # (n_in,)
    if (d_out < 0).any() or (d_in < 0).any():
        raise ValueError("unit degrees must be non-negative")
    if offset < 0:
        raise ValueError(f"the offset c must be >= 0, got {offset}")
    if rule == "uniform":
        return torch.ones(d_out.numel(), d_in.numel(), dtype=torch.float64)
    if rule == "product":
        return (d_out + offset)[:, None] * (d_in + offset)[None, :]  # (n_out, n_in)
    return d_out[:, None] + d_in[None, :] + offset  # (n_out, n_in)


def grow_mask(mask: Tensor, k: int, scores: Tensor, generator: torch.Generator | None = None
              ) -> tuple[Tensor, Tensor]:
    """Add ``k`` connections to ``mask`` at absent positions drawn with probability ~ ``scores``.

    ``mask``: ``(n_out, n_in)`` (any shape works: positions are flattened), entries 0/1 (bool,
    int or float); ``scores``: same shape, non-negative and finite (positions with score 0 are
    never drawn). Returns ``(new_mask, added)``: ``new_mask`` has ``mask``'s dtype and exactly
    ``k`` more ones; ``added`` is a bool tensor of the same shape marking the new positions
    (never a position that was already 1). Raises ``ValueError`` when fewer than ``k`` absent
    positions have a positive score.
    """
    if tuple(scores.shape) != tuple(mask.shape):
        raise ValueError(f"scores shape {tuple(scores.shape)} differs from mask shape {tuple(mask.shape)}")
    k = int(k)
    if k < 0:
        raise ValueError(f"k (connections to add) must be >= 0, got {k}")
    present = mask.detach().reshape(-1) != 0                       # (n,)
    w = scores.detach().reshape(-1).to(torch.float64).cpu().clone()  # (n,)
    if not torch.isfinite(w).all() or (w < 0).any():
        raise ValueError("attachment scores must be finite and non-negative")
    w[present.cpu()] = 0.0
    available = int((w > 0).sum())
    if k > available:
        raise ValueError(f"cannot add {k} connections: only {available} absent positions have a positive "
                         f"score (layer {tuple(mask.shape)} has {int(present.sum())} of {present.numel()} present); "
                         "grow less or use a positive offset")
    added = torch.zeros(w.numel(), dtype=torch.bool)
    if k > 0:
        idx = torch.multinomial(w, k, replacement=False, generator=generator)  # (k,) distinct positions
        added[idx] = True
    added = added.reshape(mask.shape).to(mask.device)
    new = mask.detach().clone()
    new[added] = 1
    return new, added

