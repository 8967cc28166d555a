"""The ``.wz`` file: header, zstd-compressed JSON manifest, concatenated streams. Never pickle.

Layout (all integers little-endian; full specification in ``docs/file-format.md``)::

    offset  size  field
    0       8     magic  b"\\x89WZF\\r\\n\\x1a\\n"   (PNG-style: catches 7-bit and newline mangling)
    8       2     format version (uint16): 1, 2 or 3 (written by default)
    10      2     flags (uint16): bit 0 = manifest is zstd-compressed; bit 1 = with the built-in
                  dictionary of its version (2+); other bits must be 0
    12      4     manifest length L in bytes (uint32, as stored)
    16      4     CRC32 of the L stored manifest bytes (uint32)
    20      8     streams length S in bytes (uint64)
    28      4     CRC32 of header bytes 0..27 (uint32)
    32      L     manifest: UTF-8 JSON object (zstd frame when flag bit 0)
    32+L    S     streams, concatenated; the file ends exactly at 32 + L + S

Manifest = the caller's manifest (model config, recipe, metrics, ``extra``, ...) plus the
reserved key ``"tensors"``: ``{name: {"kind", "shape", "dtype", "meta", "streams": {stream:
{"offset", "length", "crc32"}}}}`` with offsets relative to the start of the stream area. Version
2 stores no ``offset``: the streams follow each other in entry order and their lengths tile the
stream area; the reader assigns the offsets, so every caller sees the version-1 shape.

Version 3 (default; same 32-byte header, flags 3, its own dictionary :func:`.manifest_dict.zstd_dictionary`
``(3)``) stores ``"tensors"`` as a list ``[area CRC32 or null, entry, ...]`` (:func:`compact_table`):
an entry is ``[name, kind, shape, meta, lengths]`` plus ``dtype`` when not float32, the meta without
the fields the reader restores (:func:`.manifest_dict.expand_meta`: ``sparse`` "none", ``n_entries``
= numel of a dense layout, ``nnz`` = ``n_entries``, a dense ``value_dtype`` float32, stream counts
and code alphabets implied by the meta; a field that is absent where a default applies is stored
as null, a ``stream_info`` entry holding only its coding is that string), ``lengths`` a list in the
order of the meta's ``stream_info`` (else an object by stream name). With an area CRC (stream areas
up to :data:`AREA_CRC_MAX`) no stream carries its own: the reader checks the area in 1 MiB chunks
at open and gives every stream the CRC of its bytes; without one each length is ``[length, crc32]``.
An entry the compact form cannot hold is ``[name, {version-2 entry}]``. Every reader sees the
version-1 table.

:func:`write` is atomic (temporary file in the same directory, fsync, ``os.replace``); on any
error the temporary file is removed. :func:`read` validates everything and raises
:class:`WeightzipFormatError` naming the tensor/stream and the problem.
"""
from __future__ import annotations

import json
import os
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import WeightzipFormatError
from ..fileio import atomic_write
from .decoding import validate
from .format import DTYPE_BYTES, Format
from .manifest import check_manifest

MAGIC = b"\x89WZF\r\n\x1a\n"
VERSION = 3                               # 1: streams carry offsets; 2: offsets implied, dictionary-compressed manifest;
                                          # 3: compact tensor table (list, defaults dropped, one CRC for the stream area)
VERSIONS = (1, 2, 3)                      # written by write(version=...); all read
FLAG_ZSTD = 1
FLAG_DICT = 2                             # the zstd frame uses the built-in dictionary (.manifest_dict), version >= 2
KNOWN_FLAGS = FLAG_ZSTD | FLAG_DICT
HEADER = struct.Struct("<8sHHIIQI")       # magic, version, flags, manifest len, manifest crc, streams len, header crc
HEADER_SIZE = HEADER.size                 # 32
MAX_MANIFEST_BYTES = 32 << 20             # decompressed JSON: 32 MiB is ~1000x the largest committed manifest
MANIFEST_RATIO = 64                       # ... and at most 64x its compressed size (real manifests: 3-12x)
MANIFEST_FLOOR = 1 << 20                  # ... except that 1 MiB is always allowed
DEFAULT_MAX_DECODED_BYTES = 2 << 30       # sum over tensors of numel x element size (512M float32 weights)
MAX_DECODED_ENV = "WEIGHTZIP_MAX_DECODED_BYTES"   # overrides the default (the CLI's --max-decoded-bytes sets it)
RESERVED_KEY = "tensors"
AREA_CRC_MAX = 4 << 20                    # format 3: one CRC for a stream area up to this size, per-stream CRCs above


