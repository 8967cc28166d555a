"""The compiled LSTM layer equals the torch ``LSTMLayer`` on its decoded weights, for every norm.

Weights are codebook / uniform (int8 levels + scale) / dense, sparse or not; the state is given or
zero; the outputs, h and c agree within float32 summation error (atol 1e-5, the products sum at
most a few hundred terms of size <= 1 before the bounded nonlinearities).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import weightzip as wz
from weightzip.codec import decode, encode
from weightzip.core.registry import create_model
from weightzip.models.lstm import LSTMLayer
from weightzip.runtime.compiled.lstm import CompiledLSTMLayer, compile_lstm_layers

SET = settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))


def _quantize(t: torch.Tensor, kind: str, dens: float, rng) -> tuple[torch.Tensor, object]:
    mask = torch.from_numpy(rng.random(tuple(t.shape)) < dens)
    if kind == "codebook":
        tab = torch.tensor([-0.3, -0.1, 0.2, 0.4])
        q = tab[torch.from_numpy(rng.integers(0, 4, tuple(t.shape)))] * mask
        fmt = encode(q, {"kind": "codebook"}, options={"kinds": ["codebook"]})
    elif kind == "uniform":
        q = torch.from_numpy(rng.integers(-1, 2, tuple(t.shape))).float() * mask * 0.25
        fmt = encode(q, {"kind": "uniform", "scale": 0.25, "bits": 2})
    else:
        fmt = encode(t * mask)
    return decode(fmt), fmt


def _layer(norm: str, I: int, H: int, kinds, dens, rng) -> tuple[LSTMLayer, dict]:
    layer = LSTMLayer(I, H, norm=norm).eval()
    with torch.no_grad():
        if norm == "batch":
            for bn in (layer.norm_ih, layer.norm_hh):
                bn.running_mean.uniform_(-1, 1)
                bn.running_var.uniform_(0.5, 2)
                bn.weight.uniform_(0.5, 1.5)
                bn.bias.uniform_(-0.5, 0.5)
        if norm == "layer":
            for ln in (layer.norm_ih, layer.norm_hh):
                ln.weight.uniform_(0.5, 1.5)
                ln.bias.uniform_(-0.5, 0.5)
        formats = {}
        for w, kind in zip(("weight_ih", "weight_hh"), kinds):
            q, fmt = _quantize(getattr(layer, w), kind, dens, rng)
            getattr(layer, w).copy_(q)
            formats[f"cell.{w}"] = fmt
    return layer, formats


@SET
@given(norm=st.sampled_from(["none", "layer", "batch", "weight"]),
       kinds=st.tuples(*[st.sampled_from(["codebook", "uniform", "dense"])] * 2),
       dens=st.sampled_from([0.0, 0.1, 0.6, 1.0]), I=st.integers(1, 20), H=st.sampled_from([1, 5, 12, 16, 23, 40]),
       T=st.integers(1, 5), B=st.sampled_from([1, 2, 7, 70]), state=st.booleans(), seed=st.integers(0, 2**16))
# the vector cell (16 units per step, then the scalar tail) with a bias in the cell and layer norm
@example(norm="layer", kinds=("codebook", "uniform"), dens=1.0, I=7, H=37, T=4, B=3, state=True, seed=1)
@example(norm="none", kinds=("dense", "codebook"), dens=0.6, I=20, H=32, T=3, B=1, state=False, seed=2)
def test_layer_equals_torch(norm, kinds, dens, I, H, T, B, state, seed):
    rng = np.random.default_rng(seed)
    layer, formats = _layer(norm, I, H, kinds, dens, rng)
    comp = CompiledLSTMLayer(layer, formats, "cell")
    x = torch.from_numpy(rng.standard_normal((T, B, I)).astype(np.float32))
    st0 = (torch.randn(B, H), torch.randn(B, H)) if state else None
    with torch.inference_mode():
        ref, (h, c) = layer(x, st0)
        out, (h2, c2) = comp(x, st0)
    for a, b in ((out, ref), (h2, h), (c2, c)):
        assert a.shape == b.shape
        assert float((a - b).abs().max()) <= 1e-5 * (1 + float(b.abs().max()))


def test_state_is_not_modified_and_grad_refused():
    rng = np.random.default_rng(0)
    layer, formats = _layer("none", 4, 3, ("codebook", "codebook"), 0.5, rng)
    comp = CompiledLSTMLayer(layer, formats, "cell")
    h0, c0 = torch.randn(2, 3), torch.randn(2, 3)
    keep = (h0.clone(), c0.clone())
    comp(torch.randn(3, 2, 4), (h0, c0))
    assert torch.equal(h0, keep[0]) and torch.equal(c0, keep[1])
    with pytest.raises(RuntimeError, match="mode='dense'"):
        comp(torch.randn(3, 2, 4, requires_grad=True))


def test_per_step_bn_stays_in_torch():
    model = torch.nn.Sequential(LSTMLayer(4, 3, norm="batch", bn_per_step=True, bn_max_steps=3).eval())
    done, kept = compile_lstm_layers(model, {})
    assert done == [] and kept and "per-step" in kept[0][1]
    assert isinstance(model[0], LSTMLayer)


def test_lstm_lm_file_loads_compiled(tmp_path):
    """A saved (2-bit codebook) LSTM LM: mode='compiled' runs each LSTM layer natively and gives
    the dense logits."""
    torch.manual_seed(0)
    lm = create_model("lstm_lm", vocab_size=40, embed_size=8, hidden_size=6, num_layers=2, dropout=0.0,
                      norm="layer").eval()
    with torch.no_grad():
        for layer in lm.lstm_layers:
            for w in (layer.weight_ih, layer.weight_hh):
                w.copy_(torch.sign(w) * (w.abs() > 0.1) * 0.3)
    path = tmp_path / "lm.wz"
    wz.save(lm, path)
    dense = wz.load(path, mode="dense")
    comp = wz.load(path, mode="compiled")
    assert comp.wz_compiled["lstm_layers"] == ["lstm_layers.0", "lstm_layers.1"]
    assert all(isinstance(m, CompiledLSTMLayer) for m in comp.lstm_layers)
    x = torch.randint(0, 40, (9, 3))
    with torch.inference_mode():
        ref, (h, c) = dense(x)
        out, (h2, c2) = comp(x)
        out2, _ = comp(x, (h2, c2))     # a carried-over hidden state, as in LM evaluation
        ref2, _ = dense(x, (h, c))
    assert float((out - ref).abs().max()) < 1e-5 and float((out2 - ref2).abs().max()) < 1e-5
