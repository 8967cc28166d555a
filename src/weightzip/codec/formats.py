"""Encoded tensors: :class:`Format`, ``encode(tensor, hint) -> Format``, ``decode(fmt) -> tensor``.

A :class:`Format` is ``kind`` + ``shape`` + ``dtype`` + a JSON-able ``meta`` + named byte
``streams``; its size is ``nbytes = sum(len(stream))``. The byte layout of every kind and
stream is specified in ``docs/file-format.md``; in short:

========== ==================================================================================
kind       value streams (per stored entry)
========== ==================================================================================
raw        ``data``: the tensor's bytes, little-endian (integer / bool tensors, e.g. BN
           ``num_batches_tracked``)
dense      ``values``: float32 (or float16 when asked: lossy)
codebook   ``codebook``: float32 table (K,), ``codes``: index into the table, ceil(log2 K) bits
uniform    ``scale``: float32 (G,), ``codes``: integer level q (offset or level table),
           value = float32(q) * float32(scale[group])
pq         ``codebooks`` float32 (M or 1, k, d), ``codes`` (rows*M) at ceil(log2 k) bits,
           optional mask (bitmap, or relative index + filler flags)
mixed_fixed per cluster c: sparse positions + ``c{c}.codes`` with value q * 2^-f_c
========== ==================================================================================

Every kind but ``raw``/``pq``/``mixed_fixed`` has a *layout* (``meta["sparse"]``) saying which
elements are stored: ``none`` (all, row-major), ``relative`` (relative index with fillers,
:mod:`.sparse`; stream ``index``), ``bitmap`` (stream ``bitmap``) or ``block`` (a bitmap of kept
blocks of the 2-D view, stream ``block_mask``; all elements of kept blocks are stored).
Integer streams are coded ``raw`` (bit-packed), ``huffman`` or ``ans``, whichever is smallest
(:mod:`.entropy`); ``meta["stream_info"][name]`` says which.

``encode`` builds every applicable candidate, decodes it, keeps the smallest one whose decoded
tensor equals the input BIT FOR BIT, and raises :class:`InvalidModelError` for NaN/Inf.
**Signed zero:** ``-0.0`` is treated as ``0.0`` everywhere: it is canonicalized to ``+0.0``
before encoding (``w + 0.0``), so ``decode(encode(w))`` has ``+0.0`` where ``w`` had ``-0.0``
(``torch.equal`` holds; the bit patterns of every other element are identical).
``float64`` tensors are stored as float32 (the accounting baseline is 4 bytes per element).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from ..errors import InvalidModelError, WeightzipFormatError
from . import entropy
from .bitpack import bits_for_alphabet, zigzag_decode, zigzag_encode
from .sparse import (MAX_INDEX_BITS, choose_index_bits, csr_from_positions, matrix_shape,
                     relative_index_decode, relative_index_encode)

KINDS = ("raw", "dense", "codebook", "uniform", "pq", "mixed_fixed")
LAYOUTS = ("none", "relative", "bitmap", "block")
FLOAT_DTYPES = ("float32", "float16", "bfloat16")
RAW_DTYPES = ("bool", "uint8", "int8", "int16", "int32", "int64")
MAX_NUMEL = 2**31 - 1
MAX_CODEBOOK = 1 << 16

_TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
                 "bool": torch.bool, "uint8": torch.uint8, "int8": torch.int8, "int16": torch.int16,
                 "int32": torch.int32, "int64": torch.int64}
_NP_RAW = {"bool": "u1", "uint8": "u1", "int8": "i1", "int16": "<i2", "int32": "<i4", "int64": "<i8"}


@dataclass(eq=False)
class Format:
    """One encoded tensor.

    ``kind`` in :data:`KINDS`; ``shape`` the original shape; ``dtype`` the decoded dtype
    (``float32`` for every float kind unless the source was float16/bfloat16); ``meta`` JSON-able
    parameters (layout, counts, ``stream_info``); ``streams`` name -> bytes. ``name`` (not
    stored in the file's format entry, set by the container) is used in error messages.
    """

    kind: str
    shape: tuple
    dtype: str
    meta: dict
    streams: dict
    name: str = field(default="", compare=False)

    @property
    def nbytes(self) -> int:
        """Payload size: sum of the stream lengths in bytes (no manifest, no container)."""
        return sum(len(s) for s in self.streams.values())

    @property
    def numel(self) -> int:
        return int(math.prod(self.shape))

    def __repr__(self) -> str:
        return (f"Format(kind={self.kind!r}, shape={tuple(self.shape)}, dtype={self.dtype!r}, "
                f"sparse={self.meta.get('sparse')!r}, nbytes={self.nbytes})")


class _Reject(Exception):
    """A candidate encoding does not apply to this tensor (the reason is recorded)."""


# =============================================================================================
# options


@dataclass
class _Options:
    name: str = ""
    codings: tuple = entropy.CODINGS
    layouts: tuple = LAYOUTS
    float_dtype: str = "float32"
    index_bits: int | None = None
    max_index_bits: int = MAX_INDEX_BITS
    kinds: tuple = KINDS
    strict: bool = False
    max_codebook: int = MAX_CODEBOOK

    @classmethod
    def parse(cls, options: dict | None) -> "_Options":
        o = dict(options or {})
        opts = cls()
        opts.name = str(o.pop("name", "") or "")
        ent = o.pop("entropy", "auto")
        codings = {True: entropy.CODINGS, "auto": entropy.CODINGS, False: ("raw",), "none": ("raw",),
                   "huffman": ("raw", "huffman"), "ans": ("raw", "ans")}
        if ent not in codings:
            raise ValueError(f"options['entropy'] must be one of auto/none/huffman/ans, got {ent!r}")
        opts.codings = codings[ent]
        sp = o.pop("sparse", True)
        if sp is True:
            opts.layouts = LAYOUTS
        elif sp is False:
            opts.layouts = ("none", "block")  # block structure is not a per-weight index
        else:
            bad = set(sp) - set(LAYOUTS)
            if bad:
                raise ValueError(f"options['sparse'] has unknown layouts {sorted(bad)}; valid: {LAYOUTS}")
            opts.layouts = tuple(sp) if "none" in sp else ("none",) + tuple(sp)
        fd = o.pop("float_dtype", "float32")
        if o.pop("fp16", False):
            fd = "float16"
        if fd not in ("float32", "float16"):
            raise ValueError(f"options['float_dtype'] must be float32 or float16, got {fd!r}")
        opts.float_dtype = fd
        ib = o.pop("index_bits", None)
        if ib is not None and not 1 <= int(ib) <= MAX_INDEX_BITS:
            raise ValueError(f"options['index_bits'] must be in 1..{MAX_INDEX_BITS}, got {ib}")
        opts.index_bits = None if ib is None else int(ib)
        opts.max_index_bits = int(o.pop("max_index_bits", MAX_INDEX_BITS))
        kinds = o.pop("kinds", None)
        if kinds is not None:
            bad = set(kinds) - set(KINDS)
            if bad:
                raise ValueError(f"options['kinds'] has unknown kinds {sorted(bad)}; valid: {KINDS}")
            opts.kinds = tuple(kinds) + (("dense",) if "dense" not in kinds else ())
        opts.strict = bool(o.pop("strict", False))
        opts.max_codebook = int(o.pop("max_codebook", MAX_CODEBOOK))
        if o:
            raise ValueError(f"unknown encode options {sorted(o)}; valid: name, entropy, sparse, float_dtype, "
                             "fp16, index_bits, max_index_bits, kinds, strict, max_codebook")
        return opts


# =============================================================================================
# stream writing / reading


class _Streams:
    """Collects streams and their ``stream_info`` while a candidate is built."""

    def __init__(self, codings):
        self.codings = codings
        self.streams: dict[str, bytes] = {}
        self.info: dict[str, dict] = {}

    def symbols(self, name: str, symbols, alphabet: int) -> None:
        s = np.asarray(symbols, dtype=np.int64).ravel()
        coding, data = entropy.best_coding(s, alphabet, self.codings)
        self.streams[name] = data
        self.info[name] = {"coding": coding, "count": int(s.size), "alphabet": int(alphabet)}

    def floats(self, name: str, values, dtype: str = "float32") -> None:
        v = np.asarray(values, dtype=np.float32).ravel()
        data = v.astype("<f4" if dtype == "float32" else "<f2").tobytes()
        self.streams[name] = data
        self.info[name] = {"coding": dtype, "count": int(v.size)}

    def raw(self, name: str, data: bytes, count: int) -> None:
        self.streams[name] = bytes(data)
        self.info[name] = {"coding": "bytes", "count": int(count)}

    def sub(self) -> "_Streams":
        return _Streams(self.codings)

    def merge(self, other: "_Streams") -> None:
        self.streams.update(other.streams)
        self.info.update(other.info)

    @property
    def nbytes(self) -> int:
        return sum(len(s) for s in self.streams.values())


def _where(fmt: Format, stream: str | None = None) -> str:
    t = f"tensor {fmt.name!r}" if fmt.name else "tensor"
    return f"{t}, stream {stream!r}" if stream else t


def _bad(fmt: Format, msg: str, stream: str | None = None) -> WeightzipFormatError:
    return WeightzipFormatError(f"{_where(fmt, stream)}: {msg}")


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _mint(fmt: Format, d: dict, key: str, lo: int = 0, hi: int = MAX_NUMEL, where: str = "meta") -> int:
    """Read an int field of a meta dict, range-checked."""
    v = d.get(key) if isinstance(d, dict) else None
    if not _is_int(v) or not lo <= v <= hi:
        raise _bad(fmt, f"{where}[{key!r}] must be an integer in [{lo}, {hi}], got {v!r}")
    return v


class _Reader:
    """Reads a Format's streams, validating counts and codings against expectations."""

    def __init__(self, fmt: Format):
        self.fmt = fmt
        info = fmt.meta.get("stream_info")
        if not isinstance(info, dict):
            raise _bad(fmt, "meta['stream_info'] is missing or not an object")
        self.info = info

    def _get(self, name: str) -> tuple[dict, bytes]:
        if name not in self.fmt.streams:
            raise _bad(self.fmt, "stream is missing", name)
        inf = self.info.get(name)
        if not isinstance(inf, dict):
            raise _bad(self.fmt, "stream has no stream_info entry", name)
        return inf, self.fmt.streams[name]

    def symbols(self, name: str, count: int, alphabet: int) -> np.ndarray:
        inf, data = self._get(name)
        if inf.get("count") != count:
            raise _bad(self.fmt, f"stream holds {inf.get('count')!r} symbols, expected {count}", name)
        if inf.get("alphabet") != alphabet:
            raise _bad(self.fmt, f"stream alphabet is {inf.get('alphabet')!r}, expected {alphabet}", name)
        coding = inf.get("coding")
        if coding not in entropy.CODINGS:
            raise _bad(self.fmt, f"unknown coding {coding!r} for an integer stream (valid: {entropy.CODINGS})", name)
        try:
            return entropy.decode_symbols(data, coding, count, bits=bits_for_alphabet(alphabet),
                                          alphabet_size=alphabet)
        except WeightzipFormatError as e:
            raise _bad(self.fmt, str(e), name) from None

    def floats(self, name: str, count: int | None = None) -> np.ndarray:
        inf, data = self._get(name)
        coding = inf.get("coding")
        if coding not in ("float32", "float16"):
            raise _bad(self.fmt, f"stream coding must be float32 or float16, got {coding!r}", name)
        n = inf.get("count")
        if count is not None and n != count:
            raise _bad(self.fmt, f"stream holds {n!r} values, expected {count}", name)
        width = 4 if coding == "float32" else 2
        if not _is_int(n) or len(data) != n * width:
            raise _bad(self.fmt, f"stream has {len(data)} bytes, {n!r} {coding} values need {n * width if _is_int(n) else '?'}", name)
        return np.frombuffer(data, dtype="<f4" if width == 4 else "<f2").astype(np.float32)


# =============================================================================================
# helpers


def _to_numpy(x, dtype=None) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.dtype == torch.bfloat16:
            x = x.float()
        x = x.numpy()
    a = np.asarray(x)
    return a.astype(dtype) if dtype is not None else a


def _bits_range(lo: int, hi: int) -> int:
    return bits_for_alphabet(int(hi) - int(lo) + 1)


def _canonical(x: np.ndarray) -> np.ndarray:
    """float32 copy with -0.0 turned into +0.0 (IEEE: -0.0 + 0.0 = +0.0)."""
    return np.asarray(x, dtype=np.float32) + np.float32(0.0)


def _choose_bits(positions, vbits: int, vbits0: int, opts: _Options) -> int:
    if opts.index_bits is not None:
        return opts.index_bits
    return choose_index_bits(positions, vbits, vbits0, max_bits=opts.max_index_bits).bits


@dataclass
class _Layout:
    """Which elements a candidate stores: ``entry_pos`` (E,) flat positions (None = all),
    ``entries`` (E,) float32 values there (fillers are 0), and the layout meta/streams."""

    scheme: str
    meta: dict
    entries: np.ndarray
    entry_pos: np.ndarray | None
    streams: _Streams


def _make_layout(scheme: str, w: np.ndarray, shape, nz: np.ndarray, est: tuple[int, int],
                 opts: _Options, block: dict | None, st: _Streams) -> _Layout:
    """Build the position streams of ``scheme`` for the canonical flat tensor ``w``."""
    numel = w.size
    ls = st.sub()
    if scheme == "none":
        return _Layout("none", {"sparse": "none", "n_entries": numel}, w, None, ls)
    if scheme == "relative":
        b = _choose_bits(nz, est[0], est[1], opts)
        ri = relative_index_encode(nz, b)
        ls.symbols("index", ri.gaps, 1 << b)
        entries = np.zeros(ri.n_entries, dtype=np.float32)
        entries[ri.real] = w[nz]
        meta = {"sparse": "relative", "index_bits": b, "n_entries": ri.n_entries, "n_fillers": ri.n_fillers}
        return _Layout("relative", meta, entries, ri.entry_positions, ls)
    if scheme == "bitmap":
        bits = np.zeros(numel, dtype=np.uint8)
        bits[nz] = 1
        ls.symbols("bitmap", bits, 2)
        return _Layout("bitmap", {"sparse": "bitmap", "n_entries": int(nz.size)}, w[nz], nz, ls)
    if scheme == "block":
        if block is None:
            raise _Reject("no block mask in the hint")
        emask = _block_element_mask(block["block_mask"], block["block"], shape)
        if np.any(w[~emask]):
            raise _Reject("nonzero weights outside the kept blocks of the block mask")
        pos = np.flatnonzero(emask)
        ls.symbols("block_mask", block["block_mask"].ravel().astype(np.int64), 2)
        meta = {"sparse": "block", "block": [int(b) for b in block["block"]], "n_entries": int(pos.size)}
        return _Layout("block", meta, w[pos], pos, ls)
    raise ValueError(f"unknown layout {scheme!r}")


def _block_grid(block, shape) -> tuple[int, int]:
    rows, cols = matrix_shape(shape)
    br, bc = int(block[0]), int(block[1])
    return (-(-rows // br), -(-cols // bc))


def _block_element_mask(block_mask: np.ndarray, block, shape) -> np.ndarray:
    """Flat bool (numel,): element (r, c) of the 2-D view is kept iff block (r // Br, c // Bc) is."""
    rows, cols = matrix_shape(shape)
    br, bc = int(block[0]), int(block[1])
    bm = np.asarray(block_mask, dtype=bool)
    em = np.repeat(np.repeat(bm, br, axis=0), bc, axis=1)[:rows, :cols]
    return np.ascontiguousarray(em).ravel()


def _read_layout(fmt: Format, rd: _Reader) -> tuple[np.ndarray | None, int]:
    """Decode the layout streams: ``(entry positions or None for all, n_entries)``."""
    m, numel = fmt.meta, fmt.numel
    scheme = m.get("sparse")
    if scheme == "none":
        n = _mint(fmt, m, "n_entries")
        if n != numel:
            raise _bad(fmt, f"dense layout stores {n} entries for {numel} elements")
        return None, n
    if scheme == "relative":
        b = _mint(fmt, m, "index_bits", 1, 32)
        n = _mint(fmt, m, "n_entries", 0, numel)
        gaps = rd.symbols("index", n, 1 << b)
        try:
            pos = relative_index_decode(gaps, numel)
        except WeightzipFormatError as e:
            raise _bad(fmt, str(e), "index") from None
        return pos, n
    if scheme == "bitmap":
        n = _mint(fmt, m, "n_entries", 0, numel)
        pos = np.flatnonzero(rd.symbols("bitmap", numel, 2))
        if pos.size != n:
            raise _bad(fmt, f"bitmap has {pos.size} ones, meta says {n} entries", "bitmap")
        return pos, n
    if scheme == "block":
        block = m.get("block")
        if not (isinstance(block, list) and len(block) == 2 and all(_is_int(b) and b >= 1 for b in block)):
            raise _bad(fmt, f"meta['block'] must be two positive integers, got {block!r}")
        grid = _block_grid(block, fmt.shape)
        nb = grid[0] * grid[1]
        if nb > MAX_NUMEL:
            raise _bad(fmt, "block grid too large")
        bm = rd.symbols("block_mask", nb, 2).reshape(grid).astype(bool)
        pos = np.flatnonzero(_block_element_mask(bm, block, fmt.shape))
        n = _mint(fmt, m, "n_entries", 0, numel)
        if pos.size != n:
            raise _bad(fmt, f"block mask keeps {pos.size} elements, meta says {n}", "block_mask")
        return pos, n
    raise _bad(fmt, f"unknown sparse layout {scheme!r} (valid: {LAYOUTS})")


# =============================================================================================
# value coders for the layout kinds: dense, codebook, uniform


def _est_dense(nzv: np.ndarray, opts: _Options, dtype: str) -> tuple[int, int]:
    v = 32 if dtype == "float32" else 16
    return v, v


def _enc_dense(lay: _Layout, st: _Streams, dtype: str) -> dict:
    if dtype == "float16":
        with np.errstate(over="ignore"):
            if not np.all(np.isfinite(lay.entries.astype(np.float16))):
                raise _Reject("values overflow float16")
    st.floats("values", lay.entries, dtype)
    return {"value_dtype": dtype}


def _dec_dense(fmt: Format, rd: _Reader, n: int, pos_fn) -> np.ndarray:
    vd = fmt.meta.get("value_dtype")
    if vd not in ("float32", "float16"):
        raise _bad(fmt, f"meta['value_dtype'] must be float32 or float16, got {vd!r}")
    if rd.info.get("values", {}).get("coding") != vd:
        raise _bad(fmt, f"stream coding does not match value_dtype {vd!r}", "values")
    return rd.floats("values", n)


def _est_codebook(nzv: np.ndarray) -> tuple[int, int]:
    k = np.unique(nzv).size
    return bits_for_alphabet(k), bits_for_alphabet(k + 1)


def _enc_codebook(lay: _Layout, st: _Streams, opts: _Options) -> dict:
    table = np.unique(lay.entries)                                   # (K,) sorted, no -0.0
    if table.size == 0:
        raise _Reject("no stored values")
    if table.size > opts.max_codebook:
        raise _Reject(f"{table.size} distinct values > max_codebook {opts.max_codebook}")
    if table[np.searchsorted(table, 0.0).clip(max=table.size - 1)] == 0:
        # zero present (dense zeros or fillers): it is code 0, the nonzero values follow sorted
        nzt = table[table != 0]                                      # (K-1,)
        codes = np.where(lay.entries == 0, 0, np.searchsorted(nzt, lay.entries) + 1)
        table = np.concatenate([np.zeros(1, np.float32), nzt])
    else:
        codes = np.searchsorted(table, lay.entries)
    st.floats("codebook", table)
    st.symbols("codes", codes, table.size)
    return {"codebook_size": int(table.size)}


def _dec_codebook(fmt: Format, rd: _Reader, n: int, pos_fn) -> np.ndarray:
    k = _mint(fmt, fmt.meta, "codebook_size", 0, MAX_NUMEL)
    table = rd.floats("codebook", k)
    if k == 0:
        if n:
            raise _bad(fmt, "empty codebook for a non-empty tensor", "codebook")
        return np.zeros(0, np.float32)
    return table[rd.symbols("codes", n, k)]


def _uniform_scales(h: dict, shape) -> np.ndarray:
    s = np.asarray(_to_numpy(h["scale"]), dtype=np.float32).ravel()
    if s.size == 0 or not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise _Reject("uniform scale must be finite and > 0")
    rows = matrix_shape(shape)[0]
    if s.size > 1 and (rows % s.size):
        raise _Reject(f"{s.size} scale groups do not divide the {rows} rows")
    return s


def _entry_scale(scales: np.ndarray, pos: np.ndarray | None, numel: int, shape) -> np.ndarray:
    """Per-entry float32 scale: group of row ``r`` is ``r // (rows / G)``."""
    if scales.size == 1:
        return scales[:1]
    rows, cols = matrix_shape(shape)
    if pos is None:
        pos = np.arange(numel, dtype=np.int64)
    return scales[(pos // cols) // (rows // scales.size)]


def _est_uniform(nzv: np.ndarray, scales: np.ndarray, nz: np.ndarray, shape) -> tuple[int, int]:
    if nzv.size == 0:
        return 0, 0
    q = np.rint(nzv.astype(np.float64) / _entry_scale(scales, nz, 0, shape).astype(np.float64))
    lo, hi = int(q.min()), int(q.max())
    return _bits_range(lo, hi), _bits_range(min(lo, 0), max(hi, 0))


def _enc_uniform(lay: _Layout, st: _Streams, h: dict, shape) -> dict:
    scales = _uniform_scales(h, shape)
    s = _entry_scale(scales, lay.entry_pos, lay.entries.size, shape)
    q = np.rint(lay.entries.astype(np.float64) / s.astype(np.float64))
    if q.size and np.max(np.abs(q)) >= 2**31:
        raise _Reject("uniform codes overflow 32 bits")
    q = q.astype(np.int64)
    if not np.array_equal((q.astype(np.float32) * s).view(np.uint32), lay.entries.view(np.uint32)):
        raise _Reject("weights are not integer multiples q * scale (decoded float32(q) * scale differs)")
    meta: dict[str, Any] = {"scale_groups": int(scales.size)}
    if "bits" in h:
        b = int(h["bits"])
        meta["hint_bits"] = b
        if q.size and (q.min() < -(1 << (b - 1)) or q.max() > (1 << (b - 1)) - 1):
            raise _Reject(f"codes in [{q.min()}, {q.max()}] exceed the hinted {b} signed bits")
    st.floats("scale", scales)
    lo, hi = (int(q.min()), int(q.max())) if q.size else (0, 0)
    levels = np.unique(q)
    range_bits = q.size * _bits_range(lo, hi)
    zz = zigzag_encode(levels).astype(np.int64)
    table_bits = q.size * bits_for_alphabet(levels.size) + levels.size * max(1, int(zz.max()).bit_length() if zz.size else 1)
    if table_bits < range_bits:
        meta.update(q_mode="table", n_levels=int(levels.size))
        st.symbols("levels", zz, int(zz.max()) + 1 if zz.size else 1)
        st.symbols("codes", np.searchsorted(levels, q), levels.size)
    else:
        meta.update(q_mode="range", q_offset=lo)
        st.symbols("codes", q - lo, hi - lo + 1)
    return meta


def _dec_uniform(fmt: Format, rd: _Reader, n: int, pos_fn) -> np.ndarray:
    q, s, _ = _read_uniform(fmt, rd, n, pos_fn)
    return q.astype(np.float32) * s


def _read_uniform(fmt: Format, rd: _Reader, n: int, pos_fn) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(q (n,) int64, per-entry scale (n,) or (1,) float32, scales (G,))``."""
    m = fmt.meta
    g = _mint(fmt, m, "scale_groups", 1, MAX_NUMEL)
    scales = rd.floats("scale", g)
    rows = matrix_shape(fmt.shape)[0]
    if g > 1 and (rows % g):
        raise _bad(fmt, f"{g} scale groups do not divide {rows} rows")
    mode = m.get("q_mode")
    if mode == "range":
        off = m.get("q_offset")
        if not _is_int(off) or abs(off) >= 2**32:
            raise _bad(fmt, f"meta['q_offset'] must be an integer, got {off!r}")
        alphabet = rd.info.get("codes", {}).get("alphabet")
        if not _is_int(alphabet) or not 1 <= alphabet <= 2**32:
            raise _bad(fmt, f"bad alphabet {alphabet!r}", "codes")
        q = rd.symbols("codes", n, alphabet) + off
    elif mode == "table":
        nl = _mint(fmt, m, "n_levels", 1, MAX_NUMEL)
        la = rd.info.get("levels", {}).get("alphabet")
        if not _is_int(la) or not 1 <= la <= 2**32:
            raise _bad(fmt, f"bad alphabet {la!r}", "levels")
        levels = zigzag_decode(rd.symbols("levels", nl, la))
        q = levels[rd.symbols("codes", n, nl)]
    else:
        raise _bad(fmt, f"meta['q_mode'] must be 'range' or 'table', got {mode!r}")
    s = _entry_scale(scales, pos_fn() if g > 1 else None, n, fmt.shape)
    return q, s, scales


# =============================================================================================
# pq


def _pq_reconstruct(codes: np.ndarray, cbs: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """``W[r, m*d:(m+1)*d] = C[m or 0][codes[r, m]]``, cut to ``cols`` columns. (rows, cols)"""
    m = codes.shape[1]
    if cbs.shape[0] == 1:
        sub = cbs[0][codes]                                          # (rows, M, d)
    else:
        sub = cbs[np.arange(m)[None, :], codes]                      # (rows, M, d)
    return sub.reshape(rows, -1)[:, :cols]


def _pq_check(codes, cbs, rows, cols) -> str | None:
    if cbs.ndim != 3:
        return f"codebooks must be [M or 1, k, d], got shape {tuple(cbs.shape)}"
    if codes.ndim != 2 or codes.shape[0] != rows:
        return f"codes must be [rows={rows}, M], got shape {tuple(codes.shape)}"
    m, k, d = codes.shape[1], cbs.shape[1], cbs.shape[2]
    if cbs.shape[0] not in (1, m):
        return f"{cbs.shape[0]} codebooks for M={m} subspaces (need 1 or M)"
    if k < 1 or d < 1 or m < 1:
        return "empty PQ codebooks"
    if not (m - 1) * d < cols <= m * d:
        return f"M={m} subspaces of d={d} do not cover {cols} columns"
    if codes.size and (codes.min() < 0 or codes.max() >= k):
        return f"PQ codes outside [0, {k})"
    return None


def _enc_pq(w: np.ndarray, shape, h: dict, st: _Streams, opts: _Options, mask_scheme: str) -> tuple[dict, None]:
    rows, cols = (int(x) for x in h.get("matrix_shape") or matrix_shape(shape))
    if rows * cols != w.size:
        raise _Reject(f"matrix_shape {rows}x{cols} does not match {w.size} elements")
    codes = _to_numpy(h["codes"]).astype(np.int64)
    cbs = _canonical(_to_numpy(h["codebooks"]))
    err = _pq_check(codes, cbs, rows, cols)
    if err:
        raise _Reject(err)
    m, k, d = codes.shape[1], cbs.shape[1], cbs.shape[2]
    recon = _pq_reconstruct(codes, cbs, rows, cols)                  # (rows, cols)
    wm = w.reshape(rows, cols)
    nonzero = wm != 0
    need_mask = bool(np.any(~nonzero & (recon != 0)))
    if not np.array_equal(recon[nonzero].view(np.uint32), wm[nonzero].view(np.uint32)):
        raise _Reject("PQ codebooks[codes] differ from the weights")
    meta = {"matrix_shape": [rows, cols], "M": m, "k": k, "d": d, "n_codebooks": int(cbs.shape[0])}
    st.floats("codebooks", cbs)
    st.symbols("codes", codes, k)
    if not need_mask:
        meta["mask"] = "none"
        return meta, None
    pos = np.flatnonzero(nonzero)
    if mask_scheme == "bitmap":
        st.symbols("mask", nonzero.ravel().astype(np.int64), 2)
        meta.update(mask="bitmap", mask_nnz=int(pos.size))
    else:
        b = _choose_bits(pos, 0, 1, opts)
        ri = relative_index_encode(pos, b)
        st.symbols("mask_index", ri.gaps, 1 << b)
        if ri.n_fillers:
            st.symbols("mask_flags", (~ri.is_filler).astype(np.int64), 2)
        meta.update(mask="relative", mask_nnz=int(pos.size), mask_index_bits=b,
                    mask_entries=ri.n_entries, mask_fillers=ri.n_fillers)
    return meta, None


def _read_pq(fmt: Format, rd: _Reader) -> dict:
    m = fmt.meta
    ms = m.get("matrix_shape")
    if not (isinstance(ms, list) and len(ms) == 2 and all(_is_int(x) and x >= 0 for x in ms)):
        raise _bad(fmt, f"meta['matrix_shape'] must be [rows, cols], got {ms!r}")
    rows, cols = ms
    if rows * cols != fmt.numel:
        raise _bad(fmt, f"matrix_shape {rows}x{cols} does not match shape {list(fmt.shape)}")
    M = _mint(fmt, m, "M", 1, MAX_NUMEL)
    k = _mint(fmt, m, "k", 1, MAX_NUMEL)
    d = _mint(fmt, m, "d", 1, MAX_NUMEL)
    ncb = _mint(fmt, m, "n_codebooks", 1, MAX_NUMEL)
    if ncb not in (1, M) or not (M - 1) * d < cols <= M * d or rows * M > MAX_NUMEL or ncb * k * d > MAX_NUMEL:
        raise _bad(fmt, f"inconsistent PQ geometry M={M} k={k} d={d} n_codebooks={ncb} for {rows}x{cols}")
    cbs = rd.floats("codebooks", ncb * k * d).reshape(ncb, k, d)
    codes = rd.symbols("codes", rows * M, k).reshape(rows, M)
    mask = None
    scheme = m.get("mask")
    numel = rows * cols
    if scheme == "bitmap":
        mask = rd.symbols("mask", numel, 2).astype(bool).reshape(rows, cols)
        if int(mask.sum()) != m.get("mask_nnz"):
            raise _bad(fmt, "mask popcount differs from meta['mask_nnz']", "mask")
    elif scheme == "relative":
        b = _mint(fmt, m, "mask_index_bits", 1, 32)
        e = _mint(fmt, m, "mask_entries", 0, numel)
        f = _mint(fmt, m, "mask_fillers", 0, e)
        try:
            pos = relative_index_decode(rd.symbols("mask_index", e, 1 << b), numel)
        except WeightzipFormatError as err:
            raise _bad(fmt, str(err), "mask_index") from None
        if f:
            flags = rd.symbols("mask_flags", e, 2).astype(bool)
            if int((~flags).sum()) != f:
                raise _bad(fmt, "filler flags differ from meta['mask_fillers']", "mask_flags")
            pos = pos[flags]
        mask = np.zeros(numel, dtype=bool)
        mask[pos] = True
        mask = mask.reshape(rows, cols)
    elif scheme != "none":
        raise _bad(fmt, f"meta['mask'] must be none/bitmap/relative, got {scheme!r}")
    return {"codes": codes, "codebooks": cbs, "mask": mask, "matrix_shape": (rows, cols)}


def _dec_pq(fmt: Format, rd: _Reader) -> np.ndarray:
    p = _read_pq(fmt, rd)
    rows, cols = p["matrix_shape"]
    recon = _pq_reconstruct(p["codes"], p["codebooks"], rows, cols)
    if p["mask"] is not None:
        recon = np.where(p["mask"], recon, np.float32(0))           # not recon * mask: -0.0
    return np.ascontiguousarray(recon, dtype=np.float32).ravel()


# =============================================================================================
# mixed_fixed


def _enc_positions_values(st: _Streams, prefix: str, pos: np.ndarray, q: np.ndarray, numel: int,
                          opts: _Options) -> dict:
    """One sparse stream of signed integers ``q`` at flat ``pos``: the smaller of a relative
    index (fillers have q = 0) and a bitmap. Codes are ``q - q_offset``."""
    best = None
    lo, hi = (int(q.min()), int(q.max())) if q.size else (0, 0)
    for scheme in [s for s in ("relative", "bitmap") if s in opts.layouts] or ["relative"]:
        s = st.sub()
        if scheme == "relative":
            b = _choose_bits(pos, _bits_range(lo, hi), _bits_range(min(lo, 0), max(hi, 0)), opts)
            ri = relative_index_encode(pos, b)
            qe = np.zeros(ri.n_entries, dtype=np.int64)
            qe[ri.real] = q
            s.symbols(f"{prefix}index", ri.gaps, 1 << b)
            meta = {"sparse": "relative", "index_bits": b, "n_entries": ri.n_entries, "n_fillers": ri.n_fillers}
        else:
            bits = np.zeros(numel, dtype=np.int64)
            bits[pos] = 1
            qe = q
            s.symbols(f"{prefix}bitmap", bits, 2)
            meta = {"sparse": "bitmap", "n_entries": int(pos.size)}
        elo, ehi = (int(qe.min()), int(qe.max())) if qe.size else (0, 0)
        s.symbols(f"{prefix}codes", qe - elo, ehi - elo + 1)
        meta["q_offset"] = elo
        if best is None or s.nbytes < best[0].nbytes:
            best = (s, meta)
    st.merge(best[0])
    return best[1]


def _read_positions_values(fmt: Format, rd: _Reader, prefix: str, d: dict) -> tuple[np.ndarray, np.ndarray]:
    numel = fmt.numel
    where = f"meta cluster {prefix!r}"
    n = _mint(fmt, d, "n_entries", 0, numel, where)
    off = d.get("q_offset")
    if not _is_int(off) or abs(off) >= 2**32:
        raise _bad(fmt, f"{where}['q_offset'] must be an integer, got {off!r}")
    if d.get("sparse") == "relative":
        b = _mint(fmt, d, "index_bits", 1, 32, where)
        try:
            pos = relative_index_decode(rd.symbols(f"{prefix}index", n, 1 << b), numel)
        except WeightzipFormatError as e:
            raise _bad(fmt, str(e), f"{prefix}index") from None
    elif d.get("sparse") == "bitmap":
        pos = np.flatnonzero(rd.symbols(f"{prefix}bitmap", numel, 2))
        if pos.size != n:
            raise _bad(fmt, f"bitmap has {pos.size} ones, meta says {n}", f"{prefix}bitmap")
    else:
        raise _bad(fmt, f"{where}['sparse'] must be relative or bitmap, got {d.get('sparse')!r}")
    alphabet = rd.info.get(f"{prefix}codes", {}).get("alphabet")
    if not _is_int(alphabet) or not 1 <= alphabet <= 2**32:
        raise _bad(fmt, f"bad alphabet {alphabet!r}", f"{prefix}codes")
    q = rd.symbols(f"{prefix}codes", n, alphabet) + off
    return pos, q


def _enc_mixed(w: np.ndarray, shape, h: dict, st: _Streams, opts: _Options) -> dict:
    cluster = _to_numpy(h["cluster"]).astype(np.int64).ravel()
    if cluster.size != w.size:
        raise _Reject(f"cluster map has {cluster.size} elements, tensor has {w.size}")
    bits = [int(b) for b in np.asarray(_to_numpy(h["bits"])).ravel()]
    frac = [int(f) for f in np.asarray(_to_numpy(h["frac_bits"])).ravel()]
    if len(bits) != len(frac) or not bits:
        raise _Reject("mixed_fixed needs one bit width and one frac_bits per cluster")
    if any(not 1 <= b <= 32 for b in bits) or any(abs(f) > 60 for f in frac):
        raise _Reject("mixed_fixed bits must be in 1..32 and |frac_bits| <= 60")
    nz = np.flatnonzero(w)
    cl = cluster[nz]
    if cl.size and (cl.min() < 0 or cl.max() >= len(bits)):
        raise _Reject(f"cluster ids outside [0, {len(bits)})")
    clusters = []
    for c, (b, f) in enumerate(zip(bits, frac)):
        pos = nz[cl == c]
        x = w[pos].astype(np.float64) * 2.0**f
        q = np.rint(x)
        if not np.array_equal(q, x):
            raise _Reject(f"cluster {c}: weights are not multiples of 2^-{f}")
        if q.size and (q.min() < -(1 << (b - 1)) or q.max() > (1 << (b - 1)) - 1):
            raise _Reject(f"cluster {c}: codes in [{q.min():.0f}, {q.max():.0f}] exceed {b} signed bits")
        d = _enc_positions_values(st, f"c{c}.", pos, q.astype(np.int64), w.size, opts)
        d.update(bits=b, frac_bits=f, nnz=int(pos.size))
        clusters.append(d)
    return {"clusters": clusters}


def _read_mixed(fmt: Format, rd: _Reader) -> list[dict]:
    cl = fmt.meta.get("clusters")
    if not isinstance(cl, list) or not cl or len(cl) > 4096:
        raise _bad(fmt, "meta['clusters'] must be a non-empty list")
    out = []
    for c, d in enumerate(cl):
        if not isinstance(d, dict):
            raise _bad(fmt, f"meta cluster {c} must be an object")
        f = d.get("frac_bits")
        if not _is_int(f) or abs(f) > 60:
            raise _bad(fmt, f"meta cluster {c} frac_bits must be an integer in [-60, 60], got {f!r}")
        pos, q = _read_positions_values(fmt, rd, f"c{c}.", d)
        real = q != 0  # fillers (q = 0) may sit on another cluster's element: never write them
        pos, q = pos[real], q[real]
        out.append({"positions": pos, "q": q, "frac_bits": f, "bits": d.get("bits"),
                    "values": (q.astype(np.float64) * 2.0**-f).astype(np.float32)})
    return out


def _dec_mixed(fmt: Format, rd: _Reader) -> np.ndarray:
    out = np.zeros(fmt.numel, dtype=np.float32)
    for c in _read_mixed(fmt, rd):
        out[c["positions"]] = c["values"]
    return out


# =============================================================================================
# encode


def _hint_dict(hint) -> dict:
    if hint is None:
        return {}
    if not isinstance(hint, dict):
        raise TypeError(f"hint must be a dict or None, got {type(hint).__name__}")
    return dict(hint)


def _block_from_hint(h: dict, shape) -> tuple[dict | None, str | None]:
    if "block_mask" not in h:
        return None, None
    block = h.get("block")
    try:
        br, bc = (int(b) for b in block)
    except (TypeError, ValueError):
        return None, f"hint 'block' must be (B_r, B_c), got {block!r}"
    if br < 1 or bc < 1:
        return None, f"hint 'block' must be positive, got {block!r}"
    bm = _to_numpy(h["block_mask"]).astype(bool)
    grid = _block_grid((br, bc), shape)
    if bm.shape != grid:
        return None, f"block_mask shape {bm.shape} != block grid {grid} of the {matrix_shape(shape)} view"
    return {"block": (br, bc), "block_mask": bm}, None


def _finite_check(a: np.ndarray, name: str) -> None:
    bad = ~np.isfinite(a)
    if bad.any():
        n_nan = int(np.isnan(a).sum())
        raise InvalidModelError(
            f"tensor {name or '<unnamed>'!r} has {n_nan} NaN and {int(bad.sum()) - n_nan} Inf values "
            f"(first at flat index {int(np.flatnonzero(bad)[0])}); fix the training run (lower the "
            "learning rate, clip gradients) or restore a finite checkpoint before compressing")


def _encode_raw(a: np.ndarray, shape, dtype: str) -> Format:
    st = _Streams(("raw",))
    st.raw("data", np.ascontiguousarray(a).astype(_NP_RAW[dtype]).tobytes(), a.size)
    return Format("raw", tuple(shape), dtype, {"stream_info": st.info}, st.streams)


def encode(tensor, hint: dict | None = None, *, options: dict | None = None) -> Format:
    """Encode ``tensor`` as the smallest exact :class:`Format`.

    ``hint`` (plain dict, from ``parametrize.storage_hints``) may say how the values were made:
    ``{"kind": "uniform", "scale": s (float or (G,) per row group), "bits": b}``,
    ``{"kind": "fixed_point", "bits": b, "frac_bits": f}`` (= uniform with scale 2^-f),
    ``{"kind": "pq", "codes": [rows, M], "codebooks": [M or 1, k, d], "mask"?, "matrix_shape"?}``,
    ``{"kind": "mixed_fixed", "cluster": ids (tensor shape), "bits": [b_c], "frac_bits": [f_c]}``,
    and for any kind ``"block": (B_r, B_c), "block_mask": bool [ceil(rows/B_r), ceil(cols/B_c)]``
    on the 2-D view ``[shape[0], numel/shape[0]]`` (conv blocks over (C_out, C_in) with whole
    kernels: ``block = (B, B*kh*kw)``). Unknown hint keys are ignored: dense, codebook (unique
    values + codes) and every sparse layout are always tried, so any hint-less tensor whose
    values come from a small set is stored with codes anyway.

    ``options``: ``name`` (for errors), ``entropy`` (``auto``|``none``|``huffman``|``ans``),
    ``sparse`` (bool or a list of layouts), ``float_dtype`` (``float16`` = lossy half-precision
    dense candidate, reported in ``meta["lossy"]``), ``index_bits`` (fix the relative-index
    width, e.g. 5 or 8 as in Deep Compression), ``kinds`` (restrict candidates), ``strict``
    (raise instead of skipping a hinted format that does not reproduce the tensor).

    Every candidate is decoded and compared bit for bit with the (``-0.0`` -> ``+0.0``
    canonicalized) input; the smallest exact one is returned. Integer/bool tensors are stored
    ``raw``. Raises :class:`InvalidModelError` on NaN/Inf.
    """
    opts = _Options.parse(options)
    if isinstance(tensor, torch.Tensor):
        tdtype = str(tensor.dtype).replace("torch.", "")
        a = _to_numpy(tensor)
    else:
        a = np.asarray(tensor)
        tdtype = a.dtype.name
    shape = tuple(int(s) for s in a.shape)
    if math.prod(shape) > MAX_NUMEL:
        raise InvalidModelError(f"tensor {opts.name!r} has {math.prod(shape)} elements > {MAX_NUMEL}")
    if tdtype in RAW_DTYPES:
        return _encode_raw(a, shape, tdtype)
    if tdtype not in ("float32", "float16", "bfloat16", "float64"):
        raise InvalidModelError(f"tensor {opts.name!r} has unsupported dtype {tdtype}; "
                                f"weightzip stores float and {RAW_DTYPES} tensors")
    _finite_check(np.asarray(a), opts.name)
    w = _canonical(a).ravel()                                        # (numel,) float32, no -0.0
    base_meta = {"source_dtype": "float64"} if tdtype == "float64" else {}
    dtype = tdtype if tdtype in FLOAT_DTYPES else "float32"
    h = _hint_dict(hint)
    hkind = h.get("kind")
    hint_notes: dict[str, str] = {}

    cands: list[Format] = []

    def attempt(kind: str, label: str, build: Callable[[_Streams], dict]) -> None:
        st = _Streams(opts.codings)
        try:
            try:
                meta = build(st)
            except (KeyError, TypeError, ValueError, IndexError) as e:
                if kind not in ("pq", "mixed_fixed", "uniform"):
                    raise
                raise _Reject(f"malformed {kind} hint ({type(e).__name__}: {e})") from e
        except _Reject as e:
            if kind == hkind or (kind == "uniform" and hkind == "fixed_point") or label == "block":
                hint_notes[label] = f"invalid: {e}"
                if opts.strict:
                    raise InvalidModelError(f"tensor {opts.name!r}: hinted {label} storage does not reproduce "
                                            f"the weights: {e}") from None
            return
        meta = {**base_meta, **meta, "stream_info": st.info}
        cands.append(Format(kind, shape, dtype, meta, st.streams, name=opts.name))

    nz = np.flatnonzero(w)                                           # (nnz,) flat positions
    nzv = w[nz]
    block, block_err = _block_from_hint(h, shape)
    if block_err:
        hint_notes["block"] = f"invalid: {block_err}"
        if opts.strict:
            raise InvalidModelError(f"tensor {opts.name!r}: {block_err}")
    layouts = [s for s in opts.layouts if s != "block" or block is not None]
    if w.size == 0:
        layouts = ["none"]

    # value coders that share the layouts
    coders: list[tuple[str, str, Callable, Callable]] = []  # (kind, label, est, enc)
    coders.append(("dense", "dense", lambda: _est_dense(nzv, opts, "float32"),
                   lambda lay, st: _enc_dense(lay, st, "float32")))
    if opts.float_dtype == "float16":
        coders.append(("dense", "dense16", lambda: _est_dense(nzv, opts, "float16"),
                       lambda lay, st: _enc_dense(lay, st, "float16")))
    if "codebook" in opts.kinds and w.size:
        k_all = np.unique(w).size
        if k_all <= opts.max_codebook and k_all * 32 + w.size * bits_for_alphabet(k_all) < 32 * w.size:
            coders.append(("codebook", "codebook", lambda: _est_codebook(nzv),
                           lambda lay, st: _enc_codebook(lay, st, opts)))
        elif hkind == "codebook":
            hint_notes["codebook"] = f"larger: {k_all} distinct values"
    uh = None
    if hkind == "uniform" and "scale" in h:
        uh = h
    elif hkind == "fixed_point" and "frac_bits" in h:
        uh = {"scale": 2.0 ** -int(h["frac_bits"]), **({"bits": h["bits"]} if "bits" in h else {})}
    if uh is not None and "uniform" in opts.kinds:
        try:
            scales = _uniform_scales(uh, shape)
            coders.append(("uniform", "uniform", lambda: _est_uniform(nzv, scales, nz, shape),
                           lambda lay, st: _enc_uniform(lay, st, uh, shape)))
        except _Reject as e:
            hint_notes["uniform"] = f"invalid: {e}"
            if opts.strict:
                raise InvalidModelError(f"tensor {opts.name!r}: {e}") from None

    for kind, label, est, enc in coders:
        e = est() if any(s == "relative" for s in layouts) else (32, 32)
        for scheme in layouts:
            def build(st, scheme=scheme, e=e, enc=enc):
                lay = _make_layout(scheme, w, shape, nz, e, opts, block, st)
                meta = dict(lay.meta)
                meta.update(enc(lay, st))
                st.merge(lay.streams)
                meta["nnz"] = int(nz.size)
                return meta
            attempt(kind, "block" if scheme == "block" else label, build)

    if hkind == "pq" and "pq" in opts.kinds:
        for ms in ("bitmap", "relative"):
            def build_pq(st, ms=ms):
                meta, _ = _enc_pq(w, shape, h, st, opts, ms)
                meta["nnz"] = int(nz.size)
                return meta
            attempt("pq", "pq", build_pq)
    if hkind == "mixed_fixed" and "mixed_fixed" in opts.kinds:
        def build_mixed(st):
            meta = _enc_mixed(w, shape, h, st, opts)
            meta["nnz"] = int(nz.size)
            return meta
        attempt("mixed_fixed", "mixed_fixed", build_mixed)

    cands.sort(key=lambda f: f.nbytes)
    ref = w.view(np.uint32)
    ref16 = None
    for fmt in cands:
        dec = _decode_numpy(fmt)
        lossy = fmt.meta.get("value_dtype") == "float16"
        if lossy:
            if ref16 is None:
                ref16 = _canonical(w.astype(np.float16).astype(np.float32)).view(np.uint32)
            ok = np.array_equal(_canonical(dec).view(np.uint32), ref16)
        else:
            ok = np.array_equal(dec.view(np.uint32), ref)
        if not ok:  # a candidate that does not reproduce the input is never kept
            continue
        if lossy:
            err = np.abs(dec.astype(np.float64) - w.astype(np.float64))
            fmt.meta["lossy"] = {"max_abs_err": float(err.max()) if err.size else 0.0,
                                 "mean_abs_err": float(err.mean()) if err.size else 0.0}
        if hkind is not None or hint_notes:
            status = dict(hint_notes)
            if hkind is not None:
                status.setdefault(hkind, "chosen" if fmt.kind == hkind or (hkind == "fixed_point" and fmt.kind == "uniform")
                                  else f"larger than {fmt.kind}")
            fmt.meta["hint"] = {"kind": hkind, "status": status}
        return fmt
    raise RuntimeError(f"tensor {opts.name!r}: no candidate encoding reproduced the tensor (codec bug)")


# =============================================================================================
# decode


def validate(fmt: Format) -> None:
    """Structural checks of a Format (types, known kind/dtype, stream_info for every stream,
    byte sizes of fixed-size streams). Raises :class:`WeightzipFormatError`."""
    if not isinstance(fmt.kind, str) or fmt.kind not in KINDS:
        raise _bad(fmt, f"unknown format kind {fmt.kind!r} (valid: {KINDS}); the file may need a newer weightzip")
    if not isinstance(fmt.shape, (tuple, list)) or not all(_is_int(s) and s >= 0 for s in fmt.shape) or len(fmt.shape) > 16:
        raise _bad(fmt, f"shape must be a list of non-negative integers, got {fmt.shape!r}")
    if math.prod(fmt.shape) > MAX_NUMEL:
        raise _bad(fmt, f"shape {list(fmt.shape)} has more than {MAX_NUMEL} elements")
    allowed = RAW_DTYPES if fmt.kind == "raw" else FLOAT_DTYPES
    if fmt.dtype not in allowed:
        raise _bad(fmt, f"dtype {fmt.dtype!r} is not valid for kind {fmt.kind!r} (valid: {allowed})")
    if not isinstance(fmt.meta, dict):
        raise _bad(fmt, "meta must be an object")
    info = fmt.meta.get("stream_info")
    if not isinstance(info, dict):
        raise _bad(fmt, "meta['stream_info'] is missing or not an object")
    if not isinstance(fmt.streams, dict) or set(info) != set(fmt.streams):
        raise _bad(fmt, f"streams {sorted(fmt.streams) if isinstance(fmt.streams, dict) else '?'} do not match "
                        f"stream_info {sorted(info)}")
    for name, inf in info.items():
        data = fmt.streams[name]
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise _bad(fmt, "stream data must be bytes", name)
        if not isinstance(inf, dict):
            raise _bad(fmt, "stream_info entry must be an object", name)
        c, n = inf.get("coding"), inf.get("count")
        if not _is_int(n) or not 0 <= n <= MAX_NUMEL:
            raise _bad(fmt, f"stream count must be an integer in [0, {MAX_NUMEL}], got {n!r}", name)
        if c in ("float32", "float16"):
            if len(data) != n * (4 if c == "float32" else 2):
                raise _bad(fmt, f"{len(data)} bytes for {n} {c} values", name)
        elif c in entropy.CODINGS:
            a = inf.get("alphabet")
            if not _is_int(a) or not 1 <= a <= 2**32:
                raise _bad(fmt, f"stream alphabet must be a positive integer, got {a!r}", name)
        elif c == "bytes":
            if fmt.kind != "raw":
                raise _bad(fmt, "'bytes' streams only exist in raw formats", name)
        else:
            raise _bad(fmt, f"unknown stream coding {c!r}", name)


def _decode_numpy(fmt: Format) -> np.ndarray:
    """Decode to a flat numpy array (float32 for float kinds). Raises WeightzipFormatError."""
    validate(fmt)
    numel = fmt.numel
    if fmt.kind == "raw":
        data = fmt.streams.get("data", b"")
        dt = np.dtype(_NP_RAW[fmt.dtype])
        if len(data) != numel * dt.itemsize or fmt.meta["stream_info"]["data"].get("count") != numel:
            raise _bad(fmt, f"{len(data)} bytes for {numel} {fmt.dtype} values", "data")
        a = np.frombuffer(data, dtype=dt)
        if fmt.dtype == "bool":
            if a.size and a.max() > 1:
                raise _bad(fmt, "bool tensor with bytes other than 0/1", "data")
            return a.astype(bool)
        return a.astype(dt.newbyteorder("="))
    rd = _Reader(fmt)
    if fmt.kind == "pq":
        return _dec_pq(fmt, rd)
    if fmt.kind == "mixed_fixed":
        return _dec_mixed(fmt, rd)
    pos, n = _read_layout(fmt, rd)
    dec = {"dense": _dec_dense, "codebook": _dec_codebook, "uniform": _dec_uniform}[fmt.kind]
    vals = dec(fmt, rd, n, lambda: pos if pos is not None else np.arange(numel, dtype=np.int64))
    vals = np.asarray(vals, dtype=np.float32)
    if pos is None:
        return vals
    out = np.zeros(numel, dtype=np.float32)
    out[pos] = vals
    return out


def _guard(fn, fmt: Format):
    try:
        return fn(fmt)
    except WeightzipFormatError:
        raise
    except (ValueError, IndexError, TypeError, KeyError, OverflowError, MemoryError, AttributeError) as e:
        # a consistent-looking but malformed format must never crash the loader
        raise _bad(fmt, f"cannot decode ({type(e).__name__}: {e})") from e


def decode(fmt: Format) -> torch.Tensor:
    """Decode a :class:`Format` to a tensor of ``fmt.shape`` and ``fmt.dtype`` (exact).

    Raises :class:`WeightzipFormatError` naming the tensor and stream on any inconsistency.
    """
    flat = _guard(_decode_numpy, fmt)
    t = torch.from_numpy(np.ascontiguousarray(flat).reshape(tuple(fmt.shape)))
    dt = _TORCH_DTYPES[fmt.dtype]
    return t if t.dtype == dt else t.to(dt)


def decode_parts(fmt: Format) -> dict:
    """The structured parts of a Format without densifying (numpy arrays), for packed layers.

    Always: ``kind``, ``shape``, ``dtype``, ``matrix_shape`` (2-D view ``[shape[0], numel/shape[0]]``).

    * ``dense`` / ``codebook`` / ``uniform``: ``sparse`` (layout); ``positions`` (nnz,) int64 flat
      positions of the stored NONZERO values (fillers and stored zeros dropped; ``None`` for
      layout ``none``), ``values`` float32 at those positions (all elements for ``none``), and
      for sparse layouts ``csr = (indptr, indices, values)`` on the 2-D view. ``codebook`` adds
      ``codebook`` (K,) float32 and ``codes`` (aligned with ``values``: ``values == codebook[codes]``);
      ``uniform`` adds ``q`` (int64, ``values == float32(q) * scale[group]``), ``scale`` (G,)
      float32; ``block`` layouts add ``block`` and ``block_mask`` (bool grid).
    * ``pq``: ``codes`` [rows, M] int64, ``codebooks`` [M or 1, k, d] float32, ``mask`` bool
      [rows, cols] or None; the weight is ``codebooks[m or 0][codes[r, m]]`` in row r, columns
      ``m*d:(m+1)*d``, times the mask.
    * ``mixed_fixed``: ``clusters`` (list of {positions, q, frac_bits, bits, values}) and the
      merged sorted ``positions`` / ``values`` / ``csr``.
    * ``raw``: ``values`` (the array).
    """
    return _guard(_decode_parts, fmt)


def _decode_parts(fmt: Format) -> dict:
    validate(fmt)
    out: dict[str, Any] = {"kind": fmt.kind, "shape": tuple(fmt.shape), "dtype": fmt.dtype,
                           "matrix_shape": matrix_shape(fmt.shape)}
    if fmt.kind == "raw":
        out["values"] = _decode_numpy(fmt).reshape(tuple(fmt.shape))
        return out
    rd = _Reader(fmt)
    if fmt.kind == "pq":
        out.update(_read_pq(fmt, rd))
        return out
    if fmt.kind == "mixed_fixed":
        cl = _read_mixed(fmt, rd)
        pos = np.concatenate([c["positions"] for c in cl]) if cl else np.zeros(0, np.int64)
        vals = np.concatenate([c["values"] for c in cl]) if cl else np.zeros(0, np.float32)
        order = np.argsort(pos, kind="stable")
        pos, vals = pos[order], vals[order]
        keep = vals != 0
        pos, vals = pos[keep], vals[keep]
        out.update(clusters=cl, sparse="mixed", positions=pos, values=vals,
                   csr=csr_from_positions(pos, vals, out["matrix_shape"]))
        return out
    numel = fmt.numel
    pos, n = _read_layout(fmt, rd)
    all_pos = (lambda: pos if pos is not None else np.arange(numel, dtype=np.int64))
    out["sparse"] = fmt.meta["sparse"]
    extra: dict[str, np.ndarray] = {}
    if fmt.kind == "codebook":
        k = _mint(fmt, fmt.meta, "codebook_size", 0, MAX_NUMEL)
        table = rd.floats("codebook", k)
        codes = rd.symbols("codes", n, k) if k else np.zeros(0, np.int64)
        vals = table[codes] if k else np.zeros(0, np.float32)
        out["codebook"] = table
        extra["codes"] = codes
    elif fmt.kind == "uniform":
        q, s, out["scale"] = _read_uniform(fmt, rd, n, all_pos)
        vals = q.astype(np.float32) * s
        extra["q"] = q
    else:
        vals = _dec_dense(fmt, rd, n, all_pos)
    if fmt.meta["sparse"] == "block":
        block = fmt.meta["block"]
        grid = _block_grid(block, fmt.shape)
        out["block"] = tuple(block)
        out["block_mask"] = rd.symbols("block_mask", grid[0] * grid[1], 2).reshape(grid).astype(bool)
    if pos is None:
        out.update(positions=None, values=vals, **extra)
        out["csr"] = None
        return out
    keep = vals != 0
    p, v = pos[keep], vals[keep]
    out.update(positions=p, values=v, **{k: a[keep] for k, a in extra.items()})
    out["csr"] = csr_from_positions(p, v, out["matrix_shape"])
    return out


# =============================================================================================
# reporting


def _value_stream(fmt: Format) -> str | None:
    for name in ("codes", "values"):
        if name in fmt.streams:
            return name
    return None


def format_summary(fmt: Format) -> dict:
    """One row of the inspect table: ``kind``, ``sparse``, ``shape``, ``numel``, ``nnz``,
    ``value_bits`` (bits per stored value of a fixed-width code: 32/16 for floats,
    ceil(log2 alphabet) for codes; a list per cluster for mixed_fixed), ``index_bits``
    (relative index width or None), ``n_fillers``, ``streams`` (name -> bytes), ``codings``
    (name -> raw/huffman/ans/float32/...), ``nbytes`` and ``bits_per_element`` = 8 nbytes / numel."""
    m = fmt.meta
    info = m.get("stream_info", {})
    vb: Any = None
    sparse = m.get("sparse")
    index_bits = m.get("index_bits")
    fillers = m.get("n_fillers", 0)
    if fmt.kind == "raw":
        vb = 8 * np.dtype(_NP_RAW[fmt.dtype]).itemsize
        sparse = "none"
    elif fmt.kind == "dense":
        vb = 32 if m.get("value_dtype") == "float32" else 16
    elif fmt.kind in ("codebook", "uniform", "pq"):
        vb = bits_for_alphabet(info.get("codes", {}).get("alphabet", 1))
        if fmt.kind == "pq":
            sparse = m.get("mask")
            index_bits = m.get("mask_index_bits")
            fillers = m.get("mask_fillers", 0)
    elif fmt.kind == "mixed_fixed":
        cl = m.get("clusters", [])
        vb = [bits_for_alphabet(info.get(f"c{c}.codes", {}).get("alphabet", 1)) for c in range(len(cl))]
        sparse = "/".join(d.get("sparse", "?") for d in cl)
        index_bits = [d.get("index_bits") for d in cl]
        fillers = sum(d.get("n_fillers", 0) for d in cl)
    numel = fmt.numel
    return {
        "kind": fmt.kind, "sparse": sparse, "shape": list(fmt.shape), "numel": numel,
        "nnz": m.get("nnz", numel), "value_bits": vb, "index_bits": index_bits, "n_fillers": fillers,
        "streams": {k: len(v) for k, v in fmt.streams.items()},
        "codings": {k: info.get(k, {}).get("coding") for k in fmt.streams},
        "nbytes": fmt.nbytes, "bits_per_element": 8 * fmt.nbytes / numel if numel else 0.0,
    }


def entropy_bound_bytes(fmt: Format) -> dict[str, float]:
    """Per stream, the order-0 entropy bound in bytes: ``n H(p) / 8`` of the stream's decoded
    integer symbols (codes, index gaps, bitmaps). Float streams (values, tables, scales) and
    raw bytes are not entropy coded: their bound is their stored size."""
    info = fmt.meta.get("stream_info", {})
    out: dict[str, float] = {}
    rd = _Reader(fmt) if fmt.kind != "raw" else None
    for name, data in fmt.streams.items():
        inf = info.get(name, {})
        if inf.get("coding") in entropy.CODINGS and rd is not None:
            sym = _guard(lambda f: rd.symbols(name, inf["count"], inf["alphabet"]), fmt)
            out[name] = entropy.order0_entropy_bits(sym) / 8.0
        else:
            out[name] = float(len(data))
    return out
