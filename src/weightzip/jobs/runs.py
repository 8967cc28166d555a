"""Glue for whole runs: train a zoo model on a dataset, evaluate a saved run, cached baselines.

The CLI and the benchmark scripts call these functions; they hold the small amount of logic
that connects the registry, the data loaders and the trainer::

    from weightzip.jobs.runs import train_model, evaluate_checkpoint, ensure_baseline
    out = train_model("lenet5", "mnist", "runs/lenet5/base.pt", train={"epochs": 2})
    evaluate_checkpoint("runs/lenet5/base.pt")          # {"loss", "accuracy", ...} on test
    path = ensure_baseline("lenet300_100", "mnist")     # trained once, then reused

Recipes: :func:`recipe_for` gives the training settings used when the caller does not set
them (per dataset, then per model family, then per model-dataset pair; see :data:`RECIPES`).
A run writes ``<out>.pt`` (the trainer checkpoint, loadable with ``weights_only=True``) and
``<out>.json`` (the run record) beside it.
"""
from __future__ import annotations

import copy
import fnmatch
import inspect
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from ..core import registry
from ..errors import UnknownNameError, WeightzipError
from ..training.checkpoint import load_checkpoint, model_from_checkpoint
from ..training.config import TrainConfig, resolve_device, seed_everything
from ..training.evaluate import evaluate
from ..training.trainer import Trainer

__all__ = [
    "RECIPES",
    "DEFAULT_DATA",
    "BASELINES_DIR",
    "recipe_for",
    "default_data_for",
    "check_model_name",
    "model_kwargs_for_data",
    "build_model",
    "make_loaders",
    "train_model",
    "load_model",
    "evaluate_checkpoint",
    "baseline_path",
    "ensure_baseline",
    "parse_key_values",
    "Source",
    "prepare_source",
]

log = logging.getLogger("weightzip.jobs.runs")

BASELINES_DIR = Path("runs/baselines")

# Recipes: {"train": TrainConfig fields, "data": get_loaders options, "model": constructor kwargs}.
# Looked up by glob pattern "<model>@<data>"; later (more specific) entries override earlier ones.
RECIPES: list[tuple[str, dict[str, Any]]] = [
    # images: SGD + momentum with a cosine decay reaches the published baselines in few epochs
    ("*@*", {"train": {"epochs": 10, "lr": 0.05, "optimizer": "sgd", "momentum": 0.9,
                       "weight_decay": 5e-4, "schedule": "cosine", "batch_size": 128},
             "data": {"eval_batch_size": 1000}}),
    ("lenet300_100*@*", {"train": {"epochs": 15, "lr": 0.1, "nesterov": True}}),
    ("lenet5*@*", {"train": {"epochs": 12, "lr": 0.05, "nesterov": True}}),
    ("mlp*@*", {"train": {"epochs": 15, "lr": 0.1, "nesterov": True}}),
    # CIFAR-10 (He et al. 2016: SGD 0.1, momentum 0.9, wd 1e-4, ~160 epochs, crop + flip);
    # on a CPU budget use --epochs and a width multiplier: the cosine follows the epoch count
    ("*@cifar10", {"train": {"epochs": 160, "lr": 0.1, "weight_decay": 1e-4, "batch_size": 128},
                   "data": {"augment": True, "eval_batch_size": 500}}),
    ("vgg*@cifar10", {"train": {"lr": 0.05, "weight_decay": 5e-4}}),
    ("alexnet*@cifar10", {"train": {"lr": 0.02, "weight_decay": 5e-4}}),
    # PTB word level (PyTorch word-LM example; METHODS.md D): SGD lr 20, /4 on plateau, clip 0.25
    ("*@ptb", {"train": {"epochs": 40, "lr": 20.0, "optimizer": "sgd", "momentum": 0.0,
                         "weight_decay": 0.0, "schedule": "plateau", "gamma": 0.25, "grad_clip": 0.25,
                         "batch_size": 20, "bptt": 35},
               "data": {"eval_batch_size": 10, "bptt": 35}}),
    # PTB characters: Adam 0.002, clip 5, batch 64, bptt 100, a 1 x 512 LSTM
    ("*@ptb_char", {"train": {"epochs": 20, "lr": 0.002, "optimizer": "adam", "momentum": 0.9,
                              "weight_decay": 0.0, "schedule": "plateau", "gamma": 0.25,
                              "grad_clip": 5.0, "batch_size": 64, "bptt": 100},
                    "data": {"eval_batch_size": 64, "bptt": 100}}),
    ("lstm_lm@ptb_char", {"model": {"hidden_size": 512}}),
]

