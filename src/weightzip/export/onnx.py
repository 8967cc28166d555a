"""ONNX export that keeps the compression: low-bit weights stay low-bit in the ``.onnx`` file.

The model is rebuilt from the ``.wz`` (its zoo class or its recorded graph), exported to ONNX by
``torch.onnx.export`` (the dynamo exporter, dynamic batch / sequence dimensions), and then every
compressed weight initializer is replaced by its portable parts (``export/parts.py``) plus a
small decoding subgraph of standard ONNX operators that yields the same tensor under the same
name, bit for bit:

* codebook (k-means sharing, binary/ternary/log tables, <= 256-value tensors):
  ``Gather(codebook, Cast(codes))`` with ``UINT4`` codes for <= 16 entries, else ``UINT8``;
* uniform fixed-point codes: ``DequantizeLinear(q, scale, axis=0)`` on the ``[G, numel / G]``
  view (per channel / per group scale), ``INT4`` codes when ``-8 <= q <= 7``, else ``INT8``;
* product quantization: ``Gather`` of sub-vectors from the sub-codebooks by ``UINT8`` codes;
* sparse layouts (pruned weights): relative gaps (``UINT4`` / ``UINT8``, fillers for long
  gaps) -> ``positions = CumSum(gaps + 1) - 1`` -> ``ScatterElements`` into zeros -> ``Reshape``.

No zstd or other container compression is used: the file is a plain ONNX protobuf. The decoding
subgraphs depend only on initializers, so onnxruntime's constant folding evaluates them once at
session creation and inference runs the same dense kernels as the fp32 model.
``dense=True`` writes the decoded fp32 model instead (the old behaviour).
"""
from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import WeightzipError
from ..fileio import atomic_write_bytes
from .parts import Parts, check_parts, tensor_parts

OPSET = 21


def _pack4(a: np.ndarray) -> bytes:
    """Two 4-bit values per byte, first element in the low nibble (ONNX INT4/UINT4 raw data)."""
    v = (a.astype(np.int64).reshape(-1) & 0xF).astype(np.uint8)
    if v.size % 2:
        v = np.concatenate([v, np.zeros(1, np.uint8)])
    return (v[0::2] | (v[1::2] << 4)).tobytes()


class _Builder:
    def __init__(self, prefix: str):
        self.prefix = prefix
        self.nodes: list = []
        self.inits: list = []
        self._n = 0

    def name(self, what: str) -> str:
        self._n += 1
        return f"{self.prefix}::{what}{self._n}"

    def init(self, what: str, a: np.ndarray, bits4: bool = False, signed: bool = False) -> str:
        from onnx import TensorProto, helper, numpy_helper

        name = f"{self.prefix}::{what}"
        if bits4:
            t = helper.make_tensor(name, TensorProto.INT4 if signed else TensorProto.UINT4, list(a.shape),
                                   _pack4(a), raw=True)
        else:
            t = numpy_helper.from_array(np.array(a, order="C", copy=True), name)
        self.inits.append(t)
        return name

    def const(self, a) -> str:
        from onnx import numpy_helper

        name = self.name("c")
        self.inits.append(numpy_helper.from_array(np.asarray(a), name))
        return name

    def op(self, op_type: str, inputs: list[str], out: str | None = None, **attrs) -> str:
        from onnx import helper

        out = out or self.name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=self.name(op_type), **attrs))
        return out

    def cast64(self, x: str) -> str:
        from onnx import TensorProto

        return self.op("Cast", [x], to=TensorProto.INT64)


def _positions(b: _Builder, p: Parts, key: str = "gaps") -> str:
    g = b.init(key, p.arrays[key], bits4=p.meta.get(f"{key}_bits") == 4)
    one = b.const(np.array(1, np.int64))
    cs = b.op("CumSum", [b.op("Add", [b.cast64(g), one]), b.const(np.array(0, np.int64))])
    return b.op("Sub", [cs, one])


def _scatter(b: _Builder, pos: str, vals: str, numel: int, out_dtype=np.float32) -> str:
    from onnx import numpy_helper

    zeros = b.op("ConstantOfShape", [b.const(np.array([numel], np.int64))],
                 value=numpy_helper.from_array(np.zeros(1, out_dtype)))
    return b.op("ScatterElements", [zeros, pos, vals], axis=0)


