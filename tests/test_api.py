"""The public verbs end to end on tiny models: compress -> save -> load, and bad inputs."""
import os

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import weightzip as wz
from weightzip.core import parametrize as P
from weightzip.analysis.size import baseline_bytes, size_report

RECIPE = """
name: tiny-dc
stages:
  - method: prune_magnitude
    sparsity: 0.8
  - method: finetune
    train: {epochs: 1, lr: 0.001, optimizer: adam}
  - method: kmeans_share
    bits: 3
"""


def loaders(n=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 28, 28, generator=g)
    y = (x.flatten(1)[:, :10].argmax(1))
    dl = DataLoader(TensorDataset(x, y), batch_size=64, shuffle=False)
    return dl, dl


def test_compress_save_load_roundtrip_bit_exact(tmp_path):
    torch.manual_seed(0)
    model = wz.create_model("lenet300_100_tiny")
    train, val = loaders()
    result = wz.compress(model, wz.Recipe.from_yaml(RECIPE), train, val, log=lambda *_: None)
    assert [s.method for s in result.stages] == ["prune_magnitude", "finetune", "kmeans_share"]
    path = tmp_path / "m.wz"
    rep = wz.save(model, path, recipe=wz.Recipe.from_yaml(RECIPE))
    assert rep.file_bytes == os.path.getsize(path)
    loaded = wz.load(path)
    ref = P.effective_state(model)
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, ref[k]), k  # decoded weights == fake-quantized weights, bit for bit
    x = torch.randn(5, 1, 28, 28)
    model.eval()
    assert torch.equal(loaded(x), model(x))
    # sparse runtime gives the same function
    assert torch.allclose(wz.load(path, mode="sparse")(x), model(x), atol=1e-5)
    # the size report reads the file, and its ratio is the file's
    s = size_report(path)
    assert s.file_bytes == os.path.getsize(path)
    assert s.file_ratio == pytest.approx(baseline_bytes(model) / os.path.getsize(path))
    assert s.file_ratio > 4


def test_user_model_needs_module(tmp_path):
    model = nn.Sequential(nn.Linear(4, 3))
    wz.save(model, tmp_path / "g.wz")  # graph recorded (issue 14): loads without the module
    assert torch.equal(wz.load(tmp_path / "g.wz")(torch.ones(1, 4)), model(torch.ones(1, 4)))
    wz.save(model, tmp_path / "u.wz", graph=False)
    with pytest.raises(wz.WeightzipFormatError, match="user model"):
        wz.load(tmp_path / "u.wz")
    m2 = wz.load(tmp_path / "u.wz", model=nn.Sequential(nn.Linear(4, 3)))
    assert torch.equal(m2[0].weight, model[0].weight)
    with pytest.raises(wz.WeightzipFormatError, match="shape"):
        wz.load(tmp_path / "u.wz", model=nn.Sequential(nn.Linear(5, 3)))


def test_nan_weights_refused_and_no_file_written(tmp_path):
    model = wz.create_model("lenet300_100_tiny")
    with torch.no_grad():
        model.layers[0].weight[0, 0] = float("nan")
    with pytest.raises(wz.InvalidModelError, match="NaN"):
        wz.save(model, tmp_path / "bad.wz")
    assert not list(tmp_path.iterdir())
    train, val = loaders()
    with pytest.raises(wz.InvalidModelError):
        wz.compress(model, wz.Recipe.from_yaml(RECIPE), train, val, log=lambda *_: None)


def test_interrupted_save_leaves_no_file(tmp_path, monkeypatch):
    from weightzip.codec import container

    model = wz.create_model("lenet300_100_tiny")
    real = container.write

    def boom(path, manifest, formats):
        raise KeyboardInterrupt

    monkeypatch.setattr(container, "write", boom)
    with pytest.raises(KeyboardInterrupt):
        wz.save(model, tmp_path / "x.wz")
    monkeypatch.setattr(container, "write", real)
    assert not (tmp_path / "x.wz").exists()


def test_recipe_errors_name_stage_and_field():
    with pytest.raises(wz.RecipeError, match=r"stage 1 \(kmeans_share\).*bits"):
        wz.Recipe.from_yaml("stages:\n  - method: finetune\n  - method: kmeans_share\n    bits: lots\n")
    with pytest.raises(wz.RecipeError, match="unknown method 'nope'.*finetune"):
        wz.Recipe.from_yaml("stages:\n  - method: nope\n")
    with pytest.raises(wz.RecipeError, match="not found"):
        wz.Recipe.from_yaml("no/such/recipe.yaml")


def test_recipe_json_roundtrip():
    r = wz.Recipe.from_yaml(RECIPE)
    r2 = wz.Recipe.from_json(r.to_json())
    assert r2.to_dict() == r.to_dict()
    assert wz.Recipe.from_yaml(r.to_yaml()).to_dict() == r.to_dict()


def test_pipeline_resume_skips_done_stages(tmp_path):
    torch.manual_seed(0)
    model = wz.create_model("lenet300_100_tiny")
    train, val = loaders()
    r = wz.Recipe.from_yaml(RECIPE)
    wz.compress(model, r, train, val, workdir=tmp_path, log=lambda *_: None)
    logs = []
    model2 = wz.create_model("lenet300_100_tiny")
    res = wz.compress(model2, r, train, val, workdir=tmp_path, resume=True, log=logs.append)
    assert any("resumed after stage 2" in m for m in logs)
    assert len(res.stages) == 3
    x = torch.randn(3, 1, 28, 28)
    model.eval(), model2.eval()
    assert torch.equal(model(x), model2(x))


def test_resume_refuses_checkpoints_of_other_stage_settings(tmp_path):
    torch.manual_seed(0)
    train, val = loaders()
    wz.compress(wz.create_model("lenet300_100_tiny"), wz.Recipe.from_yaml(RECIPE), train, val,
                workdir=tmp_path, log=lambda *_: None)
    other = wz.Recipe.from_yaml(RECIPE.replace("bits: 3", "bits: 2"))
    logs = []
    res = wz.compress(wz.create_model("lenet300_100_tiny"), other, train, val, workdir=tmp_path,
                      resume=True, log=logs.append)
    assert any("not resuming" in m for m in logs)
    assert any("resumed after stage 1" in m for m in logs)  # stages 0..1 unchanged: reused
    assert len(res.stages) == 3
