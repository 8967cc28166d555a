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

from .container import FLAG_DICT, FLAG_ZSTD, HEADER, HEADER_SIZE, MAGIC, RESERVED_KEY


def _crc(data) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


@dataclass
class RawFile:
    """A ``.wz`` taken apart: ``doc`` the whole manifest (with ``"tensors"``), ``area`` the stream bytes."""

    doc: dict
    area: bytearray
    version: int = 1              # 1: explicit offsets (what forging needs); 2: dumped without offsets + dictionary
    flags: int = FLAG_ZSTD

    def copy(self) -> "RawFile":
        return RawFile(copy.deepcopy(self.doc), bytearray(self.area), self.version, self.flags)


def load(path, *, keep_version: bool = False) -> RawFile:
    """Take apart a trusted ``.wz`` (no limits: only for files we wrote). A format-2 file comes back
    as format 1 (every stream with its ``offset``, plain zstd) unless ``keep_version``."""
    import zstandard

    from .manifest_dict import zstd_dictionary

    b = Path(path).read_bytes()
    _, version, flags, mlen, _, slen, _ = HEADER.unpack(b[:HEADER_SIZE])
    man = b[HEADER_SIZE:HEADER_SIZE + mlen]
    if flags & FLAG_ZSTD:
        dctx = zstandard.ZstdDecompressor(dict_data=zstd_dictionary(version)) if flags & FLAG_DICT else zstandard.ZstdDecompressor()
        man = dctx.decompress(man)
    area = bytearray(b[HEADER_SIZE + mlen:HEADER_SIZE + mlen + slen])
    doc = json.loads(man)
    if version >= 3:                              # the compact table as the version-1 dict (CRCs per stream)
        from .container import expand_table

        doc[RESERVED_KEY], _ = expand_table(path, doc[RESERVED_KEY])
        offset = 0
        for e in doc[RESERVED_KEY].values():
            for st in e["streams"].values():
                st["crc32"] = _crc(bytes(area[offset:offset + st["length"]]))
                offset += st["length"]
    if version >= 2:
        offset = 0
        for e in doc[RESERVED_KEY].values():
            for st in e["streams"].values():
                st["offset"] = offset
                offset += st["length"]
        if not keep_version:
            version, flags = 1, flags & ~FLAG_DICT
    return RawFile(doc, area, version, flags)


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
    doc = raw.doc
    if raw.version >= 2 and manifest is None:      # format 2: offsets are implied by the order
        doc = copy.deepcopy(doc)
        for e in (doc.get(RESERVED_KEY) or {}).values() if isinstance(doc.get(RESERVED_KEY), dict) else ():
            for st in (e.get("streams") or {}).values() if isinstance(e, dict) and isinstance(e.get("streams"), dict) else ():
                if isinstance(st, dict):
                    st.pop("offset", None)
    if raw.version >= 3 and manifest is None:      # format 3: the compact table (raw entries where it cannot be)
        doc = {**doc, RESERVED_KEY: _table3(doc.get(RESERVED_KEY), raw.area)}
    man = manifest if manifest is not None else json.dumps(doc, allow_nan=True).encode()
    flags = raw.flags
    if compress:
        if flags & FLAG_DICT:
            from .manifest_dict import zstd_dictionary

            cctx = zstandard.ZstdCompressor(level=level, write_content_size=content_size, dict_data=zstd_dictionary(raw.version),
                                            write_dict_id=False)
        else:
            cctx = zstandard.ZstdCompressor(level=level, write_content_size=content_size)
        man = cctx.compress(man)
        flags |= FLAG_ZSTD
    else:
        flags &= ~FLAG_ZSTD
    head = struct.pack("<8sHHIIQ", MAGIC, raw.version, flags, len(man), _crc(man), len(raw.area))
    head += struct.pack("<I", _crc(head))
    return head + man + bytes(raw.area)


def _table3(tensors, area) -> object:
    """Format 3's table of a (possibly mutated) version-1-shaped ``tensors``: the area's CRC, each
    entry compact where :func:`.container.compact_table` takes it, else ``[name, raw entry]``."""
    from .container import AREA_CRC_MAX, compact_table

    if not isinstance(tensors, dict):
        return tensors
    crc = _crc(bytes(area)) if len(area) <= AREA_CRC_MAX else None
    out = [crc]
    for name, e in tensors.items():
        try:
            out.append(compact_table({name: e}, {name: e["meta"]}, crc)[1])
        except Exception:   # a mutated entry: written as it is, without the fields format 3 implies
            if isinstance(e, dict) and isinstance(e.get("streams"), dict):
                e = {**e, "streams": {k: ({kk: vv for kk, vv in v.items() if kk != "offset" and (crc is None or kk != "crc32")}
                                          if isinstance(v, dict) else v) for k, v in e["streams"].items()}}
            out.append([name, e])
    return out


