"""Bits and bytes: the ONLY place weightzip computes compression ratios.

Definitions (DESIGN.md, "Accounting"):

* baseline bytes  = 4 x every element of every floating-point tensor of the model's state_dict
  (weights, biases, BN parameters and statistics), parametrizations baked;
* file ratio      = baseline bytes / size of the ``.wz`` file on disk (the headline figure);
* payload ratio   = baseline bytes / bytes of the tensor streams (no container, no manifest);
* paper ratios    = the accounting of a paper, each a named function here
  (:func:`deep_compression_ratio`);
* entropy bound   = order-0 empirical entropy of each code / index stream, per tensor.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn


def baseline_bytes(model_or_state: nn.Module | Mapping[str, torch.Tensor]) -> int:
    """``4 * sum(numel)`` over the floating-point tensors of the (baked) state_dict."""
    if isinstance(model_or_state, nn.Module):
        from ..parametrize import effective_state

        state = effective_state(model_or_state)
    else:
        state = model_or_state
    return 4 * sum(t.numel() for t in state.values() if torch.is_floating_point(t))


def payload_bytes(formats: Mapping[str, Any]) -> int:
    """Bytes of all tensor streams (no container framing, no manifest)."""
    return sum(f.nbytes for f in formats.values())


def file_ratio(path: str | Path, baseline: int | None = None) -> float:
    """``baseline bytes / file size``; ``baseline`` defaults to the one in the manifest."""
    from ..codec.container import read_manifest

    if baseline is None:
        baseline = int(read_manifest(path)["baseline_bytes"])
    return baseline / os.path.getsize(path)


def _is_weight_matrix(name: str, shape) -> bool:
    return name.endswith("weight") or name.endswith("weight_ih") or name.endswith("weight_hh") \
        if len(shape) >= 2 else False


def deep_compression_ratio(formats: Mapping[str, Any]) -> float:
    """Deep Compression's accounting (Han et al. 2016, Table 1): weight matrices only.

    ``32 * n_weights / stored bits of those weights``, where stored bits are the codes, the
    relative indices (with fillers) and the codebooks, after entropy coding - i.e. the bytes of
    the weight tensors' streams. Biases and BN tensors are left out, as in the paper.
    """
    n = bits = 0
    for name, f in formats.items():
        if _is_weight_matrix(name, f.shape):
            n += _numel(f.shape)
            bits += 8 * f.nbytes
    return 32 * n / bits if bits else float("nan")


def _numel(shape) -> int:
    out = 1
    for s in shape:
        out *= int(s)
    return out


@dataclass
class SizeReport:
    """Everything ``weightzip inspect`` shows about a file."""

    path: str
    file_bytes: int
    payload_bytes: int
    manifest_bytes: int
    baseline_bytes: int
    rows: list[dict[str, Any]] = field(default_factory=list)
    paper: dict[str, float] = field(default_factory=dict)

    @property
    def file_ratio(self) -> float:
        return self.baseline_bytes / self.file_bytes

    @property
    def payload_ratio(self) -> float:
        return self.baseline_bytes / max(1, self.payload_bytes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path, "file_bytes": self.file_bytes, "payload_bytes": self.payload_bytes,
            "manifest_bytes": self.manifest_bytes, "baseline_bytes": self.baseline_bytes,
            "file_ratio": self.file_ratio, "payload_ratio": self.payload_ratio,
            "paper": self.paper, "rows": self.rows,
        }


def size_rows(formats: Mapping[str, Any], state: Mapping[str, torch.Tensor] | None = None) -> list[dict[str, Any]]:
    """One row per tensor: format, shape, nnz, density, bits per weight, index bits, bytes, ratio, bound."""
    from ..codec import formats as F

    rows = []
    for name, f in formats.items():
        numel = _numel(f.shape)
        t = state[name] if state is not None else F.decode(f)
        nnz = int((t != 0).sum()) if t.numel() else 0
        summ = F.format_summary(f) if hasattr(F, "format_summary") else {}
        bound = F.entropy_bound_bytes(f) if hasattr(F, "entropy_bound_bytes") else {}
        bound_total = sum(bound.values()) if isinstance(bound, dict) else float(bound or 0)
        base = 4 * numel if t.is_floating_point() else t.element_size() * numel
        rows.append({
            "name": name,
            "format": summ.get("kind", f.kind),
            "sparse": summ.get("sparse"),
            "shape": list(f.shape),
            "numel": numel,
            "nnz": nnz,
            "density": nnz / numel if numel else 0.0,
            "value_bits": summ.get("value_bits"),
            "index_bits": summ.get("index_bits"),
            "coding": summ.get("coding"),
            "bytes": f.nbytes,
            "streams": {k: len(v) for k, v in f.streams.items()},
            "bits_per_weight": 8 * f.nbytes / numel if numel else 0.0,
            "ratio": base / f.nbytes if f.nbytes else float("inf"),
            "bound_bytes": bound_total,
            "gap_to_bound": (f.nbytes / bound_total - 1.0) if bound_total else None,
        })
    return rows


def size_report(path: str | Path) -> SizeReport:
    """Read a ``.wz`` and account for every byte of it."""
    from ..codec import container

    manifest, formats = container.read(path)
    file_bytes = os.path.getsize(path)
    pay = payload_bytes(formats)
    return SizeReport(
        path=str(path), file_bytes=file_bytes, payload_bytes=pay, manifest_bytes=file_bytes - pay,
        baseline_bytes=int(manifest["baseline_bytes"]), rows=size_rows(formats),
        paper={"deep_compression": deep_compression_ratio(formats)},
    )


def dense_zstd_bytes(model_or_state: nn.Module | Mapping[str, torch.Tensor], level: int = 19) -> int:
    """Size of the fp32 state_dict compressed by zstd (the honest "just zip it" baseline)."""
    import numpy as np
    import zstandard

    state = model_or_state
    if isinstance(model_or_state, nn.Module):
        from ..parametrize import effective_state

        state = effective_state(model_or_state)
    raw = b"".join(t.detach().cpu().contiguous().numpy().astype(np.float32 if t.is_floating_point() else t.numpy().dtype).tobytes()
                   for t in state.values())
    return len(zstandard.ZstdCompressor(level=level).compress(raw))
