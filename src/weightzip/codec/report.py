"""Per-tensor reporting: :func:`format_summary` (a row of ``weightzip inspect``) and
:func:`entropy_bound_bytes` (how far each integer stream is from its order-0 entropy)."""
from __future__ import annotations

from typing import Any

import numpy as np

from . import entropy
from .decoding import guard
from .format import Format
from .kinds import get_kind
from .layout import read_layout
from .sparse import matrix_shape
from .streams import StreamReader


def format_summary(fmt: Format) -> dict:
    """One row of the inspect table: ``kind``, ``sparse``, ``shape``, ``numel``, ``nnz``,
    ``value_bits`` (bits per stored value of a fixed-width code: 32/16 for floats,
    ceil(log2 alphabet) for codes; a list per cluster for mixed_fixed), ``index_bits``
    (relative index width or None), ``n_fillers``, ``streams`` (name -> bytes), ``codings``
    (name -> raw/huffman/ans/float32/...), ``nbytes`` and ``bits_per_element`` = 8 nbytes / numel."""
    m = fmt.meta
    info = m.get("stream_info", {})
    row: dict[str, Any] = {"value_bits": None, "sparse": m.get("sparse"), "index_bits": m.get("index_bits"),
                           "n_fillers": m.get("n_fillers", 0)}
    kind = get_kind(fmt.kind)
    if kind is not None:
        row.update(kind.summary(fmt))
    numel = fmt.numel
    return {
        "kind": fmt.kind, "sparse": row["sparse"], "shape": list(fmt.shape), "numel": numel,
        "nnz": m.get("nnz", numel), "value_bits": row["value_bits"], "index_bits": row["index_bits"],
        "n_fillers": row["n_fillers"],
        "streams": {k: len(v) for k, v in fmt.streams.items()},
        "codings": {k: info.get(k, {}).get("coding") for k in fmt.streams},
        "nbytes": fmt.nbytes, "bits_per_element": 8 * fmt.nbytes / numel if numel else 0.0,
    }


def entropy_bound_bytes(fmt: Format) -> dict[str, float]:
    """Per stream, the order-0 entropy bound in bytes: ``n H(p) / 8`` of the stream's decoded
    integer symbols (codes, index gaps, bitmaps; for a ``context`` layout, the bitmap of its mask
    and its codes: context coding can go BELOW this bound). Float streams (values, tables, scales) and
    raw bytes are not entropy coded: their bound is their stored size."""
    info = fmt.meta.get("stream_info", {})
    out: dict[str, float] = {}
    rd = StreamReader(fmt) if fmt.kind != "raw" else None
    for name, data in fmt.streams.items():
        inf = info.get(name, {})
        if inf.get("coding") in entropy.CODINGS and rd is not None:
            sym = guard(lambda f: rd.symbols(name, inf["count"], inf["alphabet"]), fmt)
            out[name] = entropy.order0_entropy_bits(sym) / 8.0
        elif inf.get("coding") == "context_mask" and rd is not None:     # order-0 of the bitmap
            pos, _ = guard(lambda f: read_layout(f, rd), fmt)
            out[name] = entropy.order0_entropy_bits(np.bincount(pos, minlength=fmt.numel).clip(max=1)) / 8.0
        elif inf.get("coding") == "context" and rd is not None:          # order-0 of the codes
            pos, _ = guard(lambda f: read_layout(f, rd), fmt)
            sym = guard(lambda f: rd.symbols(name, inf["count"], inf["alphabet"],
                                             ctx=(pos, *matrix_shape(f.shape))), fmt)
            out[name] = entropy.order0_entropy_bits(sym) / 8.0
        else:
            out[name] = float(len(data))
    return out
