import pytest
import torch
from torch import nn

from weightzip.runtime.layers import FusedSparseMLP, SparseLinear, convert


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


@pytest.mark.parametrize("batch", [1, 4])
def test_fused_mlp_equals_dense_stack(batch):
    seq = nn.Sequential(_sparse_linear(20, 16, 0.2, 0), nn.ReLU(), _sparse_linear(16, 9, 0.3, 1), nn.ReLU(),
                        nn.Dropout(0.5), _sparse_linear(9, 4, 0.5, 2)).eval()
    fused = FusedSparseMLP([seq[0], seq[2], seq[5]], [True, True, False])
    x = torch.randn(batch, 20)
    with torch.inference_mode():
        assert torch.allclose(fused(x), seq(x), atol=1e-5)


def test_convert_swaps_sparse_stack_and_keeps_dense_layers():
    model = nn.Sequential(nn.Flatten(), nn.Sequential(_sparse_linear(12, 8, 0.1, 0), nn.ReLU(),
                                                      _sparse_linear(8, 3, 0.1, 1)), nn.Linear(3, 2)).eval()
    x = torch.randn(1, 3, 4)
    with torch.inference_mode():
        ref = model(x)
        convert(model, {}, "sparse")
        assert isinstance(model[1], FusedSparseMLP)
        assert type(model[2]) is nn.Linear  # dense layer: left alone
        assert torch.allclose(model(x), ref, atol=1e-5)
