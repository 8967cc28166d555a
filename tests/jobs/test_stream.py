"""Streaming compression of safetensors checkpoints: the same file contents as the in-memory
path, shards, refusals, the CLI."""
import json

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

import weightzip as wz
from weightzip.errors import RecipeError, WeightzipError
from weightzip.jobs.stream import compress_safetensors, stand_in, tensor_files


class TinyLM(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed_tokens = nn.Embedding(50, 16)
        self.layers = nn.ModuleList(nn.Linear(16, 16) for _ in range(2))
        self.conv = nn.Conv2d(2, 4, 3)
        self.norm = nn.LayerNorm(16)
        self.lm_head = nn.Linear(16, 50, bias=False)
        self.lm_head.weight = self.embed_tokens.weight   # tied: the checkpoint keeps one name

    def forward(self, ids):
        h = self.embed_tokens(ids)
        for layer in self.layers:
            h = torch.relu(layer(h))
        return self.lm_head(self.norm(h))


# lm_head is excluded from pruning: the in-memory model also sees the tied embedding as a Linear
# (through lm_head), which a checkpoint that keeps only `embed_tokens.weight` cannot show
RECIPE = {"name": "p50-k4", "stages": [
    {"method": "prune_magnitude", "sparsity": 0.5, "select": {"types": ["Linear", "Conv2d"], "exclude": ["lm_head"]}},
    {"method": "kmeans_share", "bits": 4, "select": {"types": ["Linear", "Embedding", "Conv2d"]}}]}


def _checkpoint(tmp_path, shards: int = 1):
    torch.manual_seed(0)
    model = TinyLM().eval()
    sd = {k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    if shards == 1:
        save_file(sd, str(tmp_path / "model.safetensors"))
        return model, tmp_path / "model.safetensors"
    names = sorted(sd)
    wmap = {}
    for i in range(shards):
        part = {k: sd[k] for k in names[i::shards]}
        fname = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        save_file(part, str(tmp_path / fname))
        wmap.update({k: fname for k in part})
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": wmap}))
    return model, tmp_path


@pytest.mark.parametrize("shards", [1, 3])
def test_stream_equals_in_memory_compression(tmp_path, shards):
    model, src = _checkpoint(tmp_path, shards)
    out = compress_safetensors(src, wz.Recipe.from_dict(RECIPE), tmp_path / "s.wz", progress=False, log=lambda s: None)
    assert out["tensors"] == 9 and out["selected"] == 4

    ref = TinyLM()
    ref.load_state_dict(model.state_dict())
    wz.compress(ref, wz.Recipe.from_dict(RECIPE), log=lambda s: None)
    wz.save(ref, tmp_path / "m.wz", graph=False)

    a = wz.load(tmp_path / "s.wz", model=TinyLM())
    b = wz.load(tmp_path / "m.wz", model=TinyLM())
    assert a.lm_head.weight is a.embed_tokens.weight               # re-tied from the class
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert float((sa["layers.0.weight"] == 0).float().mean()) == pytest.approx(0.5, abs=0.01)


def test_stand_in_kinds():
    t2, t4 = torch.zeros(8, 4), torch.zeros(4, 2, 3, 3)
    assert isinstance(stand_in("model.embed_tokens.weight", t2), nn.Embedding)
    assert isinstance(stand_in("transformer.wte.weight", t2), nn.Embedding)
    assert isinstance(stand_in("h.0.mlp.c_fc.weight", t2), nn.Module) and \
        type(stand_in("h.0.mlp.c_fc.weight", t2)).__name__ == "Conv1D"
    assert isinstance(stand_in("layers.0.q_proj.weight", t2), nn.Linear)
    assert isinstance(stand_in("conv.weight", t4), nn.Conv2d)
    assert stand_in("layers.0.bias", torch.zeros(4)) is None
    assert stand_in("norm.weight", torch.zeros(4)) is None


def test_refuses_training_stages_and_layer_order(tmp_path):
    _, src = _checkpoint(tmp_path)
    ft = {"name": "ft", "stages": [{"method": "kmeans_share", "bits": 4, "finetune": {"epochs": 1}}]}
    with pytest.raises(RecipeError, match="needs train data"):
        compress_safetensors(src, wz.Recipe.from_dict(ft), tmp_path / "x.wz", progress=False)
    skip = {"name": "sk", "stages": [{"method": "kmeans_share", "bits": 4, "select": {"skip_first": True}}]}
    with pytest.raises(RecipeError, match="layer order"):
        compress_safetensors(src, wz.Recipe.from_dict(skip), tmp_path / "x.wz", progress=False)
    assert not (tmp_path / "x.wz").exists()


def test_missing_shard_is_a_clear_error(tmp_path):
    _, src = _checkpoint(tmp_path, shards=2)
    next(src.glob("model-00002-*.safetensors")).unlink()
    with pytest.raises(WeightzipError, match="missing"):
        tensor_files(src)


def test_cli_compresses_a_safetensors_file(tmp_path):
    from typer.testing import CliRunner

    from weightzip.cli import app

    _, src = _checkpoint(tmp_path)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(wz.Recipe.from_dict(RECIPE).to_yaml())
    res = CliRunner().invoke(app, ["compress", str(src), "-r", str(recipe), "-o", str(tmp_path / "c.wz"), "-q"])
    assert res.exit_code == 0, res.output
    assert "4 of 9 tensors" in res.output and (tmp_path / "c.wz").is_file()
    assert wz.verify(tmp_path / "c.wz")["ok"]
