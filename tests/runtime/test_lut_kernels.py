"""The compiled LUT kernels equal plain numpy on small packs."""
import numpy as np
import torch
from torch import nn

from weightzip.runtime.lut_kernels import lut_chain, lut_tables, pack_chain


def test_lut_tables_skip_zero_centroids():
    codes = np.array([[0, 1], [2, 0], [1, 1]])
    cbs = np.array([[[0.0, 0.0], [1.0, 2.0], [3.0, -1.0]]], np.float32)        # shared, centroid 0 is zero
    tabs = lut_tables(codes, cbs)
    assert tabs["cbT"].shape == (1, 2, 3)
    assert tabs["indptr"].tolist() == [0, 1, 2, 4] and tabs["nnz"] == 4
    assert tabs["fidx"].tolist() == [4, 2, 1, 4]                                # m*k + code, zero codes left out


def test_chain_of_a_dense_layer_is_a_relu_matvec():
    torch.manual_seed(0)
    lin = nn.Linear(5, 4)
    x = np.random.default_rng(0).standard_normal(5).astype(np.float32)
    out = lut_chain(x, *pack_chain([lin], [True]))
    ref = np.maximum(lin.weight.detach().numpy() @ x + lin.bias.detach().numpy(), 0)
    assert out.shape == (1, 4)
    np.testing.assert_allclose(out[0], ref, rtol=1e-5, atol=1e-6)
