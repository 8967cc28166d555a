"""ONNX / safetensors exports keep the compression and run in the real libraries."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import weightzip as wz
from weightzip.export import export_onnx

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


class SmallNet(nn.Module):
    """A user CNN with BN, a depthwise conv and a residual add (not a zoo model)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.bn = nn.BatchNorm2d(8)
        self.fc1 = nn.Linear(8 * 16, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x):
        h = F.relu(self.conv(x))
        h = F.max_pool2d(h + F.relu(self.bn(self.dw(h))), 2)
        return self.fc2(F.relu(self.fc1(h.flatten(1))))


STAGES = {
    "prune+kmeans": "[{method: prune_magnitude, sparsity: 0.8}, {method: kmeans_share, bits: 4}]",
    "kmeans5": "[{method: kmeans_share, bits: 5}]",
    "uniform4": "[{method: quantize_uniform, bits: 4}]",
    "uniform8": "[{method: quantize_uniform, bits: 8}]",
    "pq": "[{method: pq_share, d: 4, k: 16, pad: true}]",
    "binary": "[{method: loss_aware, mode: bwn, train: {epochs: 1, max_steps_per_epoch: 2, lr: 0.001, optimizer: adam}}]",
}


def _compressed(tmp_path, stages):
    torch.manual_seed(0)
    m = SmallNet()
    x = torch.randn(64, 1, 8, 8)
    dl = DataLoader(TensorDataset(x, torch.randint(0, 10, (64,))), batch_size=32)
    m.train()
    with torch.no_grad():
        m(x)
    m.eval()
    recipe = wz.Recipe.from_yaml(f"name: t\nstages: {stages}\n")
    wz.compress(m, recipe, dl, dl, log=lambda *_: None)
    path = tmp_path / "m.wz"
    wz.save(m, path, recipe=recipe, example_inputs=x[:2])
    return path, x


def _run(path, x):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x.numpy()})[0]


@pytest.mark.parametrize("kind", list(STAGES))
def test_onnx_export_is_compressed_and_runs_in_onnxruntime(tmp_path, kind):
    path, x = _compressed(tmp_path, STAGES[kind])
    ref = wz.load(path)  # without the class: the graph in the file
    with torch.no_grad():
        y_ref = ref(x).numpy()
    rc = export_onnx(path, tmp_path / "c.onnx")
    np.testing.assert_allclose(_run(tmp_path / "c.onnx", x), y_ref, atol=2e-5, rtol=1e-4)
    dense_bytes = 4 * sum(v.numel() for v in ref.state_dict().values() if v.is_floating_point())
    assert rc["compressed"] and rc["bytes"] < dense_bytes
    if kind == "prune+kmeans":  # the old behaviour: the decoded fp32 model
        rd = export_onnx(path, tmp_path / "d.onnx", dense=True)
        assert rd["bytes"] > dense_bytes > rc["bytes"] and not rd["compressed"]
        np.testing.assert_allclose(_run(tmp_path / "d.onnx", x), y_ref, atol=2e-5, rtol=1e-4)
    proto = onnx.load(str(tmp_path / "c.onnx"))
    types = {i.name: i.data_type for i in proto.graph.initializer}
    ops = {n.op_type for n in proto.graph.node}
    assert "fc1.weight" not in types  # replaced by its parts, decoded in the graph
    if kind == "prune+kmeans":
        assert types["fc1.weight::codes"] == onnx.TensorProto.UINT4 and "ScatterElements" in ops
    if kind == "uniform4":
        assert types["fc1.weight::q"] == onnx.TensorProto.INT4 and "DequantizeLinear" in ops
    if kind == "uniform8":
        assert types["fc1.weight::q"] == onnx.TensorProto.INT8 and "DequantizeLinear" in ops
    if kind == "binary":  # codes of {-1, +1} (x one scale per layer): 4-bit codes + scale
        assert types.get("fc1.weight::q", types.get("fc1.weight::codes")) in (onnx.TensorProto.INT4, onnx.TensorProto.UINT4)
    if kind == "pq":
        assert "fc1.weight::codebooks" in types and "Gather" in ops
