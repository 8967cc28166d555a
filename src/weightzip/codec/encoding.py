"""``encode(tensor, hint) -> Format``: build every applicable candidate, keep the smallest exact one.

Candidates come from the registered kinds (:mod:`.kinds`), in registration order: every value
coder of the layout kinds (dense float32, dense float16 when asked, codebook, uniform) in every
tried layout (:mod:`.layout`), then the whole-tensor kinds (pq, mixed_fixed). Each candidate
is decoded and compared BIT FOR BIT with the input (``-0.0`` canonicalized to ``+0.0``); the
smallest one that reproduces it is returned (ties: the earlier one). NaN/Inf raise
:class:`~weightzip.errors.InvalidModelError`. ``float64`` tensors are stored as float32 (the
accounting baseline is 4 bytes per element); integer / bool tensors are stored ``raw``.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

from ..errors import InvalidModelError
from .decoding import decode_numpy
from .format import FLOAT_DTYPES, MAX_NUMEL, RAW_DTYPES, Format, Reject, canonical, to_numpy
from .kinds import EncodeContext, get_kind, registered
from .kinds.raw import encode_raw
from .layout import block_grid, context_layout_applies, make_layout
from .options import EncodeOptions
from .sparse import matrix_shape
from .streams import StreamWriter


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
    opts = EncodeOptions.parse(options)
    a, tdtype = _as_array(tensor)
    shape = tuple(int(s) for s in a.shape)
    if math.prod(shape) > MAX_NUMEL:
        raise InvalidModelError(f"tensor {opts.name!r} has {math.prod(shape)} elements > {MAX_NUMEL}")
    if tdtype in RAW_DTYPES:
        return encode_raw(a, shape, tdtype)
    if tdtype not in ("float32", "float16", "bfloat16", "float64"):
        raise InvalidModelError(f"tensor {opts.name!r} has unsupported dtype {tdtype}; "
                                f"weightzip stores float and {RAW_DTYPES} tensors")
    _finite_check(np.asarray(a), opts.name)
    w = _canonical_flat(a)                                           # (numel,) float32, no -0.0, read-only
    base_meta = {"source_dtype": "float64"} if tdtype == "float64" else {}
    dtype = tdtype if tdtype in FLOAT_DTYPES else "float32"
    ctx = _context(w, shape, _hint_dict(hint), opts)
    cands = _Candidates(ctx, dtype, base_meta)
    _try_all(ctx, cands)
    fmt = _smallest_exact(cands.formats, w, ctx)
    del cands
    # a candidate may hold a view of the values (dense float32: no copy while the others are
    # built and checked): the Format returned owns bytes
    fmt.streams = {k: bytes(v) if isinstance(v, memoryview) else v for k, v in fmt.streams.items()}
    return fmt


_CHUNK = 1 << 20   # values per chunk of the whole-tensor checks (their temporaries stay small)


def _canonical_flat(a: np.ndarray) -> np.ndarray:
    """``canonical(a).ravel()`` as a read-only array: ``a`` itself (no copy) when it is a
    contiguous float32 array without ``-0.0``, else the canonical copy. Read-only: no candidate
    may write into the values (they may be the caller's tensor)."""
    a = np.asarray(a)
    if a.dtype == np.float32 and a.flags.c_contiguous:
        flat = a.reshape(-1)
        bits = flat.view(np.uint32)
        if not any(np.any(bits[s:s + _CHUNK] == 0x80000000) for s in range(0, bits.size, _CHUNK)):
            w = flat.view()
            w.flags.writeable = False
            return w
    w = canonical(a).ravel()
    w.flags.writeable = False
    return w


def _as_array(tensor) -> tuple[np.ndarray, str]:
    """``(numpy array, source dtype name)``."""
    if isinstance(tensor, torch.Tensor):
        return to_numpy(tensor), str(tensor.dtype).replace("torch.", "")
    a = np.asarray(tensor)
    return a, a.dtype.name


def _hint_dict(hint) -> dict:
    if hint is None:
        return {}
    if not isinstance(hint, dict):
        raise TypeError(f"hint must be a dict or None, got {type(hint).__name__}")
    return dict(hint)


def _block_from_hint(h: dict, shape) -> tuple[dict | None, str | None]:
    """``({"block": (B_r, B_c), "block_mask": bool grid} or None, why the block hint is invalid or None)``."""
    if "block_mask" not in h:
        return None, None
    block = h.get("block")
    try:
        br, bc = (int(b) for b in block)
    except (TypeError, ValueError):
        return None, f"hint 'block' must be (B_r, B_c), got {block!r}"
    if br < 1 or bc < 1:
        return None, f"hint 'block' must be positive, got {block!r}"
    bm = to_numpy(h["block_mask"]).astype(bool)
    grid = block_grid((br, bc), shape)
    if bm.shape != grid:
        return None, f"block_mask shape {bm.shape} != block grid {grid} of the {matrix_shape(shape)} view"
    return {"block": (br, bc), "block_mask": bm}, None


def _finite_check(a: np.ndarray, name: str) -> None:
    flat = a.reshape(-1)
    if all(np.isfinite(flat[s:s + _CHUNK]).all() for s in range(0, flat.size, _CHUNK)):
        return
    bad = ~np.isfinite(a)
    if bad.any():
        n_nan = int(np.isnan(a).sum())
        raise InvalidModelError(
            f"tensor {name or '<unnamed>'!r} has {n_nan} NaN and {int(bad.sum()) - n_nan} Inf values "
            f"(first at flat index {int(np.flatnonzero(bad)[0])}); fix the training run (lower the "
            "learning rate, clip gradients) or restore a finite checkpoint before compressing")


def _context(w: np.ndarray, shape: tuple, h: dict, opts: EncodeOptions) -> EncodeContext:
    if np.count_nonzero(w) == w.size:  # no zeros: every position, no int64 array of them
        nz, nzv = _AllPositions(w.size), w
    else:
        nz = np.flatnonzero(w)                                       # (nnz,) flat positions
        nzv = w[nz]
    ctx = EncodeContext(w=w, shape=shape, opts=opts, hint=h, hkind=h.get("kind"), nz=nz, nzv=nzv,
                        block=None, layouts=[])
    ctx.block, block_err = _block_from_hint(h, shape)
    if block_err:
        ctx.hint_invalid("block", block_err)
    ctx.layouts = [s for s in opts.layouts if s != "block" or ctx.block is not None]
    if not context_layout_applies(w.size, nz.size):
        ctx.layouts = [s for s in ctx.layouts if s != "context"]
    if nz.size == w.size and "none" in ctx.layouts:
        # no zeros: a sparse layout stores the same entries plus its positions, never smaller
        # (a hinted block layout is still tried: its attempt reports on the hint)
        ctx.layouts = [s for s in ctx.layouts if s in ("none", "block")]
    if w.size == 0:
        ctx.layouts = ["none"]
    return ctx


class _AllPositions:
    """The flat positions ``0..n-1`` of a tensor without zeros: ``.size`` without the (n,) int64
    array, which is built only where a caller really indexes with it (``np.asarray``)."""

    def __init__(self, n: int):
        self.size = int(n)
        self.shape = (self.size,)
        self.ndim = 1

    def __len__(self) -> int:
        return self.size

    def __array__(self, dtype=None, copy=None):
        return np.arange(self.size, dtype=dtype or np.int64)

    def __getitem__(self, i):
        return np.arange(self.size, dtype=np.int64)[i]


class _Candidates:
    """The candidate Formats built so far; :meth:`attempt` records why a hinted one was rejected."""

    def __init__(self, ctx: EncodeContext, dtype: str, base_meta: dict):
        self.ctx, self.dtype, self.base_meta = ctx, dtype, base_meta
        self.formats: list[Format] = []

    def attempt(self, kind: str, label: str, build: Callable[[StreamWriter], dict]) -> None:
        ctx = self.ctx
        st = StreamWriter(ctx.opts.codings)
        k = get_kind(kind)
        try:
            try:
                meta = build(st)
            except (KeyError, TypeError, ValueError, IndexError) as e:
                if not k.hint_driven:
                    raise
                raise Reject(f"malformed {kind} hint ({type(e).__name__}: {e})") from e
        except Reject as e:
            if k.implements(ctx.hkind) or label == "block":
                ctx.hint_notes[label] = f"invalid: {e}"
                if ctx.opts.strict:
                    raise InvalidModelError(f"tensor {ctx.opts.name!r}: hinted {label} storage does not reproduce "
                                            f"the weights: {e}") from None
            return
        meta = {**self.base_meta, **meta, "stream_info": st.info}
        self.formats.append(Format(kind, ctx.shape, self.dtype, meta, st.streams, name=ctx.opts.name))


def _try_all(ctx: EncodeContext, cands: _Candidates) -> None:
    """Every layout-kind value coder in every layout, then every whole-tensor candidate."""
    coders = [c for kind in registered() if kind.coders is not None for c in kind.coders(ctx)]
    for coder in coders:
        est = coder.estimate() if any(s == "relative" for s in ctx.layouts) else (32, 32)
        for scheme in ctx.layouts:
            def build(st, scheme=scheme, est=est, coder=coder):
                lay = make_layout(scheme, ctx.w, ctx.shape, ctx.nz, est, ctx.opts, ctx.block, st)
                meta = dict(lay.meta)
                meta.update(coder.encode(lay, st))
                st.merge(lay.streams)
                meta["nnz"] = int(ctx.nz.size)
                return meta
            cands.attempt(coder.kind, "block" if scheme == "block" else coder.label, build)
    for kind in registered():
        if kind.candidates is not None:
            for cand in kind.candidates(ctx):
                cands.attempt(cand.kind, cand.label, cand.build)


def _smallest_exact(cands: list[Format], w: np.ndarray, ctx: EncodeContext) -> Format:
    """The smallest candidate whose decoded tensor equals ``w`` bit for bit (float16 candidates:
    equals ``w`` rounded to float16), with ``meta["lossy"]`` and ``meta["hint"]`` filled in."""
    cands.sort(key=lambda f: f.nbytes)
    ref = w.view(np.uint32)
    ref16 = None
    for fmt in cands:
        dec = decode_numpy(fmt)
        lossy = fmt.meta.get("value_dtype") == "float16"
        if lossy:
            if ref16 is None:
                ref16 = canonical(w.astype(np.float16).astype(np.float32)).view(np.uint32)
            ok = np.array_equal(canonical(dec).view(np.uint32), ref16)
        else:
            ok = np.array_equal(dec.view(np.uint32), ref)
        if not ok:  # a candidate that does not reproduce the input is never kept
            continue
        if lossy:
            err = np.abs(dec.astype(np.float64) - w.astype(np.float64))
            fmt.meta["lossy"] = {"max_abs_err": float(err.max()) if err.size else 0.0,
                                 "mean_abs_err": float(err.mean()) if err.size else 0.0}
        _report_hint(fmt, ctx)
        return fmt
    raise RuntimeError(f"tensor {ctx.opts.name!r}: no candidate encoding reproduced the tensor (codec bug)")


def _report_hint(fmt: Format, ctx: EncodeContext) -> None:
    """``meta["hint"] = {"kind", "status": {label: chosen | larger than K | invalid: why}}``."""
    hkind, notes = ctx.hkind, ctx.hint_notes
    if hkind is None and not notes:
        return
    status = dict(notes)
    if hkind is not None:
        status.setdefault(hkind, "chosen" if get_kind(fmt.kind).implements(hkind) else f"larger than {fmt.kind}")
    fmt.meta["hint"] = {"kind": hkind, "status": status}
