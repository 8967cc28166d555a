"""pq_share: the PQCodebook parametrization, codebook gradients, recipes, checkpoints, files."""
import pytest
import torch
from torch import nn

import weightzip as wz
from weightzip.core import parametrize
from weightzip.errors import RecipeError
from weightzip.methods.base import StageContext
from weightzip.methods.product_quantization import PQCodebook, attach_pq
from weightzip.methods.prune import set_mask
from weightzip.primitives.pq import pq_reconstruct, to_subvectors
from weightzip.core.recipe import Recipe, parse_stage
from weightzip.core.registry import get_method

from .dc_toy import toy_loaders, toy_model, trained_toy


def run_stage(model, stage: dict, loaders=None):
    cfg = parse_stage(stage, 0)
    ctx = StageContext(loaders=loaders or toy_loaders(), log=lambda *_: None)
    return get_method(cfg.method)(cfg).apply(model, ctx)


def pq_of(module, t="weight") -> PQCodebook:
    p = parametrize.find(module, t, PQCodebook)
    assert p is not None
    return p


def test_effective_weight_is_the_reconstruction_and_zeros_stay():
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3)
    lin = nn.Linear(32, 12)
    mask = (torch.rand(12, 32) > 0.7).float()
    set_mask(lin, "weight", mask)
    s1 = attach_pq(conv, "weight", 9, 4)
    s2 = attach_pq(lin, "weight", 4, 8, shared=True)
    assert (s1["d"], s1["M"], s1["k_eff"], s1["codebooks"]) == (9, 4, 4, 4)
    assert (s2["d"], s2["M"], s2["codebooks"]) == (4, 8, 1)
    p = pq_of(conv)
    assert torch.equal(conv.weight, pq_reconstruct(p.codes, p.codebooks.detach(), 36).reshape(6, 4, 3, 3))
    p2 = pq_of(lin)
    assert torch.equal(lin.weight, pq_reconstruct(p2.codes, p2.codebooks.detach(), 32) * mask)
    assert torch.all(lin.weight[mask == 0] == 0)


@pytest.mark.parametrize("shared", [False, True])
def test_codebook_gradient_is_the_sum_per_centroid(shared):
    torch.manual_seed(1)
    lin = nn.Linear(16, 10)
    mask = (torch.rand(10, 16) > 0.3).float()
    set_mask(lin, "weight", mask)
    attach_pq(lin, "weight", 4, 3, shared=shared)
    p = pq_of(lin)
    x = torch.randn(5, 16)
    lin(x).pow(2).sum().backward()
    # reference: dL/dW' by hand, then sum over the sub-vectors coded j
    w_eff = lin.weight.detach().clone().requires_grad_(True)
    torch.nn.functional.linear(x, w_eff, lin.bias.detach()).pow(2).sum().backward()
    g = to_subvectors(w_eff.grad * mask, 4)                         # (rows, M, d)
    ref = torch.zeros_like(p.codebooks)
    for r in range(10):
        for m in range(4):
            ref[0 if shared else m, p.codes[r, m]] += g[r, m]
    torch.testing.assert_close(p.codebooks.grad, ref, rtol=1e-5, atol=1e-6)
    # the latent weight is ignored by the parametrization: no gradient reaches it
    orig = parametrize.original(lin, "weight")
    assert orig.grad is None or torch.all(orig.grad == 0)


def test_mean_centroid_gradient_divides_by_the_count():
    torch.manual_seed(2)
    ref_lin = nn.Linear(16, 10)
    lin_sum, lin_mean = nn.Linear(16, 10), nn.Linear(16, 10)
    for lin in (lin_sum, lin_mean):
        lin.load_state_dict(ref_lin.state_dict())
        set_mask(lin, "weight", (torch.arange(160).reshape(10, 16) % 5 != 0).float())
    attach_pq(lin_sum, "weight", 4, 4, seed=3)
    attach_pq(lin_mean, "weight", 4, 4, centroid_grad="mean", seed=3)
    x = torch.randn(3, 16)
    for lin in (lin_sum, lin_mean):
        lin(x).sum().backward()
    ps, pm = pq_of(lin_sum), pq_of(lin_mean)
    assert torch.equal(ps.codes, pm.codes)
    counts = torch.zeros(4, 4)
    for r in range(10):
        for m in range(4):
            counts[m, ps.codes[r, m]] += 1
    torch.testing.assert_close(pm.codebooks.grad, ps.codebooks.grad / counts.clamp_min(1).unsqueeze(-1))
    assert torch.equal(lin_sum.weight, lin_mean.weight)             # same values, only the gradient differs


