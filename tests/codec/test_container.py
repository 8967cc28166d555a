"""The .wz container: round trip, atomic writes, and refusal of every kind of damaged file."""
import json
import random
import struct
import zlib

import numpy as np
import pytest
import torch
import zstandard

from weightzip.codec.manifest_dict import zstd_dictionary

from weightzip.codec import container, decode, encode
from weightzip.codec.container import MAGIC
from weightzip.errors import WeightzipFormatError


def small_formats(seed=0):
    g = torch.Generator().manual_seed(seed)
    table = torch.tensor([-0.5, 0.25, 0.75])
    w1 = table[torch.randint(0, 3, (12, 10), generator=g)] * (torch.rand(12, 10, generator=g) < 0.3)
    q = torch.randint(-3, 4, (6, 5), generator=g).float() * 0.125
    return {
        "fc1.weight": encode(w1, options={"name": "fc1.weight"}),
        "fc1.bias": encode(torch.randn(12, generator=g)),
        "fc2.weight": encode(q, {"kind": "uniform", "scale": 0.125, "bits": 3}),
        "bn.num_batches_tracked": encode(torch.tensor(17)),
    }


MANIFEST = {"model": {"name": "lenet300_100", "kwargs": {"num_classes": 10}},
            "recipe": {"name": "deep-compression", "stages": [{"method": "prune_magnitude"}]},
            "extra": {"metrics": {"accuracy": 0.9831}, "activation_quant": []}}


def load_all(path):
    """What a loader does: read, then decode every tensor."""
    manifest, formats = container.read(path)
    return manifest, {name: decode(f) for name, f in formats.items()}


def tensors_equal(a, b):
    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)


@pytest.fixture
def wz(tmp_path):
    fm = small_formats()
    path = tmp_path / "model.wz"
    container.write(path, MANIFEST, fm)
    return path, fm, {k: decode(f) for k, f in fm.items()}


def test_round_trip(wz):
    path, fm, ref = wz
    manifest, formats = container.read(path)
    assert manifest == MANIFEST
    assert list(formats) == list(fm)
    for name, f in formats.items():
        assert f.kind == fm[name].kind and tuple(f.shape) == tuple(fm[name].shape) and f.dtype == fm[name].dtype
        assert f.meta == json.loads(json.dumps(fm[name].meta)) and f.streams == fm[name].streams
        assert f.name == name
    assert tensors_equal(load_all(path)[1], ref)
    payload = sum(f.nbytes for f in fm.values())
    assert container.file_size(path) == path.stat().st_size > payload
    head = container.read_manifest(path)
    assert head["model"] == MANIFEST["model"]
    assert set(head["tensors"]) == set(fm) and head["tensors"]["fc1.weight"]["kind"] == fm["fc1.weight"].kind


def test_layout_is_as_documented(wz, tmp_path):
    """Format 2 (``version=2``): no offsets, the streams follow each other in entry order, the manifest
    is a zstd frame made with the built-in dictionary."""
    _, fm, _ = wz
    path = tmp_path / "v2.wz"
    container.write(path, MANIFEST, fm, version=2)
    data = path.read_bytes()
    magic, version, flags, mlen, mcrc, slen, hcrc = struct.unpack("<8sHHIIQI", data[:32])
    assert magic == MAGIC == b"\x89WZF\r\n\x1a\n" and version == 2 and flags == 3
    assert hcrc == zlib.crc32(data[:28]) and mcrc == zlib.crc32(data[32:32 + mlen])
    assert len(data) == 32 + mlen + slen == 32 + mlen + sum(f.nbytes for f in fm.values())
    with pytest.raises(zstandard.ZstdError):          # not readable without the dictionary
        zstandard.ZstdDecompressor().decompress(data[32:32 + mlen])
    doc = json.loads(zstandard.ZstdDecompressor(dict_data=zstd_dictionary()).decompress(data[32:32 + mlen]))
    area = data[32 + mlen:]
    offset = 0
    for name, e in doc["tensors"].items():
        for sname, s in e["streams"].items():
            assert "offset" not in s
            chunk = area[offset:offset + s["length"]]
            assert chunk == fm[name].streams[sname] and zlib.crc32(chunk) == s["crc32"]
            offset += s["length"]
    assert offset == slen


