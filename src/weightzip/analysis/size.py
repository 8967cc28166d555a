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
    """``4 * sum(numel)`` over the floating-point tensors of the (baked) state_dict; a tensor
    tied under several names (an LM head sharing the embedding) counts once, as in ``torch.save``."""
    if isinstance(model_or_state, nn.Module):
        from ..core.parametrize import effective_state, tied_parameters

        state = effective_state(model_or_state)
        for alias in tied_parameters(model_or_state, state):
            del state[alias]
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
    from .. import codec as F

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
            "coding": ",".join(sorted({c for c in (summ.get("codings") or {}).values()
                                       if c not in ("float32", "raw")})) or "raw",
            "fillers": summ.get("n_fillers"),
            "bytes": f.nbytes,
            "streams": {k: len(v) for k, v in f.streams.items()},
            "stream_codings": dict(summ.get("codings") or {}),
            "stream_counts": {k: (f.meta.get("stream_info", {}).get(k) or {}).get("count") for k in f.streams},
            "stream_bounds": dict(bound) if isinstance(bound, dict) else {},
            "bits_per_weight": 8 * f.nbytes / numel if numel else 0.0,
            "ratio": base / f.nbytes if f.nbytes else float("inf"),
            "bound_bytes": bound_total,
            "gap_to_bound": (f.nbytes / bound_total - 1.0) if bound_total else None,
        })
        del t, f  # a lazy ``formats`` (a mapped file) then holds one decoded tensor at a time
    return rows


def size_report(path: str | Path) -> SizeReport:
    """Read a ``.wz`` and account for every byte of it.

    The file is mapped (:class:`weightzip.codec.lazy.LazyFile`): every stream is checked first,
    as by :func:`weightzip.codec.container.read`, then the rows are computed tensor by tensor
    (each decoded for its non-zeros and entropy bound, then dropped): peak memory is about one
    tensor, not the whole file."""
    from types import SimpleNamespace

    from ..codec.lazy import LazyFile

    with LazyFile(path) as lazy:
        lazy.check_all()
        manifest = lazy.manifest
        file_bytes = os.path.getsize(path)
        pay = lazy.payload_bytes()
        # shapes and stored bytes only: nothing is read from the streams for these
        sizes = {n: SimpleNamespace(shape=lazy.shape(n), nbytes=lazy.nbytes(n), dtype=lazy.entries[n]["dtype"])
                 for n in lazy}
        base = manifest.get("baseline_bytes")
        if base is None:  # a file written without weightzip.save: count the float tensors it holds
            base = sum(4 * _numel(f.shape) for f in sizes.values() if "float" in str(f.dtype))
        rows = size_rows(lazy.formats())
    return SizeReport(
        path=str(path), file_bytes=file_bytes, payload_bytes=pay, manifest_bytes=file_bytes - pay,
        baseline_bytes=int(base), rows=rows,
        paper={"deep_compression": deep_compression_ratio(sizes)},
    )


def dense_zstd_bytes(model_or_state: nn.Module | Mapping[str, torch.Tensor], level: int = 19) -> int:
    """Size of the fp32 state_dict compressed by zstd (the honest "just zip it" baseline)."""
    import numpy as np
    import zstandard

    state = model_or_state
    if isinstance(model_or_state, nn.Module):
        from ..core.parametrize import effective_state

        state = effective_state(model_or_state)
    raw = b"".join(t.detach().cpu().contiguous().numpy().astype(np.float32 if t.is_floating_point() else t.numpy().dtype).tobytes()
                   for t in state.values())
    return len(zstandard.ZstdCompressor(level=level).compress(raw))


# =============================================================================================
# Paper accounting: accumulated-gradient importance, mixed-bit fixed point (METHODS.md A)
# (section added by the gradient-importance method; spec in methods/gradient_importance.py)
# =============================================================================================


