"""The loss_aware method: coupling with Adam, STE, caching, storage, LSTMs, recipes."""
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import weightzip
from weightzip.core import parametrize as P
from weightzip.errors import RecipeError
from weightzip.methods.base import StageContext
from weightzip.methods.loss_aware import LossAware, LossAwareCallback, LossAwareQuant
from weightzip.primitives import loss_aware as la
from weightzip.core.recipe import Recipe
from weightzip.core.registry import create_model
from weightzip.training.trainer import Trainer

RECIPES = Path(__file__).resolve().parents[2] / "recipes"


@dataclass
class Loaders:
    train: Any
    val: Any
    test: Any = None
    task: str = "classify"
    info: dict = field(default_factory=dict)


def blobs(n=320, dim=16, classes=4, seed=0, batch_size=40):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(classes, dim, generator=g) * 1.5
    y = torch.randint(0, classes, (n,), generator=g)
    x = centers[y] + torch.randn(n, dim, generator=g)
    ds = TensorDataset(x, y)
    return Loaders(DataLoader(ds, batch_size=batch_size, shuffle=True), DataLoader(ds, batch_size=240))


def mlp(seed=0, dim=16, hidden=32, classes=4):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
                         nn.Linear(hidden, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, classes))


def lm_loaders(vocab=50, T=6, B=4, n=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    seq = torch.randint(0, vocab, (n * T + 1, B), generator=g)
    seq[1::2] = (seq[0:-1:2] + 1) % vocab  # a learnable pattern: every other token is the previous + 1
    xs, ys = seq[:-1].split(T), seq[1:].split(T)
    batches = list(zip(xs, ys))
    return Loaders(batches, batches[:3], task="lm")


def stage(**kw):
    train = kw.pop("train", {"epochs": 2, "lr": 0.01, "optimizer": "adam", "progress": False, "test_at_end": False})
    return LossAware(LossAware.Config(method="loss_aware", train=train, **kw))


def quant_params(model):
    return [(n, m, t, P.find(m, t, LossAwareQuant)) for n, m, t in P.parametrized_tensors(model)
            if P.find(m, t, LossAwareQuant) is not None]


# ---------------------------------------------------------------------------------------------
# training a tiny MLP


@pytest.mark.parametrize("mode,bits,values", [("lab", None, 2), ("bc", None, 2), ("bwn", None, 2),
                                              ("lat", None, 3), ("twn", None, 3), ("lat2", None, 3),
                                              ("laq", 2, 3), ("laq", 3, 7)])
def test_trains_tiny_mlp_with_few_values_and_latent_in_range(mode, bits, values):
    loaders = blobs()
    model = mlp()
    out = stage(mode=mode, bits=bits, exact=mode in ("lat", "lat2")).apply(model, StageContext(loaders=loaders, log=lambda s: None))
    losses = [h["train_loss"] for h in out["train_history"]]
    assert losses[-1] < losses[0]
    assert out["val"]["accuracy"] > 0.5
    targets = quant_params(model)
    assert len(targets) == 3  # every Linear, first and last included
    for name, mod, t, p in targets:
        w = getattr(mod, t).detach()
        assert 2 <= torch.unique(w).numel() <= values, (name, torch.unique(w))
        latent = P.original(mod, t)
        assert latent.abs().max() <= 1.0
    # biases and BN stay full precision parameters
    assert not hasattr(model[1], "parametrizations")
    assert isinstance(model[0].bias, nn.Parameter)


def test_d_of_each_step_is_the_previous_steps_adam_second_moment():
    loaders = blobs()
    model = mlp()
    method = stage(mode="lab")
    targets = method.attach(model)
    seen = []

    class Probe:  # on_step: after backward, before optimizer.step -> the d used by this forward
        def on_step(self, trainer, step):
            p = targets[0][3]
            latent = P.original(targets[0][1], "weight")
            v = trainer.optimizer.state.get(latent, {}).get("exp_avg_sq")
            expected = torch.ones_like(p.d) if v is None else v.sqrt() + 1e-8
            seen.append(torch.allclose(p.d, expected, rtol=0, atol=0))

    cb = LossAwareCallback(targets)
    tr = Trainer(model, {"epochs": 1, "lr": 0.01, "optimizer": "adam", "progress": False, "test_at_end": False,
                         "max_steps_per_epoch": 5}, loaders, callbacks=[cb, Probe()])
    tr.fit()
    assert len(seen) == 5 and all(seen)
    # after training, d reflects the last step's second moment and w_hat is the LAB projection
    p = targets[0][3]
    latent = P.original(targets[0][1], "weight")
    v = tr.optimizer.state[latent]["exp_avg_sq"]
    assert torch.equal(p.d, v.sqrt() + 1e-8)
    assert torch.equal(p.w_hat, la.lab_project(latent.detach(), p.d).w_hat)


def test_straight_through_gradient_reaches_the_latent_weights():
    model = mlp()
    stage(mode="laq", bits=3).attach(model)
    x, y = torch.randn(8, 16), torch.randint(0, 4, (8,))
    nn.functional.cross_entropy(model(x), y).backward()
    # the same function with the projected weights as plain parameters
    ref = mlp()
    ref.load_state_dict(P.effective_state(model))
    nn.functional.cross_entropy(ref(x), y).backward()
    for i in (0, 3, 6):
        assert torch.allclose(P.original(model[i], "weight").grad, ref[i].weight.grad, atol=1e-6)


def test_projection_is_cached_and_recomputed_only_after_a_change(monkeypatch):
    model = mlp()
    stage(mode="lat").attach(model)
    p = P.find(model[0], "weight", LossAwareQuant)
    calls = []
    orig = LossAwareQuant.refresh
    monkeypatch.setattr(LossAwareQuant, "refresh", lambda self, w: (calls.append(1), orig(self, w)))
    x = torch.randn(4, 16)
    model.eval()
    model(x), model(x)
    assert calls == []
    assert torch.equal(model[0].weight, p.w_hat)
    with torch.no_grad():
        P.original(model[0], "weight").mul_(0.5)  # an in-place change (as an optimizer step)
    model(x)
    assert len(calls) == 1
    assert torch.equal(p.w_hat, la.lat_approx_project(P.original(model[0], "weight").detach(), p.d,
                                                      prev=p.w_hat).w_hat)


def test_checkpoint_roundtrip_keeps_the_projection_exactly():
    model = mlp()
    stage(mode="lat", train={"epochs": 1, "progress": False}).apply(model, StageContext(loaders=blobs(), log=lambda s: None))
    spec, sd = P.parametrization_spec(model), model.state_dict()
    assert spec["0.weight"][0]["kind"] == "loss_aware"
    fresh = mlp(seed=5)
    P.restore_parametrizations(fresh, spec)
    fresh.load_state_dict(sd)
    for i in (0, 3, 6):
        assert torch.equal(fresh[i].weight, model[i].weight)
        assert torch.equal(P.find(fresh[i], "weight", LossAwareQuant).d, P.find(model[i], "weight", LossAwareQuant).d)


def test_resumed_training_equals_uninterrupted(tmp_path):
    def run(epochs, ckpt, resume=False):
        model = mlp()
        targets = stage(mode="lat").attach(model)
        cfg = {"epochs": epochs, "lr": 0.01, "optimizer": "adam", "progress": False, "test_at_end": False,
               "max_steps_per_epoch": 4}
        Trainer(model, cfg, blobs(), callbacks=[LossAwareCallback(targets)], checkpoint=ckpt).fit(resume=resume)
        return model

    straight = run(2, tmp_path / "a.pt")
    run(1, tmp_path / "b.pt")
    resumed = run(2, tmp_path / "b.pt", resume=True)
    for i in (0, 3, 6):
        assert torch.equal(resumed[i].weight, straight[i].weight)


def test_sparsity_keeps_at_most_the_budget_per_tensor():
    model = mlp()
    stage(mode="laq", bits=3, sparsity=0.75, train={"epochs": 1, "progress": False}).apply(
        model, StageContext(loaders=blobs(), log=lambda s: None))
    for _, mod, t, p in quant_params(model):
        w = getattr(mod, t).detach()
        assert (w != 0).sum() <= round(0.25 * w.numel())
        assert torch.unique(w).numel() <= 7


def test_latent_weights_above_one_are_rescaled():
    model = mlp()
    with torch.no_grad():
        model[0].weight.mul_(50)
    before = model[0].weight.detach().clone()
    stage(mode="lab").attach(model, log=lambda s: None)
    latent = P.original(model[0], "weight").detach()
    assert latent.abs().max() == pytest.approx(1.0)
    assert torch.allclose(latent, before / before.abs().max())


# ---------------------------------------------------------------------------------------------
# LSTMs


def test_lstm_gets_per_gate_scales_and_trains():
    model = create_model("lstm_lm_tiny", norm="layer", dropout=0.0)
    out = stage(mode="lab", select={"types": ["LSTMLayer"]},
                train={"epochs": 2, "lr": 0.01, "optimizer": "adam", "progress": False, "test_at_end": False}
                ).apply(model, StageContext(loaders=lm_loaders(), log=lambda s: None))
    assert out["train_history"][-1]["train_loss"] < out["train_history"][0]["train_loss"]
    layer = model.lstm_layers[0]
    scales = []
    for t in ("weight_ih", "weight_hh"):
        p = P.find(layer, t, LossAwareQuant)
        assert p.blocks == 4 and p.alpha.shape == (4,)
        w = getattr(layer, t).detach()
        for g, block in enumerate(w.chunk(4, dim=0)):  # gate order i, f, g, o
            assert set(block.unique().tolist()) == {-p.alpha[g].item(), p.alpha[g].item()}
        scales += p.alpha.tolist()
    assert len(set(scales)) == 8  # 8 distinct scales per layer
    assert out["tensors"]["lstm_layers.0.weight_ih"]["blocks"] == 4


def test_per_gate_can_be_turned_off():
    model = create_model("lstm_lm_tiny")
    targets = stage(mode="lat", per_gate=False, select={"types": ["LSTMLayer"]}).attach(model)
    assert all(p.blocks == 1 for *_, p in targets)


@pytest.mark.parametrize("norm", ["none", "batch", "weight"])
def test_quantized_lstm_runs_with_each_norm(norm):
    model = create_model("lstm_lm_tiny", norm=norm)
    stage(mode="laq", bits=2, select={"types": ["LSTMLayer"]}).attach(model)
    logits, _ = model(torch.randint(0, 50, (5, 3)))
    logits.sum().backward()
    assert P.original(model.lstm_layers[0], "weight_hh").grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------------
# storage, recipes, configuration


def test_compress_save_load_binary_model_is_near_32x_on_quantized_tensors(tmp_path):
    from weightzip.codec import encode

    model = create_model("mlp", width=256, depth=1, image_size=8, num_classes=4)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(200, 1, 8, 8, generator=g), torch.randint(0, 4, (200,), generator=g)
    loaders = Loaders(DataLoader(TensorDataset(x, y), batch_size=50), DataLoader(TensorDataset(x, y), batch_size=200))
    recipe = Recipe.from_dict({"name": "lab", "stages": [
        {"method": "loss_aware", "mode": "lab", "train": {"epochs": 1, "lr": 0.01, "progress": False}}]})
    weightzip.compress(model, recipe, loaders=loaders, log=lambda s: None)
    hints = P.storage_hints(model)
    state = P.effective_state(model)
    fmt = encode(state["layers.0.fc.weight"], hints["layers.0.fc.weight"])
    assert fmt.kind == "uniform"
    assert fmt.nbytes * 8 / state["layers.0.fc.weight"].numel() < 1.1  # ~1 bit per weight (32x)
    rep = weightzip.save(model, tmp_path / "lab.wz", recipe=recipe)
    loaded = weightzip.load(rep.path)
    model.eval()
    assert torch.equal(loaded(x), model(x))


def test_lstm_weights_store_at_one_bit_with_gate_scales():
    from weightzip.codec import encode

    model = create_model("lstm_lm", vocab_size=20, hidden_size=64)
    stage(mode="lab", select={"types": ["LSTMLayer"]}).attach(model)
    w = model.lstm_layers[0].weight_hh.detach()
    fmt = encode(w, P.storage_hints(model)["lstm_layers.0.weight_hh"])
    assert fmt.nbytes * 8 / w.numel() < 1.1


@pytest.mark.parametrize("kw,match", [({"mode": "laq"}, "bits"), ({"mode": "lab", "bits": 3}, "laq"),
                                      ({"mode": "bwn", "sparsity": 0.5}, "sparsity"),
                                      ({"mode": "laq", "bits": 9}, "bits")])
def test_bad_configs_are_refused(kw, match):
    with pytest.raises(RecipeError, match=match):
        Recipe.from_dict({"stages": [{"method": "loss_aware", **kw}]})


def test_shipped_recipes_parse():
    paths = sorted(RECIPES.glob("loss-aware-*.yaml"))
    assert paths, "recipes/loss-aware-*.yaml missing"
    for path in paths:
        r = Recipe.from_yaml(path)
        assert any(s.method == "loss_aware" for s in r.stages), path


def test_quantized_lstm_file_gives_the_same_logits(tmp_path):
    model = create_model("lstm_lm_tiny", norm="weight")
    stage(mode="laq", bits=3, select={"types": ["LSTMLayer"]}).attach(model)
    model.eval()
    x = torch.randint(0, 50, (5, 2))
    rep = weightzip.save(model, tmp_path / "lstm.wz")
    loaded = weightzip.load(rep.path)
    assert torch.equal(loaded(x)[0], model(x)[0])