def test_format_3_layout_is_as_documented(wz):
    """Format 3 (default): the tensor table is a list ``[area CRC32, [name, kind, shape, meta,
    lengths(, dtype)], ...]``, derivable meta fields dropped, the format-3 dictionary."""
    from weightzip.codec.manifest_dict import expand_meta

    path, fm, _ = wz
    data = path.read_bytes()
    magic, version, flags, mlen, mcrc, slen, hcrc = struct.unpack("<8sHHIIQI", data[:32])
    assert magic == MAGIC and version == 3 and flags == 3
    assert hcrc == zlib.crc32(data[:28]) and mcrc == zlib.crc32(data[32:32 + mlen])
    doc = json.loads(zstandard.ZstdDecompressor(dict_data=zstd_dictionary(3)).decompress(data[32:32 + mlen]))
    table = doc["tensors"]
    area = data[32 + mlen:]
    assert table[0] == zlib.crc32(area) and len(table) == len(fm) + 1
    offset = 0
    for ent, (name, f) in zip(table[1:], fm.items()):
        assert ent[0] == name and ent[1] == f.kind and ent[2] == list(f.shape)
        assert ent[5 if len(ent) == 6 else 0] == (f.dtype if len(ent) == 6 else name)
        assert expand_meta(ent[3], f.kind, ent[2]) == json.loads(json.dumps(f.meta))
        lengths = ent[4] if isinstance(ent[4], list) else list(ent[4].values())
        for sname, n in zip(f.streams, lengths):
            assert area[offset:offset + n] == f.streams[sname]
            offset += n
    assert offset == slen


def test_format_1_layout_is_still_written_and_read(tmp_path):
    """``version=1`` writes the previous layout (explicit offsets, plain zstd); it reads back the same."""
    fm = small_formats()
    p1, p2 = tmp_path / "v1.wz", tmp_path / "v2.wz"
    container.write(p1, MANIFEST, fm, version=1)
    container.write(p2, MANIFEST, fm)
    data = p1.read_bytes()
    magic, version, flags, mlen, mcrc, slen, hcrc = struct.unpack("<8sHHIIQI", data[:32])
    assert version == 1 and flags == 1
    doc = json.loads(zstandard.ZstdDecompressor().decompress(data[32:32 + mlen]))
    area = data[32 + mlen:]
    for name, e in doc["tensors"].items():
        for sname, s in e["streams"].items():
            chunk = area[s["offset"]:s["offset"] + s["length"]]
            assert chunk == fm[name].streams[sname] and zlib.crc32(chunk) == s["crc32"]
    (m1, f1), (m2, f2) = container.read(p1), container.read(p2)
    assert m1 == m2 == MANIFEST and list(f1) == list(f2)
    for k in f1:
        assert f1[k].streams == f2[k].streams and f1[k].meta == f2[k].meta
    assert container.read_manifest(p1) == container.read_manifest(p2)
    assert p2.stat().st_size < p1.stat().st_size


def test_manifest_numpy_values_and_reserved_key(tmp_path):
    path = tmp_path / "a.wz"
    container.write(path, {"extra": {"n": np.int64(3), "x": np.float32(0.5), "a": np.arange(3)}}, small_formats())
    assert container.read(path)[0] == {"extra": {"n": 3, "x": 0.5, "a": [0, 1, 2]}}
    with pytest.raises(ValueError, match="reserved"):
        container.write(tmp_path / "b.wz", {"tensors": 1}, {})
    with pytest.raises(TypeError, match="JSON"):
        container.write(tmp_path / "c.wz", {"x": object()}, {})
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())


@pytest.mark.parametrize("fail_at", ["write", "fsync", "replace"])
def test_atomic_write_leaves_no_partial_file(tmp_path, monkeypatch, fail_at):
    path = tmp_path / "model.wz"
    fm = small_formats()
    container.write(path, {"v": "old"}, fm)
    before = path.read_bytes()

    class Crash(RuntimeError):
        pass

    if fail_at == "write":
        real = container._manifest_bytes

        class Exploding(list):  # the stream area: the first chunk is written, then the process "dies"
            def __iter__(self):
                yield self[0]
                raise Crash("crash in the middle of the stream area")

        def crash_midway(manifest, formats, *args):
            raw, chunks = real(manifest, formats, *args)
            return raw, Exploding(chunks)

        monkeypatch.setattr(container, "_manifest_bytes", crash_midway)
    elif fail_at == "fsync":
        def bad_fsync(fd):
            raise Crash("power loss")
        monkeypatch.setattr(container.os, "fsync", bad_fsync)
    else:
        def bad_replace(a, b):
            raise Crash("killed before rename")
        monkeypatch.setattr(container.os, "replace", bad_replace)
    with pytest.raises(Crash):
        container.write(path, {"v": "new"}, fm)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.wz"]   # no temp file left
    assert path.read_bytes() == before                                    # old file intact
    assert container.read(path)[0] == {"v": "old"}
    # and a fresh target never appears half-written
    new = tmp_path / "new.wz"
    monkeypatch.setattr(container.os, "replace", lambda a, b: (_ for _ in ()).throw(Crash("x")))
    with pytest.raises(Crash):
        container.write(new, {"v": 1}, fm)
    monkeypatch.undo()
    assert not new.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["model.wz"]


