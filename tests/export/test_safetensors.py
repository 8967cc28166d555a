"""safetensors export: codes, codebooks, scales and gaps as named tensors, decoded exactly."""
import torch

import weightzip as wz
from weightzip.export import export_safetensors, load_dense

from .test_onnx import STAGES, _compressed
import pytest


@pytest.mark.parametrize("kind", list(STAGES))
def test_safetensors_keeps_parts_and_decodes_exactly(tmp_path, kind):
    from safetensors import safe_open

    path, _ = _compressed(tmp_path, STAGES[kind])
    rc = export_safetensors(path, tmp_path / "c.safetensors")
    rd = export_safetensors(path, tmp_path / "d.safetensors", dense=True)
    assert rc["bytes"] < rd["bytes"]
    with safe_open(str(tmp_path / "c.safetensors"), framework="pt") as f:
        keys = set(f.keys())
        meta = f.metadata()
    assert "weightzip_graph" in meta and "fc1.weight" not in keys
    if kind == "pq+uniform4":
        assert {"codes", "codebooks"} <= {k.split("::")[1] for k in keys if k.startswith("fc1.weight::")}
    if kind.startswith("sparse"):
        assert {"codes", "codebook", "gaps"} <= {k.split("::")[1] for k in keys if k.startswith("fc1.weight::")}
        assert {"q", "scale"} <= {k.split("::")[1] for k in keys if k.startswith("conv.weight::")}
    state = wz.load(path).state_dict()
    dec = load_dense(tmp_path / "c.safetensors")
    assert set(dec) == set(state)
    for k, v in state.items():
        assert torch.equal(dec[k].to(v.dtype), v), k