def decoder(name: str, p: Parts) -> tuple[list, list]:
    """ONNX nodes + initializers computing tensor ``name`` (float32, shape ``p.shape``) from ``p``."""
    b = _Builder(name)
    shape = b.const(np.array(p.shape, np.int64)) if p.shape else b.const(np.zeros(0, np.int64))
    numel = int(np.prod(p.shape, dtype=np.int64)) if p.shape else 1
    a = p.arrays
    if p.scheme == "pq":
        rows, cols = p.meta["matrix_shape"]
        cb = a["codebooks"]
        C, k, d = cb.shape
        M = a["codes"].shape[1]
        idx = b.cast64(b.init("codes", a["codes"], bits4=p.meta.get("codes_bits") == 4))
        if C > 1:
            idx = b.op("Add", [idx, b.const((np.arange(M, dtype=np.int64) * k)[None, :])])
        sub = b.op("Gather", [b.init("codebooks", cb.reshape(C * k, d)), idx], axis=0)  # [rows, M, d]
        w = b.op("Reshape", [sub, b.const(np.array([rows, M * d], np.int64))])
        if M * d != cols:
            w = b.op("Slice", [w, b.const(np.array([0], np.int64)), b.const(np.array([cols], np.int64)),
                               b.const(np.array([1], np.int64))])
        if "mask_gaps" in a:
            from onnx import numpy_helper

            mpos = _positions(b, p, "mask_gaps")
            ones = b.op("ConstantOfShape", [b.op("Shape", [mpos])], value=numpy_helper.from_array(np.ones(1, np.float32)))
            mask = _scatter(b, mpos, ones, rows * cols)
            w = b.op("Mul", [b.op("Reshape", [w, b.const(np.array([-1], np.int64))]), mask])
        b.op("Reshape", [w, shape], out=name)
        return b.nodes, b.inits
    if p.scheme == "codebook":
        codes = b.cast64(b.init("codes", a["codes"], bits4=p.meta.get("codes_bits") == 4))
        vals = b.op("Gather", [b.init("codebook", a["codebook"]), codes], axis=0)
    elif p.scheme == "uniform":
        G = a["scale"].size
        q = a["q"].reshape(G, -1) if G > 1 else a["q"].reshape(-1)
        qn = b.init("q", q, bits4=p.meta.get("q_bits") == 4, signed=True)
        sc = b.init("scale", a["scale"] if G > 1 else a["scale"].reshape(()))
        vals = b.op("DequantizeLinear", [qn, sc], axis=0) if G > 1 else b.op("DequantizeLinear", [qn, sc])
        if p.layout == "dense":
            b.op("Reshape", [vals, shape], out=name)
            return b.nodes, b.inits
    else:
        vals = b.init("values", a["values"])
    if p.layout == "dense":
        b.op("Reshape", [vals, shape], out=name)
    else:
        b.op("Reshape", [_scatter(b, _positions(b, p), vals, numel), shape], out=name)
    return b.nodes, b.inits


def example_input(model: torch.nn.Module, manifest: dict) -> tuple[torch.Tensor, dict]:
    """One example input and its dynamic dimensions: the recorded graph's, or the zoo model's."""
    from torch.export import Dim

    g = manifest.get("graph") or {}
    ex = g.get("example_inputs")
    if ex:
        e = ex[0]
        dtype = getattr(torch, e["dtype"])
        x = torch.zeros(e["shape"], dtype=dtype) if not dtype.is_floating_point else torch.randn(e["shape"]).to(dtype)
        return x, {i: Dim.AUTO for i in range(len(e["shape"]))}
    cfg = manifest.get("model") or {}
    name, kw = cfg.get("name", ""), cfg.get("kwargs") or {}
    if name.startswith("lstm"):
        return torch.zeros(35, 1, dtype=torch.int64), {0: Dim.AUTO, 1: Dim.AUTO}
    import inspect

    from ..core.registry import _MODELS

    params = inspect.signature(_MODELS[name]).parameters if name in _MODELS else {}
    c = kw.get("in_channels", params["in_channels"].default if "in_channels" in params else 1)
    s = kw.get("image_size", params["image_size"].default if "image_size" in params else 28)
    return torch.randn(2, c, s, s), {0: Dim.AUTO}


