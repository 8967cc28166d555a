"""CSR layers equal the dense layers; the sparse converters pick sparse-enough layers only."""
import pytest
import torch
from torch import nn

from weightzip.runtime.sparse import FusedSparseMLP, SparseLinear, fuse_sequential, sparse_linear_converter


def _sparse_linear(i, o, density, seed):
    g = torch.Generator().manual_seed(seed)
    lin = nn.Linear(i, o)
    with torch.no_grad():
        lin.weight.mul_((torch.rand(o, i, generator=g) < density).float())
    return lin


@pytest.mark.parametrize("batch", [1, 3, 17])
@pytest.mark.parametrize("density", [0.0, 0.05, 0.3, 1.0])
def test_sparse_linear_equals_dense(batch, density):
    lin = _sparse_linear(37, 11, density, seed=batch)
    x = torch.randn(batch, 37)
    with torch.inference_mode():
        assert torch.allclose(SparseLinear(lin.weight, lin.bias)(x), lin(x), atol=1e-5)


def test_sparse_linear_without_bias_and_leading_dims():
    lin = _sparse_linear(9, 5, 0.3, seed=4)
    lin.bias = None
    layer = SparseLinear(lin.weight, None)
    assert layer.nnz == int((lin.weight != 0).sum())
    x = torch.randn(2, 3, 9)
    with torch.inference_mode():
        assert torch.allclose(layer(x), lin(x), atol=1e-5)


@pytest.mark.parametrize("batch", [1, 4])
def test_fused_mlp_equals_dense_stack(batch):
    seq = nn.Sequential(_sparse_linear(20, 16, 0.2, 0), nn.ReLU(), _sparse_linear(16, 9, 0.3, 1), nn.ReLU(),
                        nn.Dropout(0.5), _sparse_linear(9, 4, 0.5, 2)).eval()
    fused = FusedSparseMLP([seq[0], seq[2], seq[5]], [True, True, False])
    x = torch.randn(batch, 20)
    with torch.inference_mode():
        assert torch.allclose(fused(x), seq(x), atol=1e-5)


def test_converters_take_sparse_layers_in_sparse_and_auto_modes_only():
    sparse, dense = _sparse_linear(12, 8, 0.1, 0), _sparse_linear(12, 8, 1.0, 1)
    assert isinstance(sparse_linear_converter(sparse, "fc", {}, "sparse"), SparseLinear)
    assert isinstance(sparse_linear_converter(sparse, "fc", {}, "auto"), SparseLinear)
    assert sparse_linear_converter(sparse, "fc", {}, "lut") is None
    assert sparse_linear_converter(dense, "fc", {}, "sparse") is None           # density > 0.5
    stack = nn.Sequential(sparse, nn.ReLU(), _sparse_linear(8, 3, 0.1, 2))
    assert isinstance(fuse_sequential(stack, "s", {}, "sparse"), FusedSparseMLP)
    assert fuse_sequential(stack, "s", {}, "lut") is None
    assert fuse_sequential(nn.Sequential(dense, nn.ReLU(), _sparse_linear(8, 3, 0.1, 2)), "s", {}, "sparse") is None
    assert fuse_sequential(nn.Sequential(sparse, nn.Tanh(), _sparse_linear(8, 3, 0.1, 2)), "s", {}, "sparse") is None
    assert fuse_sequential(nn.Sequential(sparse), "s", {}, "sparse") is None     # one layer: SparseLinear does it