def test_every_flipped_byte_is_refused(wz):
    path, _, _ = wz
    data = path.read_bytes()
    bad = path.with_name("bad.wz")
    for i in range(len(data)):
        mutated = bytearray(data)
        mutated[i] ^= 0x5A
        bad.write_bytes(bytes(mutated))
        with pytest.raises(WeightzipFormatError):
            load_all(bad)


def test_every_truncation_is_refused(wz):
    path, _, _ = wz
    data = path.read_bytes()
    bad = path.with_name("cut.wz")
    for cut in range(len(data)):
        bad.write_bytes(data[:cut])
        with pytest.raises(WeightzipFormatError, match="truncated|magic"):
            load_all(bad)
    bad.write_bytes(data + b"\x00")
    with pytest.raises(WeightzipFormatError, match="trailing"):
        load_all(bad)


def _with_header(data: bytes, **fields) -> bytes:
    magic, version, flags, mlen, mcrc, slen, _ = struct.unpack("<8sHHIIQI", data[:32])
    vals = {"magic": magic, "version": version, "flags": flags, "mlen": mlen, "mcrc": mcrc, "slen": slen, **fields}
    head = struct.pack("<8sHHIIQ", vals["magic"], vals["version"], vals["flags"], vals["mlen"], vals["mcrc"], vals["slen"])
    return head + struct.pack("<I", zlib.crc32(head)) + data[32:]


def test_wrong_magic_newer_version_unknown_flags(wz, tmp_path):
    path, _, _ = wz
    data = path.read_bytes()
    bad = tmp_path / "x.wz"
    bad.write_bytes(b"PK\x03\x04" + data[4:])
    with pytest.raises(WeightzipFormatError, match="not a weightzip file"):
        container.read(bad)
    bad.write_bytes(_with_header(data, version=max(container.VERSIONS) + 1))
    with pytest.raises(WeightzipFormatError, match="newer weightzip.*upgrade"):
        container.read(bad)
    with pytest.raises(WeightzipFormatError, match="newer"):
        container.read_manifest(bad)
    bad.write_bytes(_with_header(data, flags=7))
    with pytest.raises(WeightzipFormatError, match="flags"):
        container.read(bad)
    for version, flags in ((1, 3), (2, 2)):     # the dictionary needs format 2 and zstd
        bad.write_bytes(_with_header(data, version=version, flags=flags))
        with pytest.raises(WeightzipFormatError, match="flags"):
            container.read(bad)
    bad.write_bytes(_with_header(data, version=0))
    with pytest.raises(WeightzipFormatError, match="version"):
        container.read(bad)
    bad.write_bytes(b"")
    with pytest.raises(WeightzipFormatError, match="truncated"):
        container.read(bad)
    with pytest.raises(WeightzipFormatError, match="directory"):
        container.read(tmp_path)


def _rewrite(path, doc, area: bytes, compress=True):
    """Write a file with valid header and manifest checksums around ``doc`` (a semantic mutation)."""
    raw = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    man = zstandard.ZstdCompressor().compress(raw) if compress else raw
    head = struct.pack("<8sHHIIQ", MAGIC, 1, 1 if compress else 0, len(man), zlib.crc32(man), len(area))
    path.write_bytes(head + struct.pack("<I", zlib.crc32(head)) + man + area)


def _split(path):
    """(the whole manifest with every stream's offset, as format 1 has it; the stream area)."""
    from weightzip.codec import forge

    raw = forge.load(path)
    return raw.doc, bytes(raw.area)


def test_consistent_checksums_but_bad_manifest_content(wz, tmp_path):
    path, _, _ = wz
    doc, area = _split(path)
    bad = tmp_path / "m.wz"
    cases = [
        (b"{not json", "JSON"),
        (b"[1, 2]", "JSON object"),
        (json.dumps({"x": 1}).encode(), "tensors"),
        ({**doc, "tensors": {"w": {"kind": "dense"}}}, "field"),
        ({**doc, "tensors": {"fc1.weight": {**doc["tensors"]["fc1.weight"], "shape": "12x10"}}}, "shape"),
    ]
    e = doc["tensors"]["fc1.weight"]
    sname = next(iter(e["streams"]))
    oob = {**e, "streams": {**e["streams"], sname: {**e["streams"][sname], "offset": len(area)}}}
    cases.append(({**doc, "tensors": {"fc1.weight": oob}}, "outside"))
    crc = {**e, "streams": {**e["streams"], sname: {**e["streams"][sname], "crc32": e["streams"][sname]["crc32"] ^ 1}}}
    cases.append(({**doc, "tensors": {"fc1.weight": crc}}, "fc1.weight.*checksum"))
    neg = {**e, "streams": {**e["streams"], sname: {**e["streams"][sname], "length": -1}}}
    cases.append(({**doc, "tensors": {"fc1.weight": neg}}, "non-negative"))
    kind = {**e, "kind": "future_kind"}
    cases.append(({**doc, "tensors": {"fc1.weight": kind}}, "unknown format kind"))
    for content, msg in cases:
        _rewrite(bad, content, area)
        with pytest.raises(WeightzipFormatError, match=msg):
            load_all(bad)
    # an uncompressed manifest (flag bit 0 clear) is read too
    _rewrite(bad, doc, area, compress=False)
    assert tensors_equal(load_all(bad)[1], load_all(path)[1])


