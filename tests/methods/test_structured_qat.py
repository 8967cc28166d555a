import io
from pathlib import Path
from dataclasses import dataclass

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from weightzip.core import parametrize as P
from weightzip.methods.base import StageContext
from weightzip.methods.structured_qat import (BlockMask, DoReFaWeight, StructuredQAT, TernaryWeight,
                                              _WeightQuant)
from weightzip.primitives.blocks import norm_block_mask, random_block_mask
from weightzip.primitives.quantizers import activation_levels
from weightzip.core.registry import create_model
from weightzip.core.recipe import RecipeError, parse_stage


@dataclass
class _Loaders:
    train: object
    val: object
    test: object = None
    task: str = "classify"


def loaders(n=128, features=(1, 8, 8), classes=4, batch=32):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, *features, generator=g)
    y = (x.flatten(1)[:, :classes].argmax(1))          # learnable labels
    ds = TensorDataset(x, y)
    return _Loaders(DataLoader(ds, batch_size=batch, shuffle=True), DataLoader(ds, batch_size=64))


class RecordingContext(StageContext):
    """Records every block mask after every optimizer step of every fit."""

    def fit(self, model, train, callbacks=(), optimizer=None, tag="fit"):
        rec = self.state.setdefault("masks", [])

        class Rec:
            def on_after_step(self, trainer, step):
                rec.append({n: m.block_mask.clone() for n, m in model.named_modules() if isinstance(m, BlockMask)})
        return super().fit(model, train, list(callbacks) + [Rec()], optimizer, tag)


def model_():
    torch.manual_seed(0)
    return create_model("mlp", widths=[32, 32], batch_norm=True, num_classes=4, in_channels=1, image_size=8)


def config(**kw):
    base = {"method": "structured_qat", "block": 8, "compression": 4, "w_bits": 2, "a_bits": 2,
            "first_last_bits": [2, 8], "train": {"epochs": 2, "lr": 0.01, "optimizer": "adam"}}
    base.update(kw)
    return parse_stage(base, 0)


def run(cfg, model=None, ctx_cls=RecordingContext):
    model = model or model_()
    ctx = ctx_cls(loaders=loaders(), log=lambda *_: None, seed=5)
    metrics = StructuredQAT(cfg).apply(model, ctx)
    return model, ctx, metrics


def block_masks(model):
    return {n: m.block_mask for n, m in model.named_modules() if isinstance(m, BlockMask)}


def test_block_masks_exact_per_row_chosen_once_and_fixed_through_training():
    model, ctx, metrics = run(config())
    masks = block_masks(model)
    # first hidden (64 -> 32, 8x8 blocks: grid 4 x 8) and second (32x32: 4x4) sparse; head dense
    assert set(masks) == {"layers.0.fc.parametrizations.weight.0", "layers.1.fc.parametrizations.weight.0"}
    assert masks["layers.0.fc.parametrizations.weight.0"].sum(1).tolist() == [2] * 4
    assert masks["layers.1.fc.parametrizations.weight.0"].sum(1).tolist() == [1] * 4
    # the random choice is the seeded one, and it never changed during training
    g = torch.Generator().manual_seed(5)
    expected = [random_block_mask((4, 8), 4, generator=g), random_block_mask((4, 4), 4, generator=g)]
    assert torch.equal(masks["layers.0.fc.parametrizations.weight.0"], expected[0])
    assert torch.equal(masks["layers.1.fc.parametrizations.weight.0"], expected[1])
    steps = ctx.state["masks"]
    assert len(steps) == 2 * 4
    for snap in steps:
        for k, v in snap.items():
            assert torch.equal(v, masks[k])
    # effective weights: zero exactly outside kept blocks, 2^k levels inside
    w = model.layers[0].fc.weight
    elem = model.layers[0].fc.parametrizations.weight[0].mask.bool()
    assert torch.all(w[~elem] == 0)
    assert torch.unique(w[elem]).numel() == 4
    assert torch.unique(model.head.weight).numel() <= 2 ** 8
    assert metrics["layers"]["layers.0.fc.weight"]["blocks_kept_per_row"] == 2
    assert metrics["layers"]["head.weight"] == {"w_bits": 8, "quantizer": "dorefa", "sparse": False}
    # pruned latent weights are zero and stay zero
    assert torch.all(P.original(model.layers[0].fc, "weight")[~elem] == 0)


