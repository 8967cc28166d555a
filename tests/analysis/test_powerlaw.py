"""Degree distributions of sparse networks and power-law fits."""
import itertools

import numpy as np
import pytest
import torch
from torch import nn

import weightzip
from weightzip.core import parametrize
from weightzip.analysis.powerlaw import (
    analyze_file,
    analyze_model,
    fit_degrees,
    format_report,
    layer_degrees,
    network_degrees,
    plot_ccdf_fits,
    verdict,
    weight_layers,
)
from weightzip.errors import WeightzipError
from weightzip.core.registry import create_model


def _sparse(shape, density, seed):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(*shape, generator=g)
    return w * (torch.rand(*shape, generator=g) < density)


@pytest.mark.parametrize("seed", range(4))
def test_linear_degrees_equal_a_direct_count(seed):
    w = _sparse((7, 11), 0.3, seed)
    ind, outd = layer_degrees(w)
    for j in range(7):
        assert ind[j] == sum(1 for i in range(11) if w[j, i] != 0)
    for i in range(11):
        assert outd[i] == sum(1 for j in range(7) if w[j, i] != 0)


@pytest.mark.parametrize("seed", range(3))
def test_conv_degrees_equal_a_direct_count(seed):
    w = _sparse((5, 4, 3, 3), 0.2, seed)
    ind, outd = layer_degrees(w, conv_mode="weight")
    for o in range(5):
        assert ind[o] == sum(1 for c, y, x in itertools.product(range(4), range(3), range(3)) if w[o, c, y, x] != 0)
    for c in range(4):
        assert outd[c] == sum(1 for o, y, x in itertools.product(range(5), range(3), range(3)) if w[o, c, y, x] != 0)
    ind, outd = layer_degrees(w, conv_mode="kernel")
    for o in range(5):
        assert ind[o] == sum(1 for c in range(4) if (w[o, c] != 0).any())
    for c in range(4):
        assert outd[c] == sum(1 for o in range(5) if (w[o, c] != 0).any())


def test_grouped_conv_out_degree_counts_only_its_group():
    conv = nn.Conv2d(4, 6, 3, groups=2, bias=False)
    with torch.no_grad():
        conv.weight.copy_(_sparse(tuple(conv.weight.shape), 0.4, 0))
    (_, _, w, groups), = weight_layers(conv)
    assert groups == 2
    _, outd = layer_degrees(w, groups=groups)
    for c in range(4):
        g, local = divmod(c, 2)
        want = sum(int((w[o, local] != 0).sum()) for o in range(3 * g, 3 * g + 3))
        assert outd[c] == want


def test_network_total_degree_is_in_plus_out_and_conv_joins_through_the_flatten():
    mlp = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3))
    with torch.no_grad():
        for k, m in enumerate(l for l in mlp if isinstance(l, nn.Linear)):
            m.weight.copy_(_sparse(tuple(m.weight.shape), 0.5, k))
    g = network_degrees(weight_layers(mlp))
    w1, w2, w3 = (m.weight for m in mlp if isinstance(m, nn.Linear))
    assert [u["degree"].size for u in g["units"]] == [6, 5, 4, 3]
    np.testing.assert_array_equal(g["units"][0]["degree"], (w1 != 0).sum(0).numpy())
    np.testing.assert_array_equal(g["units"][1]["degree"], ((w1 != 0).sum(1) + (w2 != 0).sum(0)).numpy())
    np.testing.assert_array_equal(g["units"][2]["degree"], ((w2 != 0).sum(1) + (w3 != 0).sum(0)).numpy())
    np.testing.assert_array_equal(g["units"][3]["degree"], (w3 != 0).sum(1).numpy())
    assert g["network"].sum() == 2 * sum(int((w != 0).sum()) for w in (w1, w2, w3))  # each edge counted twice

    net = create_model("lenet5_tiny")  # conv(4) -> conv(8) -> flatten 8*4*4 -> fc32 -> fc10
    with torch.no_grad():
        for k, m in enumerate(net.modules()):
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                m.weight.copy_(_sparse(tuple(m.weight.shape), 0.3, 10 + k))
    g = network_degrees(weight_layers(net))
    conv2, fc1 = net.features[2].weight, net.classifier[0].weight
    per_channel = (fc1 != 0).reshape(32, 8, 16).sum(dim=(0, 2))  # columns of channel o: [16 o, 16 o + 16)
    np.testing.assert_array_equal(g["units"][2]["degree"], ((conv2 != 0).sum(dim=(1, 2, 3)) + per_channel).numpy())
    assert g["cuts"] == []


