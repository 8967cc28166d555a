import pytest
import torch
from hypothesis import given, settings, strategies as st

from weightzip.primitives.quantizers import (activation_levels, binary_weight, dorefa_weight,
                                             pact_activation, quantize_activation, quantize_weight,
                                             ternary_weight, weight_storage_bits)


def _dorefa_reference(w, k):
    """Elementwise, straight from the formula."""
    L = 2 ** k - 1
    m = max(abs(torch.tanh(torch.tensor(float(x))).item()) for x in w.flatten())
    out = []
    for x in w.flatten().tolist():
        t = torch.tanh(torch.tensor(x)).item() / (2 * m) + 0.5
        out.append(2 * round(t * L) / L - 1)
    return torch.tensor(out).reshape(w.shape)


@pytest.mark.parametrize("k", [2, 3, 4, 8])
def test_dorefa_exactly_2k_levels_on_a_spanning_tensor(k):
    w = torch.linspace(-3, 3, 4001)
    q = dorefa_weight(w, k)
    levels = torch.unique(q)
    assert levels.numel() == 2 ** k
    expected = torch.arange(2 ** k, dtype=torch.float32) * 2 / (2 ** k - 1) - 1
    assert torch.allclose(levels, expected, atol=1e-6)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(-5, 5, allow_nan=False, width=32), min_size=2, max_size=40),
       st.integers(2, 6))
def test_dorefa_matches_formula_and_at_most_2k_levels(vals, k):
    w = torch.tensor(vals)
    q = dorefa_weight(w, k)
    assert torch.unique(q).numel() <= 2 ** k
    if w.abs().max() > 1e-3:
        ref = _dorefa_reference(w, k)
        # the only legal difference is a rounding tie (round half to even vs half up)
        assert (torch.isclose(q, ref, atol=1e-5) | torch.isclose((q - ref).abs(), torch.tensor(2 / (2 ** k - 1)))).all()


def test_dorefa_gradient_flows_through_tanh():
    w = torch.tensor([-1.0, -0.2, 0.3, 2.0], requires_grad=True)
    dorefa_weight(w, 2).sum().backward()
    # dWq/dW = 2 d/dW [tanh(W) / (2 m)] with m = max|tanh W| treated as a constant
    m = torch.tanh(torch.tensor(2.0))
    expected = (1 - torch.tanh(w.detach()) ** 2) / m
    assert torch.allclose(w.grad, expected, atol=1e-6)


def test_binary_two_levels_scale_and_ste():
    w = torch.tensor([-2.0, -0.5, 0.0, 0.5, 1.0], requires_grad=True)
    q = binary_weight(w)
    alpha = w.detach().abs().mean()
    assert torch.equal(q, torch.tensor([-1, -1, 1, 1, 1.0]) * alpha)
    q.sum().backward()
    assert torch.equal(w.grad, torch.ones(5))
    assert torch.unique(quantize_weight(torch.randn(100), "dorefa", 1)).numel() == 2


def test_ternary_levels_delta_alpha():
    w = torch.tensor([-3.0, -1.0, -0.1, 0.05, 0.2, 1.5, 2.0])
    q = ternary_weight(w)
    delta = 0.7 * w.abs().mean()
    big = w.abs() > delta
    alpha = w.abs()[big].mean()
    assert torch.allclose(q, torch.sign(w) * big * alpha)
    assert torch.unique(q).numel() == 3
    assert weight_storage_bits("ternary", 7) == 2 and weight_storage_bits("binary", 4) == 1


@pytest.mark.parametrize("quantizer,bits", [("dorefa", 2), ("dorefa", 4), ("binary", 1), ("ternary", 2)])
def test_mask_keeps_pruned_exactly_zero_and_stats_over_kept(quantizer, bits):
    torch.manual_seed(0)
    w = torch.randn(8, 8)
    mask = (torch.rand(8, 8) > 0.5).float()
    q = quantize_weight(w * mask, quantizer, bits, mask)
    assert torch.all(q[mask == 0] == 0)
    assert torch.unique(q[mask == 1]).numel() <= {1: 2, 2: 4 if quantizer == "dorefa" else 3, 4: 16}[bits]
    if quantizer == "binary":
        assert torch.allclose(q[mask == 1].abs(), (w * mask).abs().sum() / mask.sum() * torch.ones(1))


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_activation_levels_and_clip_gradient(k):
    a = torch.linspace(-1, 2, 3001, requires_grad=True)
    q = quantize_activation(a, k)
    assert torch.equal(torch.unique(q.detach()), activation_levels(k))
    q.sum().backward()
    inside = (a.detach() >= 0) & (a.detach() <= 1)
    assert torch.all(a.grad[inside] == 1) and torch.all(a.grad[~inside] == 0)


def test_activation_matches_runtime_hook():
    from torch import nn

    from weightzip.core.parametrize import install_activation_quant

    m = nn.Sequential(nn.Identity(), nn.Identity())
    install_activation_quant(m, [{"module": "1", "bits": 3, "clip": 2.0}])
    a = torch.randn(100) * 2
    assert torch.equal(m(a), quantize_activation(a, 3, clip=2.0))


def test_pact_levels_and_gradients():
    alpha = torch.tensor(1.5, requires_grad=True)
    a = torch.linspace(-1, 3, 401, requires_grad=True)
    q = pact_activation(a, alpha, 2)
    assert torch.allclose(torch.unique(q.detach()), activation_levels(2, 1.5))
    q.sum().backward()
    ad = a.detach()
    assert torch.all(a.grad[(ad >= 0) & (ad < 1.5)] == 1)
    assert torch.all(a.grad[(ad < 0) | (ad >= 1.5)] == 0)
    assert alpha.grad.item() == float((ad >= 1.5).sum())
