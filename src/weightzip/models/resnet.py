"""CIFAR ResNets of He et al. 2016 (Sec. 4.2): ResNet-20/32/56 with the option-A shortcut.

Depth ``6n + 2``: conv3x3(16) -> BN -> ReLU, three stages of ``n`` basic blocks with 16, 32, 64
channels (the first block of stages 2 and 3 has stride 2), global average pooling, FC(64 -> 10).

Shortcut choice: **option A** (as in the paper's CIFAR experiments). When a block changes the
shape, the identity shortcut subsamples by 2 (``x[:, :, ::2, ::2]``) and pads the new channels
with zeros, so shortcuts add no parameters. Parameter counts: resnet20 269,722 (0.27 M),
resnet32 464,154, resnet56 853,018. Convolutions have no bias (BN follows each one).
``width`` multiplies the 16/32/64 channels.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InvalidModelError
from ..core.registry import register_model
from .common import check_image_args, check_positive, scaled


class PadShortcut(nn.Module):
    """Option-A shortcut: ``x[:, :, ::s, ::s]`` then zero-pad channels ``c_in -> c_out``.

    ``[B, c_in, H, W] -> [B, c_out, ceil(H/s), ceil(W/s)]``; no parameters.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, ::self.stride, ::self.stride]                   # [B, c_in, H/s, W/s]
        extra = self.out_channels - self.in_channels
        before = extra // 2
        return F.pad(x, (0, 0, 0, 0, before, extra - before))      # [B, c_out, H/s, W/s]

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, stride={self.stride}"


class BasicBlock(nn.Module):
    """``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``; conv1 carries the stride."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu2 = nn.ReLU()
        if stride != 1 or in_channels != out_channels:
            self.shortcut: nn.Module = PadShortcut(in_channels, out_channels, stride)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))     # [B, c_out, H/s, W/s]
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """``forward(x [B, C, H, W]) -> logits [B, num_classes]``.

    Modules: ``conv1, bn1, relu, layer1, layer2, layer3`` (``nn.Sequential`` of blocks),
    ``avgpool`` (adaptive, so any input size works), ``fc``.
    """

    def __init__(self, *, blocks_per_stage: int, num_classes: int, in_channels: int,
                 width: float):
        super().__init__()
        c1, c2, c3 = (scaled(c, width) for c in (16, 32, 64))
        self.conv1 = nn.Conv2d(in_channels, c1, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c1)
        self.relu = nn.ReLU()
        self.layer1 = self._stage(c1, c1, blocks_per_stage, stride=1)
        self.layer2 = self._stage(c1, c2, blocks_per_stage, stride=2)
        self.layer3 = self._stage(c2, c3, blocks_per_stage, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(c3, num_classes)
        for m in self.modules():  # He et al. initialization
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    @staticmethod
    def _stage(c_in: int, c_out: int, n: int, stride: int) -> nn.Sequential:
        blocks = [BasicBlock(c_in, c_out, stride)]
        blocks += [BasicBlock(c_out, c_out, 1) for _ in range(n - 1)]
        return nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))         # [B, c1, H, W]
        x = self.layer3(self.layer2(self.layer1(x)))   # [B, c3, H/4, W/4]
        return self.fc(self.flatten(self.avgpool(x)))  # [B, num_classes]


def resnet_cifar(*, depth: int, num_classes: int = 10, in_channels: int = 3,
                 image_size: int = 32, width: float = 1.0) -> CifarResNet:
    """CIFAR ResNet of depth ``6n + 2`` (20, 32, 44, 56, 110, ...)."""
    name = f"resnet{depth}"
    check_image_args(name, num_classes, in_channels, image_size)
    check_positive(name, width=width)
    if (depth - 2) % 6 or depth < 8:
        raise InvalidModelError(f"resnet: depth must be 6n + 2 with n >= 1 (8, 14, 20, ...), "
                                f"got {depth}")
    # image_size only has to be positive: adaptive pooling makes the head size-independent
    return CifarResNet(blocks_per_stage=(depth - 2) // 6, num_classes=num_classes,
                       in_channels=in_channels, width=float(width))


@register_model("resnet20")
def resnet20(*, num_classes: int = 10, in_channels: int = 3, image_size: int = 32,
             width: float = 1.0) -> CifarResNet:
    """ResNet-20 (3 blocks per stage), 269,722 parameters."""
    return resnet_cifar(depth=20, num_classes=num_classes, in_channels=in_channels,
                        image_size=image_size, width=width)


@register_model("resnet32")
def resnet32(*, num_classes: int = 10, in_channels: int = 3, image_size: int = 32,
             width: float = 1.0) -> CifarResNet:
    """ResNet-32 (5 blocks per stage), 464,154 parameters."""
    return resnet_cifar(depth=32, num_classes=num_classes, in_channels=in_channels,
                        image_size=image_size, width=width)


@register_model("resnet56")
def resnet56(*, num_classes: int = 10, in_channels: int = 3, image_size: int = 32,
             width: float = 1.0) -> CifarResNet:
    """ResNet-56 (9 blocks per stage), 853,018 parameters."""
    return resnet_cifar(depth=56, num_classes=num_classes, in_channels=in_channels,
                        image_size=image_size, width=width)


@register_model("resnet_tiny")
def resnet_tiny(*, num_classes: int = 10, in_channels: int = 3, image_size: int = 32,
                width: float = 0.25) -> CifarResNet:
    """ResNet-8 (1 block per stage) at width 0.25 (4/8/16 channels): 5,006 parameters."""
    return resnet_cifar(depth=8, num_classes=num_classes, in_channels=in_channels,
                        image_size=image_size, width=width)
