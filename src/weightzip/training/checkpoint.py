"""Checkpoints (atomic, ``weights_only`` loads), every RNG state, JSON run records, machine facts."""
from __future__ import annotations

import json
import os
import platform
import random
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import Tensor, nn

from ..core.parametrize import restore_parametrizations
from ..core.registry import create_model
from ..errors import WeightzipError
from ..fileio import atomic_write
from .config import resolve_device

CHECKPOINT_VERSION = 1


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


def _atomic_write(path: Path, write) -> None:
    """Write through a temporary file in the same directory, then ``os.replace`` it
    (:func:`weightzip.fileio.atomic_write`: fsync-ed, mode ``0o666 & ~umask``)."""
    atomic_write(path, write)


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


def model_from_checkpoint(ck: Mapping[str, Any] | str | Path, device: str | torch.device | None = "cpu"
                          ) -> nn.Module:
    """Rebuild the zoo model of a trainer checkpoint, its parametrizations, then its weights."""
    if not isinstance(ck, Mapping):
        ck = load_checkpoint(ck)
    cfg = ck.get("model_config")
    if not cfg or "name" not in cfg:
        raise WeightzipError("checkpoint has no model_config (not a zoo model): build the model "
                             "yourself and load_state_dict(checkpoint['model'])")
    model = create_model(cfg["name"], **dict(cfg.get("kwargs") or {}))
    if ck.get("parametrizations"):
        restore_parametrizations(model, ck["parametrizations"])
    model.load_state_dict(ck["model"])
    return model.to(resolve_device(device))
