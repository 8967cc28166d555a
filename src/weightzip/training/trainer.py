"""Training and evaluation loops: one :class:`Trainer` with callbacks, checkpoints and resume.

The settings live in ``config.py``, losses and evaluation in ``evaluate.py``, checkpoints and RNG
state in ``checkpoint.py``; this file holds the callbacks and the loop.

    cfg = TrainConfig(epochs=10, lr=0.05, optimizer="sgd", momentum=0.9, schedule="cosine")
    trainer = Trainer(model, cfg, loaders, checkpoint="runs/x.pt", record="runs/x.json")
    out = trainer.fit()                  # {"history": [...], "final": {...}, "best": {...}, ...}
    trainer.evaluate(loaders.test)       # {"loss": ..., "accuracy": ...}

Two tasks (``loaders.task``):

* ``"classify"``: batches ``(x [B, ...], y int64 [B])``, ``model(x) -> logits [B, C]``.
* ``"lm"``: time-major windows ``(x int64 [T, B], y int64 [T, B])``,
  ``model(x, hidden) -> (logits [T, B, V], hidden)``. The hidden state is carried from one
  window to the next and detached between windows (truncated BPTT); perplexity is
  ``exp(mean cross-entropy per token)``.

A run resumed from its checkpoint (``fit(resume=True)``) ends with exactly the weights of an
uninterrupted run: the checkpoint holds the model, optimizer, schedule state, every RNG state
and the callbacks' state, the data order of each epoch is a function of ``(seed, epoch)``, and
learning rates are pure functions of the position in training (``primitives/schedule.py``).
"""
from __future__ import annotations

import logging
import math
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
from torch import Tensor, nn

from ..errors import InvalidModelError, WeightzipError
from ..primitives.schedule import lr_at, plateau_init, plateau_update
from .checkpoint import (CHECKPOINT_VERSION, atomic_write_json, load_checkpoint, machine_info, rng_state,
                         save_checkpoint, set_rng_state)
from .config import TrainConfig, resolve_device, seed_everything
from .evaluate import _detach, _forward, _windows, compute_loss, evaluate

__all__ = ["Callback", "Trainer"]

log = logging.getLogger("weightzip.training.trainer")

def _parametrization_spec(model: nn.Module) -> Any:
    try:
        from ..core.parametrize import parametrization_spec
    except ImportError:  # parametrize not available: a plain model has no chain to record
        return None
    return parametrization_spec(model)


# --------------------------------------------------------------------------------------------
# Callbacks
# --------------------------------------------------------------------------------------------
class Callback:
    """Hooks into the training loop. Every hook is optional; the call order per run is::

        on_train_begin
        for each epoch:  on_epoch_begin
            for each step:  (forward, backward)  on_step  (grad clip, optimizer.step)  on_after_step
            (validation)  on_epoch_end
        on_train_end

    ``on_step`` sees ``.grad`` populated and the weights not yet updated (accumulate gradient
    importance, mask gradients); ``on_after_step`` runs after ``optimizer.step()`` (projections,
    clipping latent weights). ``step`` is ``trainer.global_step`` (0-based, counts optimizer
    steps). Whatever ``state_dict()`` returns is saved in checkpoints (tensors and plain
    containers only) and given back to ``load_state_dict`` on resume.
    """

    def on_train_begin(self, trainer: "Trainer") -> None: ...
    def on_epoch_begin(self, trainer: "Trainer", epoch: int) -> None: ...
    def on_step(self, trainer: "Trainer", step: int) -> None: ...
    def on_after_step(self, trainer: "Trainer", step: int) -> None: ...
    def on_epoch_end(self, trainer: "Trainer", epoch: int, metrics: dict[str, float]) -> None: ...
    def on_train_end(self, trainer: "Trainer") -> None: ...

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def _call(callbacks: Sequence[Any], hook: str, *args: Any) -> None:
    for cb in callbacks:
        fn = getattr(cb, hook, None)  # duck typed: a callback need not derive Callback
        if fn is not None:
            fn(*args)