# =============================================================================================
# random mutations (the fuzzer's and the bounded random test's)

HOSTILE_VALUES = [0, -1, 1, 2, 3, 7, 8, 16, 31, 32, 33, 63, 64, 65, 255, 256, 2**16, 2**24, 2**31 - 1, 2**31,
                  2**32 - 1, 2**32, 2**33, 2**53, 2**63, 2**64, -2**31, -2**63, 10**30, 1e308, -1e308, 0.5, 1.0,
                  -0.0, float("nan"), float("inf"), float("-inf"), True, False, None, "", "x", "float32",
                  "float16", "bytes", "raw", "huffman", "ans", "none", "relative", "bitmap", "block", "range",
                  "table", "dense", "codebook", "uniform", "pq", "mixed_fixed", [], {}, [0], [1, 1], [-1],
                  [2**31, 2**31], [2**16] * 3, {"a": 1}, [[[[[]]]]]]

MUTATIONS = ("manifest_value", "manifest_number", "manifest_delete", "manifest_copy", "stream_bytes",
             "stream_length", "stream_replace", "file_bytes", "zstd_bomb", "deep_json", "overlap", "nan_float",
             "bit_width", "unknown_kind")
BIT_WIDTH_KEYS = ("index_bits", "mask_index_bits", "alphabet", "bits", "codebook_size", "k")


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
    if op in ("zstd_bomb", "deep_json", "overlap", "nan_float", "bit_width", "unknown_kind"):
        return _targeted(r, op, rng)
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


def _targeted(r: RawFile, op: str, rng) -> tuple[bytes, str]:
    """The named hostile cases, at random places: a manifest padded to 2-32 MiB of JSON (a zstd
    bomb, with or without the frame's content size), JSON nested 10^4-10^6 deep, one stream pointed
    at another's bytes, NaN / Inf written into a float stream, a width / alphabet / table size set
    to 0, 33, 64 or 2^32+, an unknown kind."""
    tensors = r.doc[RESERVED_KEY]
    name = rng.choice(sorted(tensors))
    e = tensors[name]
    if op == "zstd_bomb":
        pad = rng.randint(2, 32) << 20
        text = json.dumps(r.doc).encode()
        man = text[:-1] + b', "pad": "' + b" " * pad + b'"}'
        cs = rng.random() < 0.5
        return dump(r, manifest=man, level=1, content_size=cs), f"{op} {pad >> 20} MiB content_size={cs}"
    if op == "deep_json":
        depth = rng.choice([10**4, 10**5, 10**6])
        text = json.dumps(r.doc).replace('"meta": {', '"meta": {"deep": ' + "[" * depth + "]" * depth + ", ", 1)
        return dump(r, manifest=text.encode()), f"{op} {depth}"
    streams = [(n, sn, se) for n, t in tensors.items() for sn, se in t["streams"].items() if se["length"]]
    if op == "overlap" and len(streams) >= 2:
        (n1, s1, e1), (n2, s2, e2) = rng.sample(streams, 2)
        e1["offset"] = e2["offset"] + rng.randrange(e2["length"])
        e1["length"] = min(e1["length"], len(r.area) - e1["offset"])
        return dump(r), f"{op} {n1}/{s1} -> {n2}/{s2}"
    info = e["meta"].get("stream_info", {})
    floats = [sn for sn, inf in info.items() if inf.get("coding") in ("float32", "float16") and sn in e["streams"]
              and e["streams"][sn]["length"] >= 4]
    if op == "nan_float" and floats:
        sn = rng.choice(floats)
        se = e["streams"][sn]
        width = 4 if info[sn]["coding"] == "float32" else 2
        at = se["offset"] + width * rng.randrange(se["length"] // width)
        val = rng.choice([float("nan"), float("inf"), float("-inf")])
        r.area[at:at + width] = struct.pack("<f" if width == 4 else "<e", val)
        return dump(r), f"{op} {name}/{sn} = {val}"
    if op == "bit_width":
        spots = [(p, v) for p, v in _nodes(e) if p and p[-1] in BIT_WIDTH_KEYS]
        if spots:
            path, v = rng.choice(spots)
            new = rng.choice([0, 33, 64, 2**32 + 1, -1])
            _set(e, path, new)
            return dump(r), f"{op} {name}/{'/'.join(map(str, path))}: {v} -> {new}"
    e["kind"] = rng.choice(["jpeg", "", "RAW", "dense2", 7, None, ["dense"]])
    return dump(r), f"unknown_kind {name} = {e['kind']!r}"
