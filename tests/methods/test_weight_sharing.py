"""Scalar k-means weight sharing: codebooks after masks, per-layer bits, centroid fine-tuning."""
import pytest
import torch
from torch import nn

import weightzip as wz
from weightzip.core import parametrize as P
from weightzip.errors import RecipeError
from weightzip.methods.base import StageContext
from weightzip.primitives.cluster import centroid_gradient
from weightzip.core.recipe import Recipe
from weightzip.core.registry import get_method

from .dc_toy import toy_loaders, toy_model, trained_toy

torch.set_num_threads(1)


def run_stage(model, stage, loaders=None, workers=None):
    cfg = Recipe.from_dict({"stages": [stage]}).stages[0]
    ctx = StageContext(loaders=loaders or toy_loaders(), log=lambda *_: None, workers=workers)
    return get_method(cfg.method)(cfg).apply(model, ctx)


def linears(model):
    return [(f"{i}", m) for i, m in enumerate(model) if isinstance(m, nn.Linear)]


def test_codes_and_centroids_reproduce_the_effective_weight_and_zeros_stay():
    model = toy_model()
    run_stage(model, {"method": "prune_magnitude", "sparsity": 0.6})
    masks = {n: P.find(m, "weight", P.Mask).mask.clone() for n, m in linears(model)}
    pruned = {n: m.weight.detach().clone() for n, m in linears(model)}
    run_stage(model, {"method": "kmeans_share", "bits": 3})
    for n, m in linears(model):
        chain = P.chain(m, "weight")
        assert [type(p) for p in chain] == [P.Mask, P.Codebook]  # Codebook after the Mask
        cb = chain[1]
        assert torch.equal(cb.mask, masks[n])
        eff = m.weight.detach()
        assert torch.equal(eff, cb.centroids[cb.codes.long()].detach() * cb.keep())
        assert torch.all(eff[masks[n] == 0] == 0)
        kept = masks[n].bool()
        # each kept weight is replaced by its nearest centroid
        dist = (pruned[n][kept][:, None] - cb.centroids.detach()[None, :]).abs()
        assert torch.allclose(eff[kept], cb.centroids.detach()[dist.argmin(1)])
        assert len(torch.unique(eff[kept])) <= 8
    st = P.effective_state(model)
    assert torch.equal(st["0.weight"], model[0].weight.detach())


def test_per_layer_bits_honored_and_storage_hint():
    model = toy_model()
    out = run_stage(model, {"method": "kmeans_share", "bits": {"4": 2, "re:^[02]$": 5}})
    assert out["layers"]["4.weight"]["bits"] == 2 and out["layers"]["4.weight"]["k"] == 4
    assert out["layers"]["0.weight"]["k"] == 32 and out["layers"]["2.weight"]["k"] == 32
    hints = P.storage_hints(model)
    assert hints["4.weight"]["kind"] == "codebook" and hints["4.weight"]["bits"] == 2
    assert hints["0.weight"]["bits"] == 5
    assert len(torch.unique(model[4].weight.detach())) <= 4


def test_type_keys_match_parametrized_modules():
    model = toy_model()
    run_stage(model, {"method": "prune_magnitude", "sparsity": {"type:Linear": 0.5}})
    out = run_stage(model, {"method": "kmeans_share", "bits": {"type:Linear": 3}})
    assert all(v["bits"] == 3 for v in out["layers"].values())


def test_linear_init_engines_give_the_same_sharing():
    res = {}
    for engine in ("torch", "sklearn", "faiss"):
        model = toy_model()
        run_stage(model, {"method": "kmeans_share", "bits": 3, "engine": engine, "tol": 0.0})
        res[engine] = torch.sort(P.find(model[0], "weight", P.Codebook).centroids.detach()).values
    assert torch.allclose(res["torch"], res["sklearn"], atol=1e-5)
    assert torch.allclose(res["torch"], res["faiss"], atol=1e-5)


