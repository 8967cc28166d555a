"""Clustering of importance scores (primitives/importance.py)."""
import pytest
import torch

from weightzip.primitives.importance import assign_1d, cluster_importance, kmeans_1d, quantile_threshold


@pytest.mark.parametrize("method", ["kmeans", "quantile"])
def test_clustering_gives_more_bits_to_more_important(method):
    torch.manual_seed(0)
    a = [torch.rand(40, 30) ** 4, torch.rand(30) * 10, torch.rand(10, 40) ** 2]
    ids = cluster_importance(a, 4, method)
    flat_a = torch.cat([t.reshape(-1) for t in a])
    flat_c = torch.cat([t.reshape(-1) for t in ids])
    order = torch.argsort(flat_a, descending=True)
    # cluster ids (0 = most important) never decrease as importance decreases
    assert torch.all(flat_c[order][1:] >= flat_c[order][:-1])
    assert flat_c[order[0]] == 0 and flat_c[order[-1]] == 3
    assert set(flat_c.tolist()) == {0, 1, 2, 3}


def test_quantile_fractions_set_cluster_sizes():
    a = [torch.arange(100, dtype=torch.float32).reshape(10, 10) + 1]
    ids = cluster_importance(a, 3, "quantile", fractions=[0.1, 0.3, 0.6])[0].reshape(-1)
    assert [int((ids == c).sum()) for c in range(3)] == [10, 30, 60]
    assert torch.all(ids[90:] == 0) and torch.all(ids[:60] == 2)


def test_quantile_threshold_counts():
    v = [torch.arange(10.0), torch.arange(10.0, 20.0)]
    assert quantile_threshold(v, 0.5) == 9.0
    assert quantile_threshold(v, 0.875) == 17.0


def test_kmeans_1d_finds_separated_groups_and_assigns_to_the_nearest():
    x = torch.cat([torch.full((50,), -3.0), torch.full((30,), 0.5), torch.full((20,), 4.0)]) + 0.01 * torch.randn(100)
    c = kmeans_1d(x, 3)
    assert torch.all(c[1:] > c[:-1])                                   # sorted ascending
    torch.testing.assert_close(c, torch.tensor([-3.0, 0.5, 4.0], dtype=torch.float64), atol=0.05, rtol=0)
    assert assign_1d(torch.tensor([-2.0, 1.0, 3.0]), c).tolist() == [0, 1, 2]
    assert kmeans_1d(torch.tensor([1.0, 1.0, 2.0]), 3).tolist() == [1.0, 2.0, 2.0]   # fewer values than k


def test_cluster_importance_rejects_bad_arguments():
    with pytest.raises(ValueError, match="at least one cluster"):
        cluster_importance([torch.rand(4)], 0)
    with pytest.raises(ValueError, match="fractions"):
        cluster_importance([torch.rand(4)], 2, "kmeans", fractions=[0.5, 0.5])
    with pytest.raises(ValueError, match="unknown clustering"):
        cluster_importance([torch.rand(4)], 2, "median")
