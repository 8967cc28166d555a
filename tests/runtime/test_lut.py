"""Lookup-table layers equal the decoded dense layers; the converter swaps PQ layers only."""
import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import weightzip as wz
from weightzip.methods.product_quantization import attach_pq
from weightzip.methods.prune import set_mask
from weightzip.runtime.fastest import FastestOf
from weightzip.runtime.lut import FusedLUTMLP, LUTConv2d, LUTLinear, lut_from_parts, pq_lut_converter
from weightzip.runtime.lut_kernels import lut_tables


def random_pq(rows, cols, d, k, shared, seed, zero_frac=0.0):
    """Random codes/codebooks covering ``cols`` columns (padded) and the dense weight they encode."""
    g = torch.Generator().manual_seed(seed)
    M = -(-cols // d)
    cbs = torch.randn(1 if shared else M, k, d, generator=g)
    codes = torch.randint(0, k, (rows, M), generator=g)
    if zero_frac:
        cbs[:, 0] = 0
        codes[torch.rand(rows, M, generator=g) < zero_frac] = 0
    if shared:
        sub = cbs[0][codes]
    else:
        sub = cbs[torch.arange(M).unsqueeze(0), codes]
    return codes, cbs, sub.reshape(rows, -1)[:, :cols].contiguous()


@pytest.mark.parametrize("rows,cols,d,k,shared,zero", [
    (7, 12, 4, 5, False, 0.0), (30, 64, 8, 16, True, 0.5), (5, 10, 4, 3, False, 0.0),   # padded
    (64, 100, 16, 32, True, 0.7), (3, 9, 9, 2, True, 0.0), (40, 50, 5, 256, False, 0.3),
    (20, 1020, 4, 128, True, 0.0),                                 # M*k > 16384: sub-space-major gather
])
@pytest.mark.parametrize("batch", [1, 3, 20])
def test_lut_linear_equals_the_decoded_linear(rows, cols, d, k, shared, zero, batch):
    codes, cbs, W = random_pq(rows, cols, d, k, shared, seed=rows + cols, zero_frac=zero)
    b = torch.randn(rows)
    layer = LUTLinear(codes, cbs, cols, b)
    x = torch.relu(torch.randn(batch, cols))                       # half zeros, as after a ReLU
    ref = x @ W.T + b
    torch.testing.assert_close(layer(x), ref, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(layer._torch_matmul(x), ref, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(layer.dense_weight(), W)
    assert (layer._fidxT is not None) == (layer.M * k > 16384 and zero == 0.0)
    # leading dimensions, no bias
    nob = LUTLinear(codes, cbs, cols, None)
    x3 = torch.randn(2, batch, cols)
    torch.testing.assert_close(nob(x3), x3 @ W.T, rtol=1e-5, atol=1e-4)


def test_lut_linear_autograd_path_and_zero_skipping():
    codes, cbs, W = random_pq(12, 16, 4, 6, True, seed=3, zero_frac=0.5)
    layer = LUTLinear(codes, cbs, 16, torch.zeros(12))
    assert layer.nnz == int((codes != 0).sum())                    # zero centroid: no lookups
    x = torch.randn(4, 16, requires_grad=True)
    layer(x).sum().backward()
    torch.testing.assert_close(x.grad, W.sum(0).expand(4, 16), rtol=1e-5, atol=1e-5)
    tabs = lut_tables(codes.numpy(), cbs.numpy())
    assert tabs["cbT"].shape == (1, 4, 6) and tabs["indptr"][-1] == tabs["nnz"]


@pytest.mark.parametrize("cin,cout,ks,stride,padding,dilation", [
    (3, 8, 3, 1, 1, 1), (4, 6, 3, 2, 0, 1), (2, 5, (3, 5), (2, 1), (1, 2), (2, 1)), (6, 4, 1, 1, 0, 1),
    (5, 7, 5, 3, 2, 1),
])
@pytest.mark.parametrize("batch", [1, 2])
def test_lut_conv_equals_the_decoded_conv(cin, cout, ks, stride, padding, dilation, batch):
    conv = nn.Conv2d(cin, cout, ks, stride, padding, dilation)
    kh, kw = conv.kernel_size
    cols = cin * kh * kw
    d = kh * kw
    codes, cbs, W = random_pq(cout, cols, d, 4, shared=False, seed=cin * cout)
    layer = LUTConv2d(codes, cbs, cin, cout, ks, stride, padding, dilation, conv.bias.detach())
    x = torch.randn(batch, cin, 13, 11)
    ref = F.conv2d(x, W.reshape(cout, cin, kh, kw), conv.bias.detach(), stride, padding, dilation)
    torch.testing.assert_close(layer(x), ref, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(layer(x[0]), ref[0], rtol=1e-5, atol=1e-4)   # unbatched input


def test_lut_conv_with_a_shared_padded_codebook():
    codes, cbs, W = random_pq(6, 27, 4, 8, shared=True, seed=11)  # 27 = 3*3*3 columns, d = 4: padded
    layer = LUTConv2d(codes, cbs, 3, 6, 3, 1, 1, 1, None)
    x = torch.randn(2, 3, 9, 9)
    torch.testing.assert_close(layer(x), F.conv2d(x, W.reshape(6, 3, 3, 3), None, 1, 1), rtol=1e-5, atol=1e-4)


def test_fused_chain_equals_the_dense_stack():
    torch.manual_seed(0)
    c1, cb1, W1 = random_pq(20, 32, 8, 16, True, seed=1, zero_frac=0.4)
    c2, cb2, W2 = random_pq(10, 20, 4, 8, False, seed=2)
    b1, b2 = torch.randn(20), torch.randn(10)
    tail = nn.Linear(10, 3)                                        # a non-PQ layer stays dense inside the chain
    fused = FusedLUTMLP([LUTLinear(c1, cb1, 32, b1), LUTLinear(c2, cb2, 20, b2), tail], [True, True, False])
    for batch in (1, 5):
        x = torch.randn(batch, 32)
        with torch.no_grad():
            ref = tail(torch.relu(torch.relu(x @ W1.T + b1) @ W2.T + b2))
            torch.testing.assert_close(fused(x), ref, rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="cannot chain"):
        FusedLUTMLP([LUTLinear(c1, cb1, 32, b1), tail], [False, False])


def test_masked_parts_are_not_converted():
    codes, cbs, W = random_pq(4, 8, 4, 2, True, seed=5)
    lin = nn.Linear(8, 4)
    layer, why = lut_from_parts(lin, {"codes": codes.numpy(), "codebooks": cbs.numpy(), "mask": np.ones((4, 8), bool)})
    assert layer is None and "mask" in why
    conv = nn.Conv2d(2, 4, 2, groups=2)
    layer, why = lut_from_parts(conv, {"codes": codes.numpy(), "codebooks": cbs.numpy(), "mask": None})
    assert layer is None and "groups=2" in why


def _mlp():
    """Flatten -> [Linear 64-48, ReLU, Linear 48-32, ReLU, Linear 32-4] (the stack is a child module)."""
    return nn.Sequential(nn.Flatten(), nn.Sequential(nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 32), nn.ReLU(),
                                                     nn.Linear(32, 4)))


def _pq_mlp(mask_mode):
    torch.manual_seed(2)
    model = _mlp()
    for lin in (model[1][0], model[1][2]):
        set_mask(lin, "weight", (torch.rand_like(lin.weight) > 0.7).float())
        attach_pq(lin, "weight", 8, 16, shared=True, mask_mode=mask_mode, niter=5)
    return model.eval()


def test_lut_mode_swaps_the_pq_stack_and_auto_races_it(tmp_path):
    model = _pq_mlp("subvector")
    path = tmp_path / "mlp.wz"
    wz.save(model, path)
    x1, x9 = torch.randn(1, 64), torch.randn(9, 64)
    with torch.no_grad():
        ref1, ref9 = model(x1), model(x9)
    lut = wz.load(path, model=_mlp(), mode="lut")
    assert isinstance(lut[1], FusedLUTMLP)                         # the whole stack, one compiled chain
    assert sum(isinstance(m, LUTLinear) for m in lut.modules()) == 2
    assert not any(type(m) is nn.Linear and m.in_features == 64 for m in lut.modules())  # no dense PQ weight
    auto = wz.load(path, model=_mlp(), mode="auto")
    assert isinstance(auto[1], FastestOf) and {"lut", "dense"} <= set(auto[1].candidates)
    with torch.no_grad():
        for m in (lut, auto):
            torch.testing.assert_close(m(x1), ref1, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(m(x9), ref9, rtol=1e-5, atol=1e-5)
    dense = wz.load(path, model=_mlp(), mode="dense")
    assert not any(isinstance(m, (LUTLinear, FusedLUTMLP, FastestOf)) for m in dense.modules())


def test_element_masked_pq_falls_back_to_dense_and_says_so(tmp_path, caplog):
    model = _pq_mlp("element")
    path = tmp_path / "masked.wz"
    wz.save(model, path)
    with caplog.at_level(logging.WARNING, logger="weightzip.runtime.lut"):
        loaded = wz.load(path, model=_mlp(), mode="lut")
    assert not any(isinstance(m, (LUTLinear, FusedLUTMLP)) for m in loaded.modules())
    assert "kept dense" in caplog.text and "mask" in caplog.text
    x = torch.randn(3, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))


def test_converter_leaves_non_pq_layers_and_other_modes_alone():
    lin = nn.Linear(8, 4)
    assert pq_lut_converter(lin, "fc", {}, "lut") is None                   # no PQ format for fc.weight
    assert pq_lut_converter(nn.ReLU(), "act", {}, "lut") is None
    assert pq_lut_converter(nn.Sequential(lin, nn.ReLU(), nn.Linear(4, 2)), "s", {}, "lut") is None
    assert pq_lut_converter(lin, "fc", {}, "sparse") is None
