"""A configurable multilayer perceptron for image inputs.

    flatten -> [Linear -> (BatchNorm1d) -> activation -> (Dropout)] x depth -> Linear(num_classes)

Input features = ``in_channels * image_size ** 2``. Hidden widths are either an explicit list
``widths=[2048, 2048, 2048]`` or ``width`` repeated ``depth`` times. Examples:
the loss-aware-binarization MNIST net is ``mlp(width=2048, depth=3, batch_norm=True)``.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..errors import InvalidModelError
from ..core.registry import register_model
from .common import as_int_list, check_dropout, check_image_args, make_activation


class MLP(nn.Module):
    """``forward(x [B, C, H, W] or [B, C*H*W]) -> logits [B, num_classes]``.

    Hidden layer ``k`` is ``self.layers[k]``, an ``nn.Sequential`` of ``fc`` (Linear), optionally
    ``bn`` (BatchNorm1d), ``act``, optionally ``drop``; the output layer is ``self.head``.
    """

    def __init__(self, *, in_features: int, widths: Sequence[int], num_classes: int,
                 batch_norm: bool = False, dropout: float = 0.0, activation: str = "relu"):
        super().__init__()
        self.flatten = nn.Flatten()
        blocks = []
        fan_in = in_features
        for w in widths:
            block = nn.Sequential()
            block.add_module("fc", nn.Linear(fan_in, w))
            if batch_norm:
                block.add_module("bn", nn.BatchNorm1d(w))
            block.add_module("act", make_activation(activation))
            if dropout > 0:
                block.add_module("drop", nn.Dropout(dropout))
            blocks.append(block)
            fan_in = w
        self.layers = nn.Sequential(*blocks)
        self.head = nn.Linear(fan_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.layers(self.flatten(x)))  # [B, num_classes]


@register_model("mlp")
def mlp(*, num_classes: int = 10, in_channels: int = 1, image_size: int = 28,
        widths: Sequence[int] | None = None, width: int = 256, depth: int = 2,
        batch_norm: bool = False, dropout: float = 0.0, activation: str = "relu") -> MLP:
    """MLP with hidden ``widths`` (or ``[width] * depth``; ``depth=0`` is logistic regression).

    Defaults (MNIST, two hidden layers of 256, ReLU): 269,322 parameters.
    """
    check_image_args("mlp", num_classes, in_channels, image_size)
    check_dropout("mlp", dropout)
    if widths is None:
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
            raise InvalidModelError(f"mlp: depth must be an int >= 0, got {depth!r}")
        hidden = as_int_list("mlp", "width", width) * depth
    else:
        hidden = as_int_list("mlp", "widths", widths)
    return MLP(in_features=in_channels * image_size ** 2, widths=hidden, num_classes=num_classes,
               batch_norm=bool(batch_norm), dropout=float(dropout), activation=activation)


@register_model("mlp_tiny")
def mlp_tiny(**kwargs) -> MLP:
    """MLP with two hidden layers of 8 and batch norm: 6,474 parameters on MNIST, for tests."""
    return mlp(**{"width": 8, "depth": 2, "batch_norm": True, **kwargs})
