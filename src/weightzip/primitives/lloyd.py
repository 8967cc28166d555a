"""Many small k-means problems at once: exact Lloyd iterations in one compiled pass per iteration.

Product quantization with one codebook per sub-space (``pq_share`` without
``shared_codebook``) clusters every sub-space of every layer separately: HF BERT-base at
``d = 4`` is ~14,000 k-means problems of 768-30,522 points in R^4 with k = 256. faiss spends
~5 ms on each (a GEMM of inner dimension 4 per iteration plus its per-call set-up): ~4 minutes
in all. Here the groups are one ragged array and each iteration is one loop over the points::

    x_i in group g (points pts[offs[g]:offs[g+1]], (n_g, d)),  centroids C_g (k_g, d)
    assign:  a_i = argmin_j sum_t (x_it - C_g[j, t])^2          (ties: the lowest j)
    update:  C_g[j] = mean{x_i : a_i = j}                         (a centroid with no point stays)
    stop after ``niter`` updates, or as soon as an assignment equals the previous one (a fixed
    point: every later iteration would change nothing), then assign once more to the final C.

Sampled training (``sample_per_centroid = s >= 1``; faiss's ``max_points_per_centroid``, made
explicit): a group with ``n_g > s * k_g`` points runs its Lloyd iterations above on a sample
``S_g`` of ``s * k_g`` of its points (distinct, drawn by ``default_rng([seed, g])``, kept in the
group's order), then ONE update on all of its points and the final assignment::

    C_g <- Lloyd(S_g, niter) from init_centroids          (cost <= niter * s k_g^2 d: a constant per group)
    a_i <- argmin_j ||x_i - C_g[j]||^2, C_g[j] <- mean{x_i : a_i = j}   (all n_g points: pass 1)
    codes_i = argmin_j ||x_i - C_g[j]||^2                                  (all n_g points: pass 2)

so a large group costs two passes over its points plus a constant, whatever ``niter``; a group
with ``n_g <= s * k_g`` points runs exactly as without sampling (same initial centroids, same
result bit for bit), and ``s = 0`` / ``None`` is exact Lloyd on all points everywhere.

Without sampling it is plain Lloyd from the given initial centroids (``init_centroids``: ``k_g`` distinct points of
the group drawn by ``numpy.random.default_rng(seed + g)``), so the result equals a slow
reference of the same iterations (``tests/primitives/test_lloyd.py``); it is not faiss's result
(faiss draws its own initial points and splits empty clusters), and the PQ tests bound its
inertia against faiss's on the same data. The assignment runs in float32, centroid sums in
float64. Cost per iteration: ``sum_g n_g k_g d`` multiply-adds, vectorized over the centroids;
no distance matrix is stored. The kernel releases the GIL, so tensors run side by side in
threads (``weightzip.methods.base.map_bounded``).
"""
from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["init_centroids", "lloyd_groups", "sample_groups", "check_sample_per_centroid"]


def init_centroids(pts: np.ndarray, offs: np.ndarray, ks: np.ndarray, seed: int) -> np.ndarray:
    """Initial centroids (G, max k, d) float32: ``ks[g]`` distinct points of group ``g`` chosen by
    ``default_rng(seed + g)``; rows past ``ks[g]`` are zero (unused)."""
    G = len(offs) - 1
    d = pts.shape[1]
    out = np.zeros((G, max(1, int(ks.max(initial=1))), d), dtype=np.float32)
    for g in range(G):
        n, k = int(offs[g + 1] - offs[g]), int(ks[g])
        if k > n or (n > 0 and k < 1):
            raise ValueError(f"group {g}: k={k} centroids for {n} points")
        if n:
            idx = np.random.default_rng(seed + g).choice(n, size=k, replace=False)
            out[g, :k] = pts[offs[g] + idx]
    return out


