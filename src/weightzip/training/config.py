"""Training settings (:class:`TrainConfig`, validated), device choice and seeding."""
from __future__ import annotations

import random
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..errors import WeightzipError


class TrainConfig(BaseModel):
    """Everything that decides how a model is trained. Validated; unknown fields are refused.

    Learning-rate schedules are described in :mod:`weightzip.primitives.schedule`; ``gamma``
    is the decay factor of ``step``/``multistep`` and the factor applied on a plateau (use
    0.25 for the PyTorch word-LM rule "divide by 4").
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    epochs: int = Field(10, ge=1, description="number of passes over the training set")
    lr: float = Field(0.01, gt=0, description="base learning rate")
    optimizer: Literal["sgd", "adam"] = "sgd"
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum")
    weight_decay: float = Field(0.0, ge=0, description="L2 penalty (coupled, as torch.optim)")
    nesterov: bool = False
    betas: tuple[float, float] = Field((0.9, 0.999), description="Adam betas")
    schedule: Literal["constant", "step", "multistep", "cosine", "plateau"] = "constant"
    milestones: list[float] = Field(default_factory=list, description="epochs where multistep decays")
    gamma: float = Field(0.1, gt=0, le=1, description="decay factor (step, multistep, plateau)")
    step_size: float = Field(1, gt=0, description="epochs between decays of the 'step' schedule")
    warmup_epochs: float = Field(0.0, ge=0, description="linear warmup length, in epochs")
    warmup_start_factor: float = Field(0.1, gt=0, le=1, description="lr fraction on the first warmup step")
    min_lr: float = Field(0.0, ge=0, description="floor of the cosine schedule")
    plateau_patience: int = Field(0, ge=0, description="epochs without improvement before a plateau decay")
    loss: Literal["ce", "squared_hinge"] = "ce"
    grad_clip: float | None = Field(None, gt=0, description="clip the global gradient L2 norm to this")
    precision: Literal["fp32", "bf16"] = Field(
        "fp32", description="'bf16': forward and loss under torch.autocast(bfloat16) (weights, gradients and "
                            "optimizer state stay fp32); ~2x faster on CPUs with AVX512_BF16 / AMX")
    batch_size: int = Field(128, ge=1, description="training batch size (used by whoever builds loaders)")
    seed: int = Field(0, ge=0)
    device: str | None = Field(None, description="'cpu', 'cuda', 'cuda:1', ...; None or 'auto': cuda if available")
    log_every: int = Field(100, ge=1, description="log the running train loss every N steps")
    bptt: int | None = Field(None, ge=1, description="LM: split longer windows into chunks of this many steps")
    max_steps_per_epoch: int | None = Field(None, ge=1, description="stop each epoch after N optimizer steps")
    progress: bool = Field(True, description="tqdm progress bars (only shown on a terminal)")
    test_at_end: bool = Field(True, description="evaluate loaders.test once after the last epoch")
    distributed: bool | None = Field(
        None, description="None: data-parallel (DDP, weightzip.training.distributed) when torch.distributed is "
                          "initialized with several processes; False: train this process alone; True: require it")

    @field_validator("milestones")
    @classmethod
    def _sorted_milestones(cls, v: list[float]) -> list[float]:
        if any(m <= 0 for m in v):
            raise ValueError(f"milestones must be positive epochs, got {v}")
        return sorted(v)

    @model_validator(mode="after")
    def _check_schedule(self) -> "TrainConfig":
        if self.schedule == "multistep" and not self.milestones:
            raise ValueError("schedule 'multistep' needs milestones, e.g. milestones=[15, 25]")
        if self.nesterov and (self.optimizer != "sgd" or self.momentum == 0):
            raise ValueError("nesterov=True needs optimizer='sgd' and momentum > 0")
        return self


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None``/``"auto"`` -> ``cuda`` when available, else ``cpu``; refuses an absent GPU."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise WeightzipError(f"device {str(device)!r} requested but CUDA is not available; use --device cpu")
    return dev


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global RNG and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
