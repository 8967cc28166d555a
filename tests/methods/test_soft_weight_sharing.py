"""Soft weight-sharing: quantization to component means, collapse detection, recipe validation."""
import pytest
import torch
from torch import nn

import weightzip as wz
from weightzip.core import parametrize as P
from weightzip.errors import RecipeError
from weightzip.methods.base import StageContext
from weightzip.methods.soft_weight_sharing import MixtureCollapseError
from weightzip.core.recipe import Recipe
from weightzip.core.registry import get_method

from .dc_toy import toy_loaders, trained_toy

torch.set_num_threads(1)

TRAIN = {"epochs": 2, "lr": 1e-3, "optimizer": "adam", "schedule": "constant", "progress": False,
         "test_at_end": False}


def run_stage(model, stage, loaders):
    cfg = Recipe.from_dict({"stages": [stage]}).stages[0]
    ctx = StageContext(loaders=loaders, log=lambda *_: None)
    return get_method(cfg.method)(cfg).apply(model, ctx)


def test_weights_become_component_means_and_stay_accurate():
    model, loaders = trained_toy()
    out = run_stage(model, {"method": "soft_weight_sharing", "components": 5, "tau": 0.5, "pi_zero": 0.9,
                            "init_log_var": -4.0, "train": TRAIN, "merge_tol": 1e-3}, loaders)
    means = torch.tensor(out["means"])
    assert means[0] == 0 and out["groups"] == means.numel()
    for m in (model[0], model[2], model[4]):
        cb = P.find(m, "weight", P.Codebook)
        assert cb is not None
        w = m.weight.detach()
        assert torch.equal(w, cb.centroids[cb.codes.long()].detach() * cb.keep())
        vals = torch.unique(w[w != 0])
        assert all(bool((means - v).abs().min() < 1e-6) for v in vals)   # only component means
    assert 0 < out["density"] < 1
    assert out["val"]["accuracy"] > 0.8
    assert len(out["sws_history"]) == 2


def test_collapse_all_weights_to_zero_is_detected_with_stage_and_epoch(tmp_path):
    model, loaders = trained_toy()
    recipe = Recipe.from_dict({"stages": [{"method": "soft_weight_sharing", "label": "sws", "components": 3,
                                           "tau": 1.0e3, "pi_zero": 0.999, "lr_log_vars": 0.0,
                                           "lr_means": 0.0, "init_log_var": 0.0, "train": TRAIN}]})
    out = tmp_path / "collapsed.wz"
    with pytest.raises(MixtureCollapseError) as ei:
        wz.compress(model, recipe, loaders=loaders, log=lambda *_: None)
        wz.save(model, out, recipe=recipe)              # never reached
    err = ei.value
    assert err.stage == "sws" and err.epoch >= 1
    assert "zero component" in str(err) or "quantized to 0" in str(err)
    assert "epoch" in str(err) and not out.exists()


def test_nan_variances_are_detected():
    model, loaders = trained_toy()
    stage = {"method": "soft_weight_sharing", "label": "nan", "components": 3, "train": TRAIN}
    cfg = Recipe.from_dict({"stages": [stage]}).stages[0]
    method = get_method(cfg.method)(cfg)
    ctx = StageContext(loaders=loaders, log=lambda *_: None)

    import weightzip.methods.soft_weight_sharing as sws
    orig = sws._PriorCallback.on_after_step

    def poisoned(self, trainer, step):
        orig(self, trainer, step)
        with torch.no_grad():
            self.prior.log_vars[1] = float("nan")

    sws._PriorCallback.on_after_step = poisoned
    try:
        with pytest.raises(MixtureCollapseError) as ei:
            method.apply(model, ctx)
    finally:
        sws._PriorCallback.on_after_step = orig
    assert ei.value.stage == "nan" and ei.value.epoch == 1
    assert "complexity" in str(ei.value) or "non-finite" in str(ei.value)


@pytest.mark.parametrize("bad", [{"pi_zero": 1.0}, {"components": 1}, {"tau": 0}, {"prior_every": 0},
                                 {"unknown": 3}])
def test_recipe_validation(bad):
    with pytest.raises(RecipeError):
        Recipe.from_dict({"stages": [{"method": "soft_weight_sharing", **bad}]})


def test_shipped_recipes_validate():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "recipes"
    for name in ("soft-weight-sharing", "soft-weight-sharing-lenet5"):
        r = Recipe.from_yaml(root / f"{name}.yaml")
        assert r.stages[0].method == "soft_weight_sharing" and r.stages[0].quantize == "mask"
    for name in ("records-lenet300_100", "records-lenet5"):
        r = Recipe.from_yaml(root / f"{name}.yaml")
        assert [s.method for s in r.stages] == ["prune_gradual", "kmeans_share", "kmeans_share"]
