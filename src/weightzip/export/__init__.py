"""Exports that keep the compression: ONNX (runs in onnxruntime) and safetensors (named parts).

    export_onnx("m.wz", "m.onnx")                     # low-bit initializers + decoding subgraphs
    export_safetensors("m.wz", "m.safetensors")       # codes / codebooks / scales / gaps tensors
    ... dense=True                                    # the decoded fp32 model (the old behaviour)
"""
from .onnx import export_onnx
from .safetensors import export_safetensors, load_dense

__all__ = ["export_onnx", "export_safetensors", "load_dense"]