def test_recovers_the_exponent_of_a_synthetic_power_law_network():
    # in-degrees of 3000 output units drawn from p(d) ~ d^-2.5 (d >= 1), edges to random inputs
    rng = np.random.default_rng(0)
    n_out, n_in, alpha = 3000, 1500, 2.5
    deg = np.minimum(rng.zipf(alpha, n_out), n_in)
    mask = np.zeros((n_out, n_in), dtype=np.float32)
    for j, d in enumerate(deg):
        mask[j, rng.choice(n_in, size=d, replace=False)] = 1.0
    layer = nn.Linear(n_in, n_out, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(mask) * 0.5)
    res = analyze_model(layer, truncated="none")
    fit = res["layers"][0]["in"]["fit"]
    np.testing.assert_array_equal(np.sort(layer_degrees(layer.weight)[0]), np.sort(deg))
    assert abs(fit["alpha"] - alpha) < 0.15, fit
    assert fit["compare"]["exponential"]["R"] > 0 and fit["compare"]["exponential"]["p"] < 0.1
    assert res["layers"][0]["in"]["power_law_like"]


@pytest.mark.parametrize("alpha", [2.2, 3.5])
def test_recovers_exponents_above_the_package_default_bound(alpha):
    d = np.random.default_rng(1).zipf(alpha, 4000)
    fit = fit_degrees(d, truncated=False)["fit"]
    assert abs(fit["alpha"] - alpha) < 0.15, fit


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_erdos_renyi_mask_prefers_the_exponential(seed):
    layer = nn.Linear(400, 300)
    with torch.no_grad():
        layer.weight.copy_(_sparse((300, 400), 0.1, seed))
    res = analyze_model(layer, truncated="none")
    for key in ("in", "out"):
        stats = res["layers"][0][key]
        assert not stats["power_law_like"], stats
        assert stats["verdict"] in ("exponential", "narrow tail", "inconclusive"), stats
        full = stats["fit"]["full"]["compare"]          # over every unit the exponential wins clearly
        assert full["exponential"]["R"] < 0 and full["exponential"]["p"] < 0.01, full
    assert res["layers"][0]["in"]["verdict"] == "exponential"


def test_truncated_power_law_is_recognised_and_plotted(tmp_path):
    # p(d) ~ d^-1.5 exp(-0.05 d), d >= 1: with xmin fixed at 1 the exponential cutoff beats the
    # pure power law and the exponential (the xmin search alone tends to keep only the cutoff)
    rng = np.random.default_rng(0)
    k = np.arange(1, 3000)
    p = k ** -1.5 * np.exp(-0.05 * k)
    d = rng.choice(k, size=1000, p=p / p.sum())
    stats, fit = fit_degrees(d, truncated=True, xmin=1, return_fit=True)
    assert stats["verdict"] == "truncated power law", stats["fit"]["compare"]
    assert abs(stats["fit"]["truncated"]["alpha"] - 1.5) < 0.2
    assert 0.03 < stats["fit"]["truncated"]["lambda"] < 0.08
    plot_ccdf_fits(d, fit, tmp_path / "tpl.png", title="tpl")
    assert (tmp_path / "tpl.png").stat().st_size > 1000


