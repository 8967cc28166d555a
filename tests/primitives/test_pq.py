"""Product quantization primitives against direct (loop) references."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from weightzip.primitives.pq import (cap_k, centroid_counts, cluster_time, from_subvectors, matrix_view,
                                     num_subspaces, pq_assign, pq_quantize, pq_reconstruct, pq_storage_bits,
                                     to_subvectors)


def ref_reconstruct(codes, codebooks, cols):
    """W'[r, m*d + t] = C[m or 0][codes[r, m], t], written as loops."""
    rows, M = codes.shape
    ncb, k, d = codebooks.shape
    out = torch.zeros(rows, M * d)
    for r in range(rows):
        for m in range(M):
            c = codebooks[0 if ncb == 1 else m][codes[r, m]]
            for t in range(d):
                out[r, m * d + t] = c[t]
    return out[:, :cols]


def ref_assign(sub, codebooks, mask=None):
    rows, M, d = sub.shape
    codes = torch.zeros(rows, M, dtype=torch.int64)
    for r in range(rows):
        for m in range(M):
            cb = codebooks[0 if codebooks.shape[0] == 1 else m].double()
            x = sub[r, m].double()
            w = torch.ones(d, dtype=torch.float64) if mask is None else mask[r, m].double()
            dist = [float((w * (x - cb[j]) ** 2).sum()) for j in range(cb.shape[0])]
            codes[r, m] = min(range(len(dist)), key=lambda j: (dist[j], j))
    return codes


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("rows,cols,d,k", [(5, 12, 4, 3), (7, 10, 4, 5), (3, 9, 9, 2)])
def test_reconstruct_matches_loop_reference(shared, rows, cols, d, k):
    g = torch.Generator().manual_seed(rows * cols)
    M = math.ceil(cols / d)
    cbs = torch.randn(1 if shared else M, k, d, generator=g)
    codes = torch.randint(0, k, (rows, M), generator=g)
    assert torch.equal(pq_reconstruct(codes, cbs, cols), ref_reconstruct(codes, cbs, cols))
    mask = (torch.rand(rows, cols, generator=g) > 0.5).float()
    assert torch.equal(pq_reconstruct(codes, cbs, cols, mask), ref_reconstruct(codes, cbs, cols) * mask)


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("shared", [False, True])
def test_assign_is_the_nearest_centroid(masked, shared):
    g = torch.Generator().manual_seed(1)
    sub = torch.randn(9, 4, 3, generator=g)
    cbs = torch.randn(1 if shared else 4, 6, 3, generator=g)
    mask = (torch.rand(9, 4, 3, generator=g) > 0.4).float() if masked else None
    assert torch.equal(pq_assign(sub, cbs, mask), ref_assign(sub, cbs, mask))
    # chunking over sub-spaces gives the same answer
    assert torch.equal(pq_assign(sub, cbs, mask, chunk_elems=1), ref_assign(sub, cbs, mask))


@settings(max_examples=25, deadline=None)
@given(rows=st.integers(1, 6), cols=st.integers(1, 20), d=st.integers(1, 8))
def test_subvector_view_roundtrip(rows, cols, d):
    w = torch.arange(rows * cols, dtype=torch.float32).reshape(rows, cols)
    sub = to_subvectors(w, d, pad=True)
    assert sub.shape == (rows, math.ceil(cols / d), d)
    assert torch.equal(from_subvectors(sub, cols), w)
    assert sub[:, 0, 0].tolist() == w[:, 0].tolist()


def test_geometry_errors_name_the_fix():
    with pytest.raises(ValueError, match=r"d=5 does not divide the 12 columns.*\[1, 2, 3, 4, 6, 12\].*pad"):
        num_subspaces(12, 5)
    assert num_subspaces(12, 5, pad=True) == 3
    with pytest.raises(ValueError, match="exceeds"):
        num_subspaces(4, 8)
    with pytest.raises(ValueError, match="k >= 2"):
        cap_k(1, 100)
    with pytest.raises(ValueError, match="k >= 2"):
        pq_quantize(torch.randn(4, 8), 4, 1)
    with pytest.raises(ValueError, match="does not divide"):
        pq_quantize(torch.randn(4, 10), 4, 4)
    with pytest.raises(ValueError, match="NaN"):
        pq_quantize(torch.tensor([[float("nan"), 1.0]]), 2, 2)
    assert matrix_view(torch.zeros(3, 2, 5, 5)).shape == (3, 50)


@pytest.mark.parametrize("shared", [False, True])
def test_quantize_codes_are_nearest_and_reconstruct(shared):
    torch.manual_seed(0)
    w = torch.randn(40, 3, 3, 3)                                   # conv: cols = 27, d = 9 -> M = 3
    res = pq_quantize(w, 9, 8, shared=shared, niter=10)
    assert res.codes.shape == (40, 3) and res.codebooks.shape == (1 if shared else 3, 8, 9)
    assert res.codes.dtype == torch.int64
    sub = to_subvectors(matrix_view(w), 9)
    assert torch.equal(res.codes, ref_assign(sub, res.codebooks))
    rec = res.reconstruct(w.shape)
    assert rec.shape == w.shape
    assert torch.equal(rec.reshape(40, 27), ref_reconstruct(res.codes, res.codebooks, 27))
    assert res.inertia == pytest.approx(float(((w - rec) ** 2).sum()), rel=1e-5)
    # every sub-vector is reconstructed by one of the codebook's centroids
    assert res.inertia < float((w ** 2).sum())