@njit(nogil=True, cache=True, error_model="numpy")
def _assign(pts, o, n, ct, k, dist, codes):  # pragma: no cover - compiled
    """codes[o:o+n] = nearest of the k centroids ct (d, k); returns how many codes changed.
    The distances to all k centroids are one vector loop per coordinate; ties: the lowest index."""
    d = pts.shape[1]
    changed = 0
    for i in range(n):
        for j in range(k):
            dist[j] = 0.0
        for t in range(d):
            xv = pts[o + i, t]
            for j in range(k):
                u = xv - ct[t, j]
                dist[j] += u * u
        best, bj = dist[0], 0
        for j in range(1, k):
            if dist[j] < best:
                best, bj = dist[j], j
        if codes[o + i] != bj:
            changed += 1
            codes[o + i] = bj
    return changed


@njit(nogil=True, cache=True, error_model="numpy")
def _lloyd(pts, offs, ks, cents, niters, codes, iters):  # pragma: no cover - compiled
    """Lloyd of every group g (``niters[g]`` updates at most, stopped at a fixed point) from
    ``cents[g]`` (updated in place); ``codes`` the final assignment, ``iters[g]`` updates done."""
    G = offs.shape[0] - 1
    d = pts.shape[1]
    kmax = cents.shape[1]
    ct = np.empty((d, kmax), dtype=np.float32)
    dist = np.empty(kmax, dtype=np.float32)
    sums = np.empty((kmax, d), dtype=np.float64)
    counts = np.empty(kmax, dtype=np.int64)
    for g in range(G):
        o, n, k, niter = offs[g], offs[g + 1] - offs[g], ks[g], niters[g]
        if n == 0 or k == 0:
            iters[g] = 0
            continue
        for i in range(n):
            codes[o + i] = -1
        done = 0
        while True:
            for t in range(d):
                for j in range(k):
                    ct[t, j] = cents[g, j, t]
            changed = _assign(pts, o, n, ct, k, dist, codes)
            if changed == 0 and done > 0:
                break
            if done == niter:
                break
            sums[:k] = 0.0
            counts[:k] = 0
            for i in range(n):
                j = codes[o + i]
                counts[j] += 1
                for t in range(d):
                    sums[j, t] += pts[o + i, t]
            for j in range(k):
                if counts[j] > 0:
                    for t in range(d):
                        cents[g, j, t] = sums[j, t] / counts[j]
            done += 1
        iters[g] = done
    return 0


def sample_groups(offs: np.ndarray, ks: np.ndarray, sample_per_centroid: int | None,
                  seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The training samples of :func:`lloyd_groups`: ``(sampled (G,) bool, idx)`` where group ``g``
    is sampled when ``n_g > s * k_g`` (``s = sample_per_centroid``; none when ``s`` is 0 or None)
    and ``idx`` (sum of ``s * k_g`` over sampled groups,) int64 holds, group after group, the
    rising positions into ``pts`` of its ``s * k_g`` distinct sample points, drawn by
    ``default_rng([seed, g])`` (a stream apart from :func:`init_centroids`'s)."""
    s = check_sample_per_centroid(sample_per_centroid)
    n = np.diff(offs)
    m = s * ks
    sampled = (m > 0) & (n > m)
    parts = [offs[g] + np.sort(np.random.default_rng([seed, g]).choice(int(n[g]), size=int(m[g]), replace=False))
             for g in np.flatnonzero(sampled)]
    idx = np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, dtype=np.int64)
    return sampled, idx


def check_sample_per_centroid(s) -> int:
    """``s`` as an int: ``None`` or 0 -> 0 (no sampling), an integer ``>= 1`` as is; anything else
    (negative, bool, float, str) raises ``ValueError``."""
    if s is None:
        return 0
    if isinstance(s, (bool, np.bool_)) or not isinstance(s, (int, np.integer)) or s < 0:
        raise ValueError(f"sample_per_centroid must be an integer >= 1 (points per centroid the Lloyd "
                         f"iterations train on) or 0 / None (all points), got {s!r}")
    return int(s)


def _run_split(pts, offs, ks, cents, niters, codes, iters, work, threads):
    """:func:`_lloyd` on all groups, in ``threads`` runs of groups of about equal ``work`` side by
    side (each run works on views of its own groups: the result does not depend on the split)."""
    G = len(ks)
    if not len(pts) or G == 0:
        return
    work = np.cumsum(work)
    cuts = [0] + [int(np.searchsorted(work, work[-1] * i / threads)) + 1 for i in range(1, max(1, int(threads)))] + [G]
    cuts = sorted(set(min(G, c) for c in cuts))
    if len(cuts) <= 2:
        _lloyd(pts, offs, ks, cents, niters, codes, iters)
        return

    def run(a: int, b: int) -> None:                          # groups a..b-1, views into the outputs
        o, e = offs[a], offs[b]
        _lloyd(pts[o:e], offs[a:b + 1] - o, ks[a:b], cents[a:b], niters[a:b], codes[o:e], iters[a:b])

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=len(cuts) - 1, thread_name_prefix="wz-lloyd") as pool:
        for f in [pool.submit(run, a, b) for a, b in zip(cuts[:-1], cuts[1:])]:
            f.result()


