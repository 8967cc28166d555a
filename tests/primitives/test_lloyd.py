"""Batched exact Lloyd (weightzip.primitives.lloyd) against a slow reference, and PQ with it."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from weightzip.primitives import pq
from weightzip.primitives.lloyd import init_centroids, lloyd_groups, sample_groups


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


# ---------------------------------------------------------------------------------------------
# Sampled training (sample_per_centroid): Lloyd on a seeded sample, then one update on all points

# inertia(sampled, 64 per centroid) / inertia(exact Lloyd), measured: 1.004-1.018 on the six
# tensors below, 1.012-1.028 on 24 such tensors (Gaussian / Laplace, 6 seeds, 16 centroids,
# 4-8x more points than the sample), 1.017-1.032 on codebooks of 30,522-100,000 points with k = 256
SAMPLED_INERTIA_TOL = 1.035


def test_sampled_equals_lloyd_on_the_sample_then_one_full_update():
    """A group of more than s*k points: the reference Lloyd on its sample (same initial
    centroids), then one reference update + assignment on all points; smaller groups as exact."""
    pts, offs = ragged([2000, 90, 0, 600], 3, seed=2)
    ks = np.array([8, 9, 0, 40])
    s = 16                                             # groups 0 (2000 > 128) sampled, 1 and 3 not
    init = init_centroids(pts, offs, ks, seed=11)
    sampled, idx = sample_groups(offs, ks, s, seed=11)
    assert sampled.tolist() == [True, False, False, False] and len(idx) == s * 8
    assert len(np.unique(idx)) == len(idx) and (np.diff(idx) > 0).all() and idx.max() < offs[1]
    cents, codes, iters = lloyd_groups(pts, offs, ks, niter=20, seed=11, sample_per_centroid=s)
    exact = lloyd_groups(pts, offs, ks, niter=20, seed=11)
    x = pts[offs[0]:offs[1]]
    cs, _, sdone = reference_lloyd(pts[idx], init[0, :8], 20)
    rc, rcodes, rdone = reference_lloyd(x, cs, 1)
    np.testing.assert_allclose(cents[0, :8], rc, rtol=1e-5, atol=1e-7)
    assert np.mean(codes[offs[0]:offs[1]] == rcodes) >= 0.99
    assert iters[0] == sdone + rdone and rdone == 1
    for g in (1, 3):                                   # not sampled: exact Lloyd, bit for bit
        sl = slice(offs[g], offs[g + 1])
        np.testing.assert_array_equal(cents[g], exact[0][g])
        np.testing.assert_array_equal(codes[sl], exact[1][sl])
        assert iters[g] == exact[2][g]


def test_sampling_off_or_never_triggered_is_exact_bit_for_bit():
    pts, offs = ragged([500, 64, 0, 300], 4, seed=6)
    ks = np.array([16, 8, 0, 30])
    exact = lloyd_groups(pts, offs, ks, niter=25, seed=1)
    for s in (None, 0, 32):                            # 32 * 16 = 512 > 500: no group sampled
        for threads in (1, 2):
            got = lloyd_groups(pts, offs, ks, niter=25, seed=1, sample_per_centroid=s, threads=threads)
            for a, b in zip(exact, got):
                np.testing.assert_array_equal(a, b)
    w = torch.from_numpy(pts[:480].reshape(96, 20))
    a = pq.pq_quantize(w, 4, 16, sample_per_centroid=None, seed=3)
    b = pq.pq_quantize(w, 4, 16, seed=3)               # default 64 per centroid: 96 rows, not sampled
    assert torch.equal(a.codes, b.codes) and torch.equal(a.codebooks, b.codebooks)


def test_sampled_split_across_threads_gives_the_same_result():
    pts, offs = ragged([1200, 7, 3000, 0, 64, 900], 3, seed=5)
    ks = np.array([20, 7, 30, 0, 8, 12])
    one = lloyd_groups(pts, offs, ks, niter=15, seed=4, sample_per_centroid=8)
    assert sample_groups(offs, ks, 8, 4)[0].tolist() == [True, False, True, False, False, True]
    for threads in (2, 3, 8):
        many = lloyd_groups(pts, offs, ks, niter=15, seed=4, threads=threads, sample_per_centroid=8)
        for a, b in zip(one, many):
            np.testing.assert_array_equal(a, b)
    again = lloyd_groups(pts, offs, ks, niter=15, seed=4, sample_per_centroid=8)   # deterministic
    for a, b in zip(one, again):
        np.testing.assert_array_equal(a, b)
    other = lloyd_groups(pts, offs, ks, niter=15, seed=5, sample_per_centroid=8)
    assert not np.array_equal(one[0], other[0])


@pytest.mark.parametrize("dist", ["gauss", "laplace"])
@pytest.mark.parametrize("mask_mode", [None, "element", "subvector"])
def test_sampled_pq_inertia_within_tolerance_of_exact(dist, mask_mode):
    """4096 rows, k = 16, 64 per centroid: every sub-space (4096 > 1024 points) is trained on a
    quarter of its points; the inertia stays within SAMPLED_INERTIA_TOL of exact Lloyd's, and the
    codes are the nearest centroids (kept entries only under a mask)."""
    g = torch.Generator().manual_seed(1)
    shape = (4096, 32)
    w = (torch.randn(shape, generator=g) if dist == "gauss"
         else torch.empty(shape).exponential_(generator=g) * torch.where(torch.rand(shape, generator=g) < 0.5, -1, 1))
    w = w * 0.02
    mask = None if mask_mode is None else (torch.rand(shape, generator=g) > 0.2).float()
    kw = dict(mask=mask, mask_mode=mask_mode or "element", niter=25, seed=2)
    exact = pq.pq_quantize(w, 4, 16, sample_per_centroid=None, **kw)
    samp = pq.pq_quantize(w, 4, 16, sample_per_centroid=64, **kw)
    assert samp.codes.shape == exact.codes.shape and samp.codebooks.shape == exact.codebooks.shape
    assert exact.inertia <= samp.inertia <= SAMPLED_INERTIA_TOL * exact.inertia
    rec = samp.reconstruct(w.shape)
    keep = torch.ones_like(w) if samp.mask is None else samp.mask
    assert float((((w - rec) * keep).double() ** 2).sum()) == pytest.approx(samp.inertia, rel=1e-6)
    sub = pq.to_subvectors(w if mask is None else w * mask, 4)     # the points clustered
    msub = pq.to_subvectors(keep, 4)                                 # the entries measured
    used = msub.amax(-1) > 0
    off = 0 if samp.zero_code is None else 1
    near = pq.pq_assign(sub, samp.codebooks[:, off:], None if mask is None else msub) + off
    dist_to = lambda c: ((msub * (sub - samp.codebooks[torch.arange(8), c])) ** 2).sum(-1)  # noqa: E731
    torch.testing.assert_close(dist_to(samp.codes)[used], dist_to(near)[used], rtol=1e-5, atol=1e-12)
    if mask_mode == "subvector":
        assert (rec[samp.mask == 0] == 0).all()


def test_bad_sample_per_centroid_is_refused():
    pts, offs = ragged([100], 2)
    w = torch.randn(64, 8)
    for bad in (-1, 1.5, True, "64"):
        with pytest.raises(ValueError, match="sample_per_centroid"):
            lloyd_groups(pts, offs, np.array([4]), niter=5, sample_per_centroid=bad)
        with pytest.raises(ValueError, match="sample_per_centroid"):
            pq.pq_quantize(w, 4, 8, sample_per_centroid=bad)
