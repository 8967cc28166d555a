"""``verify(path)``: check a ``.wz`` completely without building a model (``weightzip verify``).

Checks, in order: header, checksums, manifest (bounded decompression, JSON), tensor table
(types, stream bounds, no overlap, ``max_decoded_bytes``), every Format's structure and stream
plan (:func:`~weightzip.codec.validate`), then decodes every tensor and its parts
(:func:`~weightzip.codec.decode`, :func:`~weightzip.codec.decode_parts`). The first refusal of
the file as a whole ends the check; tensor decode errors are collected, one per tensor.
"""
from __future__ import annotations

import time
from pathlib import Path

from ..errors import WeightzipFormatError
from . import container
from .decoding import decode, decode_parts


def verify(path, *, max_decoded_bytes: int | str | None = None) -> dict:
    """``{"file", "ok", "file_bytes", "n_tensors", "decoded_bytes", "seconds", "errors": [str],
    "tensors": [{"name", "kind", "shape", "dtype", "nbytes", "decoded_bytes"}]}``. Never raises for
    a bad file (``ok`` is False and ``errors`` says why); a missing file is a WeightzipFormatError."""
    path = Path(path)
    if not path.is_file():
        raise WeightzipFormatError(f"file {str(path)!r} not found")
    t0 = time.perf_counter()
    out: dict = {"file": str(path), "ok": False, "file_bytes": path.stat().st_size, "n_tensors": 0,
                 "decoded_bytes": 0, "errors": [], "tensors": []}
    try:
        _, formats = container.read(path, max_decoded_bytes=max_decoded_bytes)
    except WeightzipFormatError as e:
        out["errors"].append(str(e))
        out["seconds"] = time.perf_counter() - t0
        return out
    for name, fmt in formats.items():
        row = {"name": name, "kind": fmt.kind, "shape": list(fmt.shape), "dtype": fmt.dtype, "nbytes": fmt.nbytes,
               "decoded_bytes": fmt.decoded_nbytes}
        try:
            decode(fmt)
            decode_parts(fmt)
        except WeightzipFormatError as e:
            out["errors"].append(f"{path}: {e}")
            row["error"] = str(e)
        out["tensors"].append(row)
    out["n_tensors"] = len(formats)
    out["decoded_bytes"] = sum(f.decoded_nbytes for f in formats.values())
    out["ok"] = not out["errors"]
    out["seconds"] = time.perf_counter() - t0
    return out
