from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from weightzip.core import parametrize as P
from weightzip.methods.base import StageContext
from weightzip.methods.uniform import QuantizeUniform, bits_for
from weightzip.primitives.fixed_point import integer_bits
from weightzip.core.recipe import Recipe


def setup():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 4 * 4, 10))
    x = torch.randn(32, 1, 6, 6)
    ds = TensorDataset(x, torch.randint(0, 10, (32,)))
    ld = SimpleNamespace(train=DataLoader(ds, batch_size=8), val=DataLoader(ds, batch_size=32), test=None,
                         task="classify")
    return m, StageContext(loaders=ld, log=lambda s: None)


@pytest.mark.parametrize("scale", ["pow2", "maxabs"])
@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_at_most_2_pow_b_distinct_values_per_tensor(scale, bits):
    m, ctx = setup()
    w0 = {n: P.original(mod, "weight").detach().clone() for n, mod in (("0", m[0]), ("2", m[2]))}
    cfg = QuantizeUniform.Config(method="quantize_uniform", bits=bits, scale=scale)
    out = QuantizeUniform(cfg).apply(m, ctx)
    for name, mod in (("0", m[0]), ("2", m[2])):
        w = mod.weight.detach()
        assert w.unique().numel() <= 2 ** bits
        s = out["layers"][f"{name}.weight"]["scale"]
        assert torch.equal(torch.round(w / s) * s, w)          # on the grid
        if scale == "pow2":
            assert s == 2.0 ** -(bits - integer_bits(w0[name]))
        else:
            assert abs(s - float(w0[name].abs().max()) / (2 ** (bits - 1) - 1)) < 1e-6 * s
        assert P.storage_hints(m)[f"{name}.weight"] == {"kind": "uniform", "scale": s, "bits": bits}


def test_layer_bits_override_and_recipe():
    assert bits_for("fc3.weight", 8, {"fc3": 4}) == 4
    assert bits_for("features.0.weight", 8, {"re:^features": 6, "*": 3}) == 6
    assert bits_for("fc1.weight", 8, {"fc3.*": 4}) == 8
    m, ctx = setup()
    r = Recipe.from_yaml("stages:\n  - method: quantize_uniform\n    bits: 8\n    layer_bits: {'2': 3}\n")
    QuantizeUniform(r.stages[0]).apply(m, ctx)
    assert P.find(m[2], "weight", P.UniformQuant).bits == 3 and P.find(m[0], "weight", P.UniformQuant).bits == 8
    assert m[2].weight.unique().numel() <= 8


def test_bad_bits_refused():
    with pytest.raises(ValueError, match=r"\[2, 16\]"):
        QuantizeUniform.Config(method="quantize_uniform", bits=1)
