import torch
from torch import nn

from weightzip.core import parametrize as P
from weightzip.core.select import Selection, select


def tiny():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 3))


def test_mask_then_uniform_stack_and_effective_state():
    m = tiny()
    w = m[0].weight.detach().clone()
    mask = (w.abs() > 0.1).float()
    P.attach(m[0], "weight", P.Mask(mask))
    scale = torch.tensor(2.0 ** -4)
    P.attach(m[0], "weight", P.UniformQuant(4, scale))
    eff = m[0].weight
    expected = torch.clamp(torch.round(w * mask / scale), -8, 7) * scale
    assert torch.equal(eff, expected)
    st = P.effective_state(m)
    assert set(st) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    assert torch.equal(st["0.weight"], expected)
    hint = P.storage_hints(m)["0.weight"]
    assert hint["kind"] == "uniform" and hint["bits"] == 4 and torch.equal(hint["mask"], mask.bool())


def test_mask_blocks_gradient_of_pruned_weights():
    m = tiny()
    mask = torch.zeros_like(m[0].weight)
    mask[:, :4] = 1
    P.attach(m[0], "weight", P.Mask(mask))
    m(torch.randn(5, 8)).sum().backward()
    g = P.original(m[0], "weight").grad
    assert torch.all(g[:, 4:] == 0) and torch.any(g[:, :4] != 0)


def test_codebook_centroid_gradient_is_sum_over_members():
    m = tiny()
    codes = torch.randint(0, 4, m[0].weight.shape)
    P.attach(m[0], "weight", P.Codebook(torch.linspace(-1, 1, 4), codes))
    m(torch.randn(5, 8)).sum().backward()
    cb = P.find(m[0], "weight", P.Codebook)
    # reference: the gradient w.r.t. the dense weight of the same function, summed per code
    ref = nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 3))
    ref.load_state_dict(P.effective_state(m))
    torch.manual_seed(1)
    x = torch.randn(5, 8)
    m.zero_grad()
    cb.centroids.grad = None
    m(x).sum().backward()
    ref(x).sum().backward()
    expected = torch.zeros(4).index_add_(0, codes.flatten(), ref[0].weight.grad.flatten())
    assert torch.allclose(cb.centroids.grad, expected, atol=1e-6)


def test_spec_roundtrip_restores_chain():
    m = tiny()
    P.attach(m[0], "weight", P.Mask((m[0].weight.abs() > 0.2).float()))
    P.attach(m[0], "weight", P.Codebook(torch.tensor([-0.3, 0.1, 0.4]), torch.randint(0, 3, (6, 8))))
    P.attach(m[2], "weight", P.UniformQuant(3, torch.tensor(0.25)))
    spec, sd = P.parametrization_spec(m), m.state_dict()
    m2 = nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 3))
    P.restore_parametrizations(m2, spec)
    m2.load_state_dict(sd)
    x = torch.randn(4, 8)
    assert torch.equal(m(x), m2(x))
    assert torch.load.__name__  # weights_only-compatible content
    import io
    buf = io.BytesIO()
    torch.save({"spec": spec, "sd": sd}, buf)
    buf.seek(0)
    torch.load(buf, weights_only=True)


def test_select_types_names_exclude_and_error():
    m = tiny()
    assert [n for n, _, _ in select(m)] == ["0", "2"]
    assert [n for n, _, _ in select(m, {"exclude": ["re:^2$"]})] == ["0"]
    assert [n for n, _, _ in select(m, Selection(skip_last=True))] == ["0"]
    assert [(n, t) for n, _, t in select(m, {"names": ["2"], "tensors": ["*"]})] == [("2", "weight"), ("2", "bias")]
    try:
        select(m, {"types": ["Conv2d"]})
    except ValueError as e:
        assert "picks no tensor" in str(e) and "Linear" in str(e)
    else:
        raise AssertionError


def test_activation_quant_levels():
    m = tiny()
    P.install_activation_quant(m, [{"module": "2", "bits": 2, "clip": 1.0}])
    seen = {}
    m[2].register_forward_pre_hook(lambda mod, a: seen.setdefault("x", a[0]))
    m(torch.randn(64, 8))
    vals = torch.unique(seen["x"])
    levels = torch.arange(4, dtype=torch.float32) / 3
    assert all(torch.isclose(levels, v, atol=0, rtol=0).any() for v in vals)
    assert m.wz_runtime["activation_quant"][0]["bits"] == 2


def test_select_sees_through_parametrized_class():
    m = tiny()
    P.attach(m[0], "weight", P.Mask(torch.ones(6, 8)))
    assert type(m[0]).__name__ == "ParametrizedLinear"
    assert [n for n, _, _ in select(m, {"types": ["Linear"]})] == ["0", "2"]


def test_ste_value_is_exactly_the_quantized_tensor():
    torch.manual_seed(0)
    w = torch.randn(1000, requires_grad=True)
    wq = torch.round(w.detach() * 3) / 3 * 0.1234567
    out = P.ste(w, wq)
    assert torch.equal(out, wq)
    out.sum().backward()
    assert torch.equal(w.grad, torch.ones_like(w))