def _crc(data) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


def _json_default(o: Any):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (set, frozenset)):
        return sorted(o)
    if isinstance(o, Path):
        return str(o)
    try:
        import torch

        if isinstance(o, torch.Tensor):
            return o.detach().cpu().tolist()
    except ImportError:  # pragma: no cover
        pass
    raise TypeError(f"manifest value of type {type(o).__name__} is not JSON-serializable; "
                    "store plain numbers, strings, lists and dicts")


def _manifest_bytes(manifest: dict, formats: dict[str, Format], version: int = 1) -> tuple[bytes, list[bytes]]:
    if not isinstance(manifest, dict):
        raise TypeError(f"manifest must be a dict, got {type(manifest).__name__}")
    if RESERVED_KEY in manifest:
        raise ValueError(f"manifest key {RESERVED_KEY!r} is reserved for the tensor table")
    tensors: dict[str, Any] = {}
    chunks: list[bytes] = []
    offset = 0
    for name, fmt in formats.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"tensor names must be non-empty strings, got {name!r}")
        if not isinstance(fmt, Format):
            raise TypeError(f"{name}: expected a codec Format, got {type(fmt).__name__}")
        entry_streams = {}
        for sname, data in fmt.streams.items():
            data = bytes(data)
            entry_streams[sname] = ({"offset": offset} if version == 1 else {}) | {"length": len(data), "crc32": _crc(data)}
            chunks.append(data)
            offset += len(data)
        tensors[name] = {"kind": fmt.kind, "shape": [int(s) for s in fmt.shape], "dtype": fmt.dtype,
                         "meta": fmt.meta, "streams": entry_streams}
    if version >= 3:
        area_crc = None
        if offset <= AREA_CRC_MAX:
            area_crc = 0
            for c in chunks:
                area_crc = zlib.crc32(c, area_crc)
            area_crc &= 0xFFFFFFFF
        meta_json = json.loads(json.dumps({k: e["meta"] for k, e in tensors.items()}, default=_json_default))
        table = compact_table(tensors, meta_json, area_crc)
    else:
        table = tensors
    doc = {**manifest, RESERVED_KEY: table}
    text = json.dumps(doc, default=_json_default, separators=(",", ":"), sort_keys=False)
    return text.encode("utf-8"), chunks


def compact_table(tensors: dict, metas: dict, area_crc: int | None) -> list:
    """Format 3's tensor table: ``[area CRC32 or null, entry, ...]``; an entry is ``[name, kind,
    shape, meta, lengths]`` (+ ``dtype`` unless float32) with the meta's derivable fields dropped
    (:func:`.manifest_dict.compact_meta`) and ``lengths`` a list in the order of the meta's
    ``stream_info`` (or an object by stream name); each length is ``[length, crc32]`` when the
    table has no area CRC. An entry that cannot be written so is ``[name, {v2 entry}]``."""
    from .manifest_dict import compact_meta

    out: list = [area_crc]
    for name, e in tensors.items():
        meta = metas[name]
        streams = {s: (v["length"] if area_crc is not None else [v["length"], v["crc32"]]) for s, v in e["streams"].items()}
        mc = compact_meta(meta, e["kind"], e["shape"]) if isinstance(meta, dict) else None
        si = meta.get("stream_info") if isinstance(meta, dict) else None
        if mc is None or (isinstance(si, dict) and any(not isinstance(v, dict) for v in si.values())):
            raw = {**e, "meta": meta, "streams": {s: ({"length": v} if area_crc is not None else {"length": v[0], "crc32": v[1]})
                                                   for s, v in streams.items()}}
            out.append([name, raw])
            continue
        lengths = list(streams.values()) if isinstance(si, dict) and list(si) == list(streams) else streams
        ent = [name, e["kind"], e["shape"], mc, lengths]
        if e["dtype"] != "float32":
            ent.append(e["dtype"])
        out.append(ent)
    return out