def test_activation_quantizers_on_all_but_first_layer_and_hints():
    model, _, metrics = run(config())
    spec = model.wz_runtime["activation_quant"]
    assert spec == [{"module": "layers.1.fc", "bits": 2, "clip": 1.0}, {"module": "head", "bits": 2, "clip": 1.0}]
    hints = P.storage_hints(model)
    h = hints["layers.0.fc.weight"]
    assert h["kind"] == "codebook" and h["bits"] == 2 and h["block"] == (8, 8)
    assert h["block_mask"].shape == (4, 8) and h["mask"].shape == (32, 64)
    assert hints["head.weight"] == {"kind": "codebook", "bits": 8}
    assert metrics["memory"]["weight_memory_bits"] > 0 and metrics["memory"]["activation_memory_bits"] > 0
    # inputs of the second layer really are on the 2-bit grid during eval
    seen = []
    model.layers[1].fc.register_forward_hook(lambda m, a, o: seen.append(a[0]))
    model.eval()
    model(torch.randn(4, 1, 8, 8))
    assert set(torch.unique(seen[0]).tolist()) <= set(activation_levels(2).tolist())


def test_norm_selection_after_warmup_picks_largest_latent_blocks():
    warmed = {}

    class Ctx(RecordingContext):
        def fit(self, model, train, callbacks=(), optimizer=None, tag="fit"):
            out = super().fit(model, train, callbacks, optimizer, tag)
            if "warm-up" in tag:   # latent weights the blocks are chosen from
                warmed["w"] = P.original(model.layers[0].fc, "weight").detach().clone()
                warmed["masks"] = len(self.state["masks"])
            return out

    model, ctx, _ = run(config(selection="norm", warmup_epochs=1), ctx_cls=Ctx)
    bm = block_masks(model)["layers.0.fc.parametrizations.weight.0"]
    assert bm.sum(1).tolist() == [2] * 4
    assert torch.equal(bm, norm_block_mask(warmed["w"], 8, 4))
    # dense during the warm-up, then fixed for every step of the main training
    assert all(s["layers.0.fc.parametrizations.weight.0"].all() for s in ctx.state["masks"][:warmed["masks"]])
    assert all(torch.equal(s["layers.0.fc.parametrizations.weight.0"], bm)
               for s in ctx.state["masks"][warmed["masks"]:])
    assert len(ctx.state["masks"]) - warmed["masks"] == 2 * 4


def test_norm_selection_is_deterministic_top_norm():
    model = model_()
    with torch.no_grad():
        model.layers[0].fc.weight.mul_(0.01)
        model.layers[0].fc.weight[:, 8:16] = 1.0       # block column 1 is the largest everywhere
        model.layers[0].fc.weight[:, 40:48] = 0.5      # block column 5 second
    w0 = model.layers[0].fc.weight.detach().clone()
    model, _, _ = run(config(selection="norm", train={"epochs": 1, "lr": 1e-4}), model=model)
    bm = block_masks(model)["layers.0.fc.parametrizations.weight.0"]
    assert torch.equal(bm, norm_block_mask(w0, 8, 4))
    assert bm[:, 1].all() and bm[:, 5].all()


def test_pact_learns_clips_and_saves_plain_floats():
    model, _, metrics = run(config(activation="pact", a_clip=2.0, train={"epochs": 2, "lr": 0.05, "optimizer": "adam"}))
    assert not hasattr(model, "wz_pact")
    assert not any("pact" in k for k in model.state_dict())
    spec = model.wz_runtime["activation_quant"]
    assert all(isinstance(s["clip"], float) and s["clip"] > 0 for s in spec)
    assert any(abs(s["clip"] - 2.0) > 1e-4 for s in spec)          # learned
    assert metrics["pact_clips"] == {s["module"]: s["clip"] for s in spec}


