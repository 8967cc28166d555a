"""A ``.wz`` opened with ``mmap``: the header and manifest are read and checked at open, each
tensor's streams are read (checksummed, validated) and decoded only when that tensor is used.

    with LazyFile("bert.wz") as f:            # header + manifest + tensor table checked
        f.manifest["model"]                   # no stream decoded yet (format 3: the stream
                                              # area's one CRC was checked at open)
        f.shape("encoder.layer.0.output.dense.weight")
        w = f["embeddings.word_embeddings.weight"]   # this tensor's streams: CRC, validate, decode

(A format-3 file whose stream area is at most ``container.AREA_CRC_MAX`` carries one CRC for the
whole area instead of one per stream: that area is read once, in 1 MiB chunks, at open.)

Memory: the stream area is mapped, not read, so the process holds the pages of the tensors it
touches (the kernel drops clean mapped pages under pressure) plus one decoded tensor at a time;
:func:`verify` and the loader (:func:`weightzip.runtime.load.load`) walk the file tensor by tensor
and peak at about one tensor, where :func:`.container.read` holds every stream and
every decoded tensor at once.

The checks are :mod:`.container`'s own, in the same order with the same messages: header,
manifest (bounded decompression, JSON, the caller's fields), every tensor entry, no overlapping
streams, ``max_decoded_bytes`` at open; per tensor the stream CRCs and the Format's structure
(:func:`.validate`) on first use, or for every tensor at once by :meth:`LazyFile.check_all` (the
loader calls it before it builds anything, so a corrupted file is refused before any allocation,
as by the eager reader).

The file must not be truncated in place while it is open (a mapped page past the new end reads
as SIGBUS); weightzip never does that (writes go to a temporary file that is renamed).
"""
from __future__ import annotations

import mmap
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from ..errors import WeightzipFormatError
from .container import (RESERVED_KEY, _check_decoded_size, _check_entry, _check_fields, _check_no_overlap,
                        _crc, _decoded_nbytes, _err, _read_head_and_manifest, default_max_decoded_bytes,
                        parse_size)
from .decoding import decode, decode_parts, validate
from .format import TORCH_DTYPES, Format

__all__ = ["LazyFile", "LazyFormats", "verify"]


class LazyFile(Mapping):
    """``{name: decoded tensor}`` of a ``.wz``, decoded on access (never cached: each access decodes).

    ``manifest``: the caller's manifest (without ``"tensors"``), as :func:`.container.read` returns
    it. ``entries[name]``: the checked tensor entry (kind, shape, dtype, meta, stream offsets).
    ``n_decoded`` counts :meth:`__getitem__` decodes and ``n_read`` the Formats read from the map.
    """

    def __init__(self, path: str | Path, *, max_decoded_bytes: int | str | None = None):
        self.path = Path(path)
        doc, start, slen, f = _read_head_and_manifest(self.path)
        try:
            limit = default_max_decoded_bytes() if max_decoded_bytes is None else parse_size(max_decoded_bytes)
            _check_fields(self.path, doc, limit)
            tensors = doc.pop(RESERVED_KEY)
            for name, e in tensors.items():
                _check_entry(self.path, name, e, slen)
            _check_no_overlap(self.path, tensors)
            _check_decoded_size(self.path, tensors, limit)
            # the header check compared the size announced with fstat's; map exactly that file
            self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if start + slen else None
        finally:
            f.close()
        if self._map is not None and len(self._map) != start + slen:  # pragma: no cover - changed since fstat
            self._map.close()
            raise _err(self.path, "the file changed size while it was being opened")
        self.manifest: dict[str, Any] = doc
        self.entries: dict[str, dict] = tensors
        self._start = start
        self._closed = False
        self.n_decoded = 0
        self.n_read = 0

    # -- the mapping: names in file order, values decoded on access -------------------------
    def __iter__(self) -> Iterator[str]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, name: object) -> bool:
        return name in self.entries

    def __getitem__(self, name: str) -> torch.Tensor:
        """Decode tensor ``name`` (its streams are read, checksummed and validated first)."""
        fmt = self.format(name)
        self.n_decoded += 1
        try:
            return decode(fmt)
        except WeightzipFormatError:
            raise
        except Exception as e:  # a decoder bug or hostile stream must not crash with a raw error
            raise _err(self.path, f"tensor {name!r} cannot be decoded ({type(e).__name__}: {e})") from None

    # -- what the manifest says, without reading streams -------------------------------------
    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.entries[name]["shape"])

    def dtype(self, name: str) -> torch.dtype:
        """The decoded dtype (:func:`.decode` returns a tensor of it); float32 if unknown (the
        Format's check refuses an unknown dtype when the tensor is read)."""
        return TORCH_DTYPES.get(self.entries[name]["dtype"], torch.float32)

    def meta_tensor(self, name: str) -> torch.Tensor:
        """A storage-less stand-in (``device="meta"``) with the tensor's shape and decoded dtype."""
        return torch.empty(self.shape(name), dtype=self.dtype(name), device="meta")

    def nbytes(self, name: str) -> int:
        """Stored bytes of the tensor's streams (its payload)."""
        return sum(s["length"] for s in self.entries[name]["streams"].values())

    def decoded_nbytes(self, name: str) -> int:
        return _decoded_nbytes(self.entries[name])

    def payload_bytes(self) -> int:
        return sum(self.nbytes(n) for n in self.entries)

    # -- reading streams ---------------------------------------------------------------------
    def format(self, name: str) -> Format:
        """The tensor's :class:`Format`, its streams copied out of the map after their CRCs are
        checked and the Format validated (:class:`WeightzipFormatError` naming tensor and stream)."""
        e = self.entries[name]
        if self._closed:
            raise ValueError(f"{self.path}: read from a closed LazyFile")
        streams = {}
        for sname, s in e["streams"].items():
            a = self._start + s["offset"]
            part = self._map[a:a + s["length"]] if self._map is not None else b""   # bytes: a copy
            if _crc(part) != s["crc32"]:
                raise _err(self.path, f"tensor {name!r}, stream {sname!r}: checksum mismatch (the file is corrupted)")
            streams[sname] = part
        shape = e["shape"]
        fmt = Format(e["kind"], tuple(shape) if all(isinstance(x, int) for x in shape) else shape,
                     e["dtype"], e["meta"], streams, name=name)
        try:
            validate(fmt)
        except WeightzipFormatError as err:
            raise _err(self.path, str(err)) from None
        self.n_read += 1
        return fmt

    def check_all(self) -> None:
        """Every stream's CRC and every Format's structure, in file order, nothing decoded and
        nothing kept: the checks :func:`.container.read` makes before it returns."""
        for name in self.entries:
            self.format(name)

    def formats(self) -> "LazyFormats":
        """``{name: Format}`` read from the map on access (not kept)."""
        return LazyFormats(self)

    # -- lifetime ----------------------------------------------------------------------------
    def close(self) -> None:
        self._closed = True
        if self._map is not None:
            self._map.close()
            self._map = None

    def __enter__(self) -> "LazyFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"LazyFile({str(self.path)!r}, {len(self)} tensors)"


