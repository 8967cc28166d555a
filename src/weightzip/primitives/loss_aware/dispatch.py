"""One entry point over every mode: :func:`project` and :func:`nominal_bits`."""
from __future__ import annotations

import torch
from torch import Tensor

from .binary import binaryconnect, bwn_project, lab_project
from .core import MODES, Projection
from .multibit import _k, laq_project
from .sparse import sparse_project
from .ternary import lat2_approx_project, lat2_exact_project, lat_approx_project, lat_exact_project, twn_project


def nominal_bits(mode: str, bits: int | None = None) -> int:
    """Bits per weight of a mode's codes: 1 (lab, bc, bwn), 2 (lat, lat2, twn), m (laq)."""
    if mode in ("lab", "bc", "bwn"):
        return 1
    if mode in ("lat", "lat2", "twn"):
        return 2
    if mode == "laq":
        _k(bits)
        return int(bits)
    raise ValueError(f"unknown mode {mode!r}; valid modes: {', '.join(MODES)}")


@torch.no_grad()
def project(w: Tensor, d: Tensor | None = None, *, mode: str = "lab", exact: bool = False,
            bits: int | None = None, levels: str = "linear", scale_form: str = "code",
            keep: float = 1.0, blocks: int = 1, prev: Tensor | None = None, max_iter: int = 10,
            negative_side: str = "correct") -> Projection:
    """Dispatch to the projection of ``mode`` (one of :data:`MODES`).

    ``exact`` picks the exact LAT/LAT2 (else alternating); ``bits``/``levels``/``scale_form``
    configure LAQ; ``keep < 1`` restricts the loss-aware modes to a support of that fraction
    (:func:`sparse_project`). The baselines ``bc``, ``bwn`` and ``twn`` ignore ``d``.
    """
    if keep < 1.0:
        return sparse_project(w, d, keep=keep, mode=mode, exact=exact, bits=bits, levels=levels,
                              scale_form=scale_form, blocks=blocks, prev=prev, max_iter=max_iter,
                              negative_side=negative_side)
    if mode == "lab":
        return lab_project(w, d, blocks=blocks)
    if mode == "lat":
        if exact:
            return lat_exact_project(w, d, blocks=blocks)
        return lat_approx_project(w, d, blocks=blocks, prev=prev, max_iter=max_iter)
    if mode == "lat2":
        if exact:
            return lat2_exact_project(w, d, blocks=blocks, negative_side=negative_side)
        return lat2_approx_project(w, d, blocks=blocks, prev=prev, max_iter=max_iter)
    if mode == "laq":
        if bits is None:
            raise ValueError("mode 'laq' needs bits (2..8)")
        return laq_project(w, d, bits=bits, levels=levels, scale_form=scale_form, blocks=blocks,
                           prev=prev, max_iter=max_iter)
    if mode == "bc":
        return binaryconnect(w, blocks=blocks)
    if mode == "bwn":
        return bwn_project(w, blocks=blocks)
    if mode == "twn":
        return twn_project(w, blocks=blocks)
    raise ValueError(f"unknown mode {mode!r}; valid modes: {', '.join(MODES)}")