def test_ternary_and_float_weights_and_config_errors():
    model, _, _ = run(config(weight_quantizer="ternary", first_last_bits=32, train={"epochs": 1}))
    assert isinstance(P.find(model.layers[1].fc, "weight", _WeightQuant), TernaryWeight)
    assert P.find(model.layers[0].fc, "weight", _WeightQuant) is None     # first layer float
    w = model.layers[1].fc.weight
    assert torch.unique(w).numel() <= 3
    with pytest.raises(RecipeError, match="w_bits: 2"):
        config(weight_quantizer="ternary", w_bits=3)
    with pytest.raises(RecipeError, match="warmup_epochs"):
        config(warmup_epochs=2)
    with pytest.raises(RecipeError, match="compression"):
        config(compression=0)


def test_conv_blocks_whole_kernels():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                          nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                          nn.Flatten(), nn.Linear(16 * 64, 4))
    model, _, _ = run(config(block=4, compression=2, train={"epochs": 1}), model=model)
    bm = P.find(model[3], "weight", BlockMask)
    assert bm.block_mask.shape == (4, 4) and bm.block_mask.sum(1).tolist() == [2] * 4
    m = bm.mask.flatten(2)
    assert torch.all((m == 0).all(2) | (m == 1).all(2))
    assert P.find(model[0], "weight", BlockMask).block_mask.shape == (4, 1)  # 1 input channel: 1 column
    hint = P.storage_hints(model)["3.weight"]
    assert hint["block"] == (4, 4 * 9) and hint["block_mask"].shape == (4, 4)   # codec's 2-D view


def test_codec_stores_block_bitmap_and_k_bit_codes():
    from weightzip.codec import decode, encode

    model, _, _ = run(config(train={"epochs": 1}))
    w = P.effective_state(model)["layers.0.fc.weight"]
    fmt = encode(w, P.storage_hints(model)["layers.0.fc.weight"])
    assert torch.equal(decode(fmt), w)
    assert fmt.meta["sparse"] == "block"
    # 512 kept weights at 2 bits + 32 block bits: well under the dense fp32 8 KiB
    assert fmt.nbytes < 512 * 2 / 8 + 64


def test_checkpoint_spec_roundtrip_rebuilds_chain():
    model, _, _ = run(config(train={"epochs": 1}))
    spec, sd = P.parametrization_spec(model), model.state_dict()
    buf = io.BytesIO()
    torch.save({"spec": spec, "sd": sd}, buf)
    buf.seek(0)
    ck = torch.load(buf, weights_only=True)
    fresh = model_()
    P.restore_parametrizations(fresh, ck["spec"])
    fresh.load_state_dict(ck["sd"])
    P.install_activation_quant(fresh, model.wz_runtime["activation_quant"])
    model.eval(), fresh.eval()
    x = torch.randn(5, 1, 8, 8)
    assert torch.equal(model(x), fresh(x))
    assert isinstance(P.find(fresh.layers[0].fc, "weight", DoReFaWeight), DoReFaWeight)


def test_compress_save_load_end_to_end(tmp_path):
    import weightzip as wz
    from weightzip.training.evaluate import evaluate

    recipe = wz.Recipe.from_yaml(Path(__file__).parents[2] / "recipes" / "structured-qat-mlp.yaml")
    stage = recipe.stages[0].model_copy(update={"block": 8, "train": {"epochs": 1, "lr": 0.01}})
    recipe = recipe.model_copy(update={"stages": [stage]})
    model = model_()
    data = loaders()
    result = wz.compress(model, recipe, loaders=data, log=lambda *_: None)
    assert result.stages[0].metrics["memory"]["weight_memory_bits"] > 0
    rep = wz.save(model, tmp_path / "m.wz", recipe=recipe)
    loaded = wz.load(tmp_path / "m.wz")
    model.eval()
    x = next(iter(data.val))[0]
    assert torch.equal(loaded(x), model(x))                     # activation quantizers re-installed
    assert evaluate(loaded, data.val) == evaluate(model, data.val)
    # in the file: block bitmap + 2-bit codes of the kept blocks (32x64 weights, 1/4 kept)
    from weightzip.codec import container

    _, formats = container.read(rep.path)
    f = formats["layers.0.fc.weight"]
    assert f.meta["sparse"] == "block" and f.meta["n_entries"] == 32 * 64 // 4
    assert f.nbytes <= 32 * 64 // 4 * 2 // 8 + 4 * 4 + 8          # codes + 4 fp32 levels + bitmap
    assert formats["head.weight"].meta.get("sparse") != "block"
