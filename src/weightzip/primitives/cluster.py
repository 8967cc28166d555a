"""Clustering of weights for weight sharing: scalar (1-D) k-means, as pure tensor functions.

Deep Compression (Han et al. 2016) shares weights within a layer: the ``n`` non-zero weights
``w`` of a layer are grouped into ``k = 2^b`` clusters, each weight is replaced by its cluster's
centroid, and only the ``b``-bit code of each weight and the ``k`` centroids are stored::

    minimize_C  sum_i min_j (w_i - c_j)^2          (1-D k-means, Lloyd's algorithm)
    codes_i = argmin_j |w_i - c_j| ;   w'_i = c[codes_i]

Read top to bottom: initialization (linear / density / random, which Han et al. compare),
assignment, Lloyd iterations with three interchangeable engines, reconstruction, and the
centroid gradient used when fine-tuning the shared weights.

Engines (all run Lloyd's algorithm from the SAME explicit initial centroids):

* ``"torch"`` (default): exact 1-D Lloyd on the values sorted once, with prefix sums: a
  cluster is a contiguous run of sorted values between two midpoints of neighbouring
  centroids, found by binary search, so an iteration costs O(k log n) after one O(n log n)
  sort (3.9M values, as BERT's embedding, 16 clusters: 42 s -> about 2 s on this
  2-core CPU). Means in float64. Codes of the result
  come from one final O(n log k) assignment (``torch.bucketize`` on the midpoints).
* ``"sklearn"``: ``sklearn.cluster.KMeans(init=C0, n_init=1, algorithm="lloyd")``; the
  reference implementation.
* ``"faiss"``: ``faiss.Kmeans(...).train(x, init_centroids=C0)`` (no sub-sampling). faiss
  computes distances in float32 with the ``|x|^2 - 2xc + |c|^2`` expansion, so points within
  float32 rounding of a decision boundary may be assigned differently.

They agree on the fixed point they reach when no cluster becomes empty. Empty clusters are
handled differently by each engine: ``torch`` keeps the centroid where it is (it simply goes
unused), scikit-learn moves it to the points farthest from their centres, faiss splits a large
cluster. The stopping rule of ``torch`` is scikit-learn's: stop when the assignments no longer
change, or when the squared centre shift ``sum_j (c_j - c'_j)^2 <= tol * var(x)``, or after
``max_iter`` iterations; a final assignment step makes the codes consistent with the centroids.

Product quantization (vectors split into sub-spaces, one codebook per sub-space) belongs here
too and is added separately; the functions below are the scalar case.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "INITS",
    "ENGINES",
    "KMeansResult",
    "init_centroids",
    "assign_1d",
    "kmeans_1d",
    "share_weights",
    "reconstruct",
    "centroid_gradient",
]

INITS = ("linear", "density", "random")
ENGINES = ("torch", "faiss", "sklearn")
Init = Literal["linear", "density", "random"]
Engine = Literal["torch", "faiss", "sklearn"]


@dataclass
class KMeansResult:
    """Outcome of a 1-D k-means run.

    ``centroids_`` (k,) float32; ``codes_`` (n,) int64 with ``codes_[i] = argmin_j |x_i - c_j|``;
    ``n_iter_`` Lloyd iterations done; ``inertia_ = sum_i (x_i - c[codes_i])^2``.
    """

    centroids_: Tensor
    codes_: Tensor
    n_iter_: int
    inertia_: float


# ---------------------------------------------------------------------------------------------
# Initialization


def init_centroids(x: Tensor, k: int, method: Init = "linear", seed: int = 0) -> Tensor:
    """Initial centroids (k,) for 1-D k-means on the values ``x`` (n,).

    * ``linear``:  ``c_j = min(x) + j (max(x) - min(x)) / (k - 1)``, ``j = 0..k-1`` (evenly spaced
      over the range; Han et al.'s choice, it keeps centroids on the rare large weights);
    * ``density``: ``c_j = F^{-1}((j + 1/2) / k)``, the quantiles of the empirical CDF ``F`` at
      evenly spaced levels (centroids concentrate where weights are dense) [reconstructed:
      the paper says "linearly spaces the CDF in the y-axis"; the mid-point levels are ours];
    * ``random`` (Forgy): ``k`` distinct values drawn from ``x`` with ``torch.Generator(seed)``.

    Needs ``k >= 1`` and ``n >= 1`` (``linear`` with ``k = 1`` gives the mid-range). Returned
    sorted ascending, float32.
    """
    x = x.detach().reshape(-1)  # (n)
    if k < 1:
        raise ValueError(f"k-means needs k >= 1 centroids, got k={k}")
    if x.numel() == 0:
        raise ValueError("k-means needs at least one value to cluster, got an empty tensor")
    if method == "linear":  # min / max of the values as they are (exact in float64): no float64 copy
        lo = torch.tensor(float(x.min()), dtype=torch.float64)
        hi = torch.tensor(float(x.max()), dtype=torch.float64)
        if k == 1:
            c = (lo + hi).reshape(1) / 2
        else:
            c = torch.linspace(float(lo), float(hi), k, dtype=torch.float64)  # (k)
        return torch.sort(c.to(torch.float32)).values
    x = x.to(torch.float64)
    if method == "density":
        levels = (torch.arange(k, dtype=torch.float64) + 0.5) / k  # (k)
        c = torch.quantile(x, levels)  # (k)
    elif method == "random":
        g = torch.Generator().manual_seed(int(seed))
        uniq = torch.unique(x)
        if uniq.numel() < k:
            raise ValueError(f"random init needs at least k={k} distinct values, got {uniq.numel()}")
        c = uniq[torch.randperm(uniq.numel(), generator=g)[:k]]
    else:
        raise ValueError(f"unknown k-means init {method!r}; valid: {', '.join(INITS)}")
    return torch.sort(c.to(torch.float32)).values


# ---------------------------------------------------------------------------------------------
# Assignment


def assign_1d(x: Tensor, centroids: Tensor) -> Tensor:
    """Nearest-centroid codes in 1-D: ``codes_i = argmin_j |x_i - c_j|`` (ties -> lowest index).

    ``x`` (n,), ``centroids`` (k,) in any order -> ``codes`` (n,) int64. With the centroids
    sorted, ``x`` belongs to the sorted centroid ``m`` = number of midpoints
    ``(c_(j) + c_(j+1)) / 2`` strictly below ``x`` (``torch.bucketize``, O(n log k)). A midpoint
    rounded in floating point can be off by one ulp, so the two neighbours of ``m`` are
    compared too, with the same ``|x - c|`` arithmetic as a brute-force argmin, so the chosen
    centroid is always at the minimum distance. Equal distances (and duplicate centroids): the
    lowest original index wins (like ``argmin``, except where distinct centroids closer together
    than one ulp of the distance round to the same distance; then the exactly nearest is kept).
    """
    x = x.reshape(-1)
    c = centroids.reshape(-1).to(x.dtype)  # (k)
    c_sorted, perm = torch.sort(c, stable=True)  # (k), (k): equal values keep index order
    first = torch.searchsorted(c_sorted, c_sorted, right=False)  # (k): start of each run of equals
    mid = (c_sorted[1:] + c_sorted[:-1]) / 2  # (k-1)
    pos = torch.bucketize(x, mid, right=False)  # (n): number of midpoints < x
    k = c_sorted.numel()
    best = first[pos]  # (n)
    d_best = (x - c_sorted[best]).abs()  # (n)
    for shift in (-1, 1):  # ulp-level corrections at the midpoints
        cand = first[(pos + shift).clamp(0, k - 1)]  # (n)
        d = (x - c_sorted[cand]).abs()  # (n)
        better = (d < d_best) | ((d == d_best) & (perm[cand] < perm[best]))
        best = torch.where(better, cand, best)
        d_best = torch.where(better, d, d_best)
    return perm[best].to(torch.int64)  # (n)


# ---------------------------------------------------------------------------------------------
# Lloyd's algorithm


def _searchsorted(xs: Tensor, v: Tensor, right: bool) -> Tensor:
    """``torch.searchsorted(xs, v, right=right)`` for float64 ``v`` on values ``xs`` sorted in
    float32 or float64, compared exactly (as if ``xs`` were float64): a float64 key becomes the
    largest float32 ``d <= v``, then ``x < v`` iff ``x <= d`` (or ``x < d`` when ``d == v``)."""
    if xs.dtype == v.dtype:
        return torch.searchsorted(xs, v, right=right)
    d = v.to(xs.dtype)  # nearest
    d = torch.where(d.to(v.dtype) > v, torch.nextafter(d, torch.full_like(d, -math.inf)), d)  # largest <= v
    below_or_equal = torch.searchsorted(xs, d, right=True)  # count of x <= d (= x <= v)
    if right:
        return below_or_equal
    return torch.where(d.to(v.dtype) == v, torch.searchsorted(xs, d, right=False), below_or_equal)


def _run_edges(xs: Tensor, gc: Tensor, reps: Tensor) -> Tensor:
    """Where the run of each distinct sorted centroid ends in the sorted values ``xs`` (n,):
    ``(G-1,)`` indices ``e_j`` with ``xs[:e_j]`` nearer to ``gc[:j+1]`` (``gc`` (G,) ascending
    float64, ``reps`` their original indices; ``xs`` float32 or float64, compared exactly). The
    split is at the midpoint, then made exact as in :func:`assign_1d`: the few values within
    rounding of a midpoint are decided by comparing ``|x - c|`` (float64) of the two neighbours,
    equal distances going to the lower original index."""
    mid = (gc[1:] + gc[:-1]) / 2  # (G-1)
    up_wins_ties = reps[1:] < reps[:-1]  # (G-1)
    e = torch.where(up_wins_ties, _searchsorted(xs, mid, right=False),
                    _searchsorted(xs, mid, right=True))  # (G-1)
    slack = 4 * torch.finfo(torch.float64).eps * torch.maximum(mid.abs(), gc[1:].abs() + gc[:-1].abs())
    lo = _searchsorted(xs, mid - slack, right=False)  # (G-1): the values that might be
    hi = _searchsorted(xs, mid + slack, right=True)   # misplaced by the rounded midpoint
    for j in torch.nonzero(hi > lo).reshape(-1).tolist():
        w = xs[lo[j]:hi[j]].to(torch.float64)
        d_lo, d_up = (w - gc[j]).abs(), (w - gc[j + 1]).abs()
        to_lower = (d_lo < d_up) | ((d_lo == d_up) & ~up_wins_ties[j])
        e[j] = lo[j] + int(to_lower.sum())  # the decision is monotone in x over the window
    return e


#: the prefix sums of the sorted values are kept every SUM_STRIDE values (a multiple of the
#: chunk of their computation, :data:`ASSIGN_CHUNK`)
SUM_STRIDE = 256


class _PrefixSums:
    """``S_i = sum_{l<i} xs_l`` (float64) of sorted values ``xs`` (n,), bit for bit those of
    ``torch.cumsum`` over the float64 values (a sequential sum: ``S_{i+1} = S_i + xs_i``), but
    held only at every :data:`SUM_STRIDE`-th index: ``S[i]`` continues the same sequential sum
    from the checkpoint below ``i`` (at most SUM_STRIDE - 1 additions). Memory: n / 32 bytes
    instead of 8 (n + 1)."""

    def __init__(self, xs: Tensor):
        self.xs = xs
        n = self.n = xs.numel()
        self.ck = torch.zeros(n // SUM_STRIDE + 1, dtype=torch.float64)  # S at 0, STRIDE, 2 STRIDE, ...
        carry = torch.zeros((), dtype=torch.float64)
        seg = torch.empty(min(n, ASSIGN_CHUNK), dtype=torch.float64)   # one chunk, reused
        cs = torch.empty_like(seg)
        for a in range(0, n, ASSIGN_CHUNK):
            m = min(n, a + ASSIGN_CHUNK) - a
            seg[:m].copy_(xs[a:a + m])
            seg[0] += carry  # S[a+1] = S[a] + xs[a]; the cumsum goes on from it
            torch.cumsum(seg[:m], 0, out=cs[:m])   # S[a+1 .. a+m]
            j0, j1 = a // SUM_STRIDE + 1, (a + m) // SUM_STRIDE
            if j1 >= j0:
                self.ck[j0:j1 + 1] = cs[j0 * SUM_STRIDE - a - 1:m:SUM_STRIDE][: j1 - j0 + 1]
            carry = cs[m - 1].clone()
        self.total = float(carry)  # S[n]
        self._memo: dict[int, float] = {}

    def at(self, idx: Tensor) -> Tensor:
        """``S`` at the indices ``idx`` (m,) in ``[0, n]`` -> (m,) float64. The indices not seen
        before are computed together: each row of a (misses, longest run) array holds its
        checkpoint plus the values after it, and a cumsum along the rows continues each sum."""
        want = idx.tolist()
        miss = sorted({i for i in want if i not in self._memo})
        if miss:
            j = torch.tensor([i // SUM_STRIDE for i in miss])
            r = torch.tensor([i % SUM_STRIDE for i in miss])
            base = self.ck[j]
            longest = int(r.max())
            if longest:
                gidx = (j * SUM_STRIDE)[:, None] + torch.arange(longest)[None, :]   # (m, L)
                seg = self.xs[gidx.clamp_(max=self.n - 1)].to(torch.float64)   # past a run's end: unused
                seg[:, 0] += base
                cs = torch.cumsum(seg, 1)
                base = torch.where(r > 0, cs[torch.arange(len(miss)), (r - 1).clamp(min=0)], base)
            self._memo.update(zip(miss, base.tolist()))
        return torch.tensor([self._memo[i] for i in want], dtype=torch.float64)


def _lloyd_torch(x: Tensor, c0: Tensor, max_iter: int, tol: float, *,
                 xs: Tensor | None = None) -> tuple[Tensor, int]:
    """Exact 1-D Lloyd from ``c0`` on sorted values; returns (centroids (k,), iterations).

    The values are sorted once (``xs`` (n,): float32, or float64 for float64 input) with
    float64 prefix sums ``S_i = sum_{l<i} xs_l`` (:class:`_PrefixSums`: kept every 256 values,
    exact anywhere). With the distinct centroids sorted, cluster ``j`` holds the contiguous run
    of ``xs`` between the midpoints ``m_{j-1}`` and ``m_j`` (``m_j = (c_(j) + c_(j+1)) / 2``), so
    its edges come from a binary search (:func:`_run_edges`, exact as :func:`assign_1d`: ties to
    the lower index, duplicate centroids to the first) and its mean is ``(S_hi - S_lo) / (hi -
    lo)``: one iteration costs O(k log n), not O(n), after one O(n log n) sort; the working
    memory is the sorted copy alone. The iterations are those of :func:`_lloyd_torch_dense` (the
    sums differ in rounding only). Empty clusters keep their centroid.
    ``xs``: ``x`` already sorted ascending (:func:`_sorted`), if at hand.
    """
    if xs is None:
        xs = _sorted(x)  # (n)
    n = xs.numel()
    S = _PrefixSums(xs)
    c = c0.to(torch.float64).clone()  # (k)
    k = c.numel()
    threshold = float(tol) * _var_chunked(xs, S.total / n) if n > 1 else 0.0
    ends = torch.tensor([n], dtype=torch.int64)
    zero = torch.zeros(1, dtype=torch.int64)
    edges_old = reps_old = None
    span = max(abs(float(xs[0])), abs(float(xs[-1]))) if n else 0.0  # max |x| of sorted values
    n_iter = 0
    for n_iter in range(1, max_iter + 1):
        cs, perm = torch.sort(c, stable=True)  # (k), (k): equal centroids keep index order
        first = torch.ones(k, dtype=torch.bool)
        first[1:] = cs[1:] != cs[:-1]
        gc, reps = cs[first], perm[first]  # (G): distinct centroids, the lowest index of each
        if gc.numel() > 1 and float((gc[1:] - gc[:-1]).min()) * 2.0 ** 48 < span + float(gc.abs().max()):
            # centroids closer than rounding of |x - c| at the data's scale: distances can tie
            # far from a midpoint, so runs are not contiguous; the O(n) reference decides
            del S, xs
            return _lloyd_torch_dense(x.reshape(-1), c0, max_iter, tol)
        edges = torch.cat([zero, _run_edges(xs, gc, reps), ends])  # (G+1)
        counts = (edges[1:] - edges[:-1]).to(torch.float64)  # (G)
        se = S.at(edges)  # (G+1)
        sums = se[1:] - se[:-1]  # (G)
        c_new = c.clone()  # empty clusters and duplicates (never nearest first) keep theirs
        used = counts > 0
        c_new[reps[used]] = sums[used] / counts[used]
        shift = float(((c_new - c) ** 2).sum())
        c = c_new
        if edges_old is not None and torch.equal(edges, edges_old) and torch.equal(reps, reps_old):
            break
        if shift <= threshold:
            break
        edges_old, reps_old = edges, reps
    return c.to(torch.float32), n_iter


def _var_chunked(x: Tensor, mean: float) -> float:
    """``mean((x - mean)^2)`` in float64 (the population variance) without an n-sized temporary."""
    acc = 0.0
    buf = torch.empty(min(x.numel(), ASSIGN_CHUNK), dtype=torch.float64)   # one chunk, reused
    for s in range(0, x.numel(), ASSIGN_CHUNK):
        b = buf[:min(x.numel(), s + ASSIGN_CHUNK) - s]
        b.copy_(x[s:s + b.numel()]).sub_(mean).pow_(2)   # (x - mean)^2, summed per chunk
        acc += float(b.sum())
    return acc / x.numel()


def _lloyd_torch_dense(x: Tensor, c0: Tensor, max_iter: int, tol: float) -> tuple[Tensor, int]:
    """The O(n)-per-iteration reference of :func:`_lloyd_torch` (assign every value, then
    ``index_add`` the sums): slow and obviously correct; the tests compare the two."""
    x64 = x.to(torch.float64)  # (n)
    c = c0.to(torch.float64).clone()  # (k)
    k = c.numel()
    threshold = float(tol) * float(x64.var(unbiased=False)) if x64.numel() > 1 else 0.0
    codes_old = None
    n_iter = 0
    for n_iter in range(1, max_iter + 1):
        codes = assign_1d(x64, c)  # (n)
        sums = torch.zeros(k, dtype=torch.float64).index_add_(0, codes, x64)  # (k)
        counts = torch.bincount(codes, minlength=k).to(torch.float64)  # (k)
        c_new = torch.where(counts > 0, sums / counts.clamp_min(1), c)  # empty -> keep
        shift = float(((c_new - c) ** 2).sum())
        c = c_new
        if codes_old is not None and torch.equal(codes, codes_old):
            break
        if shift <= threshold:
            break
        codes_old = codes
    return c.to(torch.float32), n_iter


def _lloyd_sklearn(x: Tensor, c0: Tensor, max_iter: int, tol: float) -> tuple[Tensor, int]:
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=c0.numel(), init=c0.numpy().astype(np.float64)[:, None], n_init=1,
                max_iter=max_iter, tol=tol, algorithm="lloyd", random_state=0)
    km.fit(x.numpy().astype(np.float64)[:, None])
    return torch.from_numpy(km.cluster_centers_[:, 0].astype(np.float32)), int(km.n_iter_)


def _lloyd_faiss(x: Tensor, c0: Tensor, max_iter: int, seed: int) -> tuple[Tensor, int]:
    import faiss

    xn = np.ascontiguousarray(x.numpy().astype(np.float32)[:, None])  # (n, 1)
    k = c0.numel()
    km = faiss.Kmeans(1, k, niter=max_iter, verbose=False, seed=int(seed),
                      min_points_per_centroid=1, max_points_per_centroid=max(1, xn.shape[0]))
    km.train(xn, init_centroids=np.ascontiguousarray(c0.numpy().astype(np.float32)[:, None]))
    return torch.from_numpy(km.centroids[:, 0].copy()), len(km.iteration_stats or [])


def kmeans_1d(x: Tensor, k: int | None = None, *, init: Init | Tensor = "linear",
              engine: Engine = "torch", max_iter: int = 300, tol: float = 1e-4,
              seed: int = 0, codes_dtype: torch.dtype = torch.int64) -> KMeansResult:
    """1-D k-means of the values ``x`` (any shape, flattened to (n,)) into ``k`` clusters.

    ``init`` is a method name (see :func:`init_centroids`) or explicit initial centroids (k,).
    Returns a :class:`KMeansResult` with ``centroids_`` (k,), ``codes_`` (n,) (a final
    assignment step: ``codes_ = assign_1d(x, centroids_)``), ``n_iter_`` and ``inertia_``.
    ``codes_dtype``: the dtype of ``codes_`` (``torch.uint8`` for k <= 256 holds 1 byte per
    value instead of 8; the values are the same).

    When ``x`` has at most ``k`` distinct values, the clustering is exact: the centroids are
    those values (``k`` shrinks to their count) and no iteration runs.

    Example::

        >>> r = kmeans_1d(torch.tensor([0., .1, 1., 1.1]), 2)
        >>> r.centroids_.tolist(), r.codes_.tolist()
        ([0.05000000074505806, 1.0499999523162842], [0, 0, 1, 1])
    """
    x = x.detach().reshape(-1).cpu()  # (n)
    if x.numel() == 0:
        raise ValueError("k-means needs at least one value to cluster, got an empty tensor")
    if not _all_finite(x):
        raise ValueError("k-means input has NaN/Inf values; repair the weights first")
    if max_iter < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}")
    _check_codes_dtype(codes_dtype, k if k is not None else (init.numel() if isinstance(init, Tensor) else 1))
    xs = _sorted(x) if engine == "torch" else None  # (n), sorted once
    if isinstance(init, Tensor):
        c0 = init.detach().reshape(-1).cpu().to(torch.float32)
        if k is not None and c0.numel() != k:
            raise ValueError(f"explicit init has {c0.numel()} centroids but k={k}")
        k = c0.numel()
    else:
        if k is None:
            raise ValueError("kmeans_1d needs k (or explicit initial centroids as init)")
        if k < 1:
            raise ValueError(f"k-means needs k >= 1 centroids, got k={k}")
        if xs is not None:  # distinct values from the sorted copy (no second sort)
            few = _count_distinct_sorted(xs) <= k   # counted first: the values are copied only when few
            if few:
                first = torch.ones(xs.numel(), dtype=torch.bool)
                torch.ne(xs[1:], xs[:-1], out=first[1:])
                uniq = xs[first].to(x.dtype)
                del first
        else:
            uniq = torch.unique(x)
            few = uniq.numel() <= k
        if few:  # exact: every distinct value is its own centroid
            del xs
            c = uniq.to(torch.float32)
            codes = assign_1d(x, c)
            return KMeansResult(c, codes.to(codes_dtype), 0, float(((x - c[codes]) ** 2).sum()))
        c0 = init_centroids(x if xs is None else xs, k, init, seed=seed)
    if engine == "torch":
        c, n_iter = _lloyd_torch(x, c0, max_iter, tol, xs=xs)
        del xs  # before the assignment: peak memory is the larger of the two, not their sum
    elif engine == "sklearn":
        c, n_iter = _lloyd_sklearn(x, c0, max_iter, tol)
    elif engine == "faiss":
        c, n_iter = _lloyd_faiss(x, c0, max_iter, seed)
    else:
        raise ValueError(f"unknown k-means engine {engine!r}; valid: {', '.join(ENGINES)}")
    codes, inertia = _assign_chunked(x, c, codes_dtype)
    return KMeansResult(c, codes, n_iter, inertia)


def _all_finite(x: Tensor) -> bool:
    """``torch.isfinite(x).all()`` chunk by chunk (isfinite makes an |x| copy and masks)."""
    x = x.reshape(-1)
    return all(bool(torch.isfinite(x[s:s + SMALL_CHUNK]).all()) for s in range(0, x.numel(), SMALL_CHUNK))


def _count_distinct_sorted(xs: Tensor) -> int:
    """Number of distinct values of the sorted ``xs`` (n >= 1), chunk by chunk."""
    n, count = xs.numel(), 1
    for s in range(0, n - 1, SMALL_CHUNK):
        e = min(n - 1, s + SMALL_CHUNK)
        count += int(torch.count_nonzero(xs[s + 1:e + 1] != xs[s:e]))
    return count


def _check_codes_dtype(dtype: torch.dtype, k: int) -> None:
    if dtype.is_floating_point or dtype == torch.bool:
        raise ValueError(f"codes_dtype must be an integer dtype, got {dtype}")
    if k > 1 and k - 1 > torch.iinfo(dtype).max:
        raise ValueError(f"codes_dtype {dtype} cannot hold the codes of {k} centroids")


#: values per chunk of the final assignment: its temporaries (about 15 values' worth of bytes
#: per value) stay a few tens of MB however large the tensor
ASSIGN_CHUNK = 1 << 20
#: values per piece of the assignment and the whole-tensor checks: smaller pieces cost more in
#: per-call overhead (on a loaded 2-core machine each parallel op waits for both threads) than
#: they save in memory
ASSIGN_SUBCHUNK = SMALL_CHUNK = 1 << 20


def _sorted(x: Tensor) -> Tensor:
    """``x`` (n,) sorted ascending in a copy of its own: float32 (every float16 / bfloat16 /
    float32 value is exact there, and float64 arithmetic on it is that of the float64 values),
    float64 only for float64 input. numpy sorts in place without an index array: one copy of the
    values at peak, 4 bytes per value."""
    x = x.detach().reshape(-1)
    a = (x if x.dtype == torch.float64 else x.to(torch.float32)).numpy().copy()  # (n) a copy
    a.sort()
    return torch.from_numpy(a)


def _assign_chunked(x: Tensor, c: Tensor, codes_dtype: torch.dtype = torch.int64) -> tuple[Tensor, float]:
    """``(assign_1d(x, c) (n,) as codes_dtype, sum_i (x_i - c[codes_i])^2)`` chunk by chunk
    (float32 assignment, float64 inertia; equal to the whole-array computation)."""
    x32 = x.to(torch.float32)
    c64 = c.to(torch.float64)
    n = x32.numel()
    codes = torch.empty(n, dtype=codes_dtype)  # (n)
    sq = torch.empty(min(n, ASSIGN_CHUNK), dtype=torch.float64)  # one chunk's squared errors
    inertia = 0.0
    for s in range(0, n, ASSIGN_CHUNK):
        m = min(n, s + ASSIGN_CHUNK) - s
        for t in range(0, m, ASSIGN_SUBCHUNK):
            xc = x32[s + t:s + min(m, t + ASSIGN_SUBCHUNK)]
            cc = assign_1d(xc, c)
            codes[s + t:s + t + xc.numel()] = cc
            sq[t:t + xc.numel()] = (xc.to(torch.float64) - c64[cc]) ** 2
            del cc
        inertia += float(sq[:m].sum())  # summed per chunk, as always
    return codes, inertia


# ---------------------------------------------------------------------------------------------
# Weight sharing of one tensor


def share_weights(w: Tensor, bits: int, mask: Tensor | None = None, *, init: Init = "linear",
                  engine: Engine = "torch", max_iter: int = 300, tol: float = 1e-4,
                  seed: int = 0, codes_dtype: torch.dtype = torch.int64) -> tuple[Tensor, Tensor, Tensor, KMeansResult]:
    """Scalar k-means weight sharing of one tensor, pruned entries excluded.

    ``w`` (any shape), ``mask`` (same shape, {0,1}; default: all ones) -> ``(centroids (k',),
    codes (w.shape) int64, mask (w.shape) float32, result)``. The ``k = 2^bits`` clusters are
    fitted on the kept values ``w[mask != 0]`` only; pruned positions get code 0 and stay zero
    in :func:`reconstruct` (``w' = C[codes] * mask``). ``k' = min(k, #distinct kept values)``;
    if nothing is kept, the codebook is the single centroid 0. ``codes_dtype``: as in
    :func:`kmeans_1d` (``torch.uint8`` for ``bits <= 8``: 1 byte per weight).
    """
    if int(bits) < 1:
        raise ValueError(f"weight sharing needs bits >= 1 (k = 2^bits centroids), got bits={bits}")
    w = w.detach().cpu().to(torch.float32)
    # no mask: ones as a stride-0 view (no memory), and no keep array either
    m = torch.ones((), dtype=torch.float32).expand(w.shape) if mask is None else mask.detach().cpu().to(torch.float32)
    if m.shape != w.shape:
        raise ValueError(f"mask shape {tuple(m.shape)} differs from the weight shape {tuple(w.shape)}")
    keep = None if mask is None else m.reshape(-1) != 0  # (N)
    if keep is None or bool(keep.all()):  # nothing pruned: no copy of the kept values, the codes are the result's
        res = kmeans_1d(w.reshape(-1), 2 ** int(bits), init=init, engine=engine,
                        max_iter=max_iter, tol=tol, seed=seed, codes_dtype=codes_dtype)
        return res.centroids_, res.codes_.reshape(w.shape), m, res
    codes = torch.zeros(w.numel(), dtype=codes_dtype)  # (N)
    if not bool(keep.any()):
        res = KMeansResult(torch.zeros(1), torch.zeros(0, dtype=torch.int64), 0, 0.0)
        return res.centroids_, codes.reshape(w.shape), m, res
    res = kmeans_1d(w.reshape(-1)[keep], 2 ** int(bits), init=init, engine=engine,
                    max_iter=max_iter, tol=tol, seed=seed, codes_dtype=codes_dtype)
    codes[keep] = res.codes_
    return res.centroids_, codes.reshape(w.shape), m, res


def reconstruct(centroids: Tensor, codes: Tensor, mask: Tensor | None = None) -> Tensor:
    """Shared weights ``w'_i = C[codes_i] * m_i``: ``centroids`` (k,), ``codes``/``mask`` (shape)."""
    w = centroids[codes]  # (shape)
    return w if mask is None else w * mask.to(w.dtype)


def centroid_gradient(grad_w: Tensor, codes: Tensor, k: int, mask: Tensor | None = None) -> Tensor:
    """Gradient of the centroids from the gradient of the shared weights (Deep Compression):

    ``dL/dC_j = sum_{i: codes_i = j, m_i = 1} dL/dw'_i``; ``grad_w``/``codes``/``mask`` (shape)
    -> (k,). Autograd through ``C[codes] * m`` computes exactly this; it is the reference.
    """
    g = grad_w.reshape(-1).to(torch.float64)  # (N)
    if mask is not None:
        g = g * mask.reshape(-1).to(torch.float64)
    return torch.zeros(k, dtype=torch.float64).index_add_(0, codes.reshape(-1).long(), g).to(grad_w.dtype)