class LazyFormats(Mapping):
    """``{name: Format}`` of a :class:`LazyFile`, each read (CRC, validate) on access."""

    def __init__(self, lazy: LazyFile):
        self.lazy = lazy

    def __iter__(self) -> Iterator[str]:
        return iter(self.lazy.entries)

    def __len__(self) -> int:
        return len(self.lazy.entries)

    def __contains__(self, name: object) -> bool:
        return name in self.lazy.entries

    def __getitem__(self, name: str) -> Format:
        return self.lazy.format(name)


def verify(path, *, max_decoded_bytes: int | str | None = None) -> dict:
    """:func:`weightzip.codec.verify.verify`'s report, read tensor by tensor from the map: peak
    memory about one tensor's streams and decoded values, not the whole file. Same checks in
    the same order: the file as a whole (header, manifest, table, every CRC and Format
    structure: the first failure ends the check), then each tensor decoded, its errors
    collected one per tensor."""
    import time

    path = Path(path)
    if not path.is_file():
        raise WeightzipFormatError(f"file {str(path)!r} not found")
    t0 = time.perf_counter()
    out: dict = {"file": str(path), "ok": False, "file_bytes": path.stat().st_size, "n_tensors": 0,
                 "decoded_bytes": 0, "errors": [], "tensors": []}
    try:
        lazy = LazyFile(path, max_decoded_bytes=max_decoded_bytes)
    except WeightzipFormatError as e:
        out["errors"].append(str(e))
        out["seconds"] = time.perf_counter() - t0
        return out
    with lazy:
        try:
            lazy.check_all()
        except WeightzipFormatError as e:
            out["errors"].append(str(e))
            out["seconds"] = time.perf_counter() - t0
            return out
        for name in lazy:
            fmt = lazy.format(name)
            row = {"name": name, "kind": fmt.kind, "shape": list(fmt.shape), "dtype": fmt.dtype,
                   "nbytes": fmt.nbytes, "decoded_bytes": fmt.decoded_nbytes}
            try:
                lazy.n_decoded += 1
                decode(fmt)
                decode_parts(fmt)
            except WeightzipFormatError as e:
                out["errors"].append(f"{path}: {e}")
                row["error"] = str(e)
            out["tensors"].append(row)
            out["decoded_bytes"] += fmt.decoded_nbytes
            del fmt
        out["n_tensors"] = len(lazy)
    out["ok"] = not out["errors"]
    out["seconds"] = time.perf_counter() - t0
    return out