def lloyd_groups(pts: np.ndarray, offs: np.ndarray, ks: np.ndarray, niter: int, seed: int = 0,
                 init: np.ndarray | None = None, threads: int = 1,
                 sample_per_centroid: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """k-means of every group of the ragged ``pts`` (N, d); group ``g`` is ``pts[offs[g]:offs[g+1]]``
    with ``ks[g]`` centroids (``1 <= ks[g] <= n_g``, or 0 for an empty group).

    Returns ``(centroids (G, max k, d) float32, codes (N,) int64 into each group's centroids,
    iterations (G,) int64 = centroid updates done: <= niter, or for a sampled group those on its
    sample plus the one on all points)``; see the module docstring. ``init`` (G, max k, d):
    initial centroids instead of :func:`init_centroids`. ``sample_per_centroid``: train groups of
    more than ``s * k_g`` points on a sample of that many, then one update on all (None or 0:
    exact Lloyd on all points). ``threads > 1`` splits the groups into that many runs of about
    equal work, side by side (the result does not depend on the split).
    """
    pts = np.ascontiguousarray(pts, dtype=np.float32)
    offs = np.ascontiguousarray(offs, dtype=np.int64)
    ks = np.ascontiguousarray(ks, dtype=np.int64)
    if pts.ndim != 2 or offs.ndim != 1 or ks.shape != (len(offs) - 1,):
        raise ValueError(f"pts (N, d), offs (G+1,), ks (G,) expected; got {pts.shape}, {offs.shape}, {ks.shape}")
    if offs[0] != 0 or offs[-1] != len(pts) or np.any(np.diff(offs) < 0):
        raise ValueError("offs must rise from 0 to len(pts)")
    if int(niter) < 1:
        raise ValueError(f"niter must be >= 1, got {niter}")
    sampled, idx = sample_groups(offs, ks, sample_per_centroid, seed)
    cents = init_centroids(pts, offs, ks, seed) if init is None else np.array(init, dtype=np.float32, order="C")
    codes = np.empty(len(pts), dtype=np.int64)
    iters = np.zeros(len(ks), dtype=np.int64)
    niters = np.full(len(ks), int(niter), dtype=np.int64)
    n = np.diff(offs)
    if sampled.any():                                         # Lloyd on the samples, then one full update
        sks = ks[sampled]
        soffs = np.zeros(len(sks) + 1, dtype=np.int64)
        soffs[1:] = np.cumsum(sks * check_sample_per_centroid(sample_per_centroid))
        scents = cents[sampled]                               # (G_s, max k, d) copy
        scodes = np.empty(len(idx), dtype=np.int64)
        siters = np.zeros(len(sks), dtype=np.int64)
        _run_split(pts[idx], soffs, sks, scents, niters[sampled], scodes, siters, np.diff(soffs) * sks, threads)
        cents[sampled] = scents
        niters[sampled] = 1
    # per-group work estimate: n k per pass, up to niter passes (sampled groups: 2)
    _run_split(pts, offs, ks, cents, niters, codes, iters, n * ks * (niters + 1), threads)
    if sampled.any():
        iters[sampled] += siters
    return cents, codes, iters
