"""Magnitude, iterative and gradual pruning through Mask parametrizations."""
import json

import pytest
import torch
from torch import nn

import weightzip as wz
from weightzip.core import parametrize as P
from weightzip.errors import RecipeError
from weightzip.methods.base import StageContext
from weightzip.methods.prune import per_layer_value, set_mask
from weightzip.core.recipe import Recipe
from weightzip.core.registry import get_method
from weightzip.training.evaluate import evaluate

from .dc_toy import toy_loaders, toy_model, trained_toy

torch.set_num_threads(1)


def run_stage(model, stage: dict, loaders=None, workdir=None):
    cfg = Recipe.from_dict({"stages": [stage]}).stages[0]
    ctx = StageContext(loaders=loaders or toy_loaders(), workdir=workdir, log=lambda *_: None)
    return get_method(cfg.method)(cfg).apply(model, ctx)


def linears(model):
    return [(f"{i}", m) for i, m in enumerate(model) if isinstance(m, nn.Linear)]


def test_set_mask_ands_into_one_mask_and_zeroes_latent():
    m = toy_model()[0]
    a = (torch.rand_like(m.weight) > 0.3).float()
    b = (torch.rand_like(m.weight) > 0.3).float()
    set_mask(m, "weight", a)
    set_mask(m, "weight", b)
    chain = P.chain(m, "weight")
    assert len(chain) == 1 and isinstance(chain[0], P.Mask)
    assert torch.equal(chain[0].mask, a * b)
    assert torch.all(P.original(m, "weight")[(a * b) == 0] == 0)
    assert torch.all(m.weight[(a * b) == 0] == 0)


def test_threshold_pruning_matches_reference_count():
    model = toy_model()
    before = {n: mod.weight.detach().clone() for n, mod in linears(model)}
    out = run_stage(model, {"method": "prune_magnitude", "s": {"4": 0.5, "default": 1.0}})
    for n, mod in linears(model):
        s = 0.5 if n == "4" else 1.0
        w = before[n]
        tau = s * w.double().std().item()
        ref = sum(1 for v in w.flatten().tolist() if abs(v) <= tau)
        assert int((mod.weight == 0).sum()) == ref
        assert out["s"][f"{n}.weight"] == s
    assert 0 < out["total_sparsity"] < 1


def test_target_sparsity_per_layer_and_type_keys():
    model = toy_model()
    run_stage(model, {"method": "prune_magnitude", "sparsity": {"0": 0.5, "type:Linear": 0.8}})
    sp = {n: float((mod.weight == 0).float().mean()) for n, mod in linears(model)}
    assert sp["0"] == pytest.approx(0.5, abs=0.01)
    assert sp["2"] == pytest.approx(0.8, abs=0.01) and sp["4"] == pytest.approx(0.8, abs=0.02)


def test_per_layer_value_resolution_order():
    lin = nn.Linear(2, 2)
    v = {"fc*": 1.0, "re:^fc1$": 2.0, "default": 3.0}
    assert per_layer_value(v, "fc1", lin) == 1.0  # first match in written order
    assert per_layer_value(v, "out", lin) == 3.0
    with pytest.raises(RecipeError, match="no entry matches layer 'out'"):
        per_layer_value({"fc*": 1.0}, "out", lin, "s")


def test_sensitivity_scan_picks_largest_s_within_drop(tmp_path):
    model, loaders = trained_toy()
    grid = [0.5, 1.0, 1.5, 2.0, 3.0]
    max_drop = 2.0
    ref_model = toy_model()
    ref_model.load_state_dict(model.state_dict())
    base = 100 * evaluate(ref_model, loaders.val)["accuracy"]
    # reference: prune each layer alone (on a copy) and keep the largest s within the drop
    expected = {}
    for n, mod in linears(ref_model):
        w0 = mod.weight.detach().clone()
        ok = []
        for s in grid:
            with torch.no_grad():
                mod.weight.copy_(w0 * (w0.abs() > s * w0.double().std().item()))
            if base - 100 * evaluate(ref_model, loaders.val)["accuracy"] <= max_drop:
                ok.append(s)
            with torch.no_grad():
                mod.weight.copy_(w0)
        expected[f"{n}.weight"] = max(ok) if ok else 0.0
    out = run_stage(model, {"method": "prune_magnitude",
                            "sensitivity": {"grid": grid, "max_drop": max_drop, "max_eval_batches": None}},
                    loaders=loaders, workdir=tmp_path)
    assert out["s"] == expected
    curves = json.loads((tmp_path / "sensitivity.json").read_text())
    assert set(curves["layers"]) == set(expected)
    assert (tmp_path / "sensitivity.png").stat().st_size > 1000
    for name, c in curves["layers"].items():
        assert c["s"] == grid and len(c["quality"]) == len(grid)
        assert c["sparsity"] == sorted(c["sparsity"])  # larger s prunes more
    # the scan restored every weight before the final pruning: final masks are the chosen thresholds
    for n, mod in linears(model):
        assert P.find(mod, "weight", P.Mask) is not None


def test_masks_fixed_and_pruned_weights_zero_during_finetune():
    model, loaders = trained_toy()
    run_stage(model, {"method": "prune_magnitude", "sparsity": 0.7}, loaders)
    masks = {n: P.find(mod, "weight", P.Mask).mask.clone() for n, mod in linears(model)}
    # momentum and weight decay would move unmasked latent weights; the effective ones must stay 0
    run_stage(model, {"method": "finetune", "train": {"epochs": 2, "lr": 0.05, "optimizer": "sgd",
                                                      "momentum": 0.9, "weight_decay": 1e-3}}, loaders)
    for n, mod in linears(model):
        assert torch.equal(P.find(mod, "weight", P.Mask).mask, masks[n])
        assert torch.all(mod.weight[masks[n] == 0] == 0)
        assert len(P.chain(mod, "weight")) == 1


