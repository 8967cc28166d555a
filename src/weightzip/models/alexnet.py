"""AlexNet sized for CIFAR-10 (32 x 32 inputs).

ImageNet AlexNet's five convolutions (64, 192, 384, 256, 256 channels, as in torchvision) with
small kernels and three 2 x 2 max pools, then a fully connected head:

    conv5x5(64)  -ReLU-MP2    32 -> 16
    conv5x5(192) -ReLU-MP2    16 -> 8
    conv3x3(384) -ReLU
    conv3x3(256) -ReLU
    conv3x3(256) -ReLU-MP2     8 -> 4      flatten 256 * 4 * 4 = 4096
    Dropout-FC(1024)-ReLU-Dropout-FC(1024)-ReLU-FC(num_classes)

The default head is the smaller ``fc_sizes=(1024, 1024)``: 7,706,442 parameters in all, 68 %
of them in the FC layers, so that CIFAR runs fit a CPU budget. ``fc_sizes=(4096, 4096)`` gives
the original AlexNet head: 36,054,858 parameters, 93 % in FC layers (as in Deep Compression).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..core.registry import register_model
from .common import (as_int_list, check_dropout, check_image_args, check_positive, conv_out,
                     pool_out, require_spatial, scaled)

_CONV = (64, 192, 384, 256, 256)


class AlexNetCIFAR(nn.Module):
    """``forward(x [B, C, H, W]) -> logits [B, num_classes]``; ``features`` then ``classifier``."""

    def __init__(self, *, num_classes: int, in_channels: int, image_size: int,
                 channels: Sequence[int], fc_sizes: Sequence[int], dropout: float):
        super().__init__()
        c1, c2, c3, c4, c5 = channels
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c2, c3, 3, padding=1), nn.ReLU(),
            nn.Conv2d(c3, c4, 3, padding=1), nn.ReLU(),
            nn.Conv2d(c4, c5, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        size = image_size
        for _ in range(3):  # padded convs keep the size, each pool halves it (floor)
            size = pool_out(conv_out(size, 3, padding=1))
            require_spatial("alexnet_cifar", size, image_size, "after a max pool")
        self.flatten = nn.Flatten()
        head: list[nn.Module] = []
        fan_in = c5 * size * size
        for w in fc_sizes:
            head += [nn.Dropout(dropout), nn.Linear(fan_in, w), nn.ReLU()]
            fan_in = w
        head.append(nn.Linear(fan_in, num_classes))
        self.classifier = nn.Sequential(*head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flatten(self.features(x)))  # [B, num_classes]


@register_model("alexnet_cifar")
def alexnet_cifar(*, num_classes: int = 10, in_channels: int = 3, image_size: int = 32,
                  width: float = 1.0, fc_sizes: Sequence[int] = (1024, 1024),
                  dropout: float = 0.5) -> AlexNetCIFAR:
    """CIFAR AlexNet; ``width`` scales the conv channels, ``fc_sizes`` sets the hidden FC layers."""
    check_image_args("alexnet_cifar", num_classes, in_channels, image_size)
    check_positive("alexnet_cifar", width=width)
    check_dropout("alexnet_cifar", dropout)
    fc = [] if fc_sizes in ((), []) else as_int_list("alexnet_cifar", "fc_sizes", fc_sizes)
    return AlexNetCIFAR(num_classes=num_classes, in_channels=in_channels, image_size=image_size,
                        channels=[scaled(c, width) for c in _CONV], fc_sizes=fc,
                        dropout=float(dropout))


@register_model("alexnet_cifar_tiny")
def alexnet_cifar_tiny(**kwargs) -> AlexNetCIFAR:
    """CIFAR AlexNet at width 1/32 (2-12 channels) with a 16-16 head: 5,080 parameters."""
    return alexnet_cifar(**{"width": 1 / 32, "fc_sizes": (16, 16), **kwargs})