# The dataset each model family is meant for (used for timing and defaults).
DEFAULT_DATA: list[tuple[str, str]] = [
    ("lenet*", "mnist"), ("mlp*", "mnist"), ("lstm_lm*", "ptb"), ("*", "cifar10"),
]


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def recipe_for(model: str, data: str) -> dict[str, dict[str, Any]]:
    """Default ``{"train", "data", "model"}`` settings for ``model`` on ``data``.

    Every :data:`RECIPES` entry whose pattern matches ``"<model>@<data>"`` is merged, in order.
    >>> recipe_for("lenet5", "mnist")["train"]["epochs"]
    12
    """
    key = f"{model}@{data}"
    out: dict[str, Any] = {"train": {}, "data": {}, "model": {}}
    for pattern, rec in RECIPES:
        if fnmatch.fnmatch(key, pattern):
            out = _merge(out, rec)
    return out


def default_data_for(model: str) -> str:
    """The dataset a zoo model is built for: LeNets and MLPs -> mnist, LSTMs -> ptb, else cifar10."""
    for pattern, data in DEFAULT_DATA:
        if fnmatch.fnmatch(model, pattern):
            return data
    return "cifar10"


def check_model_name(name: str) -> None:
    """Raise :class:`UnknownNameError` (listing valid names) before any data is loaded."""
    names = registry.list_models()
    if name not in names:
        raise UnknownNameError(f"unknown model {name!r}; valid models: {', '.join(names)}")


def model_kwargs_for_data(task: str, info: Mapping[str, Any]) -> dict[str, Any]:
    """Constructor arguments that come from the data: classes, channels, image size, vocabulary."""
    if task == "lm":
        return {"vocab_size": int(info["vocab_size"])}
    return {k: info[k] for k in ("num_classes", "in_channels", "image_size") if k in info}


def build_model(name: str, task: str, info: Mapping[str, Any], model_args: Mapping[str, Any] | None = None
                ) -> nn.Module:
    """``create_model(name, **data_kwargs, **model_args)``; ``model_args`` win."""
    kwargs = {**model_kwargs_for_data(task, info), **dict(model_args or {})}
    return registry.create_model(name, **kwargs)


def make_loaders(data: str, batch_size: int, **options: Any):
    """:func:`weightzip.data.get_loaders` with only the options it accepts (others are refused)."""
    from ..data import get_loaders

    accepted = inspect.signature(get_loaders).parameters
    unknown = sorted(k for k in options if k not in accepted)
    if unknown:
        raise WeightzipError(f"unknown data option(s) {', '.join(unknown)} for {data!r}; "
                             f"valid: {', '.join(k for k in accepted if k not in ('name', 'batch_size'))}")
    return get_loaders(data, batch_size=batch_size, **{k: v for k, v in options.items() if v is not None})


def parse_key_values(items: Sequence[str] | None, what: str = "--model-arg") -> dict[str, Any]:
    """``["hidden=[300,100]", "width=0.5", "batch_norm=true"]`` -> typed dict (YAML scalars)."""
    import yaml

    out: dict[str, Any] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise WeightzipError(f"{what} {item!r} is not key=value, e.g. {what} width=0.5")
        try:
            out[key] = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError as e:
            raise WeightzipError(f"{what} {item!r}: cannot parse the value ({e.__class__.__name__})") from e
    return out


_SGD_ONLY = ("momentum", "nesterov")


