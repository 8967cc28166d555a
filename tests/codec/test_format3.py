"""File format 3: the compact tensor table (defaults dropped, one CRC for the stream area), its
frozen dictionary, hostile format-3 tables, and older formats still read."""
from __future__ import annotations

import hashlib
import json
import struct
import zlib

import pytest
import zstandard

from weightzip.codec import container, forge
from weightzip.codec.container import FLAG_DICT, FLAG_ZSTD, MAGIC
from weightzip.codec.lazy import LazyFile
from weightzip.codec.manifest_dict import compact_meta, dictionary3_bytes, expand_meta, zstd_dictionary
from weightzip.errors import WeightzipFormatError

from .test_container import MANIFEST, small_formats

DICT3_SHA256 = "6d8a2d772304cc2861dfbd4b86b4c15d359555bb227229010c57bac93314f975"


def test_dictionary_3_is_frozen():
    """Files written with it must read forever."""
    assert hashlib.sha256(dictionary3_bytes()).hexdigest() == DICT3_SHA256


def _v3_file(doc: dict, area: bytes) -> bytes:
    man = zstandard.ZstdCompressor(dict_data=zstd_dictionary(3), write_dict_id=False).compress(json.dumps(doc).encode())
    head = struct.pack("<8sHHIIQ", MAGIC, 3, FLAG_ZSTD | FLAG_DICT, len(man), zlib.crc32(man), len(area))
    return head + struct.pack("<I", zlib.crc32(head)) + man + area


def _doc_area(tmp_path, **kw):
    path = tmp_path / "ok.wz"
    container.write(path, MANIFEST, small_formats(), **kw)
    data = path.read_bytes()
    mlen = struct.unpack("<I", data[12:16])[0]
    doc = json.loads(zstandard.ZstdDecompressor(dict_data=zstd_dictionary(3)).decompress(data[32:32 + mlen]))
    return doc, data[32 + mlen:]


def test_round_trip_all_versions_and_lazy(tmp_path):
    fm = small_formats()
    ref = None
    for v in (1, 2, 3):
        p = tmp_path / f"v{v}.wz"
        container.write(p, MANIFEST, fm, version=v)
        m, f = container.read(p)
        assert m == MANIFEST
        for k in fm:
            assert f[k].streams == fm[k].streams and f[k].meta == json.loads(json.dumps(fm[k].meta))
        man = container.read_manifest(p)
        ref = ref or man
        assert man == ref                                  # the same table shape (offsets, CRCs) for every version
        with LazyFile(p) as lf:
            assert list(lf) == list(fm)
            lf.check_all()
    assert (tmp_path / "v3.wz").stat().st_size < (tmp_path / "v2.wz").stat().st_size


def test_per_stream_crcs_above_the_area_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(container, "AREA_CRC_MAX", 0)
    doc, area = _doc_area(tmp_path)
    assert doc["tensors"][0] is None and all(isinstance(x, list) for x in doc["tensors"][1][4])
    m, f = container.read(tmp_path / "ok.wz")
    assert m == MANIFEST and list(f) == list(small_formats())


def test_meta_compaction_is_exact():
    cases = [({"sparse": "none", "n_entries": 6, "nnz": 6, "value_dtype": "float32",
               "stream_info": {"values": {"coding": "float32", "count": 6}}}, "dense", [2, 3]),
             ({"sparse": "context", "n_entries": 4, "codebook_size": 3, "nnz": 4,
               "stream_info": {"codebook": {"coding": "float32", "count": 3}, "codes": {"coding": "cm", "count": 4,
                                                                                   "alphabet": 3},
                               "mask": {"coding": "cm_mask", "count": 6}}}, "codebook", [2, 3]),
             ({"n_entries": 5, "stream_info": {"codes": {"coding": "raw"}}}, "codebook", [2, 3]),   # absent defaults
             ({"sparse": "none", "nnz": 2, "stream_info": {"values": {"count": 9}}}, "dense", [2, 3])]
    for meta, kind, shape in cases:
        c = compact_meta(meta, kind, shape)
        assert c is not None and expand_meta(json.loads(json.dumps(c)), kind, shape) == meta
    assert compact_meta({"sparse": None}, "dense", [1]) is None       # a null where a default applies: raw entry


@pytest.mark.parametrize("case", ["area_crc", "duplicate", "crc_in_area_mode", "fields", "lengths", "name",
                                  "tile", "table"])
def test_hostile_format_3_tables_are_refused(tmp_path, case):
    doc, area = _doc_area(tmp_path)
    t = doc["tensors"]
    match = ""
    if case == "area_crc":
        t[0] ^= 1
        match = "stream area checksum"
    elif case == "duplicate":
        t.append(t[1])
        match = "twice"
    elif case == "crc_in_area_mode":
        name = t[1][0]
        t[1] = [name, {"kind": t[1][1], "shape": t[1][2], "dtype": "float32", "meta": {},
                       "streams": {"x": {"length": 0, "crc32": 0}}}]
        match = "no CRC"
    elif case == "fields":
        t[1] = t[1][:3]
        match = "5 or 6 fields"
    elif case == "lengths":
        t[1][4] = t[1][4][:-1] if isinstance(t[1][4], list) and len(t[1][4]) > 1 else [1, 2, 3, 4, 5]
        match = "stream lengths"
    elif case == "name":
        t[1][0] = 7
        match = "name"
    elif case == "tile":
        t[1][4] = [x + 1 for x in t[1][4]] if isinstance(t[1][4], list) else t[1][4]
        match = "add up|outside"
    else:
        doc["tensors"] = {"a": 1}
        match = "list"
    p = tmp_path / "bad.wz"
    p.write_bytes(_v3_file(doc, area))
    with pytest.raises(WeightzipFormatError, match=match):
        container.read(p)
    with pytest.raises(WeightzipFormatError):
        LazyFile(p).check_all()


def test_forge_round_trips_format_3(tmp_path):
    path = tmp_path / "a.wz"
    container.write(path, MANIFEST, small_formats())
    for keep in (False, True):
        raw = forge.load(path, keep_version=keep)
        out = tmp_path / f"b{keep}.wz"
        out.write_bytes(forge.dump(raw))
        m, f = container.read(out)
        assert m == MANIFEST and struct.unpack("<H", out.read_bytes()[8:10])[0] == (3 if keep else 1)
        assert {k: v.streams for k, v in f.items()} == {k: v.streams for k, v in small_formats().items()}