def test_storage_hint_is_the_codecs_pq_format():
    from weightzip.codec import decode, decode_parts, encode

    torch.manual_seed(3)
    lin = nn.Linear(256, 64)
    set_mask(lin, "weight", (torch.rand(64, 256) > 0.8).float())
    attach_pq(lin, "weight", 8, 16, shared=True, mask_mode="subvector")
    hint = parametrize.storage_hints(lin)["weight"]
    assert hint["kind"] == "pq" and hint["matrix_shape"] == (64, 256)
    assert tuple(hint["codes"].shape) == (64, 32) and tuple(hint["codebooks"].shape) == (1, 16, 8)
    fmt = encode(lin.weight.detach(), hint)
    assert fmt.kind == "pq"
    assert torch.equal(decode(fmt), lin.weight.detach())
    parts = decode_parts(fmt)
    assert parts["mask"] is None                                    # subvector mode: the codes carry the zeros
    assert (parts["codes"] == hint["codes"].numpy()).all()


def test_stage_defaults_per_layer_type_and_metrics():
    torch.manual_seed(4)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    loaders = toy_loaders(n=60, dim=64)
    for dl in (loaders.train, loaders.val, loaders.test):
        dl.dataset.tensors = (dl.dataset.tensors[0].reshape(-1, 1, 8, 8), dl.dataset.tensors[1])
    out = run_stage(model, {"method": "pq_share", "k": 4}, loaders)
    assert out["layers"]["0.weight"]["d"] == 9                      # Conv2d: one 3x3 kernel
    assert out["layers"]["2.weight"]["d"] == 4                      # Linear: 4
    assert out["layers"]["0.weight"]["k_eff"] == 4
    assert "accuracy" in out["val"] and out["cluster_seconds"] > 0


def test_stage_passes_sample_per_centroid_to_the_lloyd_engine():
    """1024 rows, k = 4: 8 per centroid trains on a sample (1024 > 32 points), 0 on all points."""
    torch.manual_seed(5)
    lin = nn.Linear(16, 1024, bias=False)
    got = {}
    for s in (8, 0):
        model = nn.Sequential(nn.Linear(16, 1024, bias=False), nn.Linear(1024, 3))
        model[0].weight.data.copy_(lin.weight.data)
        cfg = {"method": "pq_share", "k": 4, "seed": 1, "sample_per_centroid": s, "select": {"names": ["0"]}}
        out = run_stage(model, cfg)
        got[s] = (out["layers"]["0.weight"]["mse"], pq_of(model[0]).codebooks.detach().clone())
    assert Recipe.from_dict({"stages": [{"method": "pq_share"}]}).stages[0].sample_per_centroid == 64
    assert not torch.equal(got[8][1], got[0][1])                    # sampled training: other centroids
    assert got[8][0] <= 1.2 * got[0][0]                             # 8 per centroid: a loose bound
    assert Recipe.from_dict({"stages": [{"method": "pq_share", "sample_per_centroid": None}]}).stages[0] \
        .sample_per_centroid is None


def test_per_layer_mapping_sees_through_parametrized_types():
    model = toy_model(dim=16, hidden=32)
    set_mask(model[0], "weight", (torch.rand(32, 16) > 0.5).float())   # model[0] becomes ParametrizedLinear
    out = run_stage(model, {"method": "pq_share", "d": {"4": 2, "type:Linear": 8}, "k": {"0": 4, "default": 8}})
    assert out["layers"]["0.weight"]["d"] == 8 and out["layers"]["4.weight"]["d"] == 2
    assert out["layers"]["0.weight"]["k"] == 4 and out["layers"]["2.weight"]["k"] == 8
    # a `type:` key that matches no layer of this model is a generic default, not an error
    out = run_stage(toy_model(), {"method": "pq_share", "d": {"type:Conv2d": "kernel", "type:Linear": 8}, "k": 4})
    assert {v["d"] for v in out["layers"].values()} == {8}


