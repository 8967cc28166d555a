"""Checking and decoding a :class:`~.format.Format`: :func:`validate`, :func:`decode`, :func:`decode_parts`.

Every error is a :class:`~weightzip.errors.WeightzipFormatError` naming the tensor and stream:
a consistent-looking but malformed format never crashes the loader with another exception.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ..errors import WeightzipFormatError
from . import entropy
from .bitpack import bits_for_alphabet
from .format import MAX_NUMEL, TORCH_DTYPES, Format, bad, is_int
from .kinds import KINDS, get_kind
from .sparse import matrix_shape
from .streams import StreamReader


def validate(fmt: Format) -> None:
    """Structural checks of a Format (types, known kind/dtype, stream_info for every stream,
    byte sizes of fixed-size streams). Raises :class:`WeightzipFormatError`."""
    kind = get_kind(fmt.kind)
    if kind is None:
        raise bad(fmt, f"unknown format kind {fmt.kind!r} (valid: {KINDS}); the file may need a newer weightzip")
    if not isinstance(fmt.shape, (tuple, list)) or not all(is_int(s) and s >= 0 for s in fmt.shape) or len(fmt.shape) > 16:
        raise bad(fmt, f"shape must be a list of non-negative integers, got {fmt.shape!r}")
    if math.prod(fmt.shape) > MAX_NUMEL:
        raise bad(fmt, f"shape {list(fmt.shape)} has more than {MAX_NUMEL} elements")
    if fmt.dtype not in kind.dtypes:
        raise bad(fmt, f"dtype {fmt.dtype!r} is not valid for kind {fmt.kind!r} (valid: {kind.dtypes})")
    if not isinstance(fmt.meta, dict):
        raise bad(fmt, "meta must be an object")
    info = fmt.meta.get("stream_info")
    if not isinstance(info, dict):
        raise bad(fmt, "meta['stream_info'] is missing or not an object")
    if not isinstance(fmt.streams, dict) or set(info) != set(fmt.streams):
        raise bad(fmt, f"streams {sorted(fmt.streams) if isinstance(fmt.streams, dict) else '?'} do not match "
                       f"stream_info {sorted(info)}")
    for name, inf in info.items():
        _validate_stream(fmt, kind.byte_streams, name, inf)
    _check_plan(fmt, kind.plan(fmt))


def _check_plan(fmt: Format, plan: dict) -> None:
    """Every stream decoding will read exists with the count / alphabet / coding the meta implies,
    no other stream exists, and every integer stream's bytes can hold its symbols
    (:func:`.entropy.check_stream`): a format passing this allocates nothing unchecked."""
    info = fmt.meta["stream_info"]
    missing, unread = sorted(set(plan) - set(info)), sorted(set(info) - set(plan))
    if missing:
        raise bad(fmt, "stream is missing", missing[0])
    if unread:
        raise bad(fmt, f"stream is not read by a {fmt.kind} format with this meta", unread[0])
    for name, (count, alphabet) in plan.items():
        inf, data = info[name], fmt.streams[name]
        if inf["count"] != count:
            raise bad(fmt, f"stream declares {inf['count']} symbols, the meta implies {count}", name)
        coding = inf.get("coding")
        if isinstance(alphabet, str):
            if alphabet == "float":
                ok = coding in ("float32", "float16", "grid")
            elif alphabet == "context_mask":    # a context layout's mask: column-conditioned or mixing coder
                ok = coding in ("context_mask", "cm_mask")
            else:
                ok = coding == alphabet
            if not ok:
                raise bad(fmt, f"stream coding {coding!r} where {alphabet!r} is needed", name)
            continue
        if coding in ("context", "cm") and inf.get("alphabet") == alphabet:
            continue                      # codec/context.py / mixing.py check their own streams while decoding
        if coding not in entropy.CODINGS:
            raise bad(fmt, f"unknown coding {coding!r} for an integer stream (valid: {entropy.CODINGS})", name)
        if inf.get("alphabet") != alphabet:
            raise bad(fmt, f"stream alphabet is {inf.get('alphabet')!r}, the meta implies {alphabet}", name)
        try:
            entropy.check_stream(data, coding, count, bits=bits_for_alphabet(alphabet), alphabet_size=alphabet)
        except WeightzipFormatError as e:
            raise bad(fmt, str(e), name) from None


def _validate_stream(fmt: Format, byte_streams: bool, name: str, inf) -> None:
    data = fmt.streams[name]
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise bad(fmt, "stream data must be bytes", name)
    if not isinstance(inf, dict):
        raise bad(fmt, "stream_info entry must be an object", name)
    c, n = inf.get("coding"), inf.get("count")
    if not is_int(n) or not 0 <= n <= MAX_NUMEL:
        raise bad(fmt, f"stream count must be an integer in [0, {MAX_NUMEL}], got {n!r}", name)
    if c in ("float32", "float16"):
        if len(data) != n * (4 if c == "float32" else 2):
            raise bad(fmt, f"{len(data)} bytes for {n} {c} values", name)
    elif c in entropy.CODINGS:
        a = inf.get("alphabet")
        if not is_int(a) or not 1 <= a <= 2**32:
            raise bad(fmt, f"stream alphabet must be a positive integer, got {a!r}", name)
    elif c in ("context", "cm"):
        a = inf.get("alphabet")
        if not is_int(a) or not 1 <= a <= 2**32:
            raise bad(fmt, f"stream alphabet must be a positive integer, got {a!r}", name)
    elif c in ("context_mask", "cm_mask"):
        pass
    elif c == "grid":                     # streams.decode_grid: one byte, then >= 1 byte per value
        if not 1 <= len(data) or n > len(data) - 1:
            raise bad(fmt, f"{len(data)} bytes cannot hold {n} grid values", name)
    elif c == "bytes":
        if not byte_streams:
            raise bad(fmt, "'bytes' streams only exist in raw formats", name)
    else:
        raise bad(fmt, f"unknown stream coding {c!r}", name)


def decode_numpy(fmt: Format) -> np.ndarray:
    """Decode to a flat numpy array (float32 for float kinds). Raises WeightzipFormatError."""
    validate(fmt)
    return get_kind(fmt.kind).decode(fmt, StreamReader(fmt))


def guard(fn, fmt: Format):
    """``fn(fmt)``, with any low-level exception of a malformed format turned into a
    :class:`WeightzipFormatError` naming the tensor."""
    try:
        return fn(fmt)
    except WeightzipFormatError:
        raise
    except (ValueError, IndexError, TypeError, KeyError, OverflowError, MemoryError, AttributeError) as e:
        # a consistent-looking but malformed format must never crash the loader
        raise bad(fmt, f"cannot decode ({type(e).__name__}: {e})") from e


def decode(fmt: Format) -> torch.Tensor:
    """Decode a :class:`Format` to a tensor of ``fmt.shape`` and ``fmt.dtype`` (exact).

    Raises :class:`WeightzipFormatError` naming the tensor and stream on any inconsistency.
    """
    flat = guard(decode_numpy, fmt)
    t = torch.from_numpy(np.ascontiguousarray(flat).reshape(tuple(fmt.shape)))
    dt = TORCH_DTYPES[fmt.dtype]
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
    return guard(_decode_parts, fmt)


def _decode_parts(fmt: Format) -> dict:
    validate(fmt)
    out: dict[str, Any] = {"kind": fmt.kind, "shape": tuple(fmt.shape), "dtype": fmt.dtype,
                           "matrix_shape": matrix_shape(fmt.shape)}
    out.update(get_kind(fmt.kind).parts(fmt, StreamReader(fmt)))
    for k, v in out.items():  # one-symbol streams decode to read-only broadcast views: hand out arrays
        if isinstance(v, np.ndarray) and not v.flags.writeable:
            out[k] = np.array(v)
    return out
