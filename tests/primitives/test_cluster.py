"""Scalar k-means: initializations, exact 1-D assignment, engines agree with scikit-learn."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.cluster import KMeans

from weightzip.primitives.cluster import (
    assign_1d,
    centroid_gradient,
    init_centroids,
    kmeans_1d,
    reconstruct,
    share_weights,
)


def weights(n=3000, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, generator=g) * 0.05  # bell-shaped like trained weights


def test_linear_init_spans_min_max_evenly():
    x = weights()
    c = init_centroids(x, 8, "linear")
    assert torch.allclose(c, torch.linspace(float(x.min()), float(x.max()), 8))


def test_density_init_is_quantiles_and_random_init_draws_values():
    x = weights()
    c = init_centroids(x, 4, "density")
    ref = np.quantile(x.double().numpy(), [0.125, 0.375, 0.625, 0.875])
    assert np.allclose(c.numpy(), ref, atol=1e-6)
    r = init_centroids(x, 5, "random", seed=3)
    assert all(bool((x == v).any()) for v in r)
    assert torch.equal(r, init_centroids(x, 5, "random", seed=3))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(-10, 10, allow_nan=False, width=32), min_size=1, max_size=40),
       st.lists(st.floats(-10, 10, allow_nan=False, width=32), min_size=1, max_size=8))
def test_assign_1d_is_brute_force_argmin(xs, cs):
    x, c = torch.tensor(xs), torch.tensor(cs)
    codes = assign_1d(x, c)
    dist = (x[:, None] - c[None, :]).abs()  # (n x k)
    # the chosen centroid is at the brute-force minimum distance (when distinct centroids round
    # to the same float distance, e.g. 1e-38 and 1e-45 seen from 1.0, either is a minimum)
    assert torch.equal(dist.gather(1, codes[:, None])[:, 0], dist.min(dim=1).values)


def test_assign_1d_ties_go_to_the_lowest_index():
    assert assign_1d(torch.tensor([0.5]), torch.tensor([1.0, 0.0])).item() == 0
    assert assign_1d(torch.tensor([0.5]), torch.tensor([0.0, 1.0])).item() == 0
    assert assign_1d(torch.tensor([1.0, -3.0]), torch.tensor([0.0, 0.0, 0.0])).tolist() == [0, 0]
    assert assign_1d(torch.tensor([0.0]), torch.tensor([1.0, 0.0, 0.0])).item() == 1
    x = torch.randn(500, generator=torch.Generator().manual_seed(0))
    c = torch.tensor([-1.0, 0.0, 0.0, 1.0, -1.0])
    assert torch.equal(assign_1d(x, c), (x[:, None] - c[None, :]).abs().argmin(dim=1))


@pytest.mark.parametrize("init", ["linear", "density"])
def test_torch_engine_equals_sklearn_with_same_init(init):
    x = weights(4000, seed=1)
    c0 = init_centroids(x, 16, init)
    ours = kmeans_1d(x, init=c0, engine="torch", tol=0.0, max_iter=500)
    ref = KMeans(n_clusters=16, init=c0.double().numpy()[:, None], n_init=1, tol=0.0, max_iter=500,
                 algorithm="lloyd").fit(x.double().numpy()[:, None])
    assert np.array_equal(ours.codes_.numpy(), ref.labels_)
    assert np.allclose(ours.centroids_.numpy(), ref.cluster_centers_[:, 0], atol=1e-6)
    assert ours.inertia_ == pytest.approx(ref.inertia_, rel=1e-5)


def test_all_engines_agree():
    x = weights(3000, seed=2)
    res = {e: kmeans_1d(x, 8, init="linear", engine=e, tol=0.0, max_iter=500)
           for e in ("torch", "sklearn", "faiss")}
    for e in ("sklearn", "faiss"):
        assert torch.allclose(res[e].centroids_, res["torch"].centroids_, atol=1e-5), e
        agree = (res[e].codes_ == res["torch"].codes_).float().mean()
        assert agree >= 0.999, (e, agree)


def test_lloyd_decreases_inertia_versus_init():
    x = weights(2000, seed=4)
    c0 = init_centroids(x, 8, "linear")
    before = float(((x - c0[assign_1d(x, c0)]) ** 2).sum())
    assert kmeans_1d(x, 8).inertia_ < before


def test_few_distinct_values_are_exact():
    x = torch.tensor([0.5, -0.5, 0.5, 0.25])
    r = kmeans_1d(x, 8)
    assert r.centroids_.numel() == 3
    assert torch.equal(r.centroids_[r.codes_], x)


def test_share_weights_keeps_pruned_zeros_and_reconstructs():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(20, 30, generator=g)
    mask = (w.abs() > 0.8).float()
    c, codes, m, res = share_weights(w * mask, 3, mask)
    assert c.numel() == 8 and codes.shape == w.shape
    wq = reconstruct(c, codes, m)
    assert torch.all(wq[mask == 0] == 0)
    # every kept weight maps to its nearest centroid
    kept = (w * mask)[mask.bool()]
    assert torch.equal(wq[mask.bool()], c[assign_1d(kept, c)])
    # zeros were not clustered: no centroid is needed near 0 for pruned entries
    assert res.codes_.numel() == int(mask.sum())


def test_share_weights_rejects_bad_bits():
    with pytest.raises(ValueError, match="bits >= 1"):
        share_weights(torch.randn(4, 4), 0)


def test_centroid_gradient_matches_autograd():
    g = torch.Generator().manual_seed(0)
    c = torch.randn(4, generator=g).requires_grad_(True)
    codes = torch.randint(0, 4, (6, 5), generator=g)
    mask = (torch.rand(6, 5, generator=g) > 0.3).float()
    up = torch.randn(6, 5, generator=g)
    (reconstruct(c, codes, mask) * up).sum().backward()
    assert torch.allclose(c.grad, centroid_gradient(up, codes, 4, mask), atol=1e-6)


def test_kmeans_rejects_nan_and_empty():
    with pytest.raises(ValueError, match="NaN"):
        kmeans_1d(torch.tensor([0.0, float("nan"), 1.0]), 2)
    with pytest.raises(ValueError, match="empty"):
        kmeans_1d(torch.tensor([]), 2)
    with pytest.raises(ValueError, match="engine"):
        kmeans_1d(weights(100), 4, engine="nope")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-3, 3, allow_nan=False, width=32), min_size=2, max_size=400),
       st.integers(1, 6), st.sampled_from(["linear", "density"]))
def test_sorted_prefix_sum_lloyd_equals_the_dense_reference(xs, bits, init):
    """The O(k log n)-per-iteration engine reaches the centroids of the O(n) reference
    (assign everything, index_add), from the same initial centroids, duplicates included."""
    from weightzip.primitives.cluster import _lloyd_torch, _lloyd_torch_dense, init_centroids

    x = torch.tensor(xs, dtype=torch.float32)
    k = 2 ** bits
    c0 = init_centroids(x, k, init)
    fast, it_fast = _lloyd_torch(x, c0, 300, 1e-4)
    ref, it_ref = _lloyd_torch_dense(x, c0, 300, 1e-4)
    torch.testing.assert_close(fast, ref, rtol=1e-6, atol=1e-7)
    assert abs(it_fast - it_ref) <= 1


@pytest.mark.parametrize("dist", ["normal", "laplace", "pruned"])
def test_fast_engine_gives_the_reference_codes_on_weight_like_tensors(dist):
    from weightzip.primitives.cluster import _lloyd_torch_dense, init_centroids

    g = torch.Generator().manual_seed(3)
    x = torch.randn(200_000, generator=g) * 0.05
    if dist == "laplace":
        x = torch.sign(x) * torch.log1p(x.abs() * 40) / 40
    if dist == "pruned":
        x = x[x.abs() > 0.04]
    r = kmeans_1d(x, 16)
    c_ref, _ = _lloyd_torch_dense(x, init_centroids(x, 16, "linear"), 300, 1e-4)
    torch.testing.assert_close(r.centroids_, c_ref, rtol=1e-6, atol=1e-8)
    codes_ref = assign_1d(x, c_ref)
    assert (r.codes_ != codes_ref).float().mean() < 1e-5


def test_prefix_sums_at_checkpoints_equal_the_full_cumsum(monkeypatch):
    """The prefix sums kept every SUM_STRIDE values give, at any index, the float64 value of the
    sequential cumsum bit for bit (chunk boundaries and a tail included)."""
    from weightzip.primitives import cluster as C

    monkeypatch.setattr(C, "SUM_STRIDE", 64)
    monkeypatch.setattr(C, "ASSIGN_CHUNK", 256)
    g = torch.Generator().manual_seed(4)
    xs = torch.sort(torch.randn(256 * 5 + 77, generator=g) * 1e3).values
    full = torch.zeros(xs.numel() + 1, dtype=torch.float64)
    torch.cumsum(xs.double(), 0, out=full[1:])
    S = C._PrefixSums(xs)
    idx = torch.arange(xs.numel() + 1)
    assert torch.equal(S.at(idx), full) and S.total == float(full[-1])


def test_searchsorted_on_float32_values_is_exact_for_float64_keys():
    from weightzip.primitives.cluster import _searchsorted

    g = torch.Generator().manual_seed(5)
    xs = torch.sort(torch.cat([torch.randn(500, generator=g), torch.tensor([0.5, 0.5, 0.5, -0.0, 0.0, 1.0])])).values
    x64 = xs.double()
    between = (x64[1:] + x64[:-1]) / 2                          # mostly not representable in float32
    nudged = torch.cat([x64 + 1e-12, x64 - 1e-12, x64])         # just above / below / at the values
    keys = torch.cat([between, nudged, torch.tensor([-10.0, 10.0], dtype=torch.float64)])
    for right in (False, True):
        assert torch.equal(_searchsorted(xs, keys, right), torch.searchsorted(x64, keys, right=right))


@pytest.mark.parametrize("mask", [False, True])
def test_narrow_codes_and_the_float32_sorted_copy_give_the_float64_results(mask):
    """uint8 codes are the int64 codes; the engine on the float32 sorted copy reaches the
    centroids of the same engine on a float64 copy (its arithmetic is float64 either way)."""
    from weightzip.primitives.cluster import _lloyd_torch, init_centroids

    g = torch.Generator().manual_seed(6)
    w = torch.randn(300, 500, generator=g) * 0.03
    m = (torch.rand(300, 500, generator=g) > 0.3).float() if mask else None
    c1, codes1, _, r1 = share_weights(w, 4, m)
    c2, codes2, _, r2 = share_weights(w, 4, m, codes_dtype=torch.uint8)
    assert codes2.dtype == torch.uint8 and torch.equal(codes1, codes2.long()) and torch.equal(c1, c2)
    assert r1.inertia_ == r2.inertia_ and r1.n_iter_ == r2.n_iter_
    x = w.reshape(-1)
    c0 = init_centroids(x, 16)
    f32, it32 = _lloyd_torch(x, c0, 300, 1e-4, xs=torch.sort(x).values)
    f64, it64 = _lloyd_torch(x, c0, 300, 1e-4, xs=torch.sort(x.double()).values)
    assert torch.equal(f32, f64) and it32 == it64
    with pytest.raises(ValueError, match="codes_dtype"):
        kmeans_1d(x, 512, codes_dtype=torch.uint8)
