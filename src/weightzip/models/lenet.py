"""LeNet-300-100 and LeNet-5 (Caffe variant), the MNIST networks of Deep Compression.

Parameter counts at the default size (28 x 28 x 1 input, 10 classes):

    lenet300_100   784-300-100-10 fully connected, ReLU             266,610
    lenet5         conv5x5(20)-MP2-conv5x5(50)-MP2-FC500-ReLU-FC10  431,080

Both also run on 32 x 32 x 3 inputs (``in_channels=3, image_size=32``); the first fully
connected layer then grows to the flattened size.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..errors import InvalidModelError
from ..core.registry import register_model
from .common import (as_int_list, check_image_args, conv_out, pool_out, require_spatial)


class LeNet300100(nn.Module):
    """Fully connected ``in -> hidden[0] -> ... -> num_classes`` with ReLU between layers.

    ``forward(x [B, C, H, W] or [B, C*H*W]) -> logits [B, num_classes]``.
    Layers are ``fc1, fc2, ..., fc{n}`` (plain ``nn.Linear``) so that selection by name is easy.
    """

    def __init__(self, *, num_classes: int, in_features: int, hidden: Sequence[int]):
        super().__init__()
        sizes = [in_features, *hidden, num_classes]
        self.flatten = nn.Flatten()
        layers: list[nn.Module] = []
        for k, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
            layers.append(nn.Linear(fan_in, fan_out))
            if k < len(sizes) - 1:
                layers.append(nn.ReLU())
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(self.flatten(x))  # [B, num_classes]


class LeNet5(nn.Module):
    """Caffe's LeNet-5: conv5x5(c1) -> MP2 -> conv5x5(c2) -> MP2 -> FC(hidden) -> ReLU -> FC.

    As in Caffe's ``lenet_train_test.prototxt`` there is no nonlinearity after the two
    convolutions (max pooling is the only one), and the convolutions have no padding.
    ``forward(x [B, C, H, W]) -> logits [B, num_classes]``.
    """

    def __init__(self, *, num_classes: int, in_channels: int, image_size: int,
                 conv_channels: Sequence[int], hidden: int):
        super().__init__()
        c1, c2 = conv_channels
        size = pool_out(conv_out(image_size, 5))      # after conv1 + pool1
        require_spatial("lenet5", size, image_size, "after the first conv + pool")
        size = pool_out(conv_out(size, 5))            # after conv2 + pool2
        require_spatial("lenet5", size, image_size, "after the second conv + pool")
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, 5),            # [B, c1, S-4, S-4]
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 5),
            nn.MaxPool2d(2),                          # [B, c2, size, size]
        )
        self.flatten = nn.Flatten()
        self.classifier = nn.Sequential(
            nn.Linear(c2 * size * size, hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flatten(self.features(x)))  # [B, num_classes]


@register_model("lenet300_100")
def lenet300_100(*, num_classes: int = 10, in_channels: int = 1, image_size: int = 28,
                 hidden: Sequence[int] = (300, 100)) -> LeNet300100:
    """LeNet-300-100: ``C*S*S -> 300 -> 100 -> num_classes``, ReLU; 266,610 parameters on MNIST."""
    check_image_args("lenet300_100", num_classes, in_channels, image_size)
    return LeNet300100(num_classes=num_classes, in_features=in_channels * image_size ** 2,
                       hidden=as_int_list("lenet300_100", "hidden", hidden))


@register_model("lenet5")
def lenet5(*, num_classes: int = 10, in_channels: int = 1, image_size: int = 28,
           conv_channels: Sequence[int] = (20, 50), hidden: int = 500) -> LeNet5:
    """LeNet-5 (Caffe variant): 431,080 parameters on MNIST; 1,250 flat features on 3x32x32."""
    check_image_args("lenet5", num_classes, in_channels, image_size)
    channels = as_int_list("lenet5", "conv_channels", conv_channels)
    if len(channels) != 2:
        raise InvalidModelError(f"lenet5: conv_channels needs 2 values, got {channels!r}")
    return LeNet5(num_classes=num_classes, in_channels=in_channels, image_size=image_size,
                  conv_channels=channels, hidden=as_int_list("lenet5", "hidden", hidden)[0])


@register_model("lenet300_100_tiny")
def lenet300_100_tiny(**kwargs) -> LeNet300100:
    """LeNet-300-100 with hidden sizes (8, 8): 6,442 parameters on MNIST, for tests."""
    return lenet300_100(**{"hidden": (8, 8), **kwargs})


@register_model("lenet5_tiny")
def lenet5_tiny(**kwargs) -> LeNet5:
    """LeNet-5 with 4 and 8 conv channels and a 32-unit FC layer: 5,370 parameters on MNIST."""
    return lenet5(**{"conv_channels": (4, 8), "hidden": 32, **kwargs})