def test_bounded_fuzz_byte_mutations(wz, tmp_path):
    """300 random mutations of a valid file: each loads exactly, or raises WeightzipFormatError."""
    path, _, ref = wz
    data = path.read_bytes()
    rng = random.Random(1234)
    bad = tmp_path / "fuzz.wz"
    outcomes = {"exact": 0, "refused": 0}
    for _ in range(300):
        m = bytearray(data)
        op = rng.choice(["flip", "set", "insert", "delete", "truncate", "swap", "zero_run"])
        i = rng.randrange(len(m))
        if op == "flip":
            m[i] ^= 1 << rng.randrange(8)
        elif op == "set":
            m[i] = rng.randrange(256)
        elif op == "insert":
            m[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif op == "delete":
            del m[i:i + rng.randint(1, 8)]
        elif op == "truncate":
            del m[i:]
        elif op == "swap":
            j = rng.randrange(len(m))
            m[i], m[j] = m[j], m[i]
        else:
            m[i:i + rng.randint(1, 16)] = b"\x00" * len(m[i:i + 16])
        bad.write_bytes(bytes(m))
        try:
            _, tensors = load_all(bad)
        except WeightzipFormatError:
            outcomes["refused"] += 1
            continue
        assert tensors_equal(tensors, ref), op   # loaded: must be exactly the original weights
        outcomes["exact"] += 1
    assert outcomes["refused"] > 250


def _mutate_json(obj, rng):
    """Return a copy of obj with one random change somewhere inside (usually deep)."""
    if isinstance(obj, dict) and obj and rng.random() < 0.9:
        key = rng.choice(list(obj))
        new = dict(obj)
        if rng.random() < 0.1:
            del new[key]
        else:
            new[key] = _mutate_json(obj[key], rng)
        return new
    if isinstance(obj, list) and obj and rng.random() < 0.9:
        new = list(obj)
        i = rng.randrange(len(new))
        new[i] = _mutate_json(new[i], rng)
        return new
    if isinstance(obj, int) and not isinstance(obj, bool) and rng.random() < 0.5:
        return obj + rng.choice([-1, 1, 2, -(2**31), 2**31, 2**62])
    return rng.choice([None, True, -1, 0, 1, 2, 7, 2**31, 2**40, -(2**33), 0.5, float("nan"), "x", "relative",
                       "bitmap", "ans", "raw", "float32", "float16", [], [3, 4], [2, 2, 2], {}, {"coding": "raw"}])


def test_bounded_fuzz_manifest_semantics(wz, tmp_path):
    """200 random edits INSIDE the manifest, with valid checksums: never a crash or hang -
    every file either loads or raises WeightzipFormatError."""
    path, _, _ = wz
    doc, area = _split(path)
    rng = random.Random(99)
    bad = tmp_path / "sem.wz"
    refused = 0
    for _ in range(200):
        name = rng.choice(list(doc["tensors"]))
        entry = doc["tensors"][name]
        if rng.random() < 0.7:   # most edits go into the format meta (layout, counts, stream_info)
            entry = {**entry, "meta": _mutate_json(entry["meta"], rng)}
        else:
            entry = _mutate_json(entry, rng)
        mutated = {**doc, "tensors": {**doc["tensors"], name: entry}}
        _rewrite(bad, mutated, area)
        try:
            _, tensors = load_all(bad)
        except WeightzipFormatError:
            refused += 1
            continue
        for name, t in tensors.items():
            assert isinstance(t, torch.Tensor)
    assert refused > 100


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o077, 0o600)])
def test_written_file_has_the_umask_mode(tmp_path, mask, mode):
    """mkstemp makes 0600; the .wz gets what open() would give: 0o666 & ~umask."""
    import os
    import stat

    old = os.umask(mask)
    try:
        p = tmp_path / "m.wz"
        container.write(p, {"name": "x"}, {"w": encode(torch.ones(4, 4))})
    finally:
        os.umask(old)
    assert stat.S_IMODE(p.stat().st_mode) == mode
    assert [q.name for q in tmp_path.iterdir()] == ["m.wz"]  # no temp file left