def test_centroid_finetuning_uses_summed_gradients_and_keeps_structure():
    model, loaders = trained_toy()
    run_stage(model, {"method": "prune_magnitude", "sparsity": 0.5}, loaders)
    run_stage(model, {"method": "kmeans_share", "bits": 4}, loaders)
    cb = P.find(model[2], "weight", P.Codebook)
    # gradient of the centroids = per-code sums of the gradient w.r.t. the effective weight
    x, y = next(iter(loaders.train))
    model.zero_grad()
    ref = toy_model()  # the same function with plain dense weights: the reference gradient
    ref.load_state_dict(P.effective_state(model))
    nn.functional.cross_entropy(model(x), y).backward()
    nn.functional.cross_entropy(ref(x), y).backward()
    expected = centroid_gradient(ref[2].weight.grad, cb.codes, cb.centroids.numel(), cb.mask)
    assert torch.allclose(cb.centroids.grad, expected, atol=1e-5)
    assert P.original(model[2], "weight").grad is None or torch.all(P.original(model[2], "weight").grad == 0)
    # fine-tuning moves the centroids but never the codes, the mask or the pruned zeros
    codes, mask, c0 = cb.codes.clone(), cb.mask.clone(), cb.centroids.detach().clone()
    out = run_stage(model, {"method": "finetune", "train": {"epochs": 1, "lr": 1e-3, "optimizer": "adam"}}, loaders)
    assert torch.equal(cb.codes, codes) and torch.equal(cb.mask, mask)
    assert not torch.allclose(cb.centroids.detach(), c0)
    assert torch.all(model[2].weight[mask == 0] == 0)
    assert len(torch.unique(model[2].weight.detach()[mask.bool()])) <= 16
    assert out["val"]["accuracy"] > 0.8


def test_finetune_option_inside_the_stage():
    model, loaders = trained_toy()
    out = run_stage(model, {"method": "kmeans_share", "bits": 2,
                            "finetune": {"epochs": 1, "lr": 1e-3, "optimizer": "adam"}}, loaders)
    assert "val_shared" in out and out["val"]["accuracy"] >= out["val_shared"]["accuracy"] - 0.05


@pytest.mark.parametrize("stage, field", [
    ({"method": "kmeans_share", "bits": 0}, "bits"),
    ({"method": "kmeans_share", "bits": {"default": -1}}, "bits"),
    ({"method": "kmeans_share", "bits": 4, "init": "kmeans++"}, "init"),
    ({"method": "kmeans_share", "bits": 4, "engine": "cuml"}, "engine"),
    ({"method": "kmeans_share"}, "bits"),
])
def test_bad_configs_raise_recipe_error(stage, field):
    with pytest.raises(RecipeError, match=field):
        Recipe.from_dict({"stages": [stage]})


def test_unknown_layer_pattern_and_double_sharing_refused():
    model = toy_model()
    with pytest.raises(RecipeError, match="layer pattern 'conv1'"):
        run_stage(model, {"method": "kmeans_share", "bits": {"conv1": 8, "default": 5}})
    run_stage(model, {"method": "kmeans_share", "bits": 3})
    with pytest.raises(RecipeError, match="already shared"):
        run_stage(model, {"method": "kmeans_share", "bits": 3})
    with pytest.raises(RecipeError, match="prune before|pruning stages before"):
        run_stage(model, {"method": "prune_magnitude", "s": 1.0})


def test_checkpoint_roundtrip_of_pruned_and_shared_model(tmp_path):
    model, loaders = trained_toy()
    recipe = Recipe.from_dict({"stages": [
        {"method": "prune_magnitude", "sparsity": 0.6},
        {"method": "kmeans_share", "bits": 3},
    ]})
    wz.compress(model, recipe, loaders=loaders, workdir=tmp_path, log=lambda *_: None)
    ck = torch.load(tmp_path / "stage-1-kmeans_share.pt", weights_only=True)
    fresh = toy_model(seed=5)
    P.restore_parametrizations(fresh, ck["parametrizations"])
    fresh.load_state_dict(ck["model"])
    for (_, a), (_, b) in zip(linears(model), linears(fresh)):
        assert torch.equal(a.weight, b.weight)


