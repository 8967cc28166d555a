"""Batched exact Lloyd (weightzip.primitives.lloyd) against a slow reference, and PQ with it."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from weightzip.primitives import pq
from weightzip.primitives.lloyd import init_centroids, lloyd_groups


def reference_lloyd(x: np.ndarray, c0: np.ndarray, niter: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Plain Lloyd on one group, written out: assign (float32 distances summed coordinate by
    coordinate, ties to the lowest index), update (float64 means; an empty centroid stays),
    stop after ``niter`` updates or at a fixed point; then the final assignment."""
    c = c0.astype(np.float32).copy()

    def assign(c):
        dist = np.zeros((len(x), len(c)), dtype=np.float32)
        for t in range(x.shape[1]):
            u = x[:, t:t + 1] - c[None, :, t]
            dist += u * u
        return dist.argmin(1)

    codes, done = assign(c), 0
    while done < niter:
        sums = np.zeros(c.shape, dtype=np.float64)
        np.add.at(sums, codes, x.astype(np.float64))
        counts = np.bincount(codes, minlength=len(c))
        keep = counts > 0
        c[keep] = (sums[keep] / counts[keep, None]).astype(np.float32)
        done += 1
        new = assign(c)
        if np.array_equal(new, codes):
            break
        codes = new
    return c, codes, done


def ragged(sizes, d, seed=0):
    rng = np.random.default_rng(seed)
    pts = rng.standard_normal((sum(sizes), d)).astype(np.float32) * 0.05
    offs = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    return pts, offs


@pytest.mark.parametrize("d", [1, 4, 9])
def test_equals_reference_per_group(d):
    sizes = [300, 0, 17, 64, 5]
    pts, offs = ragged(sizes, d, seed=d)
    ks = np.array([32, 0, 17, 10, 3])
    init = init_centroids(pts, offs, ks, seed=7)
    cents, codes, iters = lloyd_groups(pts, offs, ks, niter=25, seed=7)
    for g, (n, k) in enumerate(zip(sizes, ks)):
        if n == 0:
            assert iters[g] == 0
            continue
        x = pts[offs[g]:offs[g + 1]]
        rc, rcodes, rdone = reference_lloyd(x, init[g, :k], 25)
        np.testing.assert_allclose(cents[g, :k], rc, rtol=1e-5, atol=1e-7)
        assert np.mean(codes[offs[g]:offs[g + 1]] == rcodes) >= 0.99
        assert iters[g] == rdone <= 25


def test_codes_are_nearest_to_final_centroids_and_a_fixed_point():
    pts, offs = ragged([500, 200], 4, seed=1)
    ks = np.array([16, 8])
    cents, codes, iters = lloyd_groups(pts, offs, ks, niter=100)
    assert (iters < 100).all()            # converged: stopped at a fixed point
    for g in range(2):
        x, c = pts[offs[g]:offs[g + 1]], cents[g, :ks[g]]
        dist = ((x[:, None, :] - c[None]) ** 2).sum(-1)
        assert np.allclose(dist[np.arange(len(x)), codes[offs[g]:offs[g + 1]]], dist.min(1), rtol=1e-5)
    # more iterations from the fixed point change nothing
    again, codes2, it2 = lloyd_groups(pts, offs, ks, niter=5, init=cents)
    np.testing.assert_array_equal(codes2, codes)
    np.testing.assert_allclose(again, cents, rtol=1e-6)
    assert (it2 == 1).all()


def test_bad_input_is_refused():
    pts, offs = ragged([10], 2)
    with pytest.raises(ValueError, match="k=11"):
        lloyd_groups(pts, offs, np.array([11]), niter=5)
    with pytest.raises(ValueError, match="offs"):
        lloyd_groups(pts, np.array([0, 5]), np.array([2]), niter=5)
    with pytest.raises(ValueError, match="niter"):
        lloyd_groups(pts, offs, np.array([2]), niter=0)


@pytest.mark.parametrize("mask_mode", [None, "element", "subvector"])
def test_pq_lloyd_inertia_close_to_faiss(mask_mode):
    """Same data, same k and iterations: the batched Lloyd's inertia is within 3% of faiss's
    (different random initial points), and the codes reconstruct to that inertia."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(96, 64, generator=g) * 0.02
    mask = None if mask_mode is None else (torch.rand(96, 64, generator=g) > 0.3).float()
    kw = dict(mask=mask, mask_mode=mask_mode or "element", niter=25, seed=3)
    a = pq.pq_quantize(w, 4, 16, engine="faiss", **kw)
    b = pq.pq_quantize(w, 4, 16, engine="lloyd", **kw)
    assert b.codebooks.shape == a.codebooks.shape and b.codes.shape == a.codes.shape
    assert b.inertia <= 1.03 * a.inertia
    rec = b.reconstruct(w.shape)
    keep = torch.ones_like(w) if b.mask is None else b.mask
    assert float((((w - rec) * keep).double() ** 2).sum()) == pytest.approx(b.inertia, rel=1e-6)
    if mask_mode == "subvector":
        assert (rec[b.mask == 0] == 0).all()


def test_pq_auto_engine_uses_faiss_for_a_shared_codebook():
    w = torch.randn(64, 32, generator=torch.Generator().manual_seed(1))
    auto = pq.pq_quantize(w, 8, 16, shared=True, engine="auto", seed=2)
    fa = pq.pq_quantize(w, 8, 16, shared=True, engine="faiss", seed=2)
    torch.testing.assert_close(auto.codebooks, fa.codebooks)
    assert torch.equal(auto.codes, fa.codes)
    with pytest.raises(ValueError, match="engine"):
        pq.pq_quantize(w, 8, 16, engine="kmeans++")


def test_split_across_threads_gives_the_same_result():
    pts, offs = ragged([120, 7, 300, 0, 64, 90], 3, seed=5)
    ks = np.array([20, 7, 30, 0, 8, 12])
    one = lloyd_groups(pts, offs, ks, niter=15, seed=4)
    for threads in (2, 3, 8):
        many = lloyd_groups(pts, offs, ks, niter=15, seed=4, threads=threads)
        for a, b in zip(one, many):
            np.testing.assert_array_equal(a, b)