def expand_table(path, table) -> tuple[dict, int | None]:
    """Inverse of :func:`compact_table`: ``({name: v2-shaped entry}, area CRC or None)``. Every
    malformed piece is refused by name here or left for the entry checks (:func:`_check_entry`)."""
    from .manifest_dict import expand_meta

    if not isinstance(table, list) or not table:
        raise _err(path, f"manifest field {RESERVED_KEY!r} of a format-3 file must be a non-empty list")
    area_crc = table[0]
    if area_crc is not None and not (isinstance(area_crc, int) and not isinstance(area_crc, bool)
                                     and 0 <= area_crc <= 0xFFFFFFFF):
        raise _err(path, f"the stream area's CRC must be null or an integer in [0, 2^32), got {area_crc!r}")
    out: dict = {}
    for i, ent in enumerate(table[1:]):
        name = ent[0] if isinstance(ent, list) and ent else None
        if not isinstance(name, str) or not name:
            raise _err(path, f"tensor entry #{i} must be a list starting with the tensor's name")
        if name in out:
            raise _err(path, f"tensor {name!r} appears twice in the tensor table")
        where = f"tensor {name!r}"
        if len(ent) == 2 and isinstance(ent[1], dict):
            e = ent[1]
            streams = e.get("streams")
            if area_crc is not None and isinstance(streams, dict):
                for sname, st in streams.items():
                    if isinstance(st, dict) and "crc32" in st:
                        raise _err(path, f"{where}, stream {sname!r}: a stream has no CRC where the area has one")
            out[name] = e
            continue
        if len(ent) not in (5, 6):
            raise _err(path, f"{where}: a format-3 entry has 5 or 6 fields, got {len(ent)}")
        _, kind, shape, meta, lengths = ent[:5]
        dtype = ent[5] if len(ent) == 6 else "float32"
        meta = expand_meta(meta, kind, shape)
        if isinstance(lengths, list):
            si = meta.get("stream_info") if isinstance(meta, dict) else None
            if not isinstance(si, dict) or len(si) != len(lengths):
                raise _err(path, f"{where}: {len(lengths)} stream lengths for the streams of its stream_info")
            lengths = dict(zip(si, lengths))
        if not isinstance(lengths, dict):
            raise _err(path, f"{where}: the stream lengths must be a list or an object, got {type(lengths).__name__}")
        streams = {}
        for sname, v in lengths.items():
            if area_crc is None:
                if not (isinstance(v, list) and len(v) == 2):
                    raise _err(path, f"{where}, stream {sname!r}: must be [length, crc32], got {v!r}"[:200])
                streams[sname] = {"length": v[0], "crc32": v[1]}
            else:
                streams[sname] = {"length": v}
        out[name] = {"kind": kind, "shape": shape, "dtype": dtype, "meta": meta, "streams": streams}
    return out, area_crc


def write(path, manifest: dict, formats: dict[str, Format], *, level: int = 19, version: int = VERSION) -> int:
    """Write a ``.wz`` file atomically; returns the file size in bytes.

    ``version`` 2 (default): streams carry no offsets (they follow each other in entry order) and
    the manifest is zstd-compressed with the built-in dictionary (:mod:`.manifest_dict`); ``version``
    1 writes the previous format (offsets, plain zstd), which every reader since 1 reads.

    ``manifest``: JSON-able dict (numpy scalars/arrays and tensors are converted to lists);
    the key ``"tensors"`` is reserved. ``formats``: name -> :class:`Format`, written in order.
    A temporary file in the same directory is written, flushed, fsynced and renamed over
    ``path`` (:func:`weightzip.fileio.atomic_write`); if anything fails it is deleted and ``path``
    is left as it was. The file gets the mode a plain ``open`` would: ``0o666 & ~umask``.
    """
    import zstandard

    if version not in VERSIONS:
        raise ValueError(f"version must be one of {VERSIONS}, got {version!r}")
    path = Path(path)
    raw, chunks = _manifest_bytes(manifest, formats, version)
    if version == 1:
        man, flags = zstandard.ZstdCompressor(level=level).compress(raw), FLAG_ZSTD
    else:
        from .manifest_dict import zstd_dictionary

        man = zstandard.ZstdCompressor(level=level, dict_data=zstd_dictionary(version), write_dict_id=False,
                                       write_checksum=False, write_content_size=True).compress(raw)
        flags = FLAG_ZSTD | FLAG_DICT
    streams_len = sum(len(c) for c in chunks)
    if len(man) >= 1 << 32:
        raise ValueError("manifest too large for the .wz header (4 GiB)")
    head = struct.pack("<8sHHIIQ", MAGIC, version, flags, len(man), _crc(man), streams_len)
    head += struct.pack("<I", _crc(head))

    def fill(f) -> None:
        f.write(head)
        f.write(man)
        for c in chunks:
            f.write(c)

    atomic_write(path, fill, durable=True)  # temp + fsync + mode 0666 & ~umask + os.replace
    return HEADER_SIZE + len(man) + streams_len