def test_k_is_capped_for_tiny_layers():
    w = torch.randn(5, 8)
    assert pq_quantize(w, 4, 256).k_eff == 5                       # 5 sub-vectors per sub-space
    assert pq_quantize(w, 4, 256, shared=True).k_eff == 10         # 5 rows x 2 sub-spaces
    res = pq_quantize(w, 4, 256)
    assert res.inertia == pytest.approx(0.0, abs=1e-10)            # as many centroids as points: exact
    assert pq_quantize(torch.randn(300, 8), 4, 16).k_eff == 16


def test_padding_covers_the_columns():
    torch.manual_seed(1)
    w = torch.randn(20, 10)
    res = pq_quantize(w, 4, 6, pad=True, niter=5)
    assert res.M == 3 and res.matrix_shape == (20, 10)
    rec = res.reconstruct()
    assert rec.shape == (20, 10)
    assert torch.equal(rec, ref_reconstruct(res.codes, res.codebooks, 10))


@pytest.mark.parametrize("shared", [False, True])
def test_masked_pq_keeps_pruned_zeros(shared):
    torch.manual_seed(2)
    mask = (torch.rand(30, 16) > 0.6).float()
    mask[0] = 0                                                    # a fully pruned row
    w = torch.randn(30, 16) * mask
    res = pq_quantize(w, 4, 8, mask=mask, shared=shared, niter=10)
    rec = res.reconstruct(w.shape)
    assert torch.all(rec[mask == 0] == 0)
    assert torch.equal(res.mask, mask)
    # codes minimize the error on kept entries only
    sub = to_subvectors(w, 4)
    msub = to_subvectors(mask, 4)
    used = msub.amax(-1) > 0
    assert torch.equal(res.codes[used], ref_assign(sub, res.codebooks, msub)[used])
    # dropped sub-vectors share one code (cheap to entropy-code)
    assert res.codes[~used].unique().numel() == (1 if shared else res.codes[~used].unique().numel())
    for m in range(4):
        assert res.codes[~used[:, m], m].unique().numel() <= 1


def test_masked_refinement_does_not_increase_the_masked_error():
    torch.manual_seed(3)
    mask = (torch.rand(60, 16) > 0.5).float()
    w = torch.randn(60, 16) * mask
    base = pq_quantize(w, 4, 8, mask=mask, shared=True, niter=5, seed=1)
    ref = pq_quantize(w, 4, 8, mask=mask, shared=True, niter=5, seed=1, refine_iters=4)
    assert ref.inertia <= base.inertia * (1 + 1e-6)


def test_subvector_mask_mode_reserves_an_exact_zero_code():
    torch.manual_seed(4)
    mask = torch.zeros(20, 12)
    mask[:, :4] = (torch.rand(20, 4) > 0.3).float()               # sub-space 0 partly kept, 1-2 pruned
    w = torch.randn(20, 12) * mask
    res = pq_quantize(w, 4, 8, mask=mask, mask_mode="subvector", shared=True, niter=5)
    assert res.zero_code == 0
    assert torch.all(res.codebooks[:, 0] == 0)
    rec_nomask = pq_reconstruct(res.codes, res.codebooks, 12)
    eff = res.reconstruct()
    # no mask is needed: the codes alone give exact zeros where the coarsened mask is zero
    assert torch.equal(rec_nomask, eff)
    assert torch.all(eff[:, 4:] == 0)
    used = to_subvectors(mask, 4).amax(-1) > 0
    assert torch.all(res.codes[~used] == 0) and torch.all(res.codes[used] != 0)
    assert torch.equal(res.mask, used.repeat_interleave(4, dim=1).float())


def test_centroid_counts_and_storage_bits():
    codes = torch.tensor([[0, 1], [0, 0], [2, 1]])
    assert centroid_counts(codes, 1, 3).tolist() == [[3.0, 2.0, 1.0]]
    assert centroid_counts(codes, 2, 3).tolist() == [[2.0, 0.0, 1.0], [1.0, 2.0, 0.0]]
    used = torch.tensor([[True, False], [True, True], [False, True]])
    assert centroid_counts(codes, 2, 3, used).tolist() == [[2.0, 0.0, 0.0], [1.0, 1.0, 0.0]]
    bits = pq_storage_bits(300, 784, 4, 256, shared=False)
    assert bits == {"codes": 300 * 196 * 8, "codebooks": 32 * 256 * 784}
    assert pq_storage_bits(300, 784, 4, 256, shared=True)["codebooks"] == 32 * 256 * 4


def test_cluster_time_uses_same_engine_and_iterations():
    torch.manual_seed(5)
    w = torch.randn(64, 32)
    mask = (torch.rand(64, 32) > 0.5).float()
    out = cluster_time(w, d=4, k=16, niter=3, mask=mask, shared=True, repeats=1)
    assert out["pq_seconds"] > 0 and out["scalar_seconds"] > 0
    assert out["niter"] == 3 and out["k"] == out["k_scalar"] == 16
    assert out["scalar_points"] == int(mask.sum())
    assert out["pq_points"] == int((to_subvectors(mask, 4).amax(-1) > 0).sum())
    assert out["speedup"] == pytest.approx(out["scalar_seconds"] / out["pq_seconds"])
