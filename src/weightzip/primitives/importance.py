"""Clustering of importance scores (accumulated-gradient importance of
:mod:`weightzip.methods.gradient_importance`): 1-D k-means / quantile bins of ``log(A + eps)`` over
all tensors together, and the importance quantile threshold of in-training quantization."""
from __future__ import annotations

import math
from typing import Literal, Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = ["kmeans_1d", "assign_1d", "cluster_importance", "quantile_threshold"]


def kmeans_1d(x: Tensor, k: int, *, iters: int = 100, sample: int = 200_000, seed: int = 0) -> Tensor:
    """1-D k-means (Lloyd, scikit-learn) of ``x`` (n,) into ``k`` centroids; returns them sorted ascending.

    Initialisation: the ``(j + 0.5) / k`` quantiles of ``x`` (deterministic) [reconstructed].
    Centroids are fitted on at most ``sample`` points drawn with ``seed`` (all points when
    fewer); assignment is done on all points by the caller with :func:`assign_1d`.
    """
    from sklearn.cluster import KMeans

    x = x.detach().double().reshape(-1).cpu()
    n = x.numel()
    if n == 0:
        raise ValueError("kmeans_1d: nothing to cluster")
    if n > sample:
        g = torch.Generator().manual_seed(seed)
        x = x[torch.randperm(n, generator=g)[:sample]]
    xs = x.numpy()
    uniq = np.unique(xs)
    if uniq.size <= k:  # fewer distinct values than clusters: every value is its own centroid
        c = np.concatenate([uniq, np.full(k - uniq.size, uniq[-1])])
        return torch.from_numpy(np.sort(c))
    init = np.quantile(xs, (np.arange(k) + 0.5) / k).reshape(-1, 1)
    init = np.unique(init, axis=0)
    if init.shape[0] < k:  # heavy ties: spread the start evenly over the range instead
        init = np.linspace(xs.min(), xs.max(), k).reshape(-1, 1)
    km = KMeans(n_clusters=k, init=init, n_init=1, max_iter=iters, algorithm="lloyd", random_state=seed)
    km.fit(xs.reshape(-1, 1))
    return torch.from_numpy(np.sort(km.cluster_centers_.reshape(-1)))


def assign_1d(x: Tensor, centroids_sorted: Tensor) -> Tensor:
    """Index of the nearest centroid (ascending order) for each element (ties to the lower)."""
    c = centroids_sorted.to(x.device, torch.float64)
    mids = (c[1:] + c[:-1]) / 2                                   # (k-1,)
    return torch.bucketize(x.double(), mids, right=False)          # (x.shape) in [0, k-1]


def cluster_importance(values: Sequence[Tensor], k: int, method: Literal["kmeans", "quantile"] = "kmeans",
                       fractions: Sequence[float] | None = None, eps: float = 1e-12,
                       seed: int = 0) -> list[Tensor]:
    """Cluster ids (0 = MOST important) of every element of every tensor, clustered together.

    The score is ``s = log(A + eps)`` over the concatenation of all tensors.

    * ``kmeans``: 1-D k-means of ``s`` (:func:`kmeans_1d`), clusters numbered by decreasing
      centroid.
    * ``quantile``: bins of ``s`` by rank; ``fractions`` (most important first, summing to 1)
      give the share of parameters per cluster (default equal shares).

    Returns one int64 tensor per input (same shapes).
    """
    if k < 1:
        raise ValueError(f"need at least one cluster, got k={k}")
    flat = torch.cat([v.detach().reshape(-1).double().cpu() for v in values])      # (N,)
    s = torch.log(flat + eps)
    n = s.numel()
    if method == "kmeans":
        if fractions is not None:
            raise ValueError("`fractions` applies to clustering: quantile; k-means finds its own cluster sizes")
        cent = kmeans_1d(s, k, seed=seed)                       # ascending
        ids = (k - 1) - assign_1d(s, cent)                      # 0 = highest log-importance
    elif method == "quantile":
        fr = np.full(k, 1.0 / k) if fractions is None else np.asarray(fractions, dtype=np.float64)
        if fr.size != k or np.any(fr < 0) or abs(fr.sum() - 1) > 1e-6:
            raise ValueError(f"fractions must be {k} non-negative shares summing to 1, got {list(fr)}")
        order = torch.argsort(s, descending=True, stable=True)  # most important first
        bounds = np.round(np.cumsum(fr) * n).astype(np.int64)
        bounds[-1] = n
        ids_sorted = torch.bucketize(torch.arange(n, dtype=torch.int64), torch.from_numpy(bounds), right=True)
        ids = torch.empty(n, dtype=torch.int64)
        ids[order] = ids_sorted.clamp_max(k - 1)
    else:
        raise ValueError(f"unknown clustering {method!r}; use 'kmeans' or 'quantile'")
    out, i = [], 0
    for v in values:
        out.append(ids[i:i + v.numel()].reshape(v.shape).to(v.device))
        i += v.numel()
    return out


def quantile_threshold(values: Sequence[Tensor], q: float) -> float:
    """The ``ceil(q n)``-th smallest of all values together (so ``A <= t`` holds >= q n of them)."""
    flat = torch.cat([v.detach().reshape(-1).float().cpu() for v in values])
    k = min(flat.numel(), max(1, math.ceil(q * flat.numel())))
    return float(torch.kthvalue(flat, k).values)