def _ceil_log2(n: int) -> int:
    """``ceil(log2 n)`` for an integer ``n >= 1`` (0 for n = 1)."""
    return (int(n) - 1).bit_length() if n > 1 else 0


def csr_matrix_view(shape) -> tuple[int, int]:
    """``(rows, cols)`` of the matrix a tensor is stored as in CSR.

    Linear ``(out, in)`` -> ``(out, in)``; conv ``(out, in, kh, kw)`` -> ``(out, in*kh*kw)``;
    bias ``(n,)`` -> ``(1, n)``; 0-d -> ``(1, 1)``.
    """
    shape = [int(s) for s in shape]
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return 1, shape[0]
    return shape[0], _numel(shape[1:])


def thesis_csr_bits(rows: int, cols: int, nnz: int, bits: int, meta_bits: int = 16) -> int:
    """Bits of one CSR holding ``nnz`` values of ``bits`` bits each (one per (layer, cluster))::

        nnz * bits + nnz * ceil(log2 cols) + (rows + 1) * ceil(log2(nnz + 1)) + meta_bits

    (values, column indices, row pointers, the cluster's (b, f) format); 0 when ``nnz = 0``.
    """
    if nnz == 0:
        return 0
    return nnz * int(bits) + nnz * _ceil_log2(cols) + (rows + 1) * _ceil_log2(nnz + 1) + int(meta_bits)


def gradient_importance_csr_ratio(model_or_state: nn.Module | Mapping[str, torch.Tensor],
                                  hints: Mapping[str, Mapping[str, Any]] | None = None,
                                  meta_bits: int = 16) -> dict[str, Any]:
    """The thesis-style ratio of a mixed-bit fixed-point model (values + CSR indices).

    Every tensor with a ``mixed_fixed`` storage hint costs, per cluster c,
    ``thesis_csr_bits(rows, cols, nnz_c, bits[c], meta_bits)`` with ``nnz_c`` the non-zeros of
    cluster c (:func:`csr_matrix_view` gives rows/cols); every other floating-point tensor costs
    ``32 * numel`` (dense fp32). ``ratio = 32 * (floating-point elements) / total bits``.

    ``model_or_state``: a parametrized model (its baked state and hints are read), or a baked
    state_dict together with ``hints``. Returns ``{"ratio", "baseline_bits", "total_bits",
    "tensors": {name: {"bits", "clusters": [{"bits", "frac_bits", "count", "nnz", "csr_bits"}]}}}``.
    """
    if isinstance(model_or_state, nn.Module):
        from ..core.parametrize import effective_state, storage_hints

        state = effective_state(model_or_state)
        hints = storage_hints(model_or_state) if hints is None else hints
    else:
        state = model_or_state
    hints = hints or {}
    baseline = total = 0
    tensors: dict[str, Any] = {}
    for name, t in state.items():
        if not torch.is_floating_point(t):
            continue
        baseline += 32 * t.numel()
        h = hints.get(name) or {}
        if h.get("kind") != "mixed_fixed":
            tensors[name] = {"bits": 32 * t.numel(), "clusters": []}
            total += 32 * t.numel()
            continue
        rows, cols = csr_matrix_view(t.shape)
        cl = torch.as_tensor(h["cluster"]).reshape(t.shape).long()
        nz = t != 0
        clusters, bits_t = [], 0
        for c, (b, f) in enumerate(zip(h["bits"], h["frac_bits"])):
            sel = cl == c
            nnz = int((nz & sel).sum())
            cb = thesis_csr_bits(rows, cols, nnz, b, meta_bits)
            clusters.append({"bits": int(b), "frac_bits": int(f), "count": int(sel.sum()), "nnz": nnz, "csr_bits": cb})
            bits_t += cb
        tensors[name] = {"bits": bits_t, "clusters": clusters}
        total += bits_t
    return {"ratio": baseline / total if total else float("inf"), "baseline_bits": baseline,
            "total_bits": total, "tensors": tensors}
