"""The ``export`` job: a ``.wz`` written as safetensors or ONNX."""
from __future__ import annotations

from pathlib import Path

import torch

from .. import api
from ..errors import WeightzipError
from .bench import input_shape_of


def export(path: str | Path, to: str, out: str | Path) -> Path:
    """Write the decoded dense model of a ``.wz`` as safetensors or ONNX."""
    out = Path(out)
    model = api.load(path, mode="dense")
    if to == "safetensors":
        from safetensors.torch import save_file

        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        # tied weights share storage; safetensors refuses shared tensors, so store copies
        save_file({k: v.clone() for k, v in state.items()}, str(out),
                  metadata={"weightzip_source": str(path), "model": str(model.wz_config)})
    elif to == "onnx":
        shape = input_shape_of(model)
        x = torch.randn(1, *shape) if len(shape) > 1 else torch.randint(0, 10, (shape[0], 1))
        torch.onnx.export(model, (x,), str(out), dynamo=False, input_names=["input"], output_names=["output"])
    else:
        raise WeightzipError(f"unknown export format {to!r}; valid: safetensors, onnx")
    return out