# ---------------------------------------------------------------------------------------------
# reading


def _err(path, msg: str) -> WeightzipFormatError:
    return WeightzipFormatError(f"{path}: {msg}")


def _parse_header(path, head: bytes, file_size: int) -> tuple[int, int, int, int]:
    if len(head) < HEADER_SIZE:
        if len(head) >= len(MAGIC) and head[:len(MAGIC)] != MAGIC:
            raise _err(path, "not a weightzip file (wrong magic bytes)")
        raise _err(path, f"truncated: {file_size} bytes, shorter than the {HEADER_SIZE}-byte header")
    magic, version, flags, mlen, mcrc, slen, hcrc = HEADER.unpack(head[:HEADER_SIZE])
    if magic != MAGIC:
        raise _err(path, f"not a weightzip file (magic {magic!r}, expected {MAGIC!r})")
    if version > max(VERSIONS):
        raise _err(path, f"written by a newer weightzip (file format version {version}; this reader "
                         f"supports up to {VERSION}): upgrade weightzip to read it")
    if version < 1:
        raise _err(path, f"invalid file format version {version}")
    if _crc(head[:28]) != hcrc:
        raise _err(path, "header checksum mismatch (the file is corrupted)")
    if flags & ~KNOWN_FLAGS:
        raise _err(path, f"unknown header flags 0x{flags:04x} (written by a newer weightzip?)")
    if flags & FLAG_DICT and (version < 2 or not flags & FLAG_ZSTD):
        raise _err(path, f"header flags 0x{flags:04x}: the manifest dictionary needs zstd and format version 2")
    expected = HEADER_SIZE + mlen + slen
    if file_size < expected:
        raise _err(path, f"truncated: {file_size} bytes, the header announces {expected}")
    if file_size > expected:
        raise _err(path, f"{file_size - expected} unexpected trailing bytes after the streams (corrupted file?)")
    return flags | (version << 16), mlen, mcrc, slen


