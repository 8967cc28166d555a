"""Forging ``.wz`` files as an attacker would: change any manifest field or stream byte and
recompute every checksum, so the CRCs cannot be what refuses a hostile file.

For the hostile-file tests (``tests/codec/test_container_hostile.py``) and
``benchmarks/fuzz_format.py``; nothing in the library uses it::

    raw = forge.load("model.wz")                       # header fields, full manifest, stream area
    raw.doc["tensors"]["fc1.weight"]["shape"] = [-1]   # any JSON value
    forge.set_stream(raw, "fc1.weight", "codes", b"...")
    path.write_bytes(forge.dump(raw))                  # CRCs of streams, manifest, header recomputed
"""
from __future__ import annotations

import copy
import json
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

from .container import FLAG_ZSTD, HEADER, HEADER_SIZE, MAGIC, RESERVED_KEY, VERSION


def _crc(data) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


@dataclass
class RawFile:
    """A ``.wz`` taken apart: ``doc`` the whole manifest (with ``"tensors"``), ``area`` the stream bytes."""

    doc: dict
    area: bytearray
    version: int = VERSION
    flags: int = FLAG_ZSTD

    def copy(self) -> "RawFile":
        return RawFile(copy.deepcopy(self.doc), bytearray(self.area), self.version, self.flags)


def load(path) -> RawFile:
    """Take apart a trusted ``.wz`` (no limits: only for files we wrote)."""
    import zstandard

    b = Path(path).read_bytes()
    _, version, flags, mlen, _, slen, _ = HEADER.unpack(b[:HEADER_SIZE])
    man = b[HEADER_SIZE:HEADER_SIZE + mlen]
    if flags & FLAG_ZSTD:
        man = zstandard.ZstdDecompressor().decompress(man)
    area = bytearray(b[HEADER_SIZE + mlen:HEADER_SIZE + mlen + slen])
    return RawFile(json.loads(man), area, version, flags)


def set_stream(raw: RawFile, tensor: str, stream: str, data: bytes, info: dict | None = None) -> None:
    """Point ``tensor``'s ``stream`` at ``data`` appended to the area (``info``: its new stream_info entry)."""
    e = raw.doc[RESERVED_KEY][tensor]
    e["streams"][stream] = {"offset": len(raw.area), "length": len(data), "crc32": 0}
    raw.area += data
    if info is not None:
        e["meta"].setdefault("stream_info", {})[stream] = info


def recrc(raw: RawFile) -> None:
    """Recompute the CRC of every stream entry that lies inside the area (others are left)."""
    for e in raw.doc.get(RESERVED_KEY, {}).values() if isinstance(raw.doc.get(RESERVED_KEY), dict) else ():
        streams = e.get("streams") if isinstance(e, dict) else None
        for s in (streams.values() if isinstance(streams, dict) else ()):
            try:
                o, n = s["offset"], s["length"]
                if isinstance(o, int) and isinstance(n, int) and 0 <= o and 0 <= n and o + n <= len(raw.area):
                    s["crc32"] = _crc(bytes(raw.area[o:o + n]))
            except (TypeError, KeyError, AttributeError):
                pass


def dump(raw: RawFile, *, manifest: bytes | None = None, compress: bool = True, level: int = 3,
         fix_crcs: bool = True, content_size: bool = True) -> bytes:
    """The file bytes with every checksum valid. ``manifest``: use these JSON bytes instead of
    ``raw.doc`` (e.g. deep nesting or a bomb); ``content_size=False`` leaves the decompressed
    size out of the zstd frame."""
    import zstandard

    if fix_crcs:
        recrc(raw)
    man = manifest if manifest is not None else json.dumps(raw.doc, allow_nan=True).encode()
    flags = raw.flags
    if compress:
        man = zstandard.ZstdCompressor(level=level, write_content_size=content_size).compress(man)
        flags |= FLAG_ZSTD
    else:
        flags &= ~FLAG_ZSTD
    head = struct.pack("<8sHHIIQ", MAGIC, raw.version, flags, len(man), _crc(man), len(raw.area))
    head += struct.pack("<I", _crc(head))
    return head + man + bytes(raw.area)
