"""Training and evaluation loops: one :class:`Trainer` with callbacks, checkpoints and resume.

Read top to bottom: the config, the losses, evaluation, checkpoints and RNG state, callbacks,
then the trainer.

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

import json
import logging
import math
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from torch import Tensor, nn

from ..errors import InvalidModelError, WeightzipError
from ..primitives.schedule import lr_at, plateau_init, plateau_update

__all__ = [
    "TrainConfig",
    "Callback",
    "Trainer",
    "evaluate",
    "compute_loss",
    "squared_hinge_loss",
    "seed_everything",
    "resolve_device",
    "save_checkpoint",
    "load_checkpoint",
    "rng_state",
    "set_rng_state",
    "machine_info",
    "atomic_write_json",
]

log = logging.getLogger("weightzip.training.trainer")

CHECKPOINT_VERSION = 1


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------
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


# --------------------------------------------------------------------------------------------
# Losses and evaluation
# --------------------------------------------------------------------------------------------
def squared_hinge_loss(logits: Tensor, target: Tensor) -> Tensor:
    """One-vs-all squared hinge loss of BinaryConnect / LAB.

    ``t = 2 * onehot(y) - 1`` (``+1`` for the true class, ``-1`` elsewhere);
    ``loss = mean_{b, c} max(0, 1 - t_bc * o_bc) ** 2`` over the ``[B, C]`` outputs ``o``.
    """
    t = F.one_hot(target, logits.shape[-1]).to(logits.dtype) * 2 - 1  # (B x C)
    return torch.clamp(1.0 - t * logits, min=0).pow(2).mean()


def compute_loss(output: Tensor, target: Tensor, loss: str = "ce") -> Tensor:
    """Mean loss of ``output [N, C]`` (or ``[T, B, V]``) against integer ``target``."""
    output = output.reshape(-1, output.shape[-1])  # (N x C)
    target = target.reshape(-1)  # (N)
    if loss == "ce":
        return F.cross_entropy(output, target)
    if loss == "squared_hinge":
        return squared_hinge_loss(output, target)
    raise ValueError(f"unknown loss {loss!r}; valid losses: ce, squared_hinge")


def _model_device(model: nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def _detach(hidden: Any) -> Any:
    """Cut the autograd history of an LSTM hidden state (a tensor or nested tuple/list)."""
    if hidden is None:
        return None
    if isinstance(hidden, Tensor):
        return hidden.detach()
    return type(hidden)(_detach(h) for h in hidden)


def _hidden_batch(hidden: Any) -> int | None:
    """Batch size of a hidden state ``[layers, B, H]`` (first tensor found)."""
    if hidden is None:
        return None
    if isinstance(hidden, Tensor):
        return hidden.shape[1] if hidden.dim() >= 2 else hidden.shape[0]
    for h in hidden:
        b = _hidden_batch(h)
        if b is not None:
            return b
    return None


def _forward(model: nn.Module, x: Tensor, task: str, hidden: Any = None) -> tuple[Tensor, Any]:
    if task == "lm":
        if hidden is not None and _hidden_batch(hidden) != x.shape[1]:
            hidden = None  # a last, narrower batch: start a fresh state
        out = model(x, hidden)
        if not isinstance(out, tuple):
            raise InvalidModelError(
                f"{type(model).__name__} returned {type(out).__name__} for a language-model batch; "
                "an LM must return (logits [T, B, V], hidden) from forward(x [T, B], hidden)")
        return out[0], out[1]
    return model(x), None


def _windows(x: Tensor, y: Tensor, task: str, bptt: int | None) -> Iterator[tuple[Tensor, Tensor]]:
    """LM windows longer than ``bptt`` are split along time into ``bptt``-long chunks."""
    if task != "lm" or bptt is None or x.shape[0] <= bptt:
        yield x, y
        return
    for s in range(0, x.shape[0], bptt):
        yield x[s:s + bptt], y[s:s + bptt]


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, task: str = "classify",
             device: str | torch.device | None = None, *, loss: str = "ce",
             max_steps: int | None = None, bptt: int | None = None) -> dict[str, float]:
    """Loss and accuracy (classify) or loss and perplexity (lm) of ``model`` over ``loader``.

    classify: ``loss = sum_i l(x_i, y_i) / N`` (per example), ``accuracy = #correct / N``.
    lm: ``loss = sum_t CE(logits_t, y_t) / #tokens``, ``perplexity = exp(loss)``; the hidden
    state is carried across windows, as in training.
    The model is put in eval mode and restored to its previous mode afterwards.
    """
    if loader is None:
        raise WeightzipError("evaluate() got no loader; this dataset has no such split (check val_size)")
    dev = _model_device(model) if device is None else resolve_device(device)
    was_training = model.training
    model.eval()
    total_loss, correct, count = 0.0, 0, 0
    hidden = None
    try:
        for i, (x, y) in enumerate(loader):
            if max_steps is not None and i >= max_steps:
                break
            x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
            for xw, yw in _windows(x, y, task, bptt):
                out, hidden = _forward(model, xw, task, hidden)
                n = yw.numel()
                total_loss += compute_loss(out, yw, loss).item() * n
                count += n
                if task != "lm":
                    correct += (out.argmax(dim=-1) == yw).sum().item()
    finally:
        model.train(was_training)
    if count == 0:
        raise WeightzipError("evaluate() got an empty loader; check the dataset split and subset size")
    mean = total_loss / count
    if task == "lm":
        return {"loss": mean, "perplexity": math.exp(min(mean, 700.0))}
    return {"loss": mean, "accuracy": correct / count}


# --------------------------------------------------------------------------------------------
# Checkpoints, RNG state, records
# --------------------------------------------------------------------------------------------
def rng_state() -> dict[str, Any]:
    """Every RNG state as tensors and plain lists (loadable with ``weights_only=True``)."""
    py = random.getstate()  # (version, tuple of 625 ints, gauss_next)
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [str(name), [int(k) for k in keys], int(pos), int(has_gauss), float(gauss)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`rng_state`."""
    v, keys, gauss = state["python"]
    random.setstate((v, tuple(keys), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _atomic_write(path: Path, write) -> None:
    """Write through a temporary file in the same directory, then ``os.replace`` it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual mode
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def save_checkpoint(path: str | Path, checkpoint: dict[str, Any]) -> Path:
    """Atomically ``torch.save`` a checkpoint dict (tensors and plain containers only)."""
    path = Path(path)
    _atomic_write(path, lambda f: torch.save(checkpoint, f))
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device | None = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``torch.load(..., weights_only=True)``: never runs pickled code."""
    path = Path(path)
    if not path.is_file():
        raise WeightzipError(f"checkpoint {str(path)!r} not found; train one with `weightzip train ... -o {path}`")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated file, pickle with code objects, ...
        raise WeightzipError(f"cannot read checkpoint {str(path)!r}: {type(e).__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else ''}") from e


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    """Atomically write ``obj`` as indented JSON."""
    data = (json.dumps(obj, indent=2, default=_json_default) + "\n").encode()
    _atomic_write(Path(path), lambda f: f.write(data))
    return Path(path)


def _json_default(o: Any) -> Any:
    if isinstance(o, Tensor):
        return o.tolist()
    if isinstance(o, (np.generic,)):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    return str(o)


def machine_info(device: str | torch.device | None = None) -> dict[str, Any]:
    """Where a run happened: platform, CPU count, torch threads and version, device."""
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "device": str(device) if device is not None else "cpu",
    }
    if device is not None and torch.device(device).type == "cuda" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


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
