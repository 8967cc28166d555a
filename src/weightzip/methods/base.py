"""What every compression method is: a typed config and one ``apply`` on the model.

    @register_method("prune_magnitude")
    class MagnitudePrune(Method):
        class Config(MethodConfig):
            sparsity: float = 0.9
        def apply(self, model, ctx):
            for mname, mod, t in select(model, self.config.select): ...
            return {"sparsity": ...}

A method modifies the model ONLY through :mod:`weightzip.core.parametrize`, trains only through
``ctx.fit`` (the Trainer with callbacks), and never imports ``codec`` or ``runtime``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence

from pydantic import BaseModel, ConfigDict
from torch import nn

from ..core.select import Selection


class MethodConfig(BaseModel):
    """Base config of a stage. ``method`` names the registered method; ``select`` the tensors."""

    model_config = ConfigDict(extra="forbid")

    method: str
    label: str | None = None
    select: Selection = Selection()


@dataclass
class StageContext:
    """What a stage may use: data, evaluation, training, and state shared across stages.

    ``state`` holds tensors or plain values that later stages need (for example the
    accumulated-gradient importance, ``state["importance"] = {"fc1.weight": Tensor}``); the
    pipeline saves it in stage checkpoints.
    """

    loaders: Any  # weightzip.data.Loaders-like: .train .val .test .task .info
    device: str = "cpu"
    workdir: Path | None = None
    state: dict[str, Any] = field(default_factory=dict)
    log: Callable[[str], None] = print
    seed: int = 0
    progress: bool = False

    @property
    def task(self) -> str:
        return getattr(self.loaders, "task", "classify")

    def evaluate(self, model: nn.Module, split: str = "val") -> dict[str, float]:
        """Loss and accuracy (or perplexity) of ``model`` on a split (val falls back to test)."""
        from ..training.evaluate import evaluate
        loader = getattr(self.loaders, split, None)
        if loader is None and split == "val":
            loader = self.loaders.test
        return evaluate(model, loader, self.task, self.device)

    def fit(self, model: nn.Module, train: Any, callbacks: Sequence[Any] = (), optimizer=None,
            tag: str = "fit") -> dict[str, Any]:
        """Train ``model`` with a ``TrainConfig`` (or dict) and callbacks; returns the history."""
        from ..training.config import TrainConfig
        from ..training.trainer import Trainer
        cfg = train if isinstance(train, TrainConfig) else TrainConfig(**dict(train or {}))
        if cfg.device is None or cfg.device == "cpu":
            cfg = cfg.model_copy(update={"device": self.device})
        updates = {}
        if "seed" not in (train if isinstance(train, dict) else {}):
            updates["seed"] = self.seed
        if not self.progress:
            updates["progress"] = False
        cfg = cfg.model_copy(update=updates)
        trainer = Trainer(model, cfg, self.loaders, callbacks=list(callbacks), optimizer=optimizer)
        t0 = time.perf_counter()
        out = trainer.fit()
        self.log(f"  {tag}: {cfg.epochs} epoch(s) in {time.perf_counter() - t0:.1f}s")
        return out


class Method:
    """Base class of registered methods. ``Config`` is a :class:`MethodConfig` subclass."""

    Config: ClassVar[type[MethodConfig]] = MethodConfig
    name: ClassVar[str] = ""

    def __init__(self, config: MethodConfig):
        self.config = config

    def apply(self, model: nn.Module, ctx: StageContext) -> dict[str, Any]:  # pragma: no cover
        raise NotImplementedError