def test_deep_compression_end_to_end_through_a_wz_file(tmp_path):
    """prune -> retrain -> share -> fine-tune on a tiny zoo model; the .wz file reproduces it."""
    from torch.utils.data import DataLoader, TensorDataset

    from .dc_toy import ToyLoaders

    g = torch.Generator().manual_seed(0)
    centers = torch.randn(10, 1, 28, 28, generator=g)

    def split(n):
        y = torch.randint(0, 10, (n,), generator=g)
        return TensorDataset(centers[y] + 0.5 * torch.randn(n, 1, 28, 28, generator=g), y)

    loaders = ToyLoaders(DataLoader(split(400), batch_size=50, shuffle=True),
                         DataLoader(split(100), batch_size=100), DataLoader(split(100), batch_size=100))
    model = wz.create_model("lenet300_100_tiny")
    recipe = Recipe.from_dict({"stages": [
        {"method": "finetune", "train": {"epochs": 2, "lr": 0.05, "optimizer": "sgd"}},
        {"method": "prune_gradual", "sparsity": {"layers.4": 0.5, "default": 0.9}, "frequency": 2,
         "train": {"epochs": 2, "lr": 0.02, "optimizer": "sgd"}},
        {"method": "kmeans_share", "bits": {"layers.4": 4, "default": 3},
         "finetune": {"epochs": 1, "lr": 1e-4, "optimizer": "adam"}},
    ]})
    res = wz.compress(model, recipe, loaders=loaders, log=lambda *_: None)
    assert res.stages[1].metrics["layer_sparsity"]["layers.0.weight"] == pytest.approx(0.9, abs=0.01)
    path = tmp_path / "tiny.wz"
    report = wz.save(model, path, recipe=recipe)
    assert report.file_bytes == path.stat().st_size and report.file_ratio > 5
    loaded = wz.load(path)
    eff = P.effective_state(model)
    for name, t in loaded.state_dict().items():
        assert torch.equal(t, eff[name]), name
    x = next(iter(loaders.test))[0]
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert len(torch.unique(loaded.state_dict()["layers.0.weight"])) <= 2 ** 3 + 1  # codes + zero


@pytest.mark.parametrize("path", ["recipes/deep-compression.yaml", "recipes/deep-compression-lenet5.yaml"])
def test_shipped_deep_compression_recipes_fit_their_models(path):
    from pathlib import Path

    from weightzip.methods.prune import check_layer_patterns
    from weightzip.core.select import select

    recipe = Recipe.from_yaml(Path(__file__).resolve().parents[2] / path)
    assert Recipe.from_json(recipe.to_json()).to_dict() == recipe.to_dict()
    model = wz.create_model(recipe.model)
    for i, stage in enumerate(recipe.stages):
        sel = select(model, stage.select)
        for field in ("sparsity", "s", "bits"):
            check_layer_patterns(getattr(stage, field, None), sel, field, f"{path} stage {i}")


def test_threads_give_the_sequential_sharing_and_compact_codebooks():
    """k-means of several tensors at once (a thread pool) = one after the other; an unpruned
    tensor's Codebook holds uint8 codes and no mask, a pruned one a bool mask."""
    out = {}
    for workers in (1, 3):
        model = toy_model()
        run_stage(model, {"method": "prune_magnitude", "sparsity": 0.5, "select": {"names": ["0"]}})
        stats = run_stage(model, {"method": "kmeans_share", "bits": 3}, workers=workers)
        out[workers] = (stats["layers"], {n: (P.find(m, "weight", P.Codebook).codes.clone(),
                                             P.find(m, "weight", P.Codebook).centroids.detach().clone())
                                         for n, m in linears(model)}, P.effective_state(model))
    (l1, cb1, st1), (l3, cb3, st3) = out[1], out[3]
    assert list(l1) == list(l3) and all(l1[k]["k"] == l3[k]["k"] and l1[k]["n"] == l3[k]["n"] for k in l1)
    assert all(torch.equal(cb1[n][0], cb3[n][0]) and torch.equal(cb1[n][1], cb3[n][1]) for n in cb1)
    assert all(torch.equal(st1[k], st3[k]) for k in st1)
    model = toy_model()
    run_stage(model, {"method": "prune_magnitude", "sparsity": 0.5, "select": {"names": ["0"]}})
    run_stage(model, {"method": "kmeans_share", "bits": 3}, workers=2)
    pruned, plain = P.find(model[0], "weight", P.Codebook), P.find(model[2], "weight", P.Codebook)
    assert pruned.codes.dtype == torch.uint8 and pruned.mask is not None and pruned.mask.dtype == torch.bool
    assert plain.codes.dtype == torch.uint8 and plain.mask is None and bool(plain.keep().all())


