"""Runs a :class:`~weightzip.core.recipe.Recipe`'s stages in order on a model.

Each stage is a registered method applied to the model (adding parametrizations, training
through the Trainer). After each stage the pipeline records the validation metrics and wall
time, and - when a ``workdir`` is given - writes a checkpoint ``stage-<i>-<method>.pt``
(state_dict + parametrization spec + shared stage state, loadable with ``weights_only=True``).
With ``resume=True`` the stages that already have a checkpoint are skipped and the model is
restored from the last one.

Data is optional. Before running any stage the pipeline asks each one what it reads
(:meth:`~weightzip.methods.base.Method.needs_data`) and refuses, naming the stage, a recipe that
trains without a training loader; without validation data the baseline and per-stage metrics
are ``{"skipped": "no validation data"}`` (:data:`~weightzip.methods.base.NO_VALIDATION`).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core import parametrize
from ..core.recipe import Recipe
from ..core.registry import get_method
from ..errors import InvalidModelError, MissingDataError
from ..training.checkpoint import save_checkpoint
from .base import Method, StageContext, missing_data_message


@dataclass
class StageRecord:
    index: int
    method: str
    label: str | None
    seconds: float
    metrics: dict[str, Any]


@dataclass
class PipelineResult:
    model: nn.Module
    recipe: Recipe
    stages: list[StageRecord] = field(default_factory=list)
    baseline: dict[str, Any] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return sum(s.seconds for s in self.stages)

    def to_dict(self) -> dict[str, Any]:
        return {
            "recipe": self.recipe.name,
            "baseline": self.baseline,
            "stages": [s.__dict__ for s in self.stages],
            "seconds": self.seconds,
        }


def check_finite(model: nn.Module) -> None:
    """Refuse NaN / Inf in any floating-point tensor, naming it."""
    for name, t in model.state_dict().items():
        if t.is_floating_point() and not _all_finite(t):
            n_bad = int((~torch.isfinite(t)).sum())
            raise InvalidModelError(
                f"tensor {name!r} has {n_bad} NaN/Inf value(s); the model cannot be compressed. "
                "Retrain or repair the checkpoint (e.g. lower the learning rate) and try again"
            )


def _all_finite(t: torch.Tensor, chunk: int = 1 << 20) -> bool:
    """``torch.isfinite(t).all()`` a chunk at a time (isfinite makes an |t| copy and masks of the
    whole tensor); a broadcast stand-in (a dropped latent: one value, stride 0) is read once."""
    if t.numel() and all(s == 0 for s in t.stride()):
        return bool(torch.isfinite(t.reshape(-1)[:1]).all())
    flat = t.detach().reshape(-1)
    return all(bool(torch.isfinite(flat[s:s + chunk]).all()) for s in range(0, flat.numel(), chunk))


class Pipeline:
    def __init__(self, recipe: Recipe, ctx: StageContext, workdir: str | Path | None = None,
                 resume: bool = False):
        self.recipe = recipe
        self.ctx = ctx
        self.workdir = Path(workdir) if workdir else None
        self.resume = resume
        if self.workdir:
            self.workdir.mkdir(parents=True, exist_ok=True)
            ctx.workdir = self.workdir

    def check_data(self, start: int = 0) -> None:
        """Refuse (before any work) a stage from ``start`` on that needs data the context lacks.

        Raises :class:`~weightzip.errors.MissingDataError` naming the stage index and method,
        what the data is for, and how to fix it (pass loaders / ``--data``, or drop the fine-tune).
        """
        for i in range(start, len(self.recipe.stages)):
            cfg = self.recipe.stages[i]
            method: Method = get_method(cfg.method)(cfg)
            for split, why in method.needs_data().items():
                if self.ctx.loader(split) is None:
                    raise MissingDataError(missing_data_message(_stage_name(i, cfg), split, why))

    def _ckpt(self, i: int, method: str) -> Path | None:
        return self.workdir / f"stage-{i}-{method}.pt" if self.workdir else None

    def run(self, model: nn.Module) -> PipelineResult:
        check_finite(model)
        model.to(self.ctx.device)
        result = PipelineResult(model=model, recipe=self.recipe)
        resuming = bool(self.resume and self.workdir)
        if not resuming:
            self.check_data()  # before the baseline pass: a recipe that cannot run fails at once
        result.baseline = {"val": _clean(self.ctx.evaluate(model))}
        self.ctx.log(f"baseline: {_fmt_metrics(result.baseline['val'])}")
        start = 0
        if self.resume and self.workdir:
            for i in reversed(range(len(self.recipe.stages))):
                p = self._ckpt(i, self.recipe.stages[i].method)
                if p.exists():
                    done = torch.load(p, weights_only=True, map_location="cpu").get("recipe_stages")
                    if done != self._stage_dicts(i):
                        self.ctx.log(f"not resuming from {p}: it was written by other stage settings "
                                     f"(stages 0..{i} of this recipe differ)")
                        continue
                    records = self._restore(model, p)
                    result.stages = [StageRecord(**r) for r in records]
                    start = i + 1
                    self.ctx.log(f"resumed after stage {i} from {p}")
                    break
        if resuming:
            self.check_data(start)  # the stages already checkpointed need nothing
        for i in range(start, len(self.recipe.stages)):
            cfg = self.recipe.stages[i]
            method = get_method(cfg.method)(cfg)
            self.ctx.log(f"stage {i}: {cfg.method}" + (f" ({cfg.label})" if cfg.label else ""))
            t0 = time.perf_counter()
            self.ctx.stage = _stage_name(i, cfg)
            try:
                metrics = method.apply(model, self.ctx) or {}
            finally:
                self.ctx.stage = None
            seconds = time.perf_counter() - t0
            if "val" not in metrics:
                metrics["val"] = self.ctx.evaluate(model)
            rec = StageRecord(i, cfg.method, cfg.label, seconds, _clean(metrics))
            result.stages.append(rec)
            self.ctx.log(f"  -> {_fmt_metrics(metrics['val'])} ({seconds:.1f}s)")
            check_finite(model)
            if self.workdir:
                self._save(model, self._ckpt(i, cfg.method), result.stages)
        return result

    def _stage_dicts(self, last: int) -> list[dict[str, Any]]:
        return [st.model_dump(mode="json") for st in self.recipe.stages[: last + 1]]

    def _save(self, model: nn.Module, path: Path, records: list[StageRecord]) -> None:
        state = {
            "recipe_stages": self._stage_dicts(len(records) - 1),
            "model": model.state_dict(),
            "model_config": getattr(model, "wz_config", None),
            "parametrizations": parametrize.parametrization_spec(model),
            "stage_state": self.ctx.state,
            "records": [r.__dict__ for r in records],
        }
        save_checkpoint(path, state)  # atomic: temp file + os.replace

    def _restore(self, model: nn.Module, path: Path) -> list[dict]:
        ck = torch.load(path, weights_only=True, map_location=self.ctx.device)
        for mname, mod, tname in list(parametrize.parametrized_tensors(model)):
            parametrize.remove_all(mod, tname, bake=False)
        parametrize.restore_parametrizations(model, ck["parametrizations"])
        model.load_state_dict(ck["model"])
        self.ctx.state.update(ck.get("stage_state") or {})
        return ck.get("records", [])


def _stage_name(i: int, cfg: Any) -> str:
    """``stage 1 (kmeans_share)`` or ``stage 1 (kmeans_share, "fc layers")``: how errors name a stage."""
    return f"stage {i} ({cfg.method}" + (f", {cfg.label!r})" if cfg.label else ")")


def _clean(x: Any) -> Any:
    """JSON-able copy of metrics (tensors -> numbers, NaN kept as None)."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, torch.Tensor):
        return _clean(x.item() if x.numel() == 1 else x.tolist())
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _fmt_metrics(m: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in m.items())
