"""The encoded tensor :class:`Format`, the codec's limits, error helpers and small array helpers.

A :class:`Format` is ``kind`` + ``shape`` + ``dtype`` + a JSON-able ``meta`` + named byte
``streams``; its size is ``nbytes = sum(len(stream))``. Which kinds exist and what their streams
hold is in :mod:`.kinds`; the byte layout of every kind and stream is specified in
``docs/file-format.md``.

**Signed zero:** ``-0.0`` is treated as ``0.0`` everywhere: :func:`canonical` turns it into
``+0.0`` (``w + 0.0``) before encoding, so ``decode(encode(w))`` has ``+0.0`` where ``w`` had
``-0.0`` (``torch.equal`` holds; the bit patterns of every other element are identical).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import WeightzipFormatError
from .bitpack import bits_for_alphabet

FLOAT_DTYPES = ("float32", "float16", "bfloat16")
RAW_DTYPES = ("bool", "uint8", "int8", "int16", "int32", "int64")
MAX_NUMEL = 2**31 - 1
MAX_CODEBOOK = 1 << 16

DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "bool": 1, "uint8": 1, "int8": 1, "int16": 2,
               "int32": 4, "int64": 8}

TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
                "bool": torch.bool, "uint8": torch.uint8, "int8": torch.int8, "int16": torch.int16,
                "int32": torch.int32, "int64": torch.int64}


@dataclass(eq=False)
class Format:
    """One encoded tensor.

    ``kind`` in :data:`weightzip.codec.KINDS`; ``shape`` the original shape; ``dtype`` the decoded
    dtype (``float32`` for every float kind unless the source was float16/bfloat16); ``meta``
    JSON-able parameters (layout, counts, ``stream_info``); ``streams`` name -> bytes. ``name``
    (not stored in the file's format entry, set by the container) is used in error messages.
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

    @property
    def decoded_nbytes(self) -> int:
        """Bytes of the decoded tensor: ``numel x element size of dtype``."""
        return self.numel * DTYPE_BYTES.get(self.dtype, 4)

    def __repr__(self) -> str:
        return (f"Format(kind={self.kind!r}, shape={tuple(self.shape)}, dtype={self.dtype!r}, "
                f"sparse={self.meta.get('sparse')!r}, nbytes={self.nbytes})")


class Reject(Exception):
    """A candidate encoding does not apply to this tensor (the reason is recorded)."""


# =============================================================================================
# errors while reading a Format


def location(fmt: Format, stream: str | None = None) -> str:
    """``"tensor 'fc1.weight', stream 'codes'"`` (the prefix of every format error)."""
    t = f"tensor {fmt.name!r}" if fmt.name else "tensor"
    return f"{t}, stream {stream!r}" if stream else t


def bad(fmt: Format, msg: str, stream: str | None = None) -> WeightzipFormatError:
    """The error to raise for a malformed ``fmt`` (names the tensor and the stream)."""
    return WeightzipFormatError(f"{location(fmt, stream)}: {msg}")


def is_int(x) -> bool:
    """A JSON integer (``bool`` is not one)."""
    return isinstance(x, int) and not isinstance(x, bool)


def meta_int(fmt: Format, d: dict, key: str, lo: int = 0, hi: int = MAX_NUMEL, where: str = "meta") -> int:
    """Read an int field of a meta dict, range-checked to ``[lo, hi]``."""
    v = d.get(key) if isinstance(d, dict) else None
    if not is_int(v) or not lo <= v <= hi:
        raise bad(fmt, f"{where}[{key!r}] must be an integer in [{lo}, {hi}], got {v!r}")
    return v


# =============================================================================================
# array helpers


def to_numpy(x, dtype=None) -> np.ndarray:
    """A tensor / array-like as a numpy array (bfloat16 tensors become float32)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.dtype == torch.bfloat16:
            x = x.float()
        x = x.numpy()
    a = np.asarray(x)
    return a.astype(dtype) if dtype is not None else a


def bits_range(lo: int, hi: int) -> int:
    """Bits of an offset code for integers in ``[lo, hi]``: ``ceil(log2(hi - lo + 1))``."""
    return bits_for_alphabet(int(hi) - int(lo) + 1)


def canonical(x: np.ndarray) -> np.ndarray:
    """float32 copy with -0.0 turned into +0.0 (IEEE: -0.0 + 0.0 = +0.0)."""
    return np.asarray(x, dtype=np.float32) + np.float32(0.0)
