"""The format-kind registry: what a kind must provide to be encoded, decoded and reported.

A kind is either a **layout kind** (its values are stored at the elements chosen by a sparse
layout, :mod:`..layout`: ``dense``, ``codebook``, ``uniform``), which gives ``coders``, or a
**whole-tensor kind** (its own positions / structure: ``pq``, ``mixed_fixed``), which gives
``candidates``. ``raw`` (integer / bool tensors) gives neither: it is the only encoding of
non-float tensors (:func:`.raw.encode_raw`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import numpy as np

from ...errors import InvalidModelError
from ..format import Format
from ..layout import Layout
from ..streams import StreamReader, StreamWriter

if TYPE_CHECKING:
    from ..options import EncodeOptions


@dataclass
class EncodeContext:
    """What the kinds see while :func:`weightzip.codec.encode` builds candidates for one tensor.

    ``w`` (numel,) canonical float32 (no -0.0); ``nz`` (nnz,) int64 flat positions of its nonzeros,
    ``nzv`` (nnz,) their values; ``hint`` the hint dict, ``hkind`` its ``"kind"`` (or None);
    ``block`` the checked block hint ``{"block": (B_r, B_c), "block_mask": bool grid}`` or None;
    ``layouts`` the layouts tried; ``hint_notes`` label -> why a hinted storage was not used
    (reported in ``meta["hint"]["status"]``).
    """

    w: np.ndarray
    shape: tuple
    opts: "EncodeOptions"
    hint: dict
    hkind: str | None
    nz: np.ndarray
    nzv: np.ndarray
    block: dict | None
    layouts: list
    hint_notes: dict = field(default_factory=dict)

    def hint_invalid(self, label: str, reason) -> None:
        """Record that the hinted ``label`` storage is unusable; raise in strict mode."""
        self.hint_notes[label] = f"invalid: {reason}"
        if self.opts.strict:
            raise InvalidModelError(f"tensor {self.opts.name!r}: {reason}") from None


@dataclass
class ValueCoder:
    """Values of a layout kind: ``estimate()`` -> (value bits, value bits with a zero code) to size a
    relative index; ``encode(layout, writer)`` writes the value streams of ``layout.entries`` and
    returns the kind's meta (raises :class:`~..format.Reject` when it does not apply)."""

    kind: str
    label: str
    estimate: Callable[[], tuple[int, int]]
    encode: Callable[[Layout, StreamWriter], dict]


@dataclass
class Candidate:
    """One whole-tensor candidate: ``build(writer)`` writes every stream and returns the meta."""

    kind: str
    label: str
    build: Callable[[StreamWriter], dict]


@dataclass(frozen=True)
class Kind:
    """A format kind.

    ``dtypes``: decoded dtypes a Format of this kind may have. ``decode(fmt, reader)`` -> flat
    (numel,) numpy array; ``parts(fmt, reader)`` -> the kind's entries of ``decode_parts``;
    ``summary(fmt)`` -> overrides of ``value_bits`` / ``sparse`` / ``index_bits`` / ``n_fillers``
    in :func:`~weightzip.codec.format_summary`; ``plan(fmt)`` -> ``{stream: (count, alphabet)}``
    that decoding will read, from the meta alone (alphabet: an int for integer streams,
    ``"float32"`` / ``"float16"`` / ``"float"`` (either) for float streams, ``"bytes"``), checked by
    :func:`~weightzip.codec.validate` before anything is decoded. Encoding: ``coders(ctx)`` (layout kinds) or
    ``candidates(ctx)`` (whole-tensor kinds), in the order they are tried. ``hint_kinds``: hint
    kinds this kind implements besides its own name (``uniform`` implements ``fixed_point``);
    ``hint_driven``: its candidates come from hint fields, so a malformed hint (KeyError,
    TypeError, ValueError, IndexError) rejects the candidate instead of raising; ``byte_streams``:
    its streams may be coded ``bytes``.
    """

    name: str
    dtypes: tuple
    decode: Callable[[Format, StreamReader], np.ndarray]
    parts: Callable[[Format, StreamReader], dict]
    summary: Callable[[Format], dict]
    plan: Callable[[Format], dict]
    coders: Callable[[EncodeContext], list] | None = None
    candidates: Callable[[EncodeContext], list] | None = None
    hint_kinds: tuple = ()
    hint_driven: bool = False
    byte_streams: bool = False

    def implements(self, hkind) -> bool:
        """Whether a hint of kind ``hkind`` asks for this kind."""
        return hkind == self.name or hkind in self.hint_kinds


_REGISTRY: dict[str, Kind] = {}


def register_kind(kind: Kind) -> Kind:
    """Add ``kind`` (its name must be new). Kinds are tried by ``encode`` in registration order,
    which also breaks ties between candidates of equal size (the earlier one is kept)."""
    if kind.name in _REGISTRY:
        raise ValueError(f"format kind {kind.name!r} is already registered")
    _REGISTRY[kind.name] = kind
    return kind


def get_kind(name) -> Kind | None:
    """The registered kind ``name`` or None."""
    return _REGISTRY.get(name) if isinstance(name, str) else None


def registered() -> tuple[Kind, ...]:
    """Every registered kind, in registration order."""
    return tuple(_REGISTRY.values())
