"""The ``bench`` job: latency of a ``.wz`` in every runtime mode against its decoded dense model."""
from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from .. import api


def median_latency(fn: Callable[[], Any], repeat: int, number: int) -> float:
    """Median over ``repeat`` of the mean time of ``number`` calls (seconds), after warm-up."""
    for _ in range(max(3, number // 4)):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        times.append((time.perf_counter() - t0) / number)
    return statistics.median(times)


def input_shape_of(model: nn.Module) -> tuple[int, ...]:
    """The shape of one input example, from the model's constructor arguments (or, for a model
    rebuilt from its recorded graph, the graph's example input: integer inputs are LM windows)."""
    cfg = (getattr(model, "wz_config", None) or {})
    kw = cfg.get("kwargs") or {}
    name = cfg.get("name", "")
    if name.startswith("lstm"):
        return (35,)
    ex = ((getattr(model, "wz_manifest", None) or {}).get("graph") or {}).get("example_inputs")
    if ex and name == "user model":
        shape, dtype = ex[0]["shape"], ex[0]["dtype"]
        return (shape[0],) if dtype.startswith("int") else tuple(shape[1:])
    import inspect as _inspect

    from ..core.registry import _MODELS  # defaults of the constructor

    params = _inspect.signature(_MODELS[name]).parameters if name in _MODELS else {}
    c = kw.get("in_channels", params.get("in_channels").default if "in_channels" in params else 1)
    s = kw.get("image_size", params.get("image_size").default if "image_size" in params else 28)
    return (c, s, s)


def bench(path: str | Path, *, batch_sizes=(1, 64), repeat: int = 7, number: int = 50,
          modes=("sparse", "lut", "auto", "compiled"), threads: int | None = 1, baselines: bool = True,
          log=None, data: str | None = None) -> dict[str, Any]:
    """Latency of every runtime on one file, interleaved in one process: torch eager dense,
    onnxruntime fp32 / int8, torch.ao int8 and the weightzip ``modes``, with speed-ups, the load
    average and a limit estimate; see :func:`weightzip.analysis.speed.compare`.
    Returns ``{"rows": [{batch, mode, ms, us, speedup, vs_onnxruntime, max_abs_diff}], ...}``."""
    from ..analysis.speed import compare

    examples = test_examples(data, max(batch_sizes)) if data else None
    return compare(path, batch_sizes=batch_sizes, repeat=repeat, number=number, modes=modes,
                   threads=threads or 1, baselines=baselines, log=log, input_shape=input_shape_of,
                   examples=examples)


def test_examples(data: str, n: int) -> torch.Tensor:
    """The first ``n`` test inputs of dataset ``data`` (normalized as in training)."""
    from ..data import get_loaders

    loaders = get_loaders(data, batch_size=min(n, 256), eval_batch_size=min(n, 256), val_size=0)
    xs, total = [], 0
    for x, _ in loaders.test:
        xs.append(x)
        total += x.shape[0]
        if total >= n:
            break
    return torch.cat(xs)[:n].contiguous()
