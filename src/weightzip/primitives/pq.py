"""Product quantization (PQ) of weight matrices, as pure tensor functions.

A layer's weight is viewed as a matrix ``W`` (``C_out x C_in'``); a convolution
``[C_out, C_in, kh, kw]`` is flattened row-major to ``C_in' = C_in * kh * kw`` (so one kernel
``kh x kw`` is a contiguous run of ``kh*kw`` columns). The columns are split into ``M``
sub-spaces of dimension ``d`` (``M * d = C_in'``); row ``r`` of sub-space ``m`` is the
sub-vector ``w_{r,m} = W[r, m*d:(m+1)*d]`` (``d`` entries). Each sub-space gets a codebook of
``k`` centroids found by k-means (Jegou et al. 2011; Wu et al. 2016 for CNNs)::

    C_m = argmin_C  sum_r  min_j || w_{r,m} - C[j] ||^2        (k-means in R^d, faiss)
    codes[r, m] = argmin_j || w_{r,m} - C_m[j] ||^2
    W'[r, m*d:(m+1)*d] = C_m[codes[r, m]]                         (reconstruction)

Storage: ``C_out * M * ceil(log2 k)`` code bits + ``32 * k * d`` bits per codebook (``M``
codebooks for classic PQ: ``32 * k * C_in'``; ONE codebook shared by every sub-space of the
layer with ``shared=True``, as in Stock et al. 2020, "And the bit goes down": ``32 * k * d``).

Shapes used below: ``wm`` (rows, cols) the matrix view; ``sub`` (rows, M, d) the sub-vectors;
``codes`` (rows, M) int64; ``codebooks`` (n_cb, k, d) float32 with ``n_cb = M`` (classic) or
``1`` (shared).

Details (all configurable):

* ``k`` is capped at the number of sub-vectors a codebook is trained on (tiny layers), and
  must be at least 2 (``k = 1`` is a single shared vector per sub-space, not a quantizer).
* ``d`` must divide ``C_in'``; with ``pad=True`` the matrix is padded on the right with zero
  columns up to ``M * d`` (``M = ceil(C_in' / d)``) and the reconstruction is cut back to
  ``C_in'`` columns (the codec's ``pq`` format stores exactly this geometry).
* **Masked PQ** (pruned weights stay exactly zero): ``mask`` (the weight's shape, {0,1}) is
  applied after reconstruction, ``W' = C[codes] * mask``. Clustering uses only the
  sub-vectors with at least one kept entry (their pruned entries are the zeros they hold);
  sub-vectors with no kept entry are left out of training and all get the same code (the
  centroid of smallest norm, so that entropy coding makes them nearly free). The final
  assignment minimizes the error on kept entries only, ``sum_t m_t (w_t - c_t)^2``, and
  ``refine_iters`` optional masked Lloyd steps move each centroid coordinate to the mean of
  the KEPT entries assigned to it [reconstructed: the thesis only says "masked PQ keeps pruned
  zeros"; the masked objective is ours].
* ``mask_mode="subvector"`` [ours]: the mask is coarsened to whole sub-vectors (a sub-vector
  survives if any of its entries survived pruning; its pruned entries are revived with the
  centroid's values) and code 0 is reserved for an exact all-zero centroid used by every
  dropped sub-vector. The reconstruction is then exactly zero wherever the weight is pruned
  without storing a mask, and the lookup-table runtime can skip code 0.
* Engine: faiss (``faiss.Kmeans(d, k, niter=..., seed=...)``, random initialization from the
  data, no sub-sampling, exactly ``niter`` Lloyd iterations) for a shared codebook; for one
  codebook per sub-space (thousands of small problems per model) the batched exact Lloyd of
  :mod:`weightzip.primitives.lloyd` (``engine="lloyd"``, the ``auto`` default there: it stops
  at a fixed point, and its inertia is checked against faiss's in the tests). The lloyd engine
  trains a codebook of more than ``sample_per_centroid * k`` points (default 64 per centroid)
  on a seeded sample of that many, then runs one update and the final assignment on all of
  them: two passes over the tensor plus a constant per codebook; ``sample_per_centroid=None``
  (or 0) is exact Lloyd on all points. Its inertia is bounded against the exact engine's in
  ``tests/primitives/test_lloyd.py``. faiss (``engine="faiss"``) always trains on all points. :func:`cluster_time` times PQ
  against scalar k-means with the SAME engine and the SAME iteration count.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "MASK_MODES",
    "PQResult",
    "matrix_view",
    "num_subspaces",
    "to_subvectors",
    "from_subvectors",
    "cap_k",
    "faiss_kmeans",
    "pq_assign",
    "pq_reconstruct",
    "pq_quantize",
    "centroid_counts",
    "pq_storage_bits",
    "cluster_time",
]

MASK_MODES = ("element", "subvector")
MaskMode = Literal["element", "subvector"]
ENGINES = ("auto", "faiss", "lloyd")
Engine = Literal["auto", "faiss", "lloyd"]


# ---------------------------------------------------------------------------------------------
# Geometry


def matrix_view(w: Tensor) -> Tensor:
    """``w`` (C_out, ...) -> (C_out, C_in') with ``C_in' = numel / C_out`` (row-major flatten).

    Linear (out, in) is unchanged; Conv2d (out, in, kh, kw) -> (out, in*kh*kw).
    """
    if w.dim() < 2:
        raise ValueError(f"product quantization needs a matrix or a conv kernel, got shape {tuple(w.shape)}")
    return w.reshape(w.shape[0], -1)


def num_subspaces(cols: int, d: int, pad: bool = False) -> int:
    """Number of sub-spaces ``M`` for ``cols`` columns split into runs of ``d``.

    ``M = cols / d`` when ``d`` divides ``cols``; otherwise ``ceil(cols / d)`` with ``pad=True``
    and a ``ValueError`` naming the divisors of ``cols`` without.
    """
    d = int(d)
    if d < 1:
        raise ValueError(f"sub-vector dimension d must be >= 1, got d={d}")
    if d > cols and not pad:
        raise ValueError(f"sub-vector dimension d={d} exceeds the {cols} columns of the weight matrix; "
                         f"use a d that divides {cols} (divisors: {_divisors(cols)}) or pad: true")
    if cols % d:
        if not pad:
            raise ValueError(f"sub-vector dimension d={d} does not divide the {cols} columns of the weight "
                             f"matrix (C_in*kh*kw); use one of its divisors {_divisors(cols)} or set pad: true "
                             "(zero columns are added up to a multiple of d)")
        return -(-cols // d)
    return cols // d


def _divisors(n: int) -> list[int]:
    return [i for i in range(1, n + 1) if n % i == 0][:24]


def to_subvectors(wm: Tensor, d: int, pad: bool = False) -> Tensor:
    """(rows, cols) -> (rows, M, d): ``sub[r, m] = wm[r, m*d:(m+1)*d]`` (zero-padded on the right)."""
    rows, cols = wm.shape
    m = num_subspaces(cols, d, pad)
    if m * d != cols:
        wm = torch.nn.functional.pad(wm, (0, m * d - cols))
    return wm.reshape(rows, m, d)


def from_subvectors(sub: Tensor, cols: int) -> Tensor:
    """(rows, M, d) -> (rows, cols): the inverse of :func:`to_subvectors` (padding cut off)."""
    rows = sub.shape[0]
    return sub.reshape(rows, -1)[:, :cols]


def cap_k(k: int, n_points: int) -> int:
    """Centroids actually used: ``min(k, n_points)`` (at least 1 when there are no points).

    Raises ``ValueError`` for ``k < 2``: one centroid per sub-space is no quantizer.
    """
    if int(k) < 2:
        raise ValueError(f"product quantization needs k >= 2 centroids per codebook, got k={k}")
    return max(1, min(int(k), int(n_points)))


# ---------------------------------------------------------------------------------------------
# k-means engine


def faiss_kmeans(x: np.ndarray, k: int, niter: int, seed: int = 0) -> np.ndarray:
    """faiss k-means of the rows of ``x`` (n, d) into ``k <= n`` centroids -> (k, d) float32.

    ``faiss.Kmeans(d, k, niter=niter, seed=seed)`` with random initialization from the data,
    ``min_points_per_centroid=1`` and no sub-sampling (``max_points_per_centroid = n``), so
    exactly ``niter`` Lloyd iterations run on all points. With ``n == k`` the points are the
    centroids (no iteration is needed).
    """
    import faiss

    x = np.ascontiguousarray(x, dtype=np.float32)
    n, d = x.shape
    if not 1 <= k <= n:
        raise ValueError(f"k-means needs 1 <= k <= n points, got k={k}, n={n}")
    if k == n:
        return x.copy()
    km = faiss.Kmeans(d, int(k), niter=int(niter), seed=int(seed), verbose=False,
                      min_points_per_centroid=1, max_points_per_centroid=max(1, -(-n // k)))
    km.train(x)
    return np.asarray(km.centroids, dtype=np.float32).reshape(k, d).copy()


# ---------------------------------------------------------------------------------------------
# Assignment and reconstruction


def pq_assign(sub: Tensor, codebooks: Tensor, mask: Tensor | None = None,
              chunk_elems: int = 1 << 23) -> Tensor:
    """Nearest-centroid codes ``codes[r, m] = argmin_j sum_t mask[r,m,t] (sub[r,m,t] - C[j,t])^2``.

    ``sub`` (rows, M, d); ``codebooks`` (M or 1, k, d); ``mask`` (rows, M, d) or None (all
    ones) -> (rows, M) int64. Ties go to the lowest index. Computed in float64 as
    ``sum m x^2 - 2 sum m x c + sum m c^2`` per sub-space (``x`` points, ``c`` centroids), in
    chunks of sub-spaces holding at most ``chunk_elems`` distances.
    """
    rows, M, d = sub.shape
    ncb, k, dc = codebooks.shape
    if dc != d or ncb not in (1, M):
        raise ValueError(f"codebooks {tuple(codebooks.shape)} do not fit sub-vectors {tuple(sub.shape)}")
    x = sub.detach().to(torch.float64).transpose(0, 1)                  # (M, rows, d)
    c = codebooks.detach().to(torch.float64)                             # (ncb, k, d)
    m = None if mask is None else mask.detach().to(torch.float64).transpose(0, 1)  # (M, rows, d)
    codes = torch.empty(M, rows, dtype=torch.int64)
    step = max(1, chunk_elems // max(1, rows * k))
    for a in range(0, M, step):
        b = min(M, a + step)
        xs = x[a:b]                                                      # (s, rows, d)
        cs = c.expand(M, k, d)[a:b] if ncb == 1 else c[a:b]              # (s, k, d)
        if m is None:
            dist = (cs * cs).sum(-1).unsqueeze(1) - 2 * torch.bmm(xs, cs.transpose(1, 2))  # (s, rows, k)
        else:
            ms = m[a:b]
            dist = torch.bmm(ms, (cs * cs).transpose(1, 2)) - 2 * torch.bmm(ms * xs, cs.transpose(1, 2))
        codes[a:b] = dist.argmin(-1)
    return codes.transpose(0, 1).contiguous()                           # (rows, M)


def pq_reconstruct(codes: Tensor, codebooks: Tensor, cols: int | None = None,
                   mask: Tensor | None = None) -> Tensor:
    """``W'[r, m*d:(m+1)*d] = codebooks[m or 0][codes[r, m]]``, cut to ``cols`` columns, times ``mask``.

    ``codes`` (rows, M) int64, ``codebooks`` (M or 1, k, d) -> (rows, cols) (default
    ``cols = M * d``). ``mask`` (rows, cols) (or any shape with rows*cols elements) multiplies
    the result. Differentiable in ``codebooks``: the gradient of centroid ``j`` of codebook
    ``m`` is the sum of the gradients of the sub-vectors coded ``j`` (see
    :func:`centroid_counts` for the averaged variant).
    """
    rows, M = codes.shape
    ncb, k, d = codebooks.shape
    if ncb == 1:
        sub = codebooks[0][codes]                                        # (rows, M, d)
    else:
        sub = codebooks[torch.arange(M, device=codes.device).unsqueeze(0), codes]  # (rows, M, d)
    w = from_subvectors(sub, M * d if cols is None else int(cols))       # (rows, cols)
    if mask is not None:
        w = w * mask.reshape(w.shape).to(w.dtype)
    return w


def centroid_counts(codes: Tensor, n_codebooks: int, k: int, used: Tensor | None = None) -> Tensor:
    """How many sub-vectors use each centroid: (n_cb, k) float32.

    ``counts[c, j] = #{(r, m): codes[r, m] = j, codebook(m) = c, used[r, m]}`` where
    ``codebook(m) = m`` (classic) or ``0`` (shared) and ``used`` (rows, M) bool (default: all)
    excludes sub-vectors whose entries are all pruned. Dividing a centroid's gradient by its
    count turns Deep Compression's summed centroid gradient into the average gradient.
    """
    rows, M = codes.shape
    idx = codes if n_codebooks == 1 else codes + k * torch.arange(M, device=codes.device).unsqueeze(0)
    idx = idx.reshape(-1)
    if used is not None:
        idx = idx[used.reshape(-1)]
    return torch.bincount(idx, minlength=n_codebooks * k).reshape(n_codebooks, k).to(torch.float32)


# ---------------------------------------------------------------------------------------------
# Product quantization of one tensor


@dataclass
class PQResult:
    """Outcome of :func:`pq_quantize` for one weight tensor.

    ``codes`` (rows, M) int64; ``codebooks`` (n_cb, k, d) float32 (``n_cb`` = M or 1);
    ``mask`` the effective mask of the weight's shape (float32 {0,1}; after ``subvector``
    coarsening) or None; ``matrix_shape = (rows, cols)``; ``k`` requested and ``k_eff`` used;
    ``zero_code`` = 0 when code 0 is the reserved all-zero centroid (``subvector`` mode), else
    None; ``inertia = sum (W - W')^2`` over kept entries; ``seconds`` the clustering wall time.
    """

    codes: Tensor
    codebooks: Tensor
    mask: Tensor | None
    matrix_shape: tuple[int, int]
    d: int
    k: int
    k_eff: int
    shared: bool
    mask_mode: str = "element"
    zero_code: int | None = None
    inertia: float = 0.0
    seconds: float = 0.0
    n_train: list[int] = field(default_factory=list)

    @property
    def M(self) -> int:
        return int(self.codes.shape[1])

    def reconstruct(self, shape: tuple[int, ...] | None = None) -> Tensor:
        """The quantized weight ``C[codes] * mask`` in ``shape`` (default: the matrix view)."""
        rows, cols = self.matrix_shape
        w = pq_reconstruct(self.codes, self.codebooks, cols)
        if self.mask is not None:
            w = w * self.mask.reshape(rows, cols)
        return w if shape is None else w.reshape(shape)


def pq_quantize(w: Tensor, d: int, k: int = 256, *, mask: Tensor | None = None,
                shared: bool = False, mask_mode: MaskMode = "element", niter: int = 25,
                refine_iters: int = 0, seed: int = 0, pad: bool = False,
                engine: Engine = "auto", sample_per_centroid: int | None = 64) -> PQResult:
    """Product-quantize the weight ``w`` (Linear (out, in) or Conv (out, in, kh, kw)).

    ``d``: sub-vector dimension (must divide ``C_in'`` unless ``pad``); ``k``: centroids per
    codebook (capped at the number of training sub-vectors; ``>= 2``); ``mask``: pruning mask of
    ``w``'s shape or None; ``shared``: one codebook for all sub-spaces of the layer (else one
    per sub-space); ``mask_mode``: ``element`` (exact per-weight mask) or ``subvector`` (see the
    module docstring); ``niter``: faiss Lloyd iterations; ``refine_iters``: masked Lloyd steps
    after faiss (masked mode only); ``seed``: faiss seed; ``engine``: ``faiss`` (one
    ``faiss.Kmeans`` per codebook), ``lloyd`` (every codebook of the layer in one compiled pass
    per iteration, :mod:`weightzip.primitives.lloyd`: exact Lloyd, stopped early at a fixed
    point) or ``auto`` (``lloyd`` for one codebook per sub-space, ``faiss`` for a shared one);
    ``sample_per_centroid`` (lloyd engine): a codebook trained on ``n > s * k`` sub-vectors runs
    its Lloyd iterations on ``s * k`` of them (seeded), then one update on all ``n`` (None or 0:
    all points every iteration; see :mod:`weightzip.primitives.lloyd`).

    Returns a :class:`PQResult`; ``result.reconstruct(w.shape)`` is the quantized weight.
    """
    if mask_mode not in MASK_MODES:
        raise ValueError(f"unknown mask_mode {mask_mode!r}; valid: {', '.join(MASK_MODES)}")
    if int(niter) < 1:
        raise ValueError(f"niter must be >= 1, got {niter}")
    if int(k) < 2:
        raise ValueError(f"product quantization needs k >= 2 centroids per codebook, got k={k}")
    w = w.detach().cpu().to(torch.float32)
    if not torch.isfinite(w).all():
        raise ValueError("product quantization input has NaN/Inf values; repair the weights first")
    wm = matrix_view(w)                                                   # (rows, cols)
    rows, cols = wm.shape
    d = int(d)
    M = num_subspaces(cols, d, pad)
    sub = to_subvectors(wm, d, pad)                                       # (rows, M, d)
    msub = None
    if mask is not None:
        mask = mask.detach().cpu().to(torch.float32)
        if mask.numel() != w.numel():
            raise ValueError(f"mask shape {tuple(mask.shape)} differs from the weight shape {tuple(w.shape)}")
        msub = to_subvectors(mask.reshape(rows, cols), d, pad)           # (rows, M, d), padding = 0
        sub = sub * msub
    used = torch.ones(rows, M, dtype=torch.bool) if msub is None else msub.amax(-1) > 0  # (rows, M)
    reserve = mask_mode == "subvector" and msub is not None and not bool(used.all())
    if mask_mode == "subvector" and msub is not None:
        valid = torch.ones(rows, M * d)
        valid[:, cols:] = 0
        msub = used.unsqueeze(-1).to(torch.float32) * valid.reshape(rows, M, d)  # whole sub-vectors
    t0 = time.perf_counter()
    groups = [slice(None)] if shared else [slice(m, m + 1) for m in range(M)]
    n_train = [int(used[:, g].sum()) for g in groups]
    off = 1 if reserve else 0                                             # reserved zero code
    k_eff = off + max(1, min(int(k) - off, max(n_train)))                 # k capped at the points
    cbs = torch.zeros(len(groups), k_eff, d)
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; valid: {', '.join(ENGINES)}")
    if engine == "auto":
        engine = "faiss" if shared else "lloyd"
    from .lloyd import check_sample_per_centroid

    sample_per_centroid = check_sample_per_centroid(sample_per_centroid)
    lloyd_codes = None
    if engine == "lloyd":
        lloyd_codes = _lloyd_codebooks(sub, used, shared, cbs, off, niter, seed, sample_per_centroid)
    else:
        for gi, g in enumerate(groups):
            pts = sub[:, g][used[:, g]]                                   # (n, d) kept sub-vectors
            n = pts.shape[0]
            if n == 0:
                continue
            kk = min(k_eff - off, n)
            cb = faiss_kmeans(pts.numpy(), kk, niter, seed + gi)
            cbs[gi, off:off + kk] = torch.from_numpy(cb)
            if kk < k_eff - off:  # fewer points than centroids: repeat the last one (unused)
                cbs[gi, off + kk:] = cbs[gi, off + kk - 1]
    if msub is not None and mask_mode == "element":
        for _ in range(int(refine_iters)):
            codes = pq_assign(sub, cbs, msub)
            cbs = _masked_update(sub, msub, codes, cbs, used)
    if lloyd_codes is not None and msub is None:   # Lloyd's last assignment is the nearest one
        codes = lloyd_codes
    else:
        codes = pq_assign(sub, cbs[:, off:], msub) + off                  # (rows, M); kept never 0 if reserved
    if msub is not None:
        # dropped sub-vectors: the reserved zero code, else the smallest-norm centroid
        fill = torch.zeros(len(groups), dtype=torch.int64) if reserve else (cbs ** 2).sum(-1).argmin(-1)
        codes = torch.where(used, codes, fill.expand(M).unsqueeze(0))   # (rows, M)
    seconds = time.perf_counter() - t0
    eff_mask = None
    if msub is not None:
        eff_mask = from_subvectors(msub, cols).reshape(w.shape).contiguous()
    rec = pq_reconstruct(codes, cbs, cols)
    if eff_mask is not None:
        rec = rec * eff_mask.reshape(rows, cols)
        keep = eff_mask.reshape(rows, cols) != 0
        inertia = float(((wm - rec)[keep].double() ** 2).sum())
    else:
        inertia = float(((wm - rec).double() ** 2).sum())
    return PQResult(codes=codes, codebooks=cbs, mask=eff_mask, matrix_shape=(rows, cols), d=d, k=int(k),
                    k_eff=k_eff, shared=bool(shared), mask_mode=mask_mode, zero_code=0 if reserve else None,
                    inertia=inertia, seconds=seconds, n_train=n_train)


def _lloyd_codebooks(sub: Tensor, used: Tensor, shared: bool, cbs: Tensor, off: int, niter: int,
                     seed: int, sample_per_centroid: int | None = None) -> Tensor:
    """Fill ``cbs[:, off:]`` by :func:`weightzip.primitives.lloyd.lloyd_groups` on the kept
    sub-vectors of every codebook's group; returns the codes (rows, M) (+ ``off``) of Lloyd's
    last assignment (unused sub-vectors: ``off``). Same capping of k as the faiss path;
    ``sample_per_centroid`` as in :func:`lloyd_groups`."""
    from .lloyd import lloyd_groups

    rows, M, d = sub.shape
    k_max = cbs.shape[1] - off
    if shared:
        pts = sub[used]                                                   # (n, d), row-major order
        counts = torch.tensor([pts.shape[0]])
    else:
        pts = sub.transpose(0, 1)[used.t()]                               # (n, d), sub-space major
        counts = used.sum(0)
    offs = np.zeros(len(counts) + 1, dtype=np.int64)
    offs[1:] = np.cumsum(counts.numpy())
    ks = np.minimum(k_max, counts.numpy()).astype(np.int64)
    # a large tensor runs alone in the stage's pool (map_bounded): its groups use every thread
    threads = torch.get_num_threads() if int((counts * ks.max(initial=0)).sum()) * d >= (1 << 26) else 1
    cents, codes, _ = lloyd_groups(pts.numpy(), offs, ks, niter, seed, threads=threads,
                                   sample_per_centroid=sample_per_centroid)
    for gi, kk in enumerate(ks):
        if kk == 0:
            continue
        cbs[gi, off:off + kk] = torch.from_numpy(cents[gi, :kk])
        if kk < k_max:  # fewer points than centroids: repeat the last one (unused)
            cbs[gi, off + kk:] = cbs[gi, off + kk - 1]
    c = torch.from_numpy(codes) + off
    if shared:
        out = torch.full((rows, M), off, dtype=torch.int64)
        out[used] = c
        return out
    out = torch.full((M, rows), off, dtype=torch.int64)                  # sub-space major, as pts
    out[used.t()] = c
    return out.t().contiguous()


def _masked_update(sub: Tensor, msub: Tensor, codes: Tensor, cbs: Tensor, used: Tensor) -> Tensor:
    """One masked Lloyd update: ``C[j, t] = sum m x / sum m`` over sub-vectors coded ``j`` (kept dims).

    ``sub``/``msub`` (rows, M, d), ``codes`` (rows, M), ``cbs`` (n_cb, k, d) -> new (n_cb, k, d);
    coordinates with no kept entry keep their value.
    """
    rows, M, d = sub.shape
    ncb, k, _ = cbs.shape
    idx = codes if ncb == 1 else codes + k * torch.arange(M).unsqueeze(0)     # (rows, M)
    idx = idx[used]                                                       # (n,)
    num = torch.zeros(ncb * k, d, dtype=torch.float64).index_add_(0, idx, (sub * msub)[used].double())
    den = torch.zeros(ncb * k, d, dtype=torch.float64).index_add_(0, idx, msub[used].double())
    new = torch.where(den > 0, num / den.clamp_min(1), cbs.reshape(ncb * k, d).double())
    return new.to(torch.float32).reshape(ncb, k, d)


def pq_storage_bits(rows: int, cols: int, d: int, k: int, shared: bool) -> dict[str, int]:
    """Raw (not entropy-coded) PQ storage of one layer, METHODS.md C:

    ``codes = rows * M * ceil(log2 k)``, ``codebooks = 32 * k * d * (1 if shared else M)`` bits,
    with ``M = ceil(cols / d)``. A sparse index for a mask is extra.
    """
    M = -(-cols // d)
    bits = max(1, math.ceil(math.log2(k))) if k > 1 else 1
    return {"codes": rows * M * bits, "codebooks": 32 * k * d * (1 if shared else M)}


# ---------------------------------------------------------------------------------------------
# Fair timing: PQ vs scalar k-means, same engine, same iterations


def cluster_time(w: Tensor, *, d: int, k: int = 256, k_scalar: int | None = None, niter: int = 20,
                 mask: Tensor | None = None, shared: bool = False, pad: bool = False, seed: int = 0,
                 repeats: int = 3) -> dict[str, float]:
    """Wall-clock of PQ clustering vs scalar k-means of the same weights, same engine and iterations.

    Both run :func:`faiss_kmeans` (faiss, ``niter`` Lloyd iterations, no sub-sampling) followed
    by one nearest-centroid search with a faiss flat index, on the kept entries only:

    * PQ: the kept sub-vectors (``d``-dimensional), one k-means per sub-space (or one shared);
    * scalar (Deep Compression): the kept weights as 1-D points, ``k_scalar`` centroids
      (default ``k``: the same code width, e.g. 8-bit codes for both).

    Returns medians over ``repeats``: ``{"pq_seconds", "scalar_seconds", "speedup"
    (= scalar / pq), "pq_points", "scalar_points", "k", "k_scalar", "niter", "d"}``.
    """
    import faiss

    wm = matrix_view(w.detach().cpu().to(torch.float32))
    rows, cols = wm.shape
    sub = to_subvectors(wm, d, pad)                                       # (rows, M, d)
    M = sub.shape[1]
    if mask is None:
        used = torch.ones(rows, M, dtype=torch.bool)
        scalar_pts = wm.reshape(-1, 1)
    else:
        msub = to_subvectors(mask.detach().cpu().to(torch.float32).reshape(rows, cols), d, pad)
        used = msub.amax(-1) > 0
        sub = sub * msub
        scalar_pts = wm.reshape(-1)[mask.reshape(-1) != 0].reshape(-1, 1)
    groups = [slice(None)] if shared else [slice(m, m + 1) for m in range(M)]
    pq_sets = [np.ascontiguousarray(sub[:, g][used[:, g]].numpy(), dtype=np.float32) for g in groups]
    pq_sets = [p for p in pq_sets if p.shape[0] > 0]
    xs = np.ascontiguousarray(scalar_pts.numpy(), dtype=np.float32)
    ks = int(k_scalar or k)

    def run(points: list[np.ndarray], kk: int) -> float:
        t0 = time.perf_counter()
        for i, p in enumerate(points):
            kc = min(kk, p.shape[0])
            c = faiss_kmeans(p, kc, niter, seed + i)
            index = faiss.IndexFlatL2(p.shape[1])
            index.add(c)
            index.search(p, 1)
        return time.perf_counter() - t0

    t_pq, t_sc = [], []
    for _ in range(max(1, int(repeats))):
        t_pq.append(run(pq_sets, int(k)))
        t_sc.append(run([xs], ks))
    pq_s, sc_s = float(np.median(t_pq)), float(np.median(t_sc))
    return {"pq_seconds": pq_s, "scalar_seconds": sc_s, "speedup": sc_s / pq_s if pq_s > 0 else float("inf"),
            "pq_points": int(sum(p.shape[0] for p in pq_sets)), "scalar_points": int(xs.shape[0]),
            "k": int(k), "k_scalar": ks, "niter": int(niter), "d": int(d), "shared": bool(shared)}
