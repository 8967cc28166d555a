"""A tiny, quickly learnable classification problem shared by the method tests."""
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


@dataclass
class ToyLoaders:
    train: Any
    val: Any
    test: Any
    task: str = "classify"
    info: dict = field(default_factory=lambda: {"num_classes": 3})


def toy_loaders(n=600, dim=16, classes=3, seed=0, batch_size=50) -> ToyLoaders:
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(classes, dim, generator=g) * 1.5

    def split(m, off):
        gg = torch.Generator().manual_seed(seed + off)
        y = torch.randint(0, classes, (m,), generator=gg)
        x = centers[y] + torch.randn(m, dim, generator=gg)
        return TensorDataset(x, y)

    mk = lambda ds, sh: DataLoader(ds, batch_size=batch_size, shuffle=sh)
    return ToyLoaders(mk(split(n, 1), True), mk(split(200, 2), False), mk(split(200, 3), False))


def toy_model(seed=0, dim=16, hidden=32, classes=3) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, classes))


def trained_toy(loaders=None, epochs=3):
    from weightzip.training.trainer import Trainer

    loaders = loaders or toy_loaders()
    model = toy_model()
    Trainer(model, {"epochs": epochs, "lr": 0.05, "optimizer": "sgd", "momentum": 0.9, "progress": False,
                    "test_at_end": False}, loaders).fit()
    return model, loaders