def test_too_small_or_degenerate_distributions_get_no_fit():
    assert fit_degrees([3] * 50)["verdict"] == "too few distinct degrees"
    assert fit_degrees([1, 2, 3, 4])["verdict"] == "too few units"
    s = fit_degrees(np.array([0] * 7 + [1, 2, 3] * 10), truncated=False)
    assert s["n_isolated"] == 7 and s["n_units"] == 37


def test_verdict_rules():
    def cmp(exp, ln=(0.0, 1.0), tpl=(0.0, 1.0), tve=(0.0, 1.0)):
        return {"compare": {"exponential": {"R": exp[0], "p": exp[1]}, "lognormal": {"R": ln[0], "p": ln[1]},
                            "truncated_power_law": {"R": tpl[0], "p": tpl[1]},
                            "truncated_vs_exponential": {"R": tve[0], "p": tve[1]}}}
    assert verdict(cmp((-3, 0.01))) == "exponential"
    assert verdict(cmp((2, 0.5))) == "inconclusive"
    assert verdict(cmp((3, 0.01))) == "power law"
    assert verdict(cmp((3, 0.01), ln=(-2, 0.01))) == "lognormal"
    assert verdict(cmp((3, 0.01), tpl=(-2, 0.01), tve=(4, 0.001))) == "truncated power law"
    assert verdict(cmp((3, 0.01), tpl=(-2, 0.01), tve=(4, 0.5))) == "power law"
    narrow = {**cmp((3, 0.01)), "tail_decades": 0.3}
    assert verdict(narrow) == "narrow tail" and verdict(narrow, min_decades=0.2) == "power law"
    assert verdict({"reason": "too few units"}) == "too few units"


def _pruned_tiny_mlp(density=0.3):
    torch.manual_seed(0)
    model = create_model("lenet300_100", hidden=(64, 32))
    for m in model.modules():
        if isinstance(m, nn.Linear):
            mask = (torch.rand_like(m.weight) < density).float()
            parametrize.attach(m, "weight", parametrize.Mask(mask))
    return model


def test_wz_and_checkpoint_give_the_module_degrees_and_plots(tmp_path):
    model = _pruned_tiny_mlp()
    ref = analyze_model(model, truncated="none")
    wz = tmp_path / "tiny.wz"
    weightzip.save(model, wz)
    ck = tmp_path / "tiny.pt"
    torch.save({"model": model.state_dict(), "model_config": model.wz_config,
                "parametrizations": parametrize.parametrization_spec(model)}, ck)
    sd = tmp_path / "plain.pt"
    torch.save(parametrize.effective_state(model), sd)
    for src in (wz, ck, sd):
        res = analyze_model(src, truncated="none")
        assert res["nnz"] == ref["nnz"] and [l["nnz"] for l in res["layers"]] == [l["nnz"] for l in ref["layers"]]
        assert res["network"]["mean"] == ref["network"]["mean"]
        assert res["network"]["verdict"] == ref["network"]["verdict"]
    res = analyze_file(wz, tmp_path / "plots", truncated="none")  # the truncated fit is slow: see below
    assert res["kind"] == "wz" and res["network"]["fit"]["truncated"] is None
    for p in res["plots"]:
        assert (tmp_path / "plots" / p.split("/")[-1]).stat().st_size > 1000
    text = format_report(res)
    assert "whole network" in text and "layers.0.weight in" in text and res["network"]["verdict"] in text
    import json

    json.dumps(res)  # JSON-able


def test_missing_or_bad_files_are_clear_errors(tmp_path):
    with pytest.raises(WeightzipError, match="not found"):
        analyze_file(tmp_path / "nope.wz")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightzipError, match="cannot read"):
        analyze_file(bad)
    with pytest.raises(WeightzipError, match="no Linear or Conv"):
        analyze_model(nn.Sequential(nn.ReLU()))
