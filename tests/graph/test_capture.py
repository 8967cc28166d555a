"""The graph in the file: a user CNN (BN, residual adds, depthwise convs) saved, compressed and
loaded back without its class; disallowed ops refused; untraceable models warned about."""
import json
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import weightzip as wz
from weightzip.codec import container
from weightzip.errors import WeightzipFormatError
from weightzip.graph import GraphCaptureError, capture, rebuild


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.dw = nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False)  # depthwise
        self.bn = nn.BatchNorm2d(c)
        self.pw = nn.Conv2d(c, c, 1)

    def forward(self, x):
        return F.relu(x + self.pw(F.relu(self.bn(self.dw(x)))))  # residual add


class UserCNN(nn.Module):
    def __init__(self, c=8, n=10):
        super().__init__()
        self.stem = nn.Conv2d(1, c, 3, padding=1)
        self.blocks = nn.Sequential(Block(c), Block(c))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, n)

    def forward(self, x):
        x = self.pool(self.blocks(self.stem(x)))
        return self.fc(torch.flatten(x, 1))


class Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow
            return self.fc(x)
        return -self.fc(x)


def _trained_bn(model):
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(8, 1, 12, 12))
    return model.eval()


def test_user_cnn_loads_without_its_class(tmp_path):
    torch.manual_seed(0)
    m = _trained_bn(UserCNN())
    path = tmp_path / "cnn.wz"
    wz.save(m, path)
    loaded = wz.load(path)
    assert isinstance(loaded, torch.fx.GraphModule)
    x = torch.randn(5, 1, 12, 12)
    with torch.no_grad():
        assert torch.equal(loaded(x), m(x))
    # the class-based load still works and gives the same outputs
    again = wz.load(path, model=UserCNN())
    with torch.no_grad():
        assert torch.equal(again(x), loaded(x))
    g = container.read_manifest(path)["graph"]
    assert g["level"] == "fx" and g["modules"]["blocks.0.dw"]["args"]["groups"] == 8


def test_compressed_user_cnn_loads_without_its_class(tmp_path):
    torch.manual_seed(0)
    m = _trained_bn(UserCNN())
    x = torch.randn(64, 1, 12, 12)
    y = torch.randint(0, 10, (64,))
    dl = DataLoader(TensorDataset(x, y), batch_size=32)
    recipe = wz.Recipe.from_yaml("""
name: tiny
stages:
  - method: prune_magnitude
    sparsity: 0.5
  - method: kmeans_share
    bits: 4
""")
    wz.compress(m, recipe, dl, dl, log=lambda *_: None)
    path = tmp_path / "c.wz"
    wz.save(m, path, recipe=recipe)
    loaded = wz.load(path)
    ref = wz.load(path, model=UserCNN())
    with torch.no_grad():
        assert torch.equal(loaded(x), ref(x))
    sparse = wz.load(path, mode="sparse")  # the module tree is kept: packed layers still apply
    with torch.no_grad():
        assert torch.allclose(sparse(x), ref(x), atol=1e-5)


def test_untraceable_model_is_saved_with_a_warning(tmp_path):
    path = tmp_path / "u.wz"
    with pytest.warns(UserWarning, match="graph is not recorded.*control flow"):
        wz.save(Untraceable(), path)
    assert "graph" not in container.read_manifest(path)
    with pytest.raises(WeightzipFormatError, match="user model"):
        wz.load(path)
    wz.load(path, model=Untraceable())


def _tamper(path, out, fn):
    manifest, formats = container.read(path)
    fn(manifest["graph"])
    container.write(out, manifest, formats)


@pytest.mark.parametrize("edit, msg", [
    (lambda g: g["nodes"][-2].update(op="call_function", target="os.system"), "'os.system' is not in the allowlist"),
    (lambda g: g["nodes"][-2].update(op="call_function", target="aten.from_file.default"), "aten.from_file.default"),
    (lambda g: g["nodes"][-2].update(op="call_method", target="__reduce__"), "'__reduce__' is not in the allowlist"),
    (lambda g: g["modules"]["fc"].update(kind="Transformer"), "kind 'Transformer'"),
    (lambda g: g["nodes"][0].update(target="x=__import__('os')"), "not a plain identifier"),
    (lambda g: g.update(opset=99), "upgrade weightzip"),
])
def test_file_naming_an_op_outside_the_allowlist_is_refused(tmp_path, edit, msg):
    path = tmp_path / "cnn.wz"
    wz.save(UserCNN().eval(), path)
    bad = tmp_path / "bad.wz"
    _tamper(path, bad, edit)
    with pytest.raises(WeightzipFormatError, match=msg):
        wz.load(bad)


def test_graph_is_json_and_captures_a_functional_model():
    class Fn(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(3, 4))
            self.register_buffer("scale", torch.tensor(2.0), persistent=False)

        def forward(self, x, extra=None):
            h = F.gelu(x @ self.w.t()) * self.scale
            return h.view(h.shape[0], -1).softmax(-1), None

    m = Fn()
    x = torch.randn(2, 4)
    g, extra = capture(m, (x,))
    json.dumps(g)  # plain JSON
    assert set(extra) == {"scale"}
    state = m.state_dict()
    gm = rebuild(g, {k: (tuple(v.shape), v.dtype) for k, v in state.items()}, extra)
    gm.load_state_dict(state)
    assert torch.equal(gm(x)[0], m(x)[0]) and gm(x)[1] is None
    with pytest.raises(Exception, match="specialized"):
        gm(x, torch.ones(1))


def test_capture_reports_the_reason():
    with pytest.raises(GraphCaptureError, match="fx: .*control flow.*aten: no example inputs"):
        capture(Untraceable())


def test_activation_quantizers_are_reinstalled_on_a_rebuilt_fx_graph(tmp_path):
    torch.manual_seed(0)
    m = _trained_bn(UserCNN())
    x = torch.randn(32, 1, 12, 12)
    dl = DataLoader(TensorDataset(x, torch.randint(0, 10, (32,))), batch_size=16)
    recipe = wz.Recipe.from_yaml("name: s\nstages: [{method: structured_qat, block: 4, compression: 2, "
                                 "train: {epochs: 1, max_steps_per_epoch: 2, lr: 0.001, optimizer: adam}}]\n")
    wz.compress(m, recipe, dl, dl, log=lambda *_: None)
    m.eval()
    path = tmp_path / "q.wz"
    wz.save(m, path)
    loaded = wz.load(path)
    assert loaded.wz_manifest["graph"]["level"] == "fx" and loaded.wz_manifest["runtime"]["activation_quant"]
    with torch.no_grad():
        assert torch.equal(loaded(x), m(x))