def test_iterative_pruning_reaches_target_and_keeps_accuracy():
    model, loaders = trained_toy()
    out = run_stage(model, {"method": "prune_iterative", "rounds": 3, "sparsity": 0.75,
                            "train": {"epochs": 1, "lr": 0.01, "optimizer": "sgd", "momentum": 0.9}}, loaders)
    assert [r["round"] for r in out["rounds"]] == [1, 2, 3]
    sp = [r["total_sparsity"] for r in out["rounds"]]
    # geometric spacing (default): each round keeps the same fraction of the remaining weights
    for r, got in enumerate(sp, start=1):
        assert got == pytest.approx(1 - 0.25 ** (r / 3), abs=0.01)
    assert out["rounds"][-1]["val_retrained"]["accuracy"] > 0.8
    for _, mod in linears(model):
        assert len(P.chain(mod, "weight")) == 1


def test_iterative_linear_spacing_and_thresholds():
    model, loaders = trained_toy()
    out = run_stage(model, {"method": "prune_iterative", "rounds": 2, "sparsity": 0.6, "spacing": "linear",
                            "train": {"epochs": 1, "lr": 0.01}}, loaders)
    assert [r["total_sparsity"] for r in out["rounds"]] == pytest.approx([0.3, 0.6], abs=0.01)
    model = toy_model()
    w0 = model[0].weight.detach().clone()
    run_stage(model, {"method": "prune_iterative", "rounds": 2, "s": 1.0, "train": {"epochs": 1, "lr": 1e-9}},
              loaders)
    # final threshold is s * std of the weights before the first round (nothing retrained: lr ~ 0)
    tau = w0.double().std().item()
    assert torch.equal(P.find(model[0], "weight", P.Mask).mask.bool(), w0.abs() > tau)


def test_gradual_pruning_follows_agp_and_masks_only_grow():
    model, loaders = trained_toy()
    seen = []

    class Spy:
        def on_after_step(self, trainer, step):
            mod = model[2]
            m = P.find(mod, "weight", P.Mask)
            seen.append(float((m.mask == 0).float().mean()))

    from weightzip.methods import prune as prune_mod

    original_cb = prune_mod.AGPCallback

    class SpyAGP(original_cb):  # record the sparsity right after each AGP update
        def on_after_step(self, trainer, step):
            super().on_after_step(trainer, step)
            Spy().on_after_step(trainer, step)

    prune_mod.AGPCallback = SpyAGP
    try:
        out = run_stage(model, {"method": "prune_gradual", "sparsity": {"4": 0.5, "default": 0.8},
                                "frequency": 4, "n_updates": 5, "begin_step": 2,
                                "train": {"epochs": 3, "lr": 0.02, "optimizer": "sgd", "momentum": 0.9}},
                        loaders)
    finally:
        prune_mod.AGPCallback = original_cb
    assert out["agp"]["updates"] == 6
    assert out["layer_sparsity"]["2.weight"] == pytest.approx(0.8, abs=0.01)
    assert out["layer_sparsity"]["4.weight"] == pytest.approx(0.5, abs=0.02)
    assert seen == sorted(seen)  # monotone: pruned weights never come back
    from weightzip.primitives.sparsity import agp_sparsity
    # sparsity after the update at step 2 + 4j equals the schedule
    for j in range(6):
        step = 2 + 4 * j
        assert seen[step] == pytest.approx(agp_sparsity(step, 0.8, begin=2, n=5, dt=4), abs=1 / 1024 + 1e-9)


@pytest.mark.parametrize("stage, field", [
    ({"method": "prune_magnitude", "s": -0.5}, "s"),
    ({"method": "prune_magnitude", "s": {"fc1": -1.0}}, "s"),
    ({"method": "prune_magnitude", "sparsity": 1.5}, "sparsity"),
    ({"method": "prune_magnitude", "s": 1.0, "sparsity": 0.5}, "exactly one"),
    ({"method": "prune_magnitude"}, "exactly one"),
    ({"method": "prune_gradual", "sparsity": 0.9, "frequency": 0}, "frequency"),
    ({"method": "prune_iterative", "rounds": 0, "s": 1.0}, "rounds"),
])
def test_bad_configs_raise_recipe_error_naming_field(stage, field):
    with pytest.raises(RecipeError, match=field):
        Recipe.from_dict({"stages": [stage]})


def test_unknown_layer_pattern_is_a_recipe_error():
    model = toy_model()
    with pytest.raises(RecipeError, match="layer pattern 'fc9' matches no selected layer"):
        run_stage(model, {"method": "prune_magnitude", "s": {"fc9": 1.0, "default": 0.5}})


def test_compress_pipeline_prune_then_finetune(tmp_path):
    model, loaders = trained_toy()
    recipe = Recipe.from_dict({"stages": [
        {"method": "prune_magnitude", "s": 1.0},
        {"method": "finetune", "train": {"epochs": 1, "lr": 0.01, "optimizer": "sgd"}},
    ]})
    res = wz.compress(model, recipe, loaders=loaders, workdir=tmp_path, log=lambda *_: None)
    assert res.stages[0].metrics["total_sparsity"] > 0.5
    assert res.stages[-1].metrics["val"]["accuracy"] > 0.8
    assert (tmp_path / "stage-1-finetune.pt").exists()
