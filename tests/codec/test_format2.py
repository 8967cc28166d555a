"""File format 2: the frozen manifest dictionary, implied stream offsets, and hostile format-2 files."""
from __future__ import annotations

import hashlib
import json
import struct
import zlib

import pytest
import zstandard

from weightzip.codec import container, forge
from weightzip.codec.container import FLAG_DICT, FLAG_ZSTD, MAGIC
from weightzip.codec.manifest_dict import SHA256, dictionary_bytes, zstd_dictionary
from weightzip.errors import WeightzipFormatError

from .test_container import MANIFEST, small_formats


def test_manifest_dict_is_frozen():
    """The dictionary is part of the file format: files written with it must read forever."""
    assert hashlib.sha256(dictionary_bytes()).hexdigest() == SHA256
    assert len(dictionary_bytes()) == 10608


def _v2_file(doc: dict, area: bytes) -> bytes:
    man = zstandard.ZstdCompressor(dict_data=zstd_dictionary(), write_dict_id=False).compress(json.dumps(doc).encode())
    head = struct.pack("<8sHHIIQ", MAGIC, 2, FLAG_ZSTD | FLAG_DICT, len(man), zlib.crc32(man), len(area))
    return head + struct.pack("<I", zlib.crc32(head)) + man + area


def _doc_area(tmp_path):
    path = tmp_path / "ok.wz"
    container.write(path, MANIFEST, small_formats(), version=2)
    raw = forge.load(path, keep_version=True)
    assert raw.version == 2
    doc = json.loads(json.dumps(raw.doc))
    for e in doc["tensors"].values():
        for s in e["streams"].values():
            s.pop("offset")
    return doc, bytes(raw.area)


def test_a_hand_built_format_2_file_reads(tmp_path):
    doc, area = _doc_area(tmp_path)
    p = tmp_path / "hand.wz"
    p.write_bytes(_v2_file(doc, area))
    assert container.read(p)[0] == MANIFEST


@pytest.mark.parametrize("case", ["offset_present", "too_short", "too_long", "negative"])
def test_format_2_stream_lengths_must_tile_the_stream_area(tmp_path, case):
    doc, area = _doc_area(tmp_path)
    first = next(iter(doc["tensors"].values()))
    s0 = next(iter(first["streams"].values()))
    if case == "offset_present":
        s0["offset"] = 0
        match = "no 'offset'"
    elif case == "too_short":
        s0["length"] -= 1
        match = "add up"
    elif case == "too_long":
        s0["length"] += 1
        match = "add up|outside"
    else:
        s0["length"] = -5
        match = "non-negative|add up"
    p = tmp_path / "bad.wz"
    p.write_bytes(_v2_file(doc, area))
    with pytest.raises(WeightzipFormatError, match=match):
        container.read(p)
    with pytest.raises(WeightzipFormatError):
        container.read_manifest(p)


def test_format_2_manifest_without_the_dictionary_is_refused(tmp_path):
    doc, area = _doc_area(tmp_path)
    data = bytearray(_v2_file(doc, area))
    # the same frame declared as plain zstd: it cannot be decompressed without the dictionary
    head = struct.pack("<8sHHIIQ", MAGIC, 2, FLAG_ZSTD, *struct.unpack("<IIQ", bytes(data[12:28])))
    p = tmp_path / "nodict.wz"
    p.write_bytes(head + struct.pack("<I", zlib.crc32(head)) + bytes(data[32:]))
    with pytest.raises(WeightzipFormatError, match="manifest"):
        container.read(p)


def test_forge_round_trips_both_versions(tmp_path):
    path = tmp_path / "a.wz"
    container.write(path, MANIFEST, small_formats(), version=2)
    for keep in (False, True):
        raw = forge.load(path, keep_version=keep)
        out = tmp_path / f"b{keep}.wz"
        out.write_bytes(forge.dump(raw))
        m, f = container.read(out)
        assert m == MANIFEST and struct.unpack("<H", out.read_bytes()[8:10])[0] == (2 if keep else 1)