@pytest.mark.parametrize("stage,match", [
    ({"method": "pq_share", "k": 1}, r"stage 0 \(pq_share\): field 'k'.*k must be an integer >= 2"),
    ({"method": "pq_share", "d": 0}, r"field 'd'"),
    ({"method": "pq_share", "d": "kern"}, r"field 'd'"),
    ({"method": "pq_share", "centroid_grad": "max"}, r"field 'centroid_grad'"),
    ({"method": "pq_share", "nope": 1}, r"field 'nope'"),
    ({"method": "pq_share", "sample_per_centroid": -1}, r"field 'sample_per_centroid'.*integer >= 1.*got -1"),
    ({"method": "pq_share", "sample_per_centroid": 2.5}, r"field 'sample_per_centroid'.*got 2.5"),
    ({"method": "pq_share", "sample_per_centroid": True}, r"field 'sample_per_centroid'.*got True"),
])
def test_bad_configs_are_recipe_errors(stage, match):
    with pytest.raises(RecipeError, match=match):
        Recipe.from_dict({"stages": [stage]})


def test_d_not_dividing_the_layer_names_layer_field_and_fix():
    model = toy_model(dim=16, hidden=30)                           # layer 2: 30 inputs, 4 does not divide
    with pytest.raises(RecipeError, match=r"pq_share.*'2.weight'.*field 'd'.*does not divide the 30 columns.*pad"):
        run_stage(model, {"method": "pq_share", "d": 4})
    model = toy_model(dim=16, hidden=30)
    out = run_stage(model, {"method": "pq_share", "d": 4, "pad": True, "k": 4})
    assert out["layers"]["2.weight"]["M"] == 8
    with pytest.raises(RecipeError, match=r"'kernel' \(d = kh\*kw\) needs a conv"):
        run_stage(toy_model(), {"method": "pq_share", "d": "kernel"})
    with pytest.raises(RecipeError, match=r"layer pattern 'fc9' matches no selected layer"):
        run_stage(toy_model(), {"method": "pq_share", "d": {"fc9": 4, "default": 4}})


def test_sharing_twice_is_refused():
    model = toy_model()
    run_stage(model, {"method": "pq_share", "k": 4})
    with pytest.raises(RecipeError, match="already shared"):
        run_stage(model, {"method": "pq_share", "k": 4})


def test_checkpoint_roundtrip_rebuilds_the_parametrization():
    torch.manual_seed(5)
    model = toy_model()
    set_mask(model[0], "weight", (torch.rand(32, 16) > 0.5).float())
    run_stage(model, {"method": "pq_share", "k": 4, "centroid_grad": "mean", "shared_codebook": True})
    spec = parametrize.parametrization_spec(model)
    assert [i["kind"] for i in spec["0.weight"]] == ["mask", "pq"]
    assert spec["0.weight"][1]["args"] == {"centroid_grad": "mean"}
    fresh = toy_model(seed=9)
    parametrize.restore_parametrizations(fresh, spec)
    fresh.load_state_dict(model.state_dict())
    for a, b in zip(model, fresh):
        if isinstance(a, nn.Linear):
            assert torch.equal(a.weight, b.weight)


def test_compress_prune_pq_finetune_and_file_roundtrip(tmp_path):
    model, loaders = trained_toy(epochs=2)
    recipe = Recipe.from_dict({"stages": [
        {"method": "prune_magnitude", "sparsity": 0.5},
        {"method": "pq_share", "d": 4, "k": 8, "shared_codebook": True, "mask_mode": "subvector",
         "finetune": {"epochs": 1, "lr": 0.01, "optimizer": "sgd", "test_at_end": False}},
    ]})
    res = wz.compress(model, recipe, loaders=loaders, log=lambda *_: None)
    pq_metrics = res.stages[1].metrics
    assert "val_shared" in pq_metrics and pq_metrics["val"]["accuracy"] > 0.5
    x = torch.randn(7, 16)
    with torch.no_grad():
        y_ref = model(x)
    path = tmp_path / "toy.wz"
    wz.save(model, path)
    for mode in ("dense", "lut", "auto"):
        loaded = wz.load(path, model=toy_model(seed=3), mode=mode)
        with torch.no_grad():
            torch.testing.assert_close(loaded(x), y_ref, rtol=1e-5, atol=1e-5)


def test_shipped_recipes_parse_and_share_the_pruning_prefix():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "recipes"
    pq = Recipe.from_yaml(root / "prune-pq.yaml")
    km = Recipe.from_yaml(root / "prune-kmeans-matched.yaml")
    assert [s.method for s in pq.stages] == ["prune_magnitude", "finetune", "pq_share"]
    assert [s.method for s in km.stages] == ["prune_magnitude", "finetune", "kmeans_share"]
    dump = lambda r: [s.model_dump(mode="json") for s in r.stages[:2]]  # noqa: E731
    assert dump(pq) == dump(km)
    assert 2 ** km.stages[2].bits == pq.stages[2].k                  # the same code width

