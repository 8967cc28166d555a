"""Sparse layouts: which elements of a tensor a ``dense`` / ``codebook`` / ``uniform`` format stores.

``meta["sparse"]`` is one of :data:`LAYOUTS`:

========= ===========================================================================================
none      every element, row-major; ``n_entries = numel``
relative  relative index with fillers (:mod:`.sparse`): stream ``index`` holds the E gaps at
          ``index_bits`` b; ``n_entries`` E, ``n_fillers``; fillers store the value 0
bitmap    stream ``bitmap``: one symbol (0/1) per element, 1 = stored; ``n_entries`` = popcount
context   stream ``mask``: the 2-D bool mask of stored elements, coded by :func:`.context.encode_mask`
          (coding ``context_mask``; each bit conditioned on its column); ``n_entries`` = popcount;
          the codes of a ``codebook`` may then be ``context`` coded too (:func:`.context.encode_codes`)
block     stream ``block_mask``: one symbol per block of the 2-D view ``[shape[0], numel/shape[0]]``
          in blocks ``meta["block"] = [B_r, B_c]`` (grid ``ceil(rows/B_r) x ceil(cols/B_c)``);
          every element of a kept block is stored, row-major over the whole view
========= ===========================================================================================

The value streams of the kind then hold ``n_entries`` values, one per stored element, in order.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np

from ..errors import WeightzipFormatError
from . import context, mixing
from .format import MAX_NUMEL, Format, Reject, bad, is_int, meta_int
from .sparse import choose_index_bits, csr_from_positions, matrix_shape, relative_index_decode, relative_index_encode
from .streams import StreamReader, StreamWriter

if TYPE_CHECKING:
    from .options import EncodeOptions

LAYOUTS = ("none", "relative", "bitmap", "block", "context")


_MASK_MEMO: dict = {}


def _context_mask(m2: np.ndarray, nz, mixing_ok: bool) -> tuple[bytes, str]:
    """The smaller of ``context_mask`` and (entropy coding allowed) ``cm_mask`` for the bool mask
    ``m2``. Every value coder of a tensor builds the same context layout: the last result is
    remembered (keyed by the shape and a CRC of the positions) so the mask is coded once."""
    import zlib

    key = (m2.shape, int(nz.size), zlib.crc32(np.ascontiguousarray(np.asarray(nz, dtype=np.int64))), mixing_ok)
    hit = _MASK_MEMO.get("last")
    if hit is not None and hit[0] == key:
        return hit[1]
    data, coding = context.encode_mask(m2), "context_mask"
    if mixing_ok:
        cm = mixing.encode_mask(m2)
        if len(cm) < len(data):
            data, coding = cm, "cm_mask"
    _MASK_MEMO["last"] = (key, (data, coding))
    return data, coding


def context_layout_applies(numel: int, nnz: int) -> bool:
    """The encoder tries the ``context`` layout only on sparse tensors (density <= 0.5) of at
    most :data:`.context.MAX_MASK` elements (its cost search is O(numel))."""
    return 0 < numel <= context.MAX_MASK and 2 * nnz <= numel


def choose_bits(positions, vbits: int, vbits0: int, opts: "EncodeOptions") -> int:
    """Relative-index width: ``opts.index_bits`` if fixed, else the cheapest in
    ``1..opts.max_index_bits`` for values of ``vbits`` bits (``vbits0`` with a zero code for fillers)."""
    if opts.index_bits is not None:
        return opts.index_bits
    return choose_index_bits(positions, vbits, vbits0, max_bits=opts.max_index_bits).bits


@dataclass
class Layout:
    """Which elements a candidate stores: ``entry_pos`` (E,) flat positions (None = all),
    ``entries`` (E,) float32 values there (fillers are 0), and the layout meta/streams."""

    scheme: str
    meta: dict
    entries: np.ndarray
    entry_pos: np.ndarray | None
    streams: StreamWriter
    shape2d: tuple | None = None     # (rows, cols) of the 2-D view, for context-coded codes

    @property
    def code_context(self) -> tuple | None:
        """``(positions, rows, cols)`` for :func:`.context.encode_codes`, in a context layout."""
        return None if self.scheme != "context" else (self.entry_pos, *self.shape2d)


def block_grid(block, shape) -> tuple[int, int]:
    """``(ceil(rows / B_r), ceil(cols / B_c))`` blocks of the 2-D view of ``shape``."""
    rows, cols = matrix_shape(shape)
    br, bc = int(block[0]), int(block[1])
    return (-(-rows // br), -(-cols // bc))


def block_element_mask(block_mask: np.ndarray, block, shape) -> np.ndarray:
    """Flat bool (numel,): element (r, c) of the 2-D view is kept iff block (r // Br, c // Bc) is."""
    rows, cols = matrix_shape(shape)
    br, bc = int(block[0]), int(block[1])
    bm = np.asarray(block_mask, dtype=bool)
    em = np.repeat(np.repeat(bm, br, axis=0), bc, axis=1)[:rows, :cols]
    return np.ascontiguousarray(em).ravel()


# =============================================================================================
# writing


def make_layout(scheme: str, w: np.ndarray, shape, nz: np.ndarray, est: tuple[int, int],
                opts: "EncodeOptions", block: dict | None, st: StreamWriter) -> Layout:
    """Build the position streams of ``scheme`` for the canonical flat tensor ``w`` with nonzeros
    at ``nz``; ``est`` = (value bits, value bits with a zero code) sizes the relative index."""
    numel = w.size
    ls = st.sub()
    if scheme == "none":
        return Layout("none", {"sparse": "none", "n_entries": numel}, w, None, ls)
    if scheme == "relative":
        b = choose_bits(nz, est[0], est[1], opts)
        ri = relative_index_encode(nz, b)
        ls.symbols("index", ri.gaps, 1 << b)
        entries = np.zeros(ri.n_entries, dtype=np.float32)
        entries[ri.real] = w[nz]
        meta = {"sparse": "relative", "index_bits": b, "n_entries": ri.n_entries, "n_fillers": ri.n_fillers}
        return Layout("relative", meta, entries, ri.entry_positions, ls)
    if scheme == "bitmap":
        bits = np.zeros(numel, dtype=np.uint8)
        bits[nz] = 1
        ls.symbols("bitmap", bits, 2)
        return Layout("bitmap", {"sparse": "bitmap", "n_entries": int(nz.size)}, w[nz], nz, ls)
    if scheme == "context":
        rows, cols = matrix_shape(shape)
        bits = np.zeros(numel, dtype=bool)
        bits[nz] = True
        data, coding = _context_mask(bits.reshape(rows, cols), nz, "ans" in opts.codings)
        ls.blob("mask", data, coding, numel)
        return Layout("context", {"sparse": "context", "n_entries": int(nz.size)}, w[nz], nz, ls, (rows, cols))
    if scheme == "block":
        if block is None:
            raise Reject("no block mask in the hint")
        emask = block_element_mask(block["block_mask"], block["block"], shape)
        if np.any(w[~emask]):
            raise Reject("nonzero weights outside the kept blocks of the block mask")
        pos = np.flatnonzero(emask)
        ls.symbols("block_mask", block["block_mask"].ravel().astype(np.int64), 2)
        meta = {"sparse": "block", "block": [int(b) for b in block["block"]], "n_entries": int(pos.size)}
        return Layout("block", meta, w[pos], pos, ls)
    raise ValueError(f"unknown layout {scheme!r}")


# =============================================================================================
# reading


def read_layout(fmt: Format, rd: StreamReader) -> tuple[np.ndarray | None, int]:
    """Decode the layout streams: ``(entry positions or None for all, n_entries)``; the meta is
    checked first by :func:`plan_layout`."""
    plan, n = plan_layout(fmt)
    scheme, numel = fmt.meta.get("sparse"), fmt.numel
    if scheme == "none":
        return None, n
    if scheme == "relative":
        gaps = rd.symbols("index", *plan["index"])
        try:
            return relative_index_decode(gaps, numel), n
        except WeightzipFormatError as e:
            raise bad(fmt, str(e), "index") from None
    if scheme == "bitmap":
        pos = np.flatnonzero(rd.symbols("bitmap", numel, 2))
        if pos.size != n:
            raise bad(fmt, f"bitmap has {pos.size} ones, meta says {n} entries", "bitmap")
        return pos, n
    if scheme == "context":
        inf, data = rd._get("mask")
        if inf.get("coding") not in ("context_mask", "cm_mask") or inf.get("count") != numel:
            raise bad(fmt, f"mask stream must be context_mask or cm_mask coded with {numel} bits", "mask")
        dec = context.decode_mask if inf["coding"] == "context_mask" else mixing.decode_mask
        try:
            pos = np.flatnonzero(dec(data, *matrix_shape(fmt.shape)))
        except WeightzipFormatError as e:
            raise bad(fmt, str(e), "mask") from None
        if pos.size != n:
            raise bad(fmt, f"mask has {pos.size} ones, meta says {n} entries", "mask")
        return pos, n
    # block (plan_layout refused every other scheme)
    block = fmt.meta["block"]
    grid = block_grid(block, fmt.shape)
    bm = rd.symbols("block_mask", *plan["block_mask"]).reshape(grid).astype(bool)
    pos = np.flatnonzero(block_element_mask(bm, block, fmt.shape))
    if pos.size != n:
        raise bad(fmt, f"block mask keeps {pos.size} elements, meta says {n}", "block_mask")
    return pos, n


def plan_layout(fmt: Format) -> tuple[dict, int]:
    """``({stream: (count, alphabet)}, n_entries)`` of the layout streams, from the meta alone
    (what :func:`read_layout` will read)."""
    m, numel = fmt.meta, fmt.numel
    scheme = m.get("sparse")
    if scheme == "none":
        n = meta_int(fmt, m, "n_entries")
        if n != numel:
            raise bad(fmt, f"dense layout stores {n} entries for {numel} elements")
        return {}, n
    if scheme == "relative":
        b = meta_int(fmt, m, "index_bits", 1, 32)
        n = meta_int(fmt, m, "n_entries", 0, numel)
        return {"index": (n, 1 << b)}, n
    if scheme == "bitmap":
        return {"bitmap": (numel, 2)}, meta_int(fmt, m, "n_entries", 0, numel)
    if scheme == "block":
        block = m.get("block")
        if not (isinstance(block, list) and len(block) == 2 and all(is_int(b) and b >= 1 for b in block)):
            raise bad(fmt, f"meta['block'] must be two positive integers, got {block!r}")
        grid = block_grid(block, fmt.shape)
        if grid[0] * grid[1] > MAX_NUMEL:
            raise bad(fmt, "block grid too large")
        return {"block_mask": (grid[0] * grid[1], 2)}, meta_int(fmt, m, "n_entries", 0, numel)
    if scheme == "context":
        return {"mask": (numel, "context_mask")}, meta_int(fmt, m, "n_entries", 0, numel)
    raise bad(fmt, f"unknown sparse layout {scheme!r} (valid: {LAYOUTS})")


# A layout kind's value reader: (fmt, reader, n_entries, entry_positions()) -> (n,) float32 values.
ValueReader = Callable[[Format, StreamReader, int, Callable[[], np.ndarray]], np.ndarray]
# ... and for decode_parts: -> (values (n,), whole-tensor parts {name: array}, per-entry parts {name: (n,)}).
PartsReader = Callable[[Format, StreamReader, int, Callable[[], np.ndarray]], tuple[np.ndarray, dict, dict]]


def code_context(fmt: Format, pos_fn: Callable[[], np.ndarray]) -> tuple | None:
    """``(positions, rows, cols)`` of a context layout's codes (None for other layouts)."""
    return (pos_fn(), *matrix_shape(fmt.shape)) if fmt.meta.get("sparse") == "context" else None


def _all_positions(pos: np.ndarray | None, numel: int) -> Callable[[], np.ndarray]:
    return lambda: pos if pos is not None else np.arange(numel, dtype=np.int64)


def decode_layout(fmt: Format, rd: StreamReader, read_values: ValueReader) -> np.ndarray:
    """Flat float32 (numel,) tensor of a layout kind: values scattered to their positions."""
    numel = fmt.numel
    pos, n = read_layout(fmt, rd)
    vals = np.asarray(read_values(fmt, rd, n, _all_positions(pos, numel)), dtype=np.float32)
    if pos is None:
        return vals
    out = np.zeros(numel, dtype=np.float32)
    out[pos] = vals
    return out


def layout_parts(fmt: Format, rd: StreamReader, read_parts: PartsReader) -> dict:
    """The :func:`~weightzip.codec.decode_parts` entries of a layout kind: ``sparse``, the kind's
    tables, ``block`` / ``block_mask`` for block layouts, and ``positions`` / ``values`` / per-entry
    parts / ``csr`` restricted to the stored NONZERO values (all elements and no csr for ``none``)."""
    pos, n = read_layout(fmt, rd)
    out: dict = {"sparse": fmt.meta["sparse"]}
    vals, tables, extra = read_parts(fmt, rd, n, _all_positions(pos, fmt.numel))
    out.update(tables)
    if fmt.meta["sparse"] == "block":
        block = fmt.meta["block"]
        grid = block_grid(block, fmt.shape)
        out["block"] = tuple(block)
        out["block_mask"] = rd.symbols("block_mask", grid[0] * grid[1], 2).reshape(grid).astype(bool)
    if pos is None:
        out.update(positions=None, values=vals, **extra)
        out["csr"] = None
        return out
    keep = vals != 0
    p, v = pos[keep], vals[keep]
    out.update(positions=p, values=v, **{k: a[keep] for k, a in extra.items()})
    out["csr"] = csr_from_positions(p, v, matrix_shape(fmt.shape))
    return out