def _parse_manifest(path, data: bytes, flags: int, mcrc: int, slen: int | None = None) -> tuple[dict, int | None]:
    """The manifest object and (format 3) the stream area's CRC32 or None; ``flags`` carries the
    format version in bits 16+ (``_parse_header``). Format 2+ streams have no offsets: they are
    assigned here (entry order, then stream order), so the tensor table has the same shape for
    every version, and must cover the ``slen``-byte stream area. Format 3's compact table is
    expanded to that shape first (:func:`expand_table`)."""
    version = flags >> 16 or 1
    if _crc(data) != mcrc:
        raise _err(path, "manifest checksum mismatch (the file is corrupted)")
    if flags & FLAG_ZSTD:
        data = _decompress_manifest(path, data, bool(flags & FLAG_DICT), version)
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:  # ValueError: JSONDecodeError, int digit limit
        raise _err(path, f"manifest is not valid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise _err(path, f"manifest must be a JSON object, got {type(doc).__name__}")
    area_crc = None
    if version >= 3:
        if not isinstance(doc.get(RESERVED_KEY), list):
            raise _err(path, f"manifest has no {RESERVED_KEY!r} list (format 3)")
        doc[RESERVED_KEY], area_crc = expand_table(path, doc[RESERVED_KEY])
    if not isinstance(doc.get(RESERVED_KEY), dict):
        raise _err(path, f"manifest has no {RESERVED_KEY!r} object")
    if version >= 2:
        _assign_offsets(path, doc[RESERVED_KEY], slen)
    return doc, area_crc


def _check_area_crc(path, f, start: int, slen: int, tensors: dict, area_crc: int) -> None:
    """Format 3 with one CRC for the stream area: read the area in chunks (never held whole),
    compare its CRC32 and give every stream the ``crc32`` of its bytes (what the per-stream checks
    of the readers then compare), so every reader sees the version-1 table."""
    spans = sorted(((s["offset"], s["length"], s) for e in tensors.values() if isinstance(e, dict)
                   and isinstance(e.get("streams"), dict) for s in e["streams"].values()
                   if isinstance(s, dict) and isinstance(s.get("offset"), int) and isinstance(s.get("length"), int)),
                   key=lambda t: (t[0], t[1]))
    f.seek(start)
    total, pos, chunk = 0, 0, 1 << 20
    for off, n, s in spans:                    # format 2+: the streams tile the area in order
        c = 0
        while n > 0:
            b = f.read(min(chunk, n))
            if not b:
                raise _err(path, "truncated inside the stream area")
            c = zlib.crc32(b, c)
            total = zlib.crc32(b, total)
            n -= len(b)
            pos += len(b)
        s["crc32"] = c & 0xFFFFFFFF
    if pos != slen or (total & 0xFFFFFFFF) != area_crc:
        raise _err(path, "stream area checksum mismatch (the file is corrupted)")


def _assign_offsets(path, tensors: dict, slen: int | None) -> None:
    """Format 2: give every stream its ``offset`` (the streams follow each other, no gap); the
    lengths must add up to the stream area exactly."""
    offset = 0
    for name, e in tensors.items():
        streams = e.get("streams") if isinstance(e, dict) else None
        if not isinstance(streams, dict):
            continue                      # _check_entry names the problem
        for sname, st in streams.items():
            if not isinstance(st, dict):
                continue
            if "offset" in st:
                raise _err(path, f"tensor {name!r}, stream {sname!r}: a format-2 stream has no 'offset' field")
            n = st.get("length")
            if not isinstance(n, int) or isinstance(n, bool) or n < 0:
                continue                  # _check_entry names the problem
            st["offset"] = offset
            offset += n
    if slen is not None and offset != slen:
        raise _err(path, f"the streams' lengths add up to {offset} bytes, the stream area holds {slen} "
                         "(truncated or corrupted file)")


def manifest_limit(compressed_len: int) -> int:
    """Largest decompressed manifest accepted for ``compressed_len`` stored bytes:
    ``min(MAX_MANIFEST_BYTES, max(MANIFEST_FLOOR, MANIFEST_RATIO * compressed_len))``."""
    return min(MAX_MANIFEST_BYTES, max(MANIFEST_FLOOR, MANIFEST_RATIO * compressed_len))


def _decompress_manifest(path, data: bytes, use_dict: bool = False, version: int = 2) -> bytes:
    """Decompress the zstd manifest without ever holding more than :func:`manifest_limit` bytes:
    the frame's declared size is checked first, then the output is read in chunks. ``use_dict``:
    the frame was made with the built-in dictionary (:mod:`.manifest_dict`)."""
    import io

    import zstandard

    if use_dict:
        from .manifest_dict import zstd_dictionary

        dctx = zstandard.ZstdDecompressor(dict_data=zstd_dictionary(version))
    else:
        dctx = zstandard.ZstdDecompressor()
    limit = manifest_limit(len(data))
    try:
        declared = zstandard.get_frame_parameters(data).content_size
        if declared != zstandard.CONTENTSIZE_UNKNOWN and declared > limit:
            raise _err(path, f"manifest declares {declared} decompressed bytes, more than the {limit} allowed for "
                             f"{len(data)} compressed bytes (a decompression bomb or a corrupted file)")
        out = bytearray()
        with dctx.stream_reader(io.BytesIO(data)) as reader:
            while chunk := reader.read(1 << 20):
                out += chunk
                if len(out) > limit:
                    raise _err(path, f"manifest decompresses to more than the {limit} bytes allowed for "
                                     f"{len(data)} compressed bytes (a decompression bomb or a corrupted file)")
    except zstandard.ZstdError as e:
        raise _err(path, f"manifest cannot be decompressed: {e}") from None
    if declared != zstandard.CONTENTSIZE_UNKNOWN and len(out) != declared:
        raise _err(path, f"manifest decompresses to {len(out)} bytes, its frame declares {declared}")
    return bytes(out)


def _read_head_and_manifest(path) -> tuple[dict, int, int, Any]:
    """Open, validate header + manifest. Returns (doc, streams start, streams length, file object)."""
    path = Path(path)
    try:
        f = open(path, "rb")
    except IsADirectoryError:
        raise _err(path, "is a directory, not a .wz file") from None
    try:
        size = os.fstat(f.fileno()).st_size
        head = f.read(HEADER_SIZE)
        flags, mlen, mcrc, slen = _parse_header(path, head, size)
        if mlen > MAX_MANIFEST_BYTES:
            raise _err(path, f"manifest of {mlen} bytes exceeds the {MAX_MANIFEST_BYTES} limit")
        data = f.read(mlen)
        if len(data) != mlen:
            raise _err(path, "truncated inside the manifest")
        doc, area_crc = _parse_manifest(path, data, flags, mcrc, slen)
        if area_crc is not None:
            _check_area_crc(path, f, HEADER_SIZE + mlen, slen, doc[RESERVED_KEY], area_crc)
    except BaseException:
        f.close()
        raise
    return doc, HEADER_SIZE + mlen, slen, f


def _check_entry(path, name: str, e: Any, slen: int) -> None:
    where = f"tensor {name!r}"
    if not isinstance(e, dict):
        raise _err(path, f"{where}: entry must be an object")
    for key, typ in (("kind", str), ("dtype", str), ("shape", list), ("meta", dict), ("streams", dict)):
        if not isinstance(e.get(key), typ):
            raise _err(path, f"{where}: field {key!r} must be a {typ.__name__}, got {type(e.get(key)).__name__}")
    for sname, s in e["streams"].items():
        if not isinstance(s, dict):
            raise _err(path, f"{where}, stream {sname!r}: entry must be an object")
        for key in ("offset", "length", "crc32"):
            v = s.get(key)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise _err(path, f"{where}, stream {sname!r}: {key!r} must be a non-negative integer, got {v!r}")
        if s["offset"] + s["length"] > slen:
            raise _err(path, f"{where}, stream {sname!r}: bytes {s['offset']}..{s['offset'] + s['length']} "
                             f"lie outside the {slen}-byte stream area (truncated or corrupted file)")


def _check_no_overlap(path, tensors: dict) -> None:
    """No byte of the stream area belongs to two streams (a file cannot make the reader copy its
    bytes more than once); zero-length streams are exempt."""
    spans = sorted((s["offset"], s["offset"] + s["length"], name, sname)
                   for name, e in tensors.items() for sname, s in e["streams"].items() if s["length"])
    for (a0, a1, an, asn), (b0, b1, bn, bsn) in zip(spans, spans[1:]):
        if b0 < a1:
            raise _err(path, f"tensor {bn!r}, stream {bsn!r}: bytes {b0}..{b1} overlap tensor {an!r}, stream "
                             f"{asn!r} (bytes {a0}..{a1}); streams must not share bytes (corrupted or forged file)")


def parse_size(text) -> int:
    """``"123"``, ``"64K"``, ``"512M"``, ``"8G"`` (powers of 1024) -> bytes; raises ValueError."""
    t = str(text).strip().upper().removesuffix("B").removesuffix("I")
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}.get(t[-1:], 1)
    try:
        n = float(t[:-1] if mult > 1 else t) * mult
    except ValueError:
        raise ValueError(f"max_decoded_bytes must be a byte count like 4096, 512M or 8G, got {text!r}") from None
    if not n > 0 or n != n or n == float("inf"):
        raise ValueError(f"max_decoded_bytes must be positive, got {text!r}")
    return int(n)


