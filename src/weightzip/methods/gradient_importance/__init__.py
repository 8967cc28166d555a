"""Accumulated-gradient importance and mixed-bit fixed point with pruning (METHODS.md, A).

The importance of a parameter is the total absolute gradient it received over training::

    A[p] = 0 for every weight AND bias tensor
    every minibatch (after backward, before the optimizer step):  A[p] += |p.grad|

:class:`ImportanceTracker` (a Trainer callback) does this and keeps ``A`` in
``ctx.state["importance"]`` (``{"fc1.weight": Tensor, "fc1.bias": Tensor, ...}``, keyed by the
plain state_dict name also for parametrized tensors, whose latent
``module.parametrizations.<t>.original`` is what receives the gradient), so it goes on
accumulating through later stages and is saved with the pipeline's stage checkpoints (and, via
``state_dict``, with trainer checkpoints).

Parameters are then stored in signed fixed point (:mod:`weightzip.primitives.fixed_point`)::

    fxp(x, b, f) = clamp(round(x 2^f), -2^(b-1), 2^(b-1) - 1) 2^-f ,   f = b - i_layer
    i_layer = 1 + max(0, ceil(log2 max|x_layer|))     ("thesis" rule; "tight" drops the max)

and values that round to zero are pruned. Stages (registered methods):

* ``train_tracked``: train (from the current weights, or ``from_scratch``) with the tracker.
  The thesis accumulates from the first epoch of the baseline; a pre-trained baseline without
  its history gets its importance from this stage only.
* ``grad_ptq`` (post-training): cluster ``log(A + eps)`` of the FULL selected parameter set (all
  tensors together) into K clusters (1-D k-means, or quantile bins), ordered by importance;
  cluster j gets ``bits[j]`` (``bits`` non-increasing: the most important cluster gets the most
  bits); quantize every parameter with its cluster's format.
* ``grad_itq`` (in-training): train; after epoch e, ``threshold = quantile(all A, q_e)`` and the
  low group ``A <= threshold`` is projected to ``b_low`` bits. Variant ``reproject`` (V1,
  default): re-project every epoch, keep training everything; variant ``freeze`` (V2, INQ-like):
  the low group is frozen (zero gradient, values restored after each optimizer step) and grows
  with the schedule. At the end the high group is stored with ``b_high`` bits [reconstructed].
  Optional ``recovery_epochs`` [reconstructed] train on after the last projection with the low
  group frozen and the final formats attached (the high group learns through its fake
  quantization), so the last projection is trained through.
* combined = ``grad_itq`` then ``grad_ptq`` (a recipe of two stages; A keeps accumulating).

Every stage takes ``importance: gradient | magnitude`` (``|w|``, for the ablation).

The result is one :class:`MixedFixedPoint` parametrization per tensor: per-element cluster ids
(int8), per-cluster ``bits`` and ``frac_bits``; its storage hint
``{"kind": "mixed_fixed", "cluster", "bits", "frac_bits"}`` lets the codec write one sparse
stream per (tensor, cluster), with no per-value tag.

Thesis-style accounting (spec of ``thesis_csr_bits``; the implementation lives in
``analysis/size.py`` as ``gradient_importance_csr_ratio``, the only place ratios are computed)::

    matrix view of a tensor: Linear W (out, in) -> rows = out, cols = in;
        Conv W (out, in, kh, kw) -> rows = out, cols = in*kh*kw; bias (n,) -> rows = 1, cols = n;
        other -> rows = shape[0], cols = numel / rows; 0-d -> 1 x 1
    thesis_csr_bits(rows, cols, nnz_c, b_c, meta_bits=16)      # one CSR per (layer, cluster)
        = nnz_c * b_c                                  # the values, b_c bits each
        + nnz_c * ceil(log2 cols)                       # column index of every nonzero
        + (rows + 1) * ceil(log2(nnz_c + 1))            # row pointers
        + meta_bits                                     # (b_c, f_c): 8 bits each
        and 0 when nnz_c = 0 (no CSR written)
    tensor bits = sum over its clusters; a tensor without a mixed_fixed hint costs 32 * numel
    ratio = 32 * (every floating-point element of the state_dict) / sum of tensor bits

Reconstructed choices (configurable, never claimed as the thesis's): the integer-bits rule,
``b_high`` of ITQ, the quantile schedule, k-means initialisation (quantiles of log A) and
``eps``, the ``freeze`` variant restoring frozen values after the optimizer step (momentum and
weight decay would move them otherwise), ITQ's ``recovery_epochs``, ``bits = 0`` meaning
"cluster pruned".
"""
from __future__ import annotations

from ...primitives.importance import cluster_importance, kmeans_1d, quantile_threshold
from .itq import GradITQ, ITQCallback
from .mixed_fixed import MixedFixedPoint
from .ptq import GradPTQ
from .tracking import ImportanceTracker, TrainTracked, importance_tensors, named_latent_parameters

# importable from here as before the split (not part of __all__)
from ...primitives.importance import assign_1d  # noqa: F401, E402
from .ptq import ALL_TENSORS, ptq_quantize  # noqa: F401, E402
from .tracking import STATE_KEY, ImportanceKind  # noqa: F401, E402

__all__ = [
    "MixedFixedPoint",
    "ImportanceTracker",
    "ITQCallback",
    "named_latent_parameters",
    "importance_tensors",
    "kmeans_1d",
    "cluster_importance",
    "quantile_threshold",
    "TrainTracked",
    "GradPTQ",
    "GradITQ",
]
