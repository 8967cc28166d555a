"""The ``options`` of :func:`weightzip.codec.encode`, parsed and checked into :class:`EncodeOptions`."""
from __future__ import annotations

from dataclasses import dataclass

from . import entropy
from .format import MAX_CODEBOOK
from .kinds import KINDS
from .layout import LAYOUTS
from .sparse import MAX_INDEX_BITS

OPTION_NAMES = ("name", "entropy", "sparse", "float_dtype", "fp16", "index_bits", "max_index_bits", "kinds",
                "strict", "max_codebook")

# options["entropy"] -> the integer-stream codings tried
_ENTROPY_CODINGS = {True: entropy.CODINGS, "auto": entropy.CODINGS, False: ("raw",), "none": ("raw",),
                    "huffman": ("raw", "huffman"), "ans": ("raw", "ans")}


@dataclass
class EncodeOptions:
    """``name`` (for errors), ``codings`` tried for integer streams, ``layouts`` tried (always with
    ``none``), ``float_dtype`` of the extra dense candidate (``float16`` = lossy), ``index_bits``
    (fixed relative-index width, else chosen in ``1..max_index_bits``), ``kinds`` allowed (always
    with ``dense``), ``strict`` (raise when a hinted format does not reproduce the tensor),
    ``max_codebook`` (largest codebook table)."""

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
    def parse(cls, options: dict | None) -> "EncodeOptions":
        """Check the options dict of :func:`~weightzip.codec.encode`; raises ``ValueError`` naming
        the bad option and the valid values."""
        o = dict(options or {})
        opts = cls()
        opts.name = str(o.pop("name", "") or "")
        ent = o.pop("entropy", "auto")
        if ent not in _ENTROPY_CODINGS:
            raise ValueError(f"options['entropy'] must be one of auto/none/huffman/ans, got {ent!r}")
        opts.codings = _ENTROPY_CODINGS[ent]
        opts.layouts = _parse_layouts(o.pop("sparse", True))
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
            raise ValueError(f"unknown encode options {sorted(o)}; valid: {', '.join(OPTION_NAMES)}")
        return opts


def _parse_layouts(sp) -> tuple:
    """``options["sparse"]``: True = every layout, False = none and block (block structure is not
    a per-weight index), or a list of layouts (``none`` is always added in front)."""
    if sp is True:
        return LAYOUTS
    if sp is False:
        return ("none", "block")
    bad = set(sp) - set(LAYOUTS)
    if bad:
        raise ValueError(f"options['sparse'] has unknown layouts {sorted(bad)}; valid: {LAYOUTS}")
    return tuple(sp) if "none" in sp else ("none",) + tuple(sp)