def _torch_export(model, x, dyn) -> Any:
    import logging

    import onnx

    quiet = [logging.getLogger(n) for n in ("torch.onnx", "torch.onnx._internal.exporter._registration",
                                             "torch.onnx._internal.exporter._core")]
    levels = [lg.level for lg in quiet]
    for lg in quiet:
        lg.setLevel(logging.ERROR)
    try:
        return _torch_export_quiet(model, x, dyn, onnx)
    finally:
        for lg, lv in zip(quiet, levels):
            lg.setLevel(lv)


def _torch_export_quiet(model, x, dyn, onnx) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            import contextlib
            import os

            with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
                prog = torch.onnx.export(model, (x,), None, dynamo=True, input_names=["input"],
                                         dynamic_shapes=(dyn,), opset_version=OPSET, optimize=False)
            return prog.model_proto
        except Exception as e:  # fall back to the TorchScript exporter (fixed input shape)
            first = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
            buf = io.BytesIO()
            try:
                torch.onnx.export(model, (x,), buf, dynamo=False, input_names=["input"], output_names=["output"],
                                  do_constant_folding=False, opset_version=20,
                                  dynamic_axes={"input": {0: "batch"}} if x.dim() > 1 else None)
            except Exception as e2:
                raise WeightzipError(f"torch.onnx.export failed: {first}; TorchScript exporter: "
                                     f"{type(e2).__name__}: {str(e2)[:200]}") from None
            return onnx.load_from_string(buf.getvalue())


def _strip(proto) -> None:
    """Drop what inference does not need: per-node metadata (stack traces, name scopes), doc
    strings and intermediate value_info (onnxruntime infers shapes itself)."""
    for n in proto.graph.node:
        del n.metadata_props[:]
        n.doc_string = ""
    del proto.graph.value_info[:]
    proto.graph.doc_string = ""


def export_onnx(path: str | Path, out: str | Path, *, dense: bool = False) -> dict[str, Any]:
    """Write ``path`` (a .wz) as ONNX to ``out`` (compressed unless ``dense``); returns a report:
    ``{"out", "bytes", "compressed": [tensor names], "dense": [names kept fp32], "opset"}``."""
    import onnx

    from ..codec import container
    from ..runtime.load import load

    model = load(path, mode="dense")
    manifest, formats = container.read(path)
    x, dyn = example_input(model, manifest)
    proto = _torch_export(model, x, dyn)
    _strip(proto)
    report: dict[str, Any] = {"out": str(out), "compressed": [], "dense": []}
    if not dense:
        inits = {i.name: i for i in proto.graph.initializer}
        new_nodes, new_inits, drop = [], [], set()
        # a tied tensor is stored once; the exporter may name its initializer by any of its names
        by_name = dict(formats)
        for alias, canon in (manifest.get("tied") or {}).items():
            if canon in formats:
                by_name.setdefault(alias, formats[canon])
        for name, fmt in by_name.items():
            if name not in inits:
                continue
            p = tensor_parts(fmt)
            if p is None or (p.scheme == "dense" and p.layout == "dense") or inits[name].data_type != onnx.TensorProto.FLOAT:
                report["dense"].append(name)
                continue
            check_parts(fmt, p)
            nodes, ins = decoder(name, p)
            new_nodes += nodes
            new_inits += ins
            drop.add(name)
            report["compressed"].append(name)
        kept = [i for i in proto.graph.initializer if i.name not in drop]
        del proto.graph.initializer[:]
        proto.graph.initializer.extend(kept + new_inits)
        old = list(proto.graph.node)
        del proto.graph.node[:]
        proto.graph.node.extend(new_nodes + old)
        for imp in proto.opset_import:
            if imp.domain in ("", "ai.onnx") and imp.version < OPSET:
                imp.version = OPSET
        proto.ir_version = max(proto.ir_version, 10)
    out = Path(out)
    atomic_write_bytes(out, proto.SerializeToString())  # temp + fsync + mode 0666 & ~umask + rename
    report["bytes"] = out.stat().st_size
    report["opset"] = max(i.version for i in proto.opset_import if i.domain in ("", "ai.onnx"))
    return report
