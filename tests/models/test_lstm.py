"""The hand-written LSTM equals torch.nn.LSTM; the normalized variants do what they say."""
import pytest
import torch
import torch.nn.utils.parametrize as P
from torch import nn

from weightzip.errors import InvalidModelError, UnknownNameError
from weightzip.models import GateLayerNorm, LSTMLayer, QLSTMLayer, create_model

torch.set_num_threads(1)


def copy_into_torch_lstm(layers, torch_lstm):
    with torch.no_grad():
        for k, layer in enumerate(layers):
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(torch_lstm, f"{name}_l{k}").copy_(getattr(layer, name))


def test_layer_parameters_are_laid_out_like_nn_lstm():
    layer = LSTMLayer(5, 7)
    ref = nn.LSTM(5, 7)
    mine = {n: tuple(p.shape) for n, p in layer.named_parameters()}
    theirs = {n[:-3]: tuple(p.shape) for n, p in ref.named_parameters()}  # drop "_l0"
    assert mine == theirs
    assert QLSTMLayer is LSTMLayer


def test_layer_equals_nn_lstm_with_initial_state():
    torch.manual_seed(0)
    layer = LSTMLayer(6, 8)
    ref = nn.LSTM(6, 8)
    copy_into_torch_lstm([layer], ref)
    x = torch.randn(9, 3, 6)
    h0, c0 = torch.randn(3, 8), torch.randn(3, 8)
    out, (h, c) = layer(x, (h0, c0))
    out_ref, (h_ref, c_ref) = ref(x, (h0[None], c0[None]))
    torch.testing.assert_close(out, out_ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(h, h_ref[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(c, c_ref[0], atol=1e-5, rtol=0)
    # gradients agree too
    out.sum().backward()
    out_ref.sum().backward()
    torch.testing.assert_close(layer.weight_hh.grad, ref.weight_hh_l0.grad, atol=1e-5, rtol=1e-5)


def test_two_layer_language_model_equals_nn_lstm():
    torch.manual_seed(1)
    model = create_model("lstm_lm", vocab_size=30, embed_size=12, hidden_size=10, num_layers=2,
                         dropout=0.3).eval()
    ref = nn.LSTM(12, 10, num_layers=2)
    copy_into_torch_lstm(model.lstm_layers, ref)
    x = torch.randint(0, 30, (7, 4))
    hidden = (torch.randn(2, 4, 10), torch.randn(2, 4, 10))
    logits, (h, c) = model(x, hidden)
    out_ref, (h_ref, c_ref) = ref(model.encoder(x), hidden)
    torch.testing.assert_close(logits, model.decoder(out_ref), atol=1e-5, rtol=0)
    torch.testing.assert_close(h, h_ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(c, c_ref, atol=1e-5, rtol=0)


def test_hidden_state_carries_across_windows():
    torch.manual_seed(2)
    model = create_model("lstm_lm_tiny", num_layers=2).eval()
    x = torch.randint(0, 50, (10, 3))
    full, _ = model(x)
    first, hidden = model(x[:4])
    second, _ = model(x[4:], hidden)
    torch.testing.assert_close(torch.cat([first, second]), full, atol=1e-6, rtol=0)
    h, c = model.init_hidden(3)
    assert h.shape == c.shape == (2, 3, 16) and h.abs().sum() == 0


@pytest.mark.parametrize("norm,per_step", [("layer", False), ("batch", False), ("batch", True),
                                           ("weight", False)])
def test_normalized_variants_run_forward_and_backward(norm, per_step):
    torch.manual_seed(3)
    model = create_model("lstm_lm_tiny", num_layers=2, norm=norm, bn_per_step=per_step,
                         bn_max_steps=4)
    x = torch.randint(0, 50, (6, 5))  # 6 steps > bn_max_steps: the last BN serves steps 4, 5
    logits, (h, c) = model(x)
    assert logits.shape == (6, 5, 50) and h.shape == c.shape == (2, 5, 16)
    logits.logsumexp(-1).mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    model.eval()
    with torch.no_grad():
        assert torch.isfinite(model(x[:, :1])[0]).all()  # batch of one works in eval


def test_gate_layer_norm_normalizes_each_gate_block_separately():
    torch.manual_seed(9)
    norm = GateLayerNorm(hidden_size=6)
    x = torch.randn(5, 24) * torch.tensor([1.0, 10.0, 100.0, 0.1]).repeat_interleave(6) + 3
    y = norm(x).reshape(5, 4, 6)
    blocks = x.reshape(5, 4, 6)
    mean = blocks.mean(-1, keepdim=True)
    var = blocks.var(-1, unbiased=False, keepdim=True)
    torch.testing.assert_close(y, (blocks - mean) / torch.sqrt(var + norm.eps))
    torch.testing.assert_close(y.mean(-1), torch.zeros(5, 4), atol=1e-5, rtol=0)
    # a whole-vector LayerNorm would instead squash the small-scale blocks towards 0
    assert (y.var(-1, unbiased=False) > 0.99).all()


def test_layer_norm_is_applied_to_each_product():
    torch.manual_seed(4)
    layer = LSTMLayer(3, 4, norm="layer")
    layer.record_stats = True
    layer(torch.randn(1, 2, 3) * 1000)  # huge inputs: normalized products keep gates O(1)
    assert layer.stats[0].max() < 5


def test_per_step_batch_norm_uses_one_module_per_step_then_the_last():
    torch.manual_seed(5)
    layer = LSTMLayer(3, 4, norm="batch", bn_per_step=True, bn_max_steps=3)
    assert len(layer.norm_ih) == len(layer.norm_hh) == 3
    layer(torch.randn(2, 5, 3))  # 2 steps: modules 0 and 1 are used, module 2 is not
    assert [int(m.num_batches_tracked) for m in layer.norm_ih] == [1, 1, 0]
    layer(torch.randn(5, 5, 3))  # steps 2, 3, 4 all use module 2
    assert [int(m.num_batches_tracked) for m in layer.norm_ih] == [2, 2, 3]


def test_shared_batch_norm_takes_statistics_over_all_steps():
    layer = LSTMLayer(3, 4, norm="batch")
    assert isinstance(layer.norm_ih, nn.BatchNorm1d) and layer.norm_ih.num_features == 16
    layer(torch.randn(6, 5, 3))
    assert int(layer.norm_ih.num_batches_tracked) == 1   # one call on all T*B rows
    assert int(layer.norm_hh.num_batches_tracked) == 6   # one call per step


def test_weight_norm_starts_as_identity_and_is_scale_invariant_per_row():
    torch.manual_seed(6)
    plain = LSTMLayer(5, 6)
    wn = LSTMLayer(5, 6, norm="weight")
    wn.load_state_dict({**plain.state_dict(),
                        "wn_gain_ih": plain.weight_ih.detach().norm(dim=1),
                        "wn_gain_hh": plain.weight_hh.detach().norm(dim=1)})
    x = torch.randn(4, 2, 5)
    torch.testing.assert_close(wn(x)[0], plain(x)[0], atol=1e-6, rtol=0)

    class RowScale(nn.Module):  # stands in for a quantizer: any per-row rescaling
        def forward(self, w):
            return w * torch.arange(1, w.shape[0] + 1, dtype=w.dtype).unsqueeze(1)

    P.register_parametrization(wn, "weight_ih", RowScale())
    P.register_parametrization(wn, "weight_hh", RowScale())
    # weight norm runs AFTER the parametrization, so a per-row scale changes nothing
    torch.testing.assert_close(wn(x)[0], plain(x)[0], atol=1e-5, rtol=0)
    assert "parametrizations.weight_ih.original" in wn.state_dict()


def test_weight_norm_after_a_sign_quantizer_uses_unit_norm_rows():
    torch.manual_seed(7)
    layer = LSTMLayer(4, 3, norm="weight")

    class Sign(nn.Module):
        def forward(self, w):
            return torch.sign(w)

    P.register_parametrization(layer, "weight_ih", Sign())
    w_ih, _ = layer.effective_weights()
    expected = layer.wn_gain_ih[:, None] * torch.sign(layer.parametrizations.weight_ih.original) / 2
    torch.testing.assert_close(w_ih, expected)  # ||sign row of length 4|| = 2
    out, _ = layer(torch.randn(3, 2, 4))
    out.sum().backward()
    assert layer.parametrizations.weight_ih.original.grad.abs().sum() == 0  # d sign = 0
    assert layer.wn_gain_ih.grad is not None


def test_record_stats_appends_mean_abs_preactivation_per_gate():
    torch.manual_seed(8)
    layer = LSTMLayer(3, 4)
    x = torch.randn(5, 2, 3)
    layer(x)
    assert layer.stats == []  # nothing stored by default
    layer.record_stats = True
    layer(x)
    assert len(layer.stats) == 5 and all(s.shape == (4,) for s in layer.stats)
    # step 0 starts from h = 0, so its gates are x_0 W_ih^T + b_ih + b_hh
    gates0 = x[0] @ layer.weight_ih.T + layer.bias_ih + layer.bias_hh
    expected = gates0.abs().reshape(2, 4, 4).mean(dim=(0, 2))
    torch.testing.assert_close(layer.stats[0], expected.detach())


def test_record_gate_stats_switches_every_layer():
    model = create_model("lstm_lm_tiny", num_layers=2)
    model.record_gate_stats(True)
    model(torch.randint(0, 50, (3, 2)))
    assert [len(layer.stats) for layer in model.lstm_layers] == [3, 3]
    model.record_gate_stats(False)
    assert all(not layer.record_stats and layer.stats == [] for layer in model.lstm_layers)


def test_tied_weights():
    model = create_model("lstm_lm_tiny", tie_weights=True)
    assert model.decoder.weight is model.encoder.weight
    with pytest.raises(InvalidModelError, match="embed_size"):
        create_model("lstm_lm_tiny", tie_weights=True, embed_size=8)


def test_bad_norm_and_inputs_are_refused():
    with pytest.raises(UnknownNameError, match="layer"):
        LSTMLayer(3, 4, norm="group")
    with pytest.raises(InvalidModelError, match="bn_per_step"):
        LSTMLayer(3, 4, norm="layer", bn_per_step=True)
    model = create_model("lstm_lm_tiny")
    with pytest.raises(ValueError, match=r"\[T, B\]"):
        model(torch.randn(3, 2))
