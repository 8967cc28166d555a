import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import weightzip
from weightzip.core import parametrize as P
from weightzip.errors import WeightzipError
from weightzip.methods.base import StageContext
from weightzip.methods.gradient_importance import (
    GradITQ,
    GradPTQ,
    ImportanceTracker,
    ITQCallback,
    MixedFixedPoint,
    importance_tensors,
    named_latent_parameters,
    ptq_quantize,
)
from weightzip.primitives.fixed_point import frac_bits_for, fxp_quantize
from weightzip.core.recipe import Recipe
from weightzip.core.select import Selection, select


def tiny(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))


def loaders(n=64, batch=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    ds = TensorDataset(x, y)
    return SimpleNamespace(train=DataLoader(ds, batch_size=batch, shuffle=True),
                           val=DataLoader(ds, batch_size=64), test=None, task="classify", info={})


def ctx_for(ld, state=None):
    return StageContext(loaders=ld, state={} if state is None else state, log=lambda m: None)


TRAIN = {"epochs": 2, "lr": 0.05, "optimizer": "sgd", "momentum": 0.9, "test_at_end": False}


# ---------------------------------------------------------------------------------------------
# tracker


def test_tracker_sums_exactly_what_autograd_produced_incl_parametrized():
    m = tiny()
    P.attach(m[0], "weight", P.Mask((torch.rand(8, 6) > 0.3).float()))
    names = named_latent_parameters(m)
    assert set(names) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    assert names["0.weight"] is P.original(m[0], "weight")
    store = {}
    tr = ImportanceTracker(store).bind(m)
    manual = {k: torch.zeros_like(p) for k, p in names.items()}
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    torch.manual_seed(1)
    for _ in range(4):
        opt.zero_grad()
        nn.functional.cross_entropy(m(torch.randn(5, 6)), torch.randint(0, 3, (5,))).backward()
        tr.on_step(None, 0)
        for k, p in names.items():
            manual[k] += p.grad.abs()
        opt.step()
    for k in names:
        assert torch.equal(store[k], manual[k]), k
    assert tr.steps == 4
    # masked entries of the latent get zero gradient -> zero importance
    mask = P.find(m[0], "weight", P.Mask).mask
    assert torch.all(store["0.weight"][mask == 0] == 0)


class GradRecorder:
    def __init__(self, model):
        self.params = named_latent_parameters(model)
        self.sum = {k: torch.zeros_like(p) for k, p in self.params.items()}

    def on_step(self, trainer, step):
        for k, p in self.params.items():
            self.sum[k] += p.grad.abs()


def test_tracker_through_trainer_and_state_round_trip():
    from weightzip.training.trainer import Trainer

    m, ld = tiny(), loaders()
    tr, rec = ImportanceTracker(), GradRecorder(m)
    Trainer(m, TRAIN, ld, callbacks=[tr, rec]).fit()
    assert tr.steps == 2 * 4
    for k in rec.sum:
        assert torch.equal(tr.store[k], rec.sum[k])
    st = tr.state_dict()
    tr2 = ImportanceTracker().bind(m)
    tr2.load_state_dict(st)
    assert all(torch.equal(tr2.store[k], tr.store[k]) for k in st["importance"]) and tr2.steps == 8


def test_tracker_refuses_importance_of_another_shape():
    m = tiny()
    with pytest.raises(WeightzipError, match="model changed"):
        ImportanceTracker({"0.weight": torch.zeros(3, 3)}).bind(m)


# ---------------------------------------------------------------------------------------------
# parametrization


def ref_elem(x: float, b: int, f: int) -> float:
    if b == 0:
        return 0.0
    k = round(x * 2.0 ** f)  # Python round: half to even
    k = max(-(2 ** (b - 1)), min(2 ** (b - 1) - 1, k))
    return k * 2.0 ** (-f)


def test_mixed_fixed_forward_matches_per_element_reference_and_round_trips():
    torch.manual_seed(0)
    m = tiny()
    w = P.original(m[0], "weight").detach().clone()
    cluster = torch.randint(0, 4, w.shape)
    bits, frac = [8, 5, 3, 0], [7, 4, 3, 0]
    P.attach(m[0], "weight", MixedFixedPoint(cluster, bits, frac))
    got = m[0].weight.detach()
    want = torch.tensor([[ref_elem(float(w[i, j]), bits[cluster[i, j]], frac[cluster[i, j]])
                          for j in range(w.shape[1])] for i in range(w.shape[0])])
    assert torch.equal(got, want)
    hint = P.storage_hints(m)["0.weight"]
    assert hint["kind"] == "mixed_fixed" and hint["bits"] == [8, 5, 3, 1] and hint["frac_bits"] == frac
    assert hint["cluster"].dtype == torch.int8 and torch.equal(hint["cluster"].long(), cluster)
    # STE: the latent weight receives the output gradient unchanged
    m(torch.randn(2, 6)).sum().backward()
    assert P.original(m[0], "weight").grad is not None
    # checkpoint rebuild with the right buffer dtypes
    spec, sd = P.parametrization_spec(m), m.state_dict()
    m2 = tiny(seed=5)
    P.restore_parametrizations(m2, spec)
    m2.load_state_dict(sd)
    assert torch.equal(m2[0].weight, m[0].weight)
    assert P.find(m2[0], "weight", MixedFixedPoint).cluster.dtype == torch.int8


# ---------------------------------------------------------------------------------------------
# PTQ


def test_ptq_attaches_mixed_fixed_with_bits_by_importance():
    m = tiny()
    entries = select(m, Selection(tensors=["*"]))
    imp = [torch.rand_like(P.original(mod, t)) for _, mod, t in entries]
    ids = ptq_quantize(m, entries, imp, [8, 4, 2], clustering="quantile")
    all_bits, all_imp = [], []
    for (_, mod, t), cl, a in zip(entries, ids, imp):
        p = P.find(mod, t, MixedFixedPoint)
        assert torch.equal(p.cluster.long(), cl)
        w = P.original(mod, t).detach()
        assert p.frac_bits.tolist() == [frac_bits_for(w, b) for b in (8, 4, 2)]
        eb, ef = p.element_formats()
        assert torch.equal(getattr(mod, t).detach(), fxp_quantize(w, eb, ef))
        all_bits.append(eb.reshape(-1))
        all_imp.append(a.reshape(-1))
    bits, imp_all = torch.cat(all_bits), torch.cat(all_imp)
    order = torch.argsort(imp_all, descending=True)
    assert torch.all(bits[order][1:] <= bits[order][:-1])  # bits never increase as importance falls
    assert [int((bits == b).sum()) for b in (8, 4, 2)] == [28, 27, 28]  # bounds round(83 j / 3)


def test_grad_ptq_needs_importance_or_magnitude():
    m, ld = tiny(), loaders()
    with pytest.raises(WeightzipError, match="train_tracked"):
        GradPTQ(GradPTQ.Config(method="grad_ptq")).apply(m, ctx_for(ld))
    out = GradPTQ(GradPTQ.Config(method="grad_ptq", importance="magnitude", bits=[8, 2])).apply(m, ctx_for(ld))
    assert out["cluster_count"][0] + out["cluster_count"][1] == out["params"] == 6 * 8 + 8 + 8 * 3 + 3
    # magnitude: the largest weight of the net is in the 8-bit cluster
    w = P.original(m[0], "weight")
    p = P.find(m[0], "weight", MixedFixedPoint)
    assert int(p.cluster.reshape(-1)[w.detach().abs().reshape(-1).argmax()]) == 0 or \
        float(w.abs().max()) < float(P.original(m[2], "weight").abs().max())


def test_grad_ptq_config_validation():
    with pytest.raises(ValueError, match="non-increasing"):
        GradPTQ.Config(method="grad_ptq", bits=[2, 8])
    with pytest.raises(ValueError, match="quantile"):
        GradPTQ.Config(method="grad_ptq", bits=[8, 2], fractions=[0.5, 0.5])


# ---------------------------------------------------------------------------------------------
# ITQ


def _itq(variant, quantiles=(0.5, 0.75, 0.75), recovery=0, weight_decay=1e-3):
    m, ld = tiny(), loaders()
    ctx = ctx_for(ld)
    train = {k: v for k, v in TRAIN.items() if k != "epochs"}
    cfg = GradITQ.Config(method="grad_itq", variant=variant, quantiles=list(quantiles), b_low=3, b_high=8,
                         recovery_epochs=recovery, train={**train, "weight_decay": weight_decay})
    return m, ctx, cfg


def test_itq_freeze_really_stops_updates():
    """Frozen entries keep their values under SGD momentum + weight decay, and get no importance."""
    m, ld = tiny(), loaders()
    entries = select(m, Selection(tensors=["*"]))
    store = {}
    tracker = ImportanceTracker(store)
    imp_fn = lambda: [store[f"{mn}.{t}"] for mn, _, t in entries]  # noqa: E731
    itq = ITQCallback(entries, imp_fn, [0.5, 0.75], b_low=3, variant="freeze")
    snaps = []

    class Snap:
        def on_epoch_end(self, trainer, epoch, metrics):
            snaps.append(([P.original(mod, t).detach().clone() for _, mod, t in entries],
                          [l.clone() for l in itq.low], {k: v.clone() for k, v in store.items()}))

    from weightzip.training.trainer import Trainer

    Trainer(m, {**TRAIN, "epochs": 3, "weight_decay": 1e-2}, ld, callbacks=[itq, tracker, Snap()]).fit()
    (w1, low1, a1), (w2, low2, a2), (w3, low3, a3) = snaps
    for i, (mn, _, t) in enumerate(entries):
        key = f"{mn}.{t}"
        assert torch.all(low2[i] >= low1[i]) and torch.all(low3[i] >= low2[i])  # frozen set only grows
        assert torch.equal(w3[i][low1[i]], w1[i][low1[i]])                       # frozen after epoch 1: fixed
        assert torch.equal(w3[i][low2[i]], w2[i][low2[i]])
        assert torch.equal(a3[key][low1[i]], a1[key][low1[i]])                  # no gradient accumulated
    moving = sum(int((w3[i] != w1[i])[~low2[i]].sum()) for i in range(len(entries)))
    assert moving > 0                                                           # the rest trains
    frac = sum(int(l.sum()) for l in low1) / sum(l.numel() for l in low1)
    assert frac >= 0.5


def test_itq_reproject_keeps_training_everything_and_stores_two_clusters():
    m, ctx, cfg = _itq("reproject")
    out = GradITQ(cfg).apply(m, ctx)
    assert len(out["thresholds"]) == 3 and out["bits"] == [8, 3]
    assert out["cluster_count"][1] / out["params"] >= 0.75
    assert "importance" in ctx.state and set(ctx.state["importance"]) >= {"0.weight", "0.bias"}
    for _, mod, t in select(m, Selection(tensors=["*"])):
        p = P.find(mod, t, MixedFixedPoint)
        low = p.cluster.bool()
        w = P.original(mod, t).detach()
        # the low group is exactly on its 3-bit grid (projected after the last epoch)
        assert torch.equal(getattr(mod, t).detach()[low], w[low])
    total_low = sum(out["cluster_count"][1:])
    assert total_low / out["params"] >= 0.75


def test_itq_recovery_epochs_train_with_final_formats_and_frozen_low_group():
    m, ctx, cfg = _itq("reproject", quantiles=(0.5, 0.75), recovery=2)
    seen = []
    orig = GradITQ._attach_final

    def spy(self, entries, itq):
        seen.append([(l.clone(), P.original(mod, t).detach().clone()) for l, (_, mod, t) in zip(itq.low, entries)])
        orig(self, entries, itq)

    GradITQ._attach_final = spy
    try:
        out = GradITQ(cfg).apply(m, ctx)
    finally:
        GradITQ._attach_final = orig
    assert len(seen) == 1 and len(out["thresholds"]) == 2 and len(out["train_history"]) == 4
    entries = select(m, Selection(tensors=["*"]))
    for (low, w_before), (_, mod, t) in zip(seen[0], entries):
        w = P.original(mod, t).detach()
        assert torch.equal(w[low], w_before[low])                      # frozen during recovery
        assert torch.any(w[~low] != w_before[~low])                    # the high group trained on
        p = P.find(mod, t, MixedFixedPoint)
        assert torch.equal(p.cluster.bool(), low)
    with pytest.raises(ValueError, match="leave train.epochs out"):
        GradITQ.Config(method="grad_itq", quantiles=[0.5], recovery_epochs=1, train={"epochs": 5})


def test_itq_freeze_through_method():
    m, ctx, cfg = _itq("freeze")
    out = GradITQ(cfg).apply(m, ctx)
    assert out["variant"] == "freeze" and out["cluster_count"][1] / out["params"] >= 0.75


# ---------------------------------------------------------------------------------------------
# end to end through recipes


RECIPE = """
name: gi-test
stages:
  - method: train_tracked
    from_scratch: true
    train: {epochs: 1, lr: 0.05, optimizer: sgd, momentum: 0.9, test_at_end: false}
  - method: grad_itq
    quantiles: [0.5]
    b_low: 3
    train: {lr: 0.01, optimizer: sgd, test_at_end: false}
  - method: grad_ptq
    bits: [8, 4, 0]
"""


def test_combined_recipe_end_to_end(tmp_path):
    recipe = Recipe.from_yaml(RECIPE)
    m, ld = tiny(), loaders()
    res = weightzip.compress(m, recipe, loaders=ld, workdir=tmp_path, log=lambda s: None)
    assert [s.method for s in res.stages] == ["train_tracked", "grad_itq", "grad_ptq"]
    hints = P.storage_hints(m)
    assert set(hints) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    assert all(h["kind"] == "mixed_fixed" and h["bits"] == [8, 4, 1] for h in hints.values())
    # only the last MixedFixedPoint remains on each tensor (the ITQ one was replaced)
    assert all(len(P.chain(mod, t)) == 1 for _, mod, t in P.parametrized_tensors(m))
    # 0-bit cluster is pruned; importance is saved with the stage checkpoint
    p = P.find(m[0], "weight", MixedFixedPoint)
    assert torch.all(m[0].weight.detach()[p.cluster == 2] == 0)
    ck = torch.load(tmp_path / "stage-2-grad_ptq.pt", weights_only=True)
    assert torch.is_tensor(ck["stage_state"]["importance"]["0.weight"])
    assert res.stages[0].metrics["tracked_steps"] == 4


@pytest.mark.parametrize("name", ["ptq", "itq", "combined", "ptq-magnitude", "itq-magnitude", "combined-magnitude"])
def test_shipped_recipes_parse(name):
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "recipes" / f"gradient-importance-{name}.yaml"
    r = Recipe.from_yaml(path)
    assert any(s.method.startswith("grad_") for s in r.stages)
    assert Recipe.from_json(r.to_json()).to_dict() == r.to_dict()