def _train_settings(recipe: Mapping[str, Any], overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """Recipe settings overridden by the caller's; switching the optimizer drops the recipe's
    settings that belong to the other optimizer (SGD momentum / nesterov)."""
    overrides = dict(overrides or {})
    base = dict(recipe)
    if overrides.get("optimizer", base.get("optimizer")) != base.get("optimizer"):
        for k in _SGD_ONLY:
            base.pop(k, None)
    return {**base, **overrides}


def _record_path(out: Path) -> Path:
    return out.with_suffix(".json")


def train_model(model: str, data: str, out: str | Path, *, train: Mapping[str, Any] | None = None,
                model_args: Mapping[str, Any] | None = None, data_args: Mapping[str, Any] | None = None,
                resume: bool = False, callbacks: Sequence[Any] = (), use_recipe: bool = True
                ) -> dict[str, Any]:
    """Train zoo ``model`` on dataset ``data``; write ``out`` (checkpoint) and ``out.json`` (record).

    Settings: :func:`recipe_for` (unless ``use_recipe=False``), overridden by ``train``
    (:class:`TrainConfig` fields), ``data_args`` (:func:`weightzip.data.get_loaders` options:
    ``val_size``, ``subset``, ``augment``, ``root``, ...) and ``model_args`` (constructor
    keyword arguments; ``num_classes``/``in_channels``/``image_size`` or ``vocab_size`` come
    from the dataset). ``resume=True`` continues ``out`` if it exists (see ``Trainer.fit``).
    Returns the ``fit`` summary plus ``checkpoint``, ``record``, ``model_config`` and ``data``.
    """
    check_model_name(model)
    registry.get_dataset_fn(data)  # unknown dataset: UnknownNameError with the valid names
    rec = recipe_for(model, data) if use_recipe else {"train": {}, "data": {}, "model": {}}
    cfg = TrainConfig(**_train_settings(rec["train"], train))
    data_opts = {**rec["data"], **dict(data_args or {})}
    if cfg.bptt is not None and "bptt" not in (data_args or {}):
        data_opts["bptt"] = cfg.bptt
    data_opts.setdefault("seed", cfg.seed)
    margs = {**rec["model"], **dict(model_args or {})}

    loaders = make_loaders(data, cfg.batch_size, **data_opts)
    seed_everything(cfg.seed)  # the initial weights depend on the seed only
    net = build_model(model, loaders.task, loaders.info, margs)
    out = Path(out)
    meta = {"data": data, "data_args": {k: v for k, v in data_opts.items() if k != "root"}}
    trainer = Trainer(net, cfg, loaders, callbacks=callbacks, checkpoint=out, record=_record_path(out),
                      meta=meta)
    summary = trainer.fit(resume=resume)
    return {**summary, "checkpoint": str(out), "record": str(_record_path(out)),
            "model_config": getattr(net, "wz_config", None), "data": data, "model": net}


def load_model(path: str | Path, device: str | torch.device | None = "cpu") -> tuple[nn.Module, dict]:
    """A runnable model from a ``.pt`` run checkpoint or a ``.wz`` file, and what is known of it.

    Returns ``(model, info)``; ``info`` has ``kind`` ("checkpoint" | "wz"), and for checkpoints
    ``data``, ``data_args`` and ``train_config`` (so a run evaluates on its own data split).
    """
    path = Path(path)
    if path.suffix == ".wz":
        try:
            from ..api import load as wz_load
        except ImportError as e:  # the .wz runtime is optional at this layer
            raise WeightzipError(f"cannot read {str(path)!r}: .wz support is not available ({e})") from e
        if not path.is_file():
            raise WeightzipError(f"file {str(path)!r} not found")
        model = wz_load(path)
        return model.to(resolve_device(device)), {"kind": "wz"}
    ck = load_checkpoint(path)
    model = model_from_checkpoint(ck, device)
    meta = ck.get("meta") or {}
    return model, {"kind": "checkpoint", "data": meta.get("data"), "data_args": meta.get("data_args", {}),
                   "train_config": ck.get("train_config") or {}, "epoch": ck.get("epoch")}


def evaluate_checkpoint(path: str | Path, data: str | None = None, *, split: str = "test",
                        device: str | None = "cpu", batch_size: int | None = None,
                        root: str | Path | None = None, max_steps: int | None = None) -> dict[str, Any]:
    """Evaluate a ``.pt`` run (or ``.wz`` file) on ``split`` ("test" or "val") of ``data``.

    ``data`` defaults to the dataset the run was trained on; the run's validation size and
    ``bptt`` are reused so that "val" is the same held-out split. Returns the metrics of
    :func:`weightzip.training.evaluate.evaluate` plus ``model``, ``data`` and ``split``.
    """
    if split not in ("test", "val"):
        raise WeightzipError(f"unknown split {split!r}; use 'test' or 'val'")
    model, info = load_model(path, device)
    data = data or info.get("data")
    if not data:
        raise WeightzipError(f"{str(path)!r} does not record its dataset; pass --data DATASET")
    registry.get_dataset_fn(data)
    saved = dict(info.get("data_args") or {}) if data == info.get("data") else {}
    rec = recipe_for((getattr(model, "wz_config", None) or {}).get("name", "*"), data)
    ebs = batch_size or saved.get("eval_batch_size") or rec["data"].get("eval_batch_size") or 256
    opts = {k: saved[k] for k in ("val_size", "bptt", "split_seed") if saved.get(k) is not None}
    if "bptt" not in opts and "bptt" in rec["data"]:
        opts["bptt"] = rec["data"]["bptt"]
    loaders = make_loaders(data, ebs, eval_batch_size=ebs, root=root, **opts)
    loader = getattr(loaders, split)
    if loader is None:
        raise WeightzipError(f"{data!r} has no {split!r} split with val_size={opts.get('val_size')}; "
                             "use --split test")
    loss = (info.get("train_config") or {}).get("loss", "ce")
    metrics = evaluate(model, loader, loaders.task, device, loss=loss, max_steps=max_steps)
    name = (getattr(model, "wz_config", None) or {}).get("name")
    return {**metrics, "model": name, "data": data, "split": split, "path": str(path)}


def baseline_path(model: str, data: str, width: float | None = None,
                  root: str | Path | None = None) -> Path:
    """``runs/baselines/<model>-<data>.pt`` (``-w<width>`` before ``.pt`` for a width multiplier)."""
    root = Path(root) if root is not None else BASELINES_DIR
    suffix = "" if width is None else f"-w{width:g}"
    return root / f"{model}-{data}{suffix}.pt"


def _same(a: Any, b: Any) -> bool:
    norm = lambda v: list(v) if isinstance(v, tuple) else v  # noqa: E731  (JSON has no tuples)
    return norm(a) == norm(b)


_RESUMABLE_DIFF = {"epochs", "device", "progress", "log_every", "test_at_end"}


def ensure_baseline(model: str, data: str, *, epochs: int | None = None, device: str | None = None,
                    width: float | None = None, root: str | Path | None = None,
                    train: Mapping[str, Any] | None = None, model_args: Mapping[str, Any] | None = None,
                    data_args: Mapping[str, Any] | None = None, progress: bool = False,
                    force: bool = False) -> Path:
    """The path of a trained baseline of ``model`` on ``data``: reused if cached, else trained.

    A cached checkpoint is reused when it has finished ``epochs`` (default: the recipe's) with
    the same training settings; an interrupted one is resumed (``Trainer.fit(resume=True)``);
    one trained with different settings (other than ``epochs``/``device``) is retrained.
    ``width`` is passed to the model constructor (CIFAR models' width multiplier).
    """
    path = baseline_path(model, data, width, root)
    margs = dict(model_args or {})
    if width is not None:
        margs["width"] = width
    overrides = dict(train or {})
    if epochs is not None:
        overrides["epochs"] = epochs
    if device is not None:
        overrides["device"] = device
    overrides.setdefault("progress", progress)
    rec = recipe_for(model, data)
    want = TrainConfig(**_train_settings(rec["train"], overrides)).model_dump(mode="json")
    if path.is_file() and not force:
        ck = load_checkpoint(path)
        have = ck.get("train_config") or {}
        same = all(have.get(k) == v for k, v in want.items() if k not in _RESUMABLE_DIFF)
        kwargs = (ck.get("model_config") or {}).get("kwargs") or {}
        same = same and all(_same(kwargs.get(k), v) for k, v in margs.items())
        saved_data = (ck.get("meta") or {}).get("data_args") or {}
        want_data = {**rec["data"], **dict(data_args or {})}
        same = same and all(_same(saved_data.get(k), v) for k, v in want_data.items() if k != "root")
        if same and ck.get("epoch", 0) >= want["epochs"] and ck.get("test") is not None:
            log.info("reusing baseline %s (%d epochs)", path, ck["epoch"])
            return path
        if not same:
            log.info("baseline %s was trained with other settings: retraining", path)
            path.unlink()
    train_model(model, data, path, train=overrides, model_args=margs, data_args=data_args, resume=True)
    return path


@dataclass
class Source:
    """What a job starts from: the model, what its checkpoint knows, the dataset and its loaders."""

    model: nn.Module
    info: dict[str, Any]
    data: str | None  # None: no dataset (a .wz / .pt compressed post-training, without data)
    loaders: Any  # None without a dataset


def prepare_source(source: str | Path, *, device: str = "cpu", data: str | None = None,
                   recipe_data: str | None = None, baseline_train: Mapping[str, Any] | None = None,
                   model_args: Mapping[str, Any] | None = None, data_args: Mapping[str, Any] | None = None,
                   baseline_epochs: int | None = None) -> Source:
    """The model and data a compression job starts from, in one call.

    ``source`` is a ``.pt`` run checkpoint (its recorded dataset and split are reused), a ``.wz``
    file (any model whose graph the file holds: see ``weightzip.graph``) or a zoo model name (its cached baseline from :func:`ensure_baseline`, trained once when missing).
    The dataset is ``data``, else the checkpoint's, else ``recipe_data``, else the model's default.
    A ``.wz`` or ``.pt`` source with none of these gets ``data`` and ``loaders`` None: a
    post-training recipe runs without data (evaluation skipped); a training stage then says so.
    Loader options: the run's own (validation size, ``bptt``, augmentation), then the training
    recipe's, overridden by ``data_args`` (``batch_size`` included).
    """
    src = Path(source)
    if src.suffix == ".pt":
        if not src.is_file():
            raise WeightzipError(f"checkpoint {str(source)!r} not found")
        model, info = load_model(src, device)
        data = data or info.get("data") or recipe_data
    elif src.suffix == ".wz":  # a saved model (e.g. one outside the zoo, rebuilt from its recorded graph)
        model, info = load_model(src, device)
        model.train()
        data = data or ((getattr(model, "wz_manifest", {}) or {}).get("metrics") or {}).get("data") or recipe_data
    else:
        check_model_name(str(source))
        data = data or recipe_data or default_data_for(str(source))
        path = ensure_baseline(str(source), data, device=device, train=baseline_train,
                               model_args=model_args, epochs=baseline_epochs)
        model, info = load_model(path, device)
    if not data:
        if src.suffix in (".pt", ".wz"):
            return Source(model, info, None, None)
        raise WeightzipError("no dataset: pass --data DATASET (or set `data:` in the recipe)")
    saved = dict(info.get("data_args") or {})
    rec = recipe_for((getattr(model, "wz_config", None) or {}).get("name", "*"), data)
    over = dict(data_args or {})
    opts = {k: saved.get(k, rec["data"].get(k)) for k in ("val_size", "bptt", "augment")}
    opts.update(over)
    batch = int(over.get("batch_size", rec["train"].get("batch_size", 128)))
    opts.pop("batch_size", None)
    return Source(model, info, data, make_loaders(data, batch, **opts))
