"""The ``export`` job: a ``.wz`` written as ONNX or safetensors (``weightzip.export``)."""
from __future__ import annotations

from pathlib import Path

from ..errors import WeightzipError


def export(path: str | Path, to: str, out: str | Path, *, dense: bool = False) -> Path:
    """Write a ``.wz`` as safetensors or ONNX; compressed (codes, codebooks, scales, indices kept:
    ``weightzip.export``) unless ``dense``, which writes the decoded fp32 model."""
    from ..export import export_onnx, export_safetensors

    if to == "safetensors":
        export_safetensors(path, out, dense=dense)
    elif to == "onnx":
        export_onnx(path, out, dense=dense)
    else:
        raise WeightzipError(f"unknown export format {to!r}; valid: safetensors, onnx")
    return Path(out)