def test_map_bounded_keeps_the_work_in_flight_within_the_largest_item():
    import threading
    import time

    from weightzip.methods.base import map_bounded

    sizes = [10, 1, 1, 1, 4, 4, 4, 10, 2]
    lock, state = threading.Lock(), {"now": 0, "max": 0, "threads": set()}

    def fn(s):
        with lock:
            state["now"] += s
            state["max"] = max(state["max"], state["now"])
            state["threads"].add(threading.get_ident())
        time.sleep(0.01)
        with lock:
            state["now"] -= s
        return s * 2

    got = dict(map_bounded(sizes, fn, lambda s: s, workers=3))
    assert got == {i: 2 * s for i, s in enumerate(sizes)}
    assert state["max"] <= max(sizes) and len(state["threads"]) > 1
    assert list(map_bounded(sizes, fn, lambda s: s, workers=1)) == [(i, 2 * s) for i, s in enumerate(sizes)]

    def boom(s):
        raise ValueError(f"bad {s}")

    with pytest.raises(ValueError, match="bad"):
        list(map_bounded(sizes, boom, lambda s: s, workers=2))


def test_drop_latent_frees_the_latent_and_changes_nothing_else(tmp_path):
    """``drop_latent``: the latent weights under a Codebook become zero-memory stand-ins; the model's
    outputs, its baked state and the saved tensors are those of the default; a tied Parameter
    (one tensor, two names), shared by Codebooks under both names, is clustered once and freed
    too, both names keeping one stand-in (still tied: saved once)."""
    from weightzip.codec import container

    class TiedToy(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.emb = nn.Embedding(40, 8)
            self.mid = nn.Linear(8, 8)
            self.head = nn.Linear(8, 40, bias=False)
            self.head.weight = self.emb.weight

        def forward(self, x):
            return self.head(torch.relu(self.mid(self.emb(x))))

    x = torch.randint(0, 40, (3, 5))
    outs, files = {}, {}
    for drop in (False, True):
        model = TiedToy()
        cfg = Recipe.from_dict({"stages": [{"method": "kmeans_share", "bits": 3, "drop_latent": drop,
                                            "select": {"types": ["Linear", "Embedding"]}}]}).stages[0]
        get_method("kmeans_share")(cfg).apply(model, StageContext(log=lambda *_: None))   # no data
        outs[drop] = (model(x), P.effective_state(model))
        wz.save(model, tmp_path / f"{drop}.wz", graph=False)
        files[drop] = container.read(tmp_path / f"{drop}.wz")[1]
        latent = {n: P.original(m, "weight") for n, m in (("emb", model.emb), ("mid", model.mid), ("head", model.head))}
        if drop:
            assert latent["mid"].untyped_storage().nbytes() == 4 and not latent["mid"].requires_grad
            assert latent["emb"] is latent["head"] and latent["emb"].untyped_storage().nbytes() == 4
            assert torch.equal(model.mid.weight, outs[False][1]["mid.weight"])
    assert torch.equal(outs[False][0], outs[True][0])
    assert all(torch.equal(outs[False][1][k], outs[True][1][k]) for k in outs[False][1])
    assert list(files[False]) == list(files[True]) and set(files[True]) == {"emb.weight", "mid.weight", "mid.bias"}
    assert all(files[False][k].streams == files[True][k].streams for k in files[False])
    cb = {n: P.find(getattr(model, n), "weight", P.Codebook) for n in ("emb", "head")}
    assert cb["emb"].codes is cb["head"].codes and torch.equal(cb["emb"].centroids, cb["head"].centroids)
    # one name of the tied Parameter outside the stage: it still reads the latent, which is kept
    model = TiedToy()
    cfg = Recipe.from_dict({"stages": [{"method": "kmeans_share", "bits": 3, "drop_latent": True,
                                        "select": {"types": ["Embedding"]}}]}).stages[0]
    get_method("kmeans_share")(cfg).apply(model, StageContext(log=lambda *_: None))
    assert P.original(model.emb, "weight").untyped_storage().nbytes() == 40 * 8 * 4
    assert torch.equal(model.head.weight, TiedToy().head.weight)
    with pytest.raises(ValueError, match="Codebook"):
        m = nn.Linear(3, 3)
        P.attach(m, "weight", P.Mask(torch.ones(3, 3)))
        P.drop_latent(m, "weight")
