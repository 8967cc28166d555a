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


# =============================================================================================
# random mutations (the fuzzer's and the bounded random test's)

HOSTILE_VALUES = [0, -1, 1, 2, 3, 7, 8, 16, 31, 32, 33, 63, 64, 65, 255, 256, 2**16, 2**24, 2**31 - 1, 2**31,
                  2**32 - 1, 2**32, 2**33, 2**53, 2**63, 2**64, -2**31, -2**63, 10**30, 1e308, -1e308, 0.5, 1.0,
                  -0.0, float("nan"), float("inf"), float("-inf"), True, False, None, "", "x", "float32",
                  "float16", "bytes", "raw", "huffman", "ans", "none", "relative", "bitmap", "block", "range",
                  "table", "dense", "codebook", "uniform", "pq", "mixed_fixed", [], {}, [0], [1, 1], [-1],
                  [2**31, 2**31], [2**16] * 3, {"a": 1}, [[[[[]]]]]]

MUTATIONS = ("manifest_value", "manifest_number", "manifest_delete", "manifest_copy", "stream_bytes",
             "stream_length", "stream_replace", "file_bytes")


def _nodes(obj, path=()):
    """Every (path, value) under ``obj`` (dict keys and list indices), depth first."""
    yield path, obj
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _nodes(v, path + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _nodes(v, path + (i,))


def _set(doc, path, value) -> None:
    node = doc
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value


def _delete(doc, path) -> None:
    node = doc
    for p in path[:-1]:
        node = node[p]
    del node[path[-1]]


def random_mutation(raw: RawFile, rng) -> tuple[bytes, str]:
    """One random hostile change of ``raw`` (not modified) as file bytes with every CRC recomputed
    (except ``file_bytes``, which flips bytes of the finished file), and a description.
    ``rng``: a ``random.Random``."""
    r = raw.copy()
    op = rng.choice(MUTATIONS)
    tensors = r.doc[RESERVED_KEY]
    nodes = [(p, v) for p, v in _nodes(tensors) if p]
    if op in ("manifest_value", "manifest_number", "manifest_delete", "manifest_copy"):
        if op == "manifest_number":
            nums = [(p, v) for p, v in nodes if isinstance(v, int) and not isinstance(v, bool)]
            path, v = rng.choice(nums)
            new = rng.choice([v + 1, v - 1, v * 2, v // 2, -v, v + rng.randint(-1000, 1000), v << rng.randint(1, 40)])
            _set(tensors, path, new)
            return dump(r), f"{op} {'/'.join(map(str, path))}: {v} -> {new}"
        path, v = rng.choice(nodes)
        if op == "manifest_delete":
            _delete(tensors, path)
            return dump(r), f"{op} {'/'.join(map(str, path))}"
        new = rng.choice(HOSTILE_VALUES) if op == "manifest_value" else rng.choice(nodes)[1]
        _set(tensors, path, copy.deepcopy(new))
        return dump(r), f"{op} {'/'.join(map(str, path))} = {str(new)[:40]}"
    entries = [(n, s, e) for n, e in tensors.items() for s, e in e["streams"].items() if e["length"]]
    if op == "file_bytes" or not entries:
        b = bytearray(dump(r))
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        return bytes(b), "file_bytes"
    name, sname, e = rng.choice(entries)
    o, n = e["offset"], e["length"]
    if op == "stream_bytes":
        for _ in range(rng.randint(1, 3)):
            r.area[o + rng.randrange(n)] = rng.randrange(256)
    elif op == "stream_length":
        e["length"] = rng.randrange(n)
    else:
        data = bytes(rng.randrange(256) for _ in range(rng.choice([0, 1, 2, 3, 4, 5, 8, 16, n, 2 * n + 1])))
        set_stream(r, name, sname, data)
    return dump(r), f"{op} {name}/{sname}"