def default_max_decoded_bytes() -> int:
    """:data:`DEFAULT_MAX_DECODED_BYTES`, or the environment variable ``WEIGHTZIP_MAX_DECODED_BYTES``."""
    env = os.environ.get(MAX_DECODED_ENV)
    return parse_size(env) if env else DEFAULT_MAX_DECODED_BYTES


def _decoded_nbytes(e: dict) -> int:
    """``numel x element size`` of a (checked) tensor entry; float kinds decode to float32 unless float16/bf16."""
    numel = 1
    for x in e["shape"]:
        numel *= x if isinstance(x, int) and not isinstance(x, bool) and x > 0 else 0
    return numel * DTYPE_BYTES.get(e["dtype"], 4)


def _check_decoded_size(path, tensors: dict, max_decoded_bytes: int) -> None:
    sizes = {name: _decoded_nbytes(e) for name, e in tensors.items()}
    total = sum(sizes.values())
    if total > max_decoded_bytes:
        big = max(sizes, key=sizes.get)
        raise _err(path, f"declares {total} decoded bytes (tensor {big!r} alone {sizes[big]}), more than "
                         f"max_decoded_bytes={max_decoded_bytes}; if the file is trusted, raise the limit "
                         "(weightzip.load(..., max_decoded_bytes=N) or --max-decoded-bytes N)")


