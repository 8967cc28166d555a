"""Format kinds, one module each, behind a small registry (:mod:`.registry`).

=========== ===========================================================================================
kind        value streams (per stored entry)
=========== ===========================================================================================
raw         ``data``: the tensor's bytes, little-endian (integer / bool tensors, e.g. BN
            ``num_batches_tracked``) - :mod:`.raw`
dense       ``values``: float32 (or float16 when asked: lossy) - :mod:`.dense`
codebook    ``codebook``: float32 table (K,), ``codes``: index into the table, ceil(log2 K) bits -
            :mod:`.codebook`
uniform     ``scale``: float32 (G,), ``codes``: integer level q (offset or level table),
            value = float32(q) * float32(scale[group]) - :mod:`.uniform`
pq          ``codebooks`` float32 (M or 1, k, d), ``codes`` (rows*M) at ceil(log2 k) bits,
            optional mask (bitmap, or relative index + filler flags) - :mod:`.pq`
mixed_fixed per cluster c: sparse positions + ``c{c}.codes`` with value q * 2^-f_c - :mod:`.mixed_fixed`
=========== ===========================================================================================

``dense`` / ``codebook`` / ``uniform`` store their entries in a sparse layout (:mod:`..layout`).
A new kind is a module that builds a :class:`Kind` and calls :func:`register_kind`, imported
below. The import order is the order :func:`weightzip.codec.encode` tries the kinds (it breaks
ties between candidates of equal size) and must not change: files are byte-identical across
versions for the same input.
"""
from .registry import Candidate, EncodeContext, Kind, ValueCoder, get_kind, register_kind, registered
from . import raw, dense, codebook, uniform, pq, mixed_fixed  # noqa: E402,F401  (registers, in this order)

KINDS = tuple(k.name for k in registered())

__all__ = ["KINDS", "Kind", "ValueCoder", "Candidate", "EncodeContext", "register_kind", "get_kind", "registered"]
