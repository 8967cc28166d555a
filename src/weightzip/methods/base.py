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

Data is optional: post-training stages (pruning by magnitude, k-means / PQ sharing without a
fine-tune, uniform quantization) run on the weights alone. :meth:`Method.needs_data` says which
splits a configured stage reads; the pipeline checks every stage against the loaders it was
given before running any, and ``ctx.evaluate`` without validation data returns
:data:`NO_VALIDATION` instead of numbers.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence

from pydantic import BaseModel, ConfigDict
from torch import nn

from ..core.select import Selection
from ..errors import MissingDataError

NO_VALIDATION: dict[str, str] = {"skipped": "no validation data"}
"""What ``ctx.evaluate`` returns (a copy of) when there is no validation (or test) loader."""


def missing_data_message(stage: str | None, split: str, why: str) -> str:
    """The error text for a stage that needs ``split`` data it was not given: what, and how to fix it."""
    where = stage or "this stage"
    kind = "training" if split == "train" else "validation" if split == "val" else f"{split!r}"
    fix = ("pass loaders: wz.compress(model, recipe, train_loader, val_loader) (or loaders=...); "
           "on the command line: --data DATASET")
    if split == "train":
        fix += f"; or remove the training / fine-tune block (`train:` / `finetune:`) from {where} of the recipe"
    return f"{where} needs {kind} data ({why}) but no {split} loader was given; {fix}"


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

    loaders: Any = None  # weightzip.data.Loaders-like: .train .val .test .task .info (each may be None)
    device: str = "cpu"
    workdir: Path | None = None
    state: dict[str, Any] = field(default_factory=dict)
    log: Callable[[str], None] = print
    seed: int = 0
    progress: bool = False
    stage: str | None = None  # "stage 2 (kmeans_share)" while the pipeline runs it; errors name it
    workers: int | None = None  # threads of a post-training stage's per-tensor work; None: every usable core

    @property
    def n_workers(self) -> int:
        """``workers``, or the cores this process may run on."""
        import os

        if self.workers is not None:
            return max(1, int(self.workers))
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)

    @property
    def task(self) -> str:
        return getattr(self.loaders, "task", None) or "classify"

    def loader(self, split: str) -> Any | None:
        """The loader of ``split`` (``train``, ``val``, ``test``), or None; ``val`` falls back to ``test``."""
        loader = getattr(self.loaders, split, None)
        if loader is None and split == "val":
            loader = getattr(self.loaders, "test", None)
        return loader

    def require(self, split: str, why: str) -> Any:
        """The loader of ``split``, or a :class:`~weightzip.errors.MissingDataError` naming the
        stage, what it needs the data for (``why``) and how to fix it."""
        loader = self.loader(split)
        if loader is None:
            raise MissingDataError(missing_data_message(self.stage, split, why))
        return loader

    def evaluate(self, model: nn.Module, split: str = "val") -> dict[str, Any]:
        """Loss and accuracy (or perplexity) of ``model`` on a split (val falls back to test).

        Without such a loader (post-training compression with no data) evaluation is skipped:
        a copy of :data:`NO_VALIDATION`, ``{"skipped": "no validation data"}``, not numbers.
        """
        from ..training.evaluate import evaluate
        loader = self.loader(split)
        if loader is None:
            return dict(NO_VALIDATION) if split == "val" else {"skipped": f"no {split} data"}
        return evaluate(model, loader, self.task, self.device)

    def fit(self, model: nn.Module, train: Any, callbacks: Sequence[Any] = (), optimizer=None,
            tag: str = "fit") -> dict[str, Any]:
        """Train ``model`` with a ``TrainConfig`` (or dict) and callbacks; returns the history.

        Raises :class:`~weightzip.errors.MissingDataError` when there is no training loader."""
        from ..training.config import TrainConfig
        from ..training.trainer import Trainer
        self.require("train", f"{tag} trains the model")
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

    def needs_data(self) -> dict[str, str]:
        """The data splits this configured stage reads, ``{split: why}``; ``{}``: none (post-training).

        The default: a stage whose config has a ``train`` or ``finetune`` block (not None) trains,
        so it needs ``"train"``. Methods that read data otherwise (a validation scan) extend this.
        Evaluation alone is no need: without validation data it is skipped.
        """
        needs: dict[str, str] = {}
        for key in ("train", "finetune"):
            if getattr(self.config, key, None) is not None:
                needs["train"] = f"its `{key}` block trains the model"
                break
        return needs

    def apply(self, model: nn.Module, ctx: StageContext) -> dict[str, Any]:  # pragma: no cover
        raise NotImplementedError


def map_bounded(items: Sequence[Any], fn: Callable[[Any], Any], size: Callable[[Any], int], workers: int):
    """Yield ``(i, fn(items[i]))`` as they finish, running up to ``workers`` calls at once in
    threads, but never more at once than fit in the largest item's ``size``: the working memory of
    the calls in flight stays that of the largest item alone (a large tensor runs by itself, small
    ones run side by side). With ``workers <= 1`` the items run one after the other, in order, in
    one worker thread: the calls run as in the pool (torch's intra-op threads, which a loaded
    2-core machine slowed about 4x in the main thread, are not involved either way).

    For per-tensor work that releases the GIL (numpy / torch kernels: sorting, k-means, encoding);
    ``fn`` must not modify the model (the caller applies results, in this thread). An exception
    of any call is raised here after the calls in flight finish."""
    from collections import deque
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    n = len(items)
    if n == 0:
        return
    workers = max(1, int(workers))

    sizes = [int(size(it)) for it in items]
    cap = max(sizes)
    queue = deque(range(n))
    inflight: dict[Any, int] = {}
    used = 0
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="wz-stage") as pool:
        while queue or inflight:
            while queue and len(inflight) < workers and (not inflight or used + sizes[queue[0]] <= cap):
                i = queue.popleft()
                inflight[pool.submit(fn, items[i])] = i
                used += sizes[i]
            done, _ = wait(list(inflight), return_when=FIRST_COMPLETED)
            for f in done:
                i = inflight.pop(f)
                used -= sizes[i]
                yield i, f.result()
