"""VGG networks for CIFAR-10: VGG-16 with batch norm, and the small VGG of BinaryConnect / LAB.

``vgg16_cifar``: the 13 conv layers of VGG-16 (configuration D), each conv3x3 -> BN -> ReLU,
five 2 x 2 max pools, then global average pooling and ONE linear layer 512 -> num_classes (the
usual CIFAR head, as in kuangliu/pytorch-cifar; the ImageNet 4096-4096 head is not used):
14,728,266 parameters at the default size. The max pools use ``ceil_mode=True`` so that
28 x 28 inputs work (28 -> 14 -> 7 -> 4 -> 2 -> 1); for 32 x 32 it is the same as floor mode.

``vgg_small``: 2x128C3-MP-2x256C3-MP-2x512C3-MP-1024FC-1024FC-10, conv -> BN -> ReLU and
FC -> BN -> ReLU, a plain linear output layer; 14,033,546 parameters at 32 x 32 x 3.

Both take a ``width`` multiplier (conv channels and, for ``vgg_small``, the FC widths are
multiplied by it and rounded, at least 1). Convolutions keep their bias (as in torchvision).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..core.registry import register_model
from .common import (check_image_args, check_positive, conv_out, pool_out, require_spatial,
                     scaled)

VGG16_CFG: tuple = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M",
                    512, 512, 512, "M", 512, 512, 512, "M")
VGG_SMALL_CFG: tuple = (128, 128, "M", 256, 256, "M", 512, 512, "M")


def make_vgg_features(cfg: Sequence, in_channels: int, width: float,
                      ceil_mode: bool) -> tuple[nn.Sequential, int]:
    """conv3x3(pad 1) -> BN -> ReLU for each int in ``cfg``, MaxPool2d(2) for each ``"M"``.

    Returns the ``nn.Sequential`` and the number of output channels.
    """
    layers: list[nn.Module] = []
    c = in_channels
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(2, ceil_mode=ceil_mode))
        else:
            out = scaled(v, width)
            layers += [nn.Conv2d(c, out, 3, padding=1), nn.BatchNorm2d(out), nn.ReLU()]
            c = out
    return nn.Sequential(*layers), c


def vgg_feature_size(cfg: Sequence, image_size: int, ceil_mode: bool, model: str) -> int:
    """Spatial size after the features of ``cfg`` (padded 3x3 convs keep it, pools halve it)."""
    size = image_size
    for v in cfg:
        size = pool_out(size, 2, ceil_mode=ceil_mode) if v == "M" else conv_out(size, 3, 1, 1)
        require_spatial(model, size, image_size, "after a max pool")
    return size


class VGG16CIFAR(nn.Module):
    """``forward(x [B, C, H, W]) -> logits [B, num_classes]``: features -> avgpool -> classifier."""

    def __init__(self, *, num_classes: int, in_channels: int, image_size: int, width: float):
        super().__init__()
        vgg_feature_size(VGG16_CFG, image_size, True, "vgg16_cifar")
        self.features, c = make_vgg_features(VGG16_CFG, in_channels, width, ceil_mode=True)
        self.avgpool = nn.AdaptiveAvgPool2d(1)  # [B, c, 1, 1] whatever the input size
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flatten(self.avgpool(self.features(x))))  # [B, num_classes]


class VGGSmall(nn.Module):
    """``forward(x [B, C, H, W]) -> logits [B, num_classes]``: features -> flatten -> classifier."""

    def __init__(self, *, num_classes: int, in_channels: int, image_size: int, width: float,
                 fc_size: int):
        super().__init__()
        size = vgg_feature_size(VGG_SMALL_CFG, image_size, False, "vgg_small")
        self.features, c = make_vgg_features(VGG_SMALL_CFG, in_channels, width, ceil_mode=False)
        self.flatten = nn.Flatten()
        fc = scaled(fc_size, width)
        self.classifier = nn.Sequential(
            nn.Linear(c * size * size, fc), nn.BatchNorm1d(fc), nn.ReLU(),
            nn.Linear(fc, fc), nn.BatchNorm1d(fc), nn.ReLU(),
            nn.Linear(fc, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flatten(self.features(x)))  # [B, num_classes]


@register_model("vgg16_cifar")
def vgg16_cifar(*, num_classes: int = 10, in_channels: int = 3, image_size: int = 32,
                width: float = 1.0) -> VGG16CIFAR:
    """VGG-16 with BN and a 512 -> num_classes head; ``width`` scales every conv."""
    check_image_args("vgg16_cifar", num_classes, in_channels, image_size)
    check_positive("vgg16_cifar", width=width)
    return VGG16CIFAR(num_classes=num_classes, in_channels=in_channels, image_size=image_size,
                      width=float(width))


@register_model("vgg_small")
def vgg_small(*, num_classes: int = 10, in_channels: int = 3, image_size: int = 32,
              width: float = 1.0, fc_size: int = 1024) -> VGGSmall:
    """2x128C3-MP-2x256C3-MP-2x512C3-MP-1024FC-1024FC-10 with BN; ``width`` scales all layers."""
    check_image_args("vgg_small", num_classes, in_channels, image_size)
    check_positive("vgg_small", width=width, fc_size=fc_size)
    return VGGSmall(num_classes=num_classes, in_channels=in_channels, image_size=image_size,
                    width=float(width), fc_size=int(fc_size))


@register_model("vgg16_cifar_tiny")
def vgg16_cifar_tiny(**kwargs) -> VGG16CIFAR:
    """VGG-16 at width 1/32 (2 to 16 channels, 13 convs): 14,984 parameters, for tests."""
    return vgg16_cifar(**{"width": 1 / 32, **kwargs})


@register_model("vgg_small_tiny")
def vgg_small_tiny(**kwargs) -> VGGSmall:
    """Small VGG at width 1/64 (2 to 8 channels, 16-unit FC): 3,824 parameters, for tests."""
    return vgg_small(**{"width": 1 / 64, **kwargs})