# --------------------------------------------------------------------------------------------
# Trainer
# --------------------------------------------------------------------------------------------
class Trainer:
    """Train ``model`` on ``loaders.train`` with ``config``; evaluate on ``loaders.val``.

    ``loaders`` is any object with ``.train``, ``.val`` (may be None), ``.test`` (may be None)
    and ``.task`` (``"classify"`` or ``"lm"``; default ``"classify"``). The optimizer is built
    from ``model.parameters()`` *here*, so parametrizations added before construction are
    trained through their original tensors; pass ``optimizer`` to use your own (its
    per-group learning rates are then the base rates that the schedule scales).

    Attributes for callbacks: ``model``, ``optimizer``, ``config``, ``loaders``, ``task``,
    ``device``, ``epoch`` (completed epochs), ``global_step`` (optimizer steps done),
    ``batch`` (the current ``(x, y)``), ``loss`` (current loss tensor), ``lr`` (current
    schedule rate), ``history`` (metrics per finished epoch), ``train_module`` (what the loop
    calls: ``model`` or its DDP wrapper), ``dist`` (the data-parallel helper of
    :mod:`weightzip.training.distributed.launch`, or None when this process trains alone).
    """

    def __init__(self, model: nn.Module, config: TrainConfig | dict | None, loaders: Any,
                 callbacks: Sequence[Any] = (), checkpoint: str | Path | None = None,
                 record: str | Path | None = None, optimizer: torch.optim.Optimizer | None = None,
                 meta: dict[str, Any] | None = None):
        if config is None:
            config = TrainConfig()
        elif not isinstance(config, TrainConfig):
            config = TrainConfig(**dict(config))
        self.config = config
        self.loaders = loaders
        self.task = getattr(loaders, "task", "classify") or "classify"
        if self.task not in ("classify", "lm"):
            raise WeightzipError(f"unknown task {self.task!r}; the trainer knows 'classify' and 'lm'")
        self.device = resolve_device(config.device)
        self.model = model.to(self.device)
        self.callbacks = list(callbacks)
        self.checkpoint_path = Path(checkpoint) if checkpoint is not None else None
        self.record_path = Path(record) if record is not None else None
        self.meta = dict(meta or {})
        if optimizer is None:
            optimizer = self._build_optimizer()
        self.optimizer = optimizer
        for g in self.optimizer.param_groups:  # the schedule scales each group's own base rate
            g.setdefault("initial_lr", g["lr"])
        # what the training loop calls: the model, or its DistributedDataParallel wrapper when
        # several processes train together (rank-local data, only rank 0 writes files)
        self.train_module: nn.Module = self.model
        self.dist = None
        if config.distributed is not False:
            from .distributed.launch import setup_trainer

            self.dist = setup_trainer(self)
        self.epoch = 0
        self.global_step = 0
        self.plateau = plateau_init()
        self.history: list[dict[str, float]] = []
        self.epoch_times: list[float] = []
        self.batch: tuple[Tensor, Tensor] | None = None
        self.loss: Tensor | None = None
        self.lr = config.lr
        self.test_metrics: dict[str, float] | None = None
        self._elapsed_before = 0.0  # wall time of earlier (interrupted) sessions of this run
        self._epoch_rng: dict[str, Any] | None = None

    # ---- construction helpers ---------------------------------------------------------
    def _build_optimizer(self) -> torch.optim.Optimizer:
        c = self.config
        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            raise InvalidModelError(f"{type(self.model).__name__} has no trainable parameters")
        if c.optimizer == "sgd":
            return torch.optim.SGD(params, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay,
                                   nesterov=c.nesterov)
        return torch.optim.Adam(params, lr=c.lr, betas=c.betas, weight_decay=c.weight_decay)

    def _steps_per_epoch(self) -> int | None:
        try:
            n = len(self.loaders.train)
        except TypeError:
            n = None
        if self.config.max_steps_per_epoch is not None:
            n = self.config.max_steps_per_epoch if n is None else min(n, self.config.max_steps_per_epoch)
        return n

    def _set_lr(self, t: float) -> None:
        """Set every group's rate to ``initial_lr * lr_at(t) / config.lr``."""
        self.lr = lr_at(t, self.config, plateau_scale=self.plateau["scale"])
        factor = self.lr / self.config.lr
        for g in self.optimizer.param_groups:
            g["lr"] = g["initial_lr"] * factor

    def _seed_data_order(self, epoch: int) -> None:
        """Make the shuffled order of epoch ``epoch`` a function of ``(seed, epoch)`` only.

        Works when the train loader draws its order from a ``RandomSampler`` (a DataLoader with
        ``shuffle=True``): its generator is (re)seeded. Other loaders keep their own order,
        drawn from the global torch RNG, which the checkpoint restores. The loader, its sampler
        and its dataset also get ``set_epoch(epoch)`` when they define it.
        """
        loader = self.loaders.train
        sampler = getattr(loader, "sampler", None)
        if isinstance(sampler, torch.utils.data.RandomSampler):
            if sampler.generator is None:
                sampler.generator = torch.Generator()
            sampler.generator.manual_seed(self.config.seed * 1_000_003 + epoch)
        # Other per-epoch randomness (augmentation) follows the DistributedSampler protocol:
        # whoever has a `set_epoch(epoch)` method reseeds itself from (its seed, epoch).
        for obj in {id(o): o for o in (loader, sampler, getattr(loader, "dataset", None))}.values():
            set_epoch = getattr(obj, "set_epoch", None)
            if callable(set_epoch):
                set_epoch(epoch)

    # ---- checkpoints -------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The checkpoint dict (see docs/architecture.md); ``weights_only``-loadable."""
        return {
            "version": CHECKPOINT_VERSION,
            "model": self.model.state_dict(),
            "model_config": getattr(self.model, "wz_config", None),
            "parametrizations": _parametrization_spec(self.model),
            "optimizer": self.optimizer.state_dict(),
            "schedule": {"plateau": dict(self.plateau), "lr": float(self.lr)},
            "epoch": self.epoch,
            "global_step": self.global_step,
            # the RNG state of the last epoch boundary: a resumed run continues from there even
            # if this is saved after the final test evaluation (which draws loader seeds)
            "rng": self._epoch_rng if self._epoch_rng is not None else rng_state(),
            "callbacks": [cb.state_dict() if hasattr(cb, "state_dict") else {} for cb in self.callbacks],
            "train_config": self.config.model_dump(mode="json"),
            "metrics": list(self.history),
            "epoch_times": list(self.epoch_times),
            "elapsed_s": self._elapsed(),
            "test": self.test_metrics,
            "meta": dict(self.meta),
        }

    def load_state_dict(self, ck: dict[str, Any], restore_rng: bool = True) -> None:
        """Restore a :meth:`state_dict` (model, optimizer, schedule, counters, callbacks, RNG)."""
        self.model.load_state_dict(ck["model"])
        self.optimizer.load_state_dict(ck["optimizer"])
        self.plateau = dict(ck.get("schedule", {}).get("plateau", plateau_init()))
        self.epoch = int(ck["epoch"])
        self.global_step = int(ck["global_step"])
        self.history = list(ck.get("metrics", []))
        self.epoch_times = list(ck.get("epoch_times", []))
        self._elapsed_before = float(ck.get("elapsed_s", 0.0))
        self.test_metrics = ck.get("test")
        states = ck.get("callbacks", [])
        if len(states) != len(self.callbacks):
            raise WeightzipError(
                f"checkpoint has state for {len(states)} callback(s) but the trainer has "
                f"{len(self.callbacks)}; resume with the same callbacks as the interrupted run")
        for cb, st in zip(self.callbacks, states):
            if hasattr(cb, "load_state_dict"):
                cb.load_state_dict(st)
        self._epoch_rng = ck["rng"]
        if restore_rng:
            set_rng_state(ck["rng"])

    def save(self, path: str | Path | None = None) -> Path:
        """Write the checkpoint atomically (to ``path`` or the trainer's checkpoint path)."""
        path = Path(path) if path is not None else self.checkpoint_path
        if path is None:
            raise WeightzipError("Trainer.save() needs a path: pass checkpoint=... to the Trainer")
        return save_checkpoint(path, self.state_dict())

    def _elapsed(self) -> float:
        start = getattr(self, "_session_start", None)
        return self._elapsed_before + (time.perf_counter() - start if start is not None else 0.0)

    @property
    def is_writer(self) -> bool:
        """False on data-parallel ranks other than 0: they write no checkpoint or record."""
        return self.dist is None or self.dist.is_writer

    def _write_record(self, status: str) -> None:
        if self.record_path is None or not self.is_writer:
            return
        atomic_write_json(self.record_path, {
            "status": status,
            "task": self.task,
            "config": self.config.model_dump(mode="json"),
            "model_config": getattr(self.model, "wz_config", None),
            "meta": self.meta,
            "epochs_done": self.epoch,
            "global_step": self.global_step,
            "metrics": self.history,
            "epoch_time_s": self.epoch_times,
            "total_time_s": self._elapsed(),
            "best": self._best(),
            "final": self.history[-1] if self.history else None,
            "test": self.test_metrics,
            "machine": machine_info(self.device),
            "checkpoint": str(self.checkpoint_path) if self.checkpoint_path else None,
            **({"distributed": self.dist.summary()} if self.dist is not None else {}),
        })

    def _best(self) -> dict[str, float] | None:
        key = "val_loss" if any("val_loss" in h for h in self.history) else "train_loss"
        rows = [h for h in self.history if key in h]
        return min(rows, key=lambda h: h[key]) if rows else None

    # ---- loops -------------------------------------------------------------------------
    def evaluate(self, loader: Iterable | None = None) -> dict[str, float]:
        """Metrics of the model on ``loader`` (default: the validation loader, else test)."""
        if loader is None:
            loader = getattr(self.loaders, "val", None)
            if loader is None:
                loader = getattr(self.loaders, "test", None)
        return evaluate(self.model, loader, self.task, self.device, loss=self.config.loss,
                        bptt=self.config.bptt)

    def _progress(self, total: int | None, desc: str):
        from tqdm.auto import tqdm

        disable = not self.config.progress or not sys.stderr.isatty()
        return tqdm(total=total, desc=desc, leave=False, disable=disable, dynamic_ncols=True)

    def _autocast(self):
        """``torch.autocast(bfloat16)`` when ``precision='bf16'``, else a no-op context."""
        enabled = self.config.precision == "bf16"
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=enabled)

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """One pass over ``loaders.train`` (or ``max_steps_per_epoch`` steps); train metrics."""
        c, model, task = self.config, self.train_module, self.task
        model.train()
        self._seed_data_order(epoch)
        n_batches = self._steps_per_epoch()
        total_loss, correct, count, steps = 0.0, 0, 0, 0
        hidden = None
        bar = self._progress(n_batches, f"epoch {epoch + 1}/{c.epochs}")
        try:
            for i, (x, y) in enumerate(self.loaders.train):
                if c.max_steps_per_epoch is not None and steps >= c.max_steps_per_epoch:
                    break
                x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
                t = epoch + (i / n_batches if n_batches else 0.0)
                for xw, yw in _windows(x, y, task, c.bptt):
                    if c.max_steps_per_epoch is not None and steps >= c.max_steps_per_epoch:
                        break
                    self._set_lr(t)
                    self.batch = (xw, yw)
                    self.optimizer.zero_grad(set_to_none=True)
                    with self._autocast():
                        out, hidden = _forward(model, xw, task, hidden)
                        loss = compute_loss(out, yw, c.loss)
                    if not torch.isfinite(loss):
                        raise InvalidModelError(
                            f"training diverged: loss is {loss.item()} at epoch {epoch + 1}, step "
                            f"{self.global_step}; lower the learning rate (lr={c.lr}) or set grad_clip")
                    self.loss = loss
                    loss.backward()
                    _call(self.callbacks, "on_step", self, self.global_step)
                    if c.grad_clip is not None:
                        nn.utils.clip_grad_norm_(
                            [p for g in self.optimizer.param_groups for p in g["params"]], c.grad_clip)
                    self.optimizer.step()
                    _call(self.callbacks, "on_after_step", self, self.global_step)
                    hidden = _detach(hidden)
                    n = yw.numel()
                    total_loss += loss.item() * n
                    count += n
                    if task != "lm":
                        correct += (out.detach().argmax(dim=-1) == yw).sum().item()
                    self.global_step += 1
                    steps += 1
                    if steps % c.log_every == 0:  # without a progress bar, say how far the epoch is
                        log.log(logging.DEBUG if not bar.disable else logging.INFO,
                                "epoch %d  step %d/%s  loss %.4f  lr %.3g", epoch + 1, steps,
                                n_batches if n_batches is not None else "?", total_loss / count, self.lr)
                    bar.set_postfix(loss=f"{total_loss / count:.4f}", lr=f"{self.lr:.3g}", refresh=False)
                bar.update(1)
        finally:
            bar.close()
            self.batch = None
        if self.dist is not None:  # totals over every rank's part of the epoch
            total_loss, correct, count = self.dist.end_epoch(total_loss, correct, count)
        if count == 0:
            raise WeightzipError("the training loader yielded no batches; check the dataset subset size")
        mean = total_loss / count
        metrics = {"train_loss": mean}
        if task == "lm":
            metrics["train_perplexity"] = math.exp(min(mean, 700.0))
        else:
            metrics["train_accuracy"] = correct / count
        return metrics

    def fit(self, resume: bool = False) -> dict[str, Any]:
        """Train for ``config.epochs`` epochs; returns history, best/final/test metrics, wall time.

        ``resume=True`` continues from the checkpoint file if it exists (it must be the
        checkpoint of a run with the same model, callbacks and data); without a checkpoint
        file it starts from scratch.
        """
        c = self.config
        if resume and self.checkpoint_path is None:
            raise WeightzipError("fit(resume=True) needs the Trainer's checkpoint path")
        ck = None
        if resume and self.checkpoint_path.is_file():
            ck = load_checkpoint(self.checkpoint_path, map_location=self.device)
            self.load_state_dict(ck, restore_rng=False)
            log.info("resuming %s at epoch %d/%d", self.checkpoint_path, self.epoch, c.epochs)
        else:
            seed_everything(c.seed)
        self._session_start = time.perf_counter()
        _call(self.callbacks, "on_train_begin", self)
        if ck is not None:  # after on_train_begin: hooks must not shift the random streams
            set_rng_state(ck["rng"])
        while self.epoch < c.epochs:
            epoch = self.epoch
            t0 = time.perf_counter()
            self.test_metrics = None  # stale once the weights change again
            self._epoch_rng = None
            _call(self.callbacks, "on_epoch_begin", self, epoch)
            metrics: dict[str, float] = {"epoch": epoch + 1}
            metrics.update(self.train_epoch(epoch))
            if self.dist is not None:
                metrics.update(self.dist.epoch_metrics())  # bytes communicated this epoch
            if getattr(self.loaders, "val", None) is not None:
                metrics.update({f"val_{k}": v for k, v in self.evaluate(self.loaders.val).items()})
            metrics["lr"] = self.lr
            if c.schedule == "plateau":
                watched = metrics.get("val_loss", metrics["train_loss"])
                self.plateau = plateau_update(self.plateau, watched, c.gamma, c.plateau_patience)
            _call(self.callbacks, "on_epoch_end", self, epoch, metrics)
            dt = time.perf_counter() - t0
            metrics["time_s"] = dt
            self.epoch += 1
            self.history.append(metrics)
            self.epoch_times.append(dt)
            log.info("epoch %d/%d  %s", epoch + 1, c.epochs, _fmt(metrics))
            self._epoch_rng = rng_state()
            if self.checkpoint_path is not None and self.is_writer:
                self.save()
            self._write_record("running")
        if c.test_at_end and getattr(self.loaders, "test", None) is not None and self.test_metrics is None:
            self.test_metrics = self.evaluate(self.loaders.test)
            log.info("test  %s", _fmt(self.test_metrics))
            if self.checkpoint_path is not None and self.is_writer:
                self.save()
        _call(self.callbacks, "on_train_end", self)
        self._write_record("done")
        return {
            "history": list(self.history),
            "final": self.history[-1] if self.history else None,
            "best": self._best(),
            "test": self.test_metrics,
            "epochs": self.epoch,
            "global_step": self.global_step,
            "wall_time_s": self._elapsed(),
            "epoch_time_s": list(self.epoch_times),
            **({"distributed": self.dist.summary()} if self.dist is not None else {}),
        }


def _fmt(metrics: dict[str, float]) -> str:
    parts = []
    for k, v in metrics.items():
        if k == "epoch":
            continue
        parts.append(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}")
    return "  ".join(parts)