def _check_fields(path, doc: dict, max_decoded_bytes: int) -> None:
    """The caller's fields a reader uses (:func:`.manifest.check_manifest`), refused by name."""
    try:
        check_manifest(doc, max_decoded_bytes)
    except WeightzipFormatError as e:
        raise _err(path, str(e)) from None


def read_manifest(path, *, max_decoded_bytes: int | str | None = None) -> dict:
    """The manifest only (streams are not read or checked): the caller's manifest plus
    ``"tensors"`` (per tensor ``kind``, ``shape``, ``dtype``, ``meta`` and stream
    offsets/lengths/CRCs), e.g. for ``weightzip inspect``. The caller's fields are checked
    (:func:`.manifest.check_manifest`) as by :func:`read`."""
    doc, _, slen, f = _read_head_and_manifest(path)
    f.close()
    _check_fields(path, doc, default_max_decoded_bytes() if max_decoded_bytes is None else parse_size(max_decoded_bytes))
    for name, e in doc[RESERVED_KEY].items():
        _check_entry(path, name, e, slen)
    return doc


def read(path, *, max_decoded_bytes: int | None = None) -> tuple[dict, dict[str, Format]]:
    """Read and validate a ``.wz`` file: ``(manifest, {name: Format})``.

    Nothing is allocated before it is checked: the manifest is decompressed only up to
    :func:`manifest_limit`, the caller's fields a reader uses have their types and ranges
    (:func:`.manifest.check_manifest`), streams may not overlap, the tensors may not declare more than
    ``max_decoded_bytes`` (default :func:`default_max_decoded_bytes`) decoded bytes in all, and
    every Format is validated (its streams' counts against its meta and against the bytes
    present) before any tensor is decoded.

    ``manifest`` is what was given to :func:`write` (without ``"tensors"``). Wrong magic, a newer
    version, truncation, any checksum mismatch, out-of-bounds streams, malformed JSON or wrong
    field types raise :class:`WeightzipFormatError` naming the tensor/stream. Each Format is
    structurally validated (:func:`weightzip.codec.validate`); ``decode`` checks the rest.
    """
    doc, start, slen, f = _read_head_and_manifest(path)
    try:
        f.seek(start)
        area = f.read(slen)
    finally:
        f.close()
    if len(area) != slen:
        raise _err(path, "truncated inside the stream area")
    view = memoryview(area)
    limit = default_max_decoded_bytes() if max_decoded_bytes is None else parse_size(max_decoded_bytes)
    _check_fields(path, doc, limit)
    tensors = doc.pop(RESERVED_KEY)
    for name, e in tensors.items():
        _check_entry(path, name, e, slen)
    _check_no_overlap(path, tensors)
    _check_decoded_size(path, tensors, limit)
    formats: dict[str, Format] = {}
    for name, e in tensors.items():
        streams = {}
        for sname, s in e["streams"].items():
            part = view[s["offset"]:s["offset"] + s["length"]]
            if _crc(part) != s["crc32"]:
                raise _err(path, f"tensor {name!r}, stream {sname!r}: checksum mismatch (the file is corrupted)")
            streams[sname] = bytes(part)
        shape = e["shape"]
        fmt = Format(e["kind"], tuple(shape) if all(isinstance(x, int) for x in shape) else shape,
                     e["dtype"], e["meta"], streams, name=name)
        try:
            validate(fmt)
        except WeightzipFormatError as err:
            raise _err(path, str(err)) from None
        formats[name] = fmt
    return doc, formats


def file_size(path) -> int:
    """Size of the file on disk in bytes (the headline figure of the file ratio)."""
    return os.path.getsize(path)


__all__ = ["MAGIC", "VERSION", "DEFAULT_MAX_DECODED_BYTES", "write", "read", "read_manifest", "file_size",
           "parse_size", "default_max_decoded_bytes", "manifest_limit"]
