"""safetensors export that keeps the compression: codes, codebooks, scales and sparse indices
as separate named tensors (``dense=True``: the decoded fp32 state_dict, the old behaviour).

Naming scheme (``weightzip-parts`` version 1; ``export/parts.py`` defines the arrays):

=========================  ======================================================================
tensor name                content
=========================  ======================================================================
``<name>``                 a tensor stored as it is (dense float32, integer buffers)
``<name>::codebook``       float32 [K] table (scheme ``codebook``)
``<name>::codes``          codes: uint8 / uint16 per entry (``codebook``), [rows, M] (``pq``)
``<name>::codebooks``      float32 [C, k, d] sub-codebooks (``pq``)
``<name>::q``              int8 / int16 fixed-point codes, [G, numel / G] view (``uniform``)
``<name>::scale``          float32 [G] per-group scales (``uniform``)
``<name>::values``         float32 stored values of a sparse dense-valued tensor
``<name>::gaps``           uint8 relative gaps of the sparse layout (``positions = cumsum(gaps + 1) - 1``)
``<name>::mask_gaps``      uint8 relative gaps of a PQ mask's kept positions
=========================  ======================================================================

An array whose ``bits`` entry is 4 is packed two values per byte (first value in the low
nibble, signed values in two's complement) into a uint8 tensor of ``ceil(n / 2)`` bytes.
The file's ``__metadata__`` has ``"weightzip"``: JSON ``{"format": "weightzip-parts", "version": 1,
"tensors": {<name>: {"scheme", "layout", "shape", "bits": {array: 4}, "matrix_shape"?, "count":
{array: n}}}}`` and, when the ``.wz`` holds one, ``"weightzip_graph"`` (the JSON graph).
:func:`load_dense` decodes such a file back to the dense state_dict (exact).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import WeightzipFormatError
from ..fileio import atomic_write_bytes
from .parts import Parts, check_parts, dense_from_parts, tensor_parts

SCHEME = "weightzip-parts"
VERSION = 1


def _pack4(a: np.ndarray) -> np.ndarray:
    v = (a.astype(np.int64).reshape(-1) & 0xF).astype(np.uint8)
    if v.size % 2:
        v = np.concatenate([v, np.zeros(1, np.uint8)])
    return v[0::2] | (v[1::2] << 4)


def _unpack4(b: np.ndarray, n: int, signed: bool, shape) -> np.ndarray:
    v = np.empty(b.size * 2, np.int64)
    v[0::2] = b & 0xF
    v[1::2] = b >> 4
    v = v[:n]
    if signed:
        v = np.where(v >= 8, v - 16, v)
    return v.reshape(shape)


def export_safetensors(path: str | Path, out: str | Path, *, dense: bool = False) -> dict[str, Any]:
    """Write ``path`` (a .wz) as safetensors; returns ``{"out", "bytes", "compressed", "dense"}``."""
    from safetensors.numpy import save

    from ..codec import container, decode
    from ..graph import EXTRA_PREFIX

    manifest, formats = container.read(path)
    arrays: dict[str, np.ndarray] = {}
    meta: dict[str, Any] = {}
    report = {"out": str(out), "compressed": [], "dense": []}
    for name, fmt in formats.items():
        if name.startswith(EXTRA_PREFIX):
            continue
        p = None if dense else tensor_parts(fmt)
        if p is None or (p.scheme == "dense" and p.layout == "dense"):
            arrays[name] = np.array(decode(fmt).numpy(), order="C", copy=True)
            report["dense"].append(name)
            continue
        check_parts(fmt, p)
        entry = {"scheme": p.scheme, "layout": p.layout, "shape": list(p.shape), "bits": {}, "count": {}}
        if "matrix_shape" in p.meta:
            entry["matrix_shape"] = p.meta["matrix_shape"]
        for key, a in p.arrays.items():
            entry["count"][key] = [int(s) for s in a.shape]
            if p.meta.get(f"{key}_bits") == 4:
                entry["bits"][key] = 4
                a = _pack4(a)
            arrays[f"{name}::{key}"] = np.array(a, order="C", copy=True)
        meta[name] = entry
        report["compressed"].append(name)
    header = {"weightzip": json.dumps({"format": SCHEME, "version": VERSION, "tensors": meta}),
              "weightzip_source": Path(path).name}
    if manifest.get("graph") is not None:
        header["weightzip_graph"] = json.dumps(manifest["graph"])
    if manifest.get("model"):
        header["weightzip_model"] = json.dumps(manifest["model"])
    out = Path(out)
    atomic_write_bytes(out, save(arrays, metadata=header))  # temp + fsync + mode 0666 & ~umask + rename
    report["bytes"] = out.stat().st_size
    return report


def load_dense(path: str | Path) -> dict[str, torch.Tensor]:
    """Decode a safetensors file written by :func:`export_safetensors` into dense tensors."""
    from safetensors import safe_open
    from safetensors.numpy import load_file

    with safe_open(str(path), framework="numpy") as f:
        header = f.metadata() or {}
    arrays = load_file(str(path))
    info = json.loads(header.get("weightzip", "{}") or "{}")
    if info and (info.get("format") != SCHEME or info.get("version", 0) > VERSION):
        raise WeightzipFormatError(f"{path}: not a {SCHEME} v{VERSION} file (metadata {str(info)[:80]})")
    tensors = info.get("tensors", {})
    out: dict[str, torch.Tensor] = {}
    for name, a in arrays.items():
        if "::" not in name:
            out[name] = torch.from_numpy(a.copy())
    for name, e in tensors.items():
        parts = {}
        for key, shape in e["count"].items():
            a = arrays[f"{name}::{key}"]
            if e["bits"].get(key) == 4:
                a = _unpack4(a, int(np.prod(shape)), key == "q", shape)
            parts[key] = a
        p = Parts(e["scheme"], tuple(e["shape"]), e["layout"], parts, {"matrix_shape": e.get("matrix_shape")})
        out[name] = torch.from_numpy(dense_from_parts(p))
    return out
