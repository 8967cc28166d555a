"""Loss-aware weight projections (LAB / LAT / LAT2 / LAQ) and the plain baselines they beat.

Every projection solves, for one weight tensor ``w`` and a positive curvature estimate ``d``
of the same shape (Adam's ``sqrt(v) + 1e-8``), the diagonal-Hessian proximal step

    min_{alpha >= 0, b in Q}  sum_i d_i (alpha b_i - w_i)^2          (*)

with ``Q`` the code set of the method:

===========  ===========================================  ==============================
function     codes ``b``                                  scale
===========  ===========================================  ==============================
lab          {-1, +1} (b = sign(w), sign(0) = +1)         alpha = sum d|w| / sum d (exact)
lat_*        {-1, 0, +1}                                  exact (sorted cumsum) or alternating
lat2_*       {-1, 0, +1} with alpha+ for w>0, alpha- <0   per side, as LAT
laq          linear {0, +-1/k, ..., +-1} or log           alternating, <= max_iter times
             {0, +-2^-(k-1), ..., +-1/2, +-1}, k=2^(m-1)-1
binaryconnect {-1, +1}                                    alpha = 1 (no scale)
bwn          {-1, +1}                                     alpha = mean |w|   (= lab, d = 1)
twn          {-1, 0, +1}, |w| > 0.7 mean|w|               alpha = mean of |w| above delta
===========  ===========================================  ==============================

``d`` only enters through ratios, so any positive per-block constant factor (Adam's bias
correction, for instance) leaves every result unchanged. ``d=None`` means ``d = 1``. Entries
of ``d`` are clamped to at least ``1e-20`` so an all-zero ``d`` (an empty Adam state, a
placeholder buffer) behaves like ``d = 1`` instead of dividing by zero.

Blocks: ``blocks=G`` splits ``w`` along dim 0 into ``G`` equal blocks (``w.reshape(G, -1)``)
and projects each with its own scale - an LSTM weight ``[4H, I]`` with ``blocks=4`` gets one
scale per gate (i, f, g, o). Everything is vectorised over the blocks.

Every function returns a :class:`Projection` ``(w_hat, alpha, b, mask)`` with
``w_hat = alpha_g * b`` blockwise (two-scale: ``alpha+`` where ``b > 0``, ``alpha-`` where
``b < 0``). All functions are pure, run without autograd, and never modify their inputs.

Formulas follow ``shared/METHODS.md`` section D (Hou & Kwok's released code): see each
function. The sparsified projection (:func:`sparse_project`) is **[reconstructed]**.

Modules: ``core`` (:class:`Projection`, blocks, ``d``, codes -> scale), ``binary`` (LAB, BC,
BWN), ``ternary`` (TWN, LAT, LAT2), ``multibit`` (LAQ), ``sparse`` (support-restricted
projections), ``dispatch`` (:func:`project`, :func:`nominal_bits`); every name below is
importable from this package.

Example::

    >>> w = torch.tensor([0.9, -0.2, 0.05, -0.7]); d = torch.tensor([1., 1., 4., 1.])
    >>> lab_project(w, d).w_hat          # alpha = (0.9+0.2+0.2+0.7)/7
    tensor([ 0.2857, -0.2857,  0.2857, -0.2857])
"""
from __future__ import annotations

from .binary import binaryconnect, bwn, bwn_project, lab_project
from .core import MODES, Projection
from .dispatch import nominal_bits, project
from .multibit import laq_levels, laq_project, laq_quantize, uniform_step
from .sparse import sparse_project, support_mask
from .ternary import lat2_approx_project, lat2_exact_project, lat_approx_project, lat_exact_project, twn, twn_project

__all__ = [
    "Projection",
    "lab_project",
    "binaryconnect",
    "bwn_project",
    "bwn",
    "twn_project",
    "twn",
    "lat_approx_project",
    "lat_exact_project",
    "lat2_approx_project",
    "lat2_exact_project",
    "laq_levels",
    "laq_quantize",
    "laq_project",
    "sparse_project",
    "project",
    "MODES",
    "nominal_bits",
    "uniform_step",
    "support_mask",
]
