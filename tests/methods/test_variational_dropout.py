"""Sparse variational dropout: KL approximation, pruning by log alpha, a short toy run."""
import math

import pytest
import torch

from weightzip.core import parametrize as P
from weightzip.errors import RecipeError
from weightzip.methods.base import StageContext
from weightzip.primitives import variational_dropout as vd
from weightzip.core.recipe import Recipe
from weightzip.core.registry import get_method

from .dc_toy import trained_toy

torch.set_num_threads(1)


def test_kl_approximation_limits_and_formula():
    la = torch.tensor([-8.0, 0.0, 3.0, 8.0])
    kl = torch.stack([vd.kl_approx(x.reshape(1)) for x in la])
    # by hand, per element
    for x, k in zip(la.tolist(), kl.tolist()):
        neg = vd.K1 / (1 + math.exp(-(vd.K2 + vd.K3 * x))) - 0.5 * math.log1p(math.exp(-x)) - vd.K1
        assert k == pytest.approx(-neg, abs=1e-6)
    assert torch.all(kl[:-1] > kl[1:])          # KL decreases as alpha grows (noisier = cheaper)
    assert kl[-1].item() < 0.01                 # -> 0 for large alpha
    theta, ls2 = torch.tensor([1.0, 0.01]), torch.tensor([-4.0, -4.0])
    assert vd.keep_mask(theta, ls2).tolist() == [1.0, 0.0]   # log alpha -4 vs ~5.2


def test_stage_prunes_by_log_alpha_and_leaves_masks():
    model, loaders = trained_toy()
    cfg = Recipe.from_dict({"stages": [{"method": "variational_dropout", "kl_warmup_epochs": 0.5,
                                        "train": {"epochs": 2, "lr": 0.01, "optimizer": "adam",
                                                  "progress": False, "test_at_end": False}}]}).stages[0]
    ctx = StageContext(loaders=loaders, log=lambda *_: None)
    out = get_method(cfg.method)(cfg).apply(model, ctx)
    for i in (0, 2, 4):
        chain = P.chain(model[i], "weight")
        assert [type(p) for p in chain] == [P.Mask]
        w = model[i].weight.detach()
        assert torch.all(w[chain[0].mask == 0] == 0)
    assert 0 < out["density"] < 1
    assert out["val"]["accuracy"] > 0.8


def test_recipe_validation():
    with pytest.raises(RecipeError):
        Recipe.from_dict({"stages": [{"method": "variational_dropout", "kl_warmup_epochs": -1}]})
