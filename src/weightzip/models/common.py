"""Small helpers shared by the zoo: argument checks, output-size arithmetic, activations.

Flatten sizes are computed by arithmetic (not by a dummy forward), so a constructor never runs
BatchNorm on a batch of one and the layer sizes depend only on the arguments.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

from torch import nn

from ..errors import InvalidModelError, UnknownNameError

# name -> constructor; names (not modules) are taken so that ``model.wz_config`` stays JSON-able.
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": lambda: nn.ReLU(),
    "relu6": lambda: nn.ReLU6(),
    "leaky_relu": lambda: nn.LeakyReLU(0.01),
    "elu": lambda: nn.ELU(),
    "gelu": lambda: nn.GELU(),
    "tanh": lambda: nn.Tanh(),
    "sigmoid": lambda: nn.Sigmoid(),
    "hardtanh": lambda: nn.Hardtanh(),
    "identity": lambda: nn.Identity(),
}


def make_activation(name: str) -> nn.Module:
    """A fresh activation module for ``name`` (one of :data:`ACTIVATIONS`)."""
    if name not in ACTIVATIONS:
        raise UnknownNameError(
            f"unknown activation {name!r}; valid activations: {', '.join(sorted(ACTIVATIONS))}"
        )
    return ACTIVATIONS[name]()


def check_image_args(model: str, num_classes: int, in_channels: int, image_size: int) -> None:
    """Raise :class:`InvalidModelError` unless the three image arguments are positive ints."""
    for arg, value in (("num_classes", num_classes), ("in_channels", in_channels),
                       ("image_size", image_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidModelError(
                f"{model}: {arg} must be a positive int, got {value!r} "
                f"(e.g. num_classes=10, in_channels=1 and image_size=28 for MNIST)"
            )


def check_positive(model: str, **values: float) -> None:
    """Raise :class:`InvalidModelError` for any value that is not > 0 (widths, sizes)."""
    for arg, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise InvalidModelError(f"{model}: {arg} must be > 0, got {value!r}")


def check_dropout(model: str, p: float) -> None:
    if not isinstance(p, (int, float)) or not 0.0 <= p < 1.0:
        raise InvalidModelError(f"{model}: dropout must be in [0, 1), got {p!r}")


def as_int_list(model: str, arg: str, values: Sequence[int] | int) -> list[int]:
    """``values`` as a list of positive ints (a single int becomes a one-element list)."""
    if isinstance(values, int):
        values = [values]
    out = list(values)
    for v in out:
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise InvalidModelError(f"{model}: {arg} must hold positive ints, got {list(values)!r}")
    return out


def scaled(channels: int, width: float) -> int:
    """Channels after a width multiplier: ``max(1, round(channels * width))``."""
    return max(1, int(round(channels * width)))


def conv_out(size: int, kernel: int, stride: int = 1, padding: int = 0) -> int:
    """Spatial output size of a convolution: ``floor((size + 2 p - k) / s) + 1``."""
    return (size + 2 * padding - kernel) // stride + 1


def pool_out(size: int, kernel: int = 2, stride: int | None = None, ceil_mode: bool = False) -> int:
    """Spatial output size of a max pool (PyTorch rule, no padding)."""
    stride = kernel if stride is None else stride
    if ceil_mode:
        out = math.ceil((size - kernel) / stride) + 1
        if (out - 1) * stride >= size:  # the last window must start inside the input
            out -= 1
        return out
    return (size - kernel) // stride + 1


def require_spatial(model: str, size: int, image_size: int, where: str) -> None:
    """Raise :class:`InvalidModelError` when the feature map has shrunk to nothing."""
    if size < 1:
        raise InvalidModelError(
            f"{model}: image_size={image_size} is too small, the feature map vanishes {where}; "
            f"use a larger image_size"
        )
