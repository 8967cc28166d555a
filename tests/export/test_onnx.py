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


STAGES = {  # several formats per model: each layer gets its own method
    "sparse-codebook+int8+codebook5": (
        "[{method: prune_magnitude, sparsity: 0.8, select: {names: [fc1]}},"
        " {method: kmeans_share, bits: 4, select: {names: [fc1]}},"
        " {method: quantize_uniform, bits: 8, select: {types: [Conv2d]}},"
        " {method: kmeans_share, bits: 5, select: {names: [fc2]}}]"),
    "pq+uniform4": ("[{method: pq_share, d: 4, k: 16, pad: true, select: {names: [fc1]}},"
                    " {method: quantize_uniform, bits: 4, select: {names: [fc2, conv, dw]}}]"),
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
    proto = onnx.load(str(tmp_path / "c.onnx"))
    types = {i.name: i.data_type for i in proto.graph.initializer}
    ops = {n.op_type for n in proto.graph.node}
    assert "fc1.weight" not in types  # replaced by its parts, decoded in the graph
    T = onnx.TensorProto
    if kind.startswith("sparse"):
        assert types["fc1.weight::codes"] == T.UINT4 and "fc1.weight::gaps" in types and "ScatterElements" in ops
        assert types["conv.weight::q"] == T.INT8 and "DequantizeLinear" in ops
        assert types["fc2.weight::codes"] == T.UINT8 and "fc2.weight::codebook" in types
        # the old behaviour: the decoded fp32 model
        rd = export_onnx(path, tmp_path / "d.onnx", dense=True)
        assert rd["bytes"] > dense_bytes > rc["bytes"] and not rd["compressed"]
        np.testing.assert_allclose(_run(tmp_path / "d.onnx", x), y_ref, atol=2e-5, rtol=1e-4)
    if kind == "pq+uniform4":  # (4-bit fixed point with many zeros is stored sparse: a codebook of its levels)
        assert "fc1.weight::codebooks" in types and types["fc2.weight::codes"] == T.UINT4
    if kind == "binary":  # codes of {-1, +1} (x one scale per layer): 4-bit codes + scale
        assert types.get("fc1.weight::q", types.get("fc1.weight::codes")) in (T.INT4, T.UINT4)


def _parts_cases():
    from weightzip.export.parts import Parts, gaps_with_fillers

    rng = np.random.default_rng(0)
    q = rng.integers(-8, 8, size=(6, 5))
    yield "uniform-int4-per-row", Parts("uniform", (6, 5), "dense", {"q": q.astype(np.int8),
                                        "scale": rng.random(6).astype(np.float32)}, {"q_bits": 4})
    yield "uniform-int8-per-tensor", Parts("uniform", (4, 3, 2), "dense", {
        "q": rng.integers(-100, 100, 24).astype(np.int8), "scale": np.array([0.03], np.float32)}, {})
    yield "uniform-int16-groups", Parts("uniform", (4, 6), "dense", {
        "q": rng.integers(-3000, 3000, 24).astype(np.int16), "scale": np.array([0.1, 0.2], np.float32)}, {})
    yield "codebook-uint8", Parts("codebook", (7, 9), "dense", {
        "codebook": rng.random(40).astype(np.float32), "codes": rng.integers(0, 40, 63).astype(np.uint8)}, {})
    pos = np.sort(rng.choice(400, 30, replace=False))
    gaps, real = gaps_with_fillers(pos, 4)
    vals = np.zeros(gaps.size, np.float32)
    vals[real] = rng.standard_normal(30)
    yield "sparse-float-gaps4", Parts("dense", (20, 20), "sparse", {"values": vals, "gaps": gaps}, {"gaps_bits": 4})
    yield "pq-per-subspace-codebooks-mask", Parts("pq", (3, 7), "dense", {
        "codes": rng.integers(0, 4, (3, 2)).astype(np.uint8), "codebooks": rng.random((2, 4, 4)).astype(np.float32),
        "mask_gaps": gaps_with_fillers(np.array([0, 2, 5, 9, 20]), 8)[0]}, {"matrix_shape": [3, 7]})


@pytest.mark.parametrize("case", list(_parts_cases()), ids=lambda c: c[0])
def test_decoder_subgraph_matches_the_reference_decoder(case):
    from onnx import TensorProto, helper

    from weightzip.export.onnx import OPSET, decoder
    from weightzip.export.parts import dense_from_parts

    _, p = case
    nodes, inits = decoder("w", p)
    g = helper.make_graph(nodes, "g", [], [helper.make_tensor_value_info("w", TensorProto.FLOAT, list(p.shape))],
                          initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)])
    m.ir_version = 10
    onnx.checker.check_model(m)
    y = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {})[0]
    assert np.array_equal(y, dense_from_parts(p))
