import torch
from torch import nn

from weightzip.core import parametrize as P
from weightzip.analysis.memory import activation_memory, infer_weight_bits, memory_report
from weightzip.methods.structured_qat import BlockMask, DoReFaWeight


def tiny():
    """Linear(8,8) 2-bit, 4x4 blocks keeping 1 of 2 per block row; BN(8); Linear(8,4) 4-bit;
    the second layer's input quantized to 2 bits."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 4))
    bm = torch.tensor([[True, False], [False, True]])
    P.attach(m[0], "weight", BlockMask.build(bm, (8, 8), 4))
    P.attach(m[0], "weight", DoReFaWeight(2, P.find(m[0], "weight", BlockMask).mask))
    P.attach(m[3], "weight", DoReFaWeight(4, torch.ones(4, 8)))
    P.install_activation_quant(m, [{"module": "3", "bits": 2, "clip": 1.0}])
    return m


# hand count (bits), BN folded (default): the bias of layer 0 folds into BN's shift
W0 = 32 * 2 + 4                   # 32 kept weights x 2 bits + 4 block bits
W3 = 32 * 4 + 4 * 32              # 32 weights x 4 bits + fp32 bias
BN = 2 * 8 * 32                   # scale + shift per channel (fp32)
A = 8 * 8 + 8 * 2 + 4 * 32        # data at 8 bits, layer-3 input at 2 bits, logits at 32 bits


def test_memory_model_against_hand_count():
    rep = memory_report(tiny(), (8,))
    assert rep["weight_memory_bits"] == W0 + W3 + BN == 836
    assert rep["kept_weight_bits"] == 64 + 128 and rep["block_mask_bits"] == 4
    assert rep["float_param_bits"] == 4 * 32 + BN
    assert [L["kept_weights"] for L in rep["layers"]] == [32, 32]
    assert [L["w_bits"] for L in rep["layers"]] == [2, 4]
    assert [L["bias_params"] for L in rep["layers"]] == [0, 4]
    assert [L["weight_memory_bits"] for L in rep["layers"]] == [W0, W3]
    assert rep["activation_memory_bits"] == A == 208
    assert [a["bits"] for a in rep["activations"]] == [8, 2, 32]
    assert rep["peak_activation_memory_bits"] == 8 * 2 + 4 * 32 and rep["peak_pair"] == ["3", "output"]
    assert rep["total_memory_bits"] == 836 + 208
    # reference: every weight dense at fp32, same bias / BN rule
    assert rep["fp32_weight_memory_bits"] == 32 * (64 + 32) + 4 * 32 + BN
    assert rep["weight_memory_reduction"] == rep["fp32_weight_memory_bits"] / 836


def test_unfolded_bn_counts_every_float_tensor():
    rep = memory_report(tiny(), (8,), fold_bn=False)
    # + fp32 bias of layer 0; BN weight, bias, running mean, running var
    assert rep["weight_memory_bits"] == (32 * 2 + 4 + 8 * 32) + W3 + 4 * 8 * 32 == 1604
    assert rep["fp32_weight_memory_bits"] == 32 * (64 + 8 + 32 + 4 + 32)


def test_overrides_and_baked_model_inference():
    m = tiny()
    rep = memory_report(m, (8,), w_bits={"3": 8}, a_bits=4, input_bits=32, output_bits=16)
    assert [L["w_bits"] for L in rep["layers"]] == [2, 8]
    assert [a["bits"] for a in rep["activations"]] == [32, 4, 16]
    # a baked copy (no parametrizations): bits from the distinct values; dense without hints
    plain = nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 4))
    plain.load_state_dict(P.effective_state(m))
    rep2 = memory_report(plain)
    assert [L["w_bits"] for L in rep2["layers"]] == [2, 4]
    assert rep2["layers"][0]["kept_weights"] == 64 and rep2["activation_memory_bits"] is None
    hints = {"0.weight": {k: v for k, v in P.storage_hints(m)["0.weight"].items()}}
    rep3 = memory_report(plain, hints=hints)
    assert rep3["weight_memory_bits"] == 836
    assert infer_weight_bits(torch.randn(1000)) == 32 and infer_weight_bits(torch.tensor([0.0, 1.0, -1.0])) == 1


def test_activations_of_a_conv_net_after_pooling():
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Flatten(), nn.Linear(6 * 2 * 2, 3))
    rep = activation_memory(net, (1, 8, 8), a_bits=3)
    assert [a["elements"] for a in rep["activations"]] == [64, 4 * 4 * 4, 24, 3]
    assert [a["bits"] for a in rep["activations"]] == [8, 3, 3, 32]
    sizes = [64 * 8, 64 * 3, 24 * 3, 3 * 32]
    assert rep["activation_memory_bits"] == sum(sizes)
    assert rep["peak_activation_memory_bits"] == max(a + b for a, b in zip(sizes, sizes[1:]))


def test_report_from_a_wz_file_matches_the_in_memory_model(tmp_path):
    import weightzip as wz
    from weightzip.analysis.memory import memory_report_from_file
    from weightzip.core.registry import create_model

    torch.manual_seed(0)
    model = create_model("mlp", widths=[32], batch_norm=True, num_classes=4, in_channels=1, image_size=8)
    bm = torch.zeros(2, 4, dtype=torch.bool)
    bm[:, :2] = True
    fc = model.layers[0].fc
    P.attach(fc, "weight", BlockMask.build(bm, (32, 64), 16))
    P.attach(fc, "weight", DoReFaWeight(2, P.find(fc, "weight", BlockMask).mask))
    P.attach(model.head, "weight", DoReFaWeight(4, torch.ones(4, 32)))
    P.install_activation_quant(model, [{"module": "head", "bits": 2, "clip": 1.0}])
    wz.save(model, tmp_path / "m.wz")
    mem = memory_report(model, (1, 8, 8))
    rep = memory_report_from_file(tmp_path / "m.wz")
    for key in ("weight_memory_bits", "kept_weight_bits", "block_mask_bits", "activation_memory_bits",
                "peak_activation_memory_bits", "total_memory_bits"):
        assert rep[key] == mem[key], key
    assert rep["kept_weight_bits"] == 32 * 32 * 2 + 4 * 32 * 4
