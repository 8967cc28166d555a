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


@torch.inference_mode()
def bench(path: str | Path, *, batch_sizes=(1, 64), repeat: int = 7, number: int = 50,
          modes=("sparse", "lut", "auto"), threads: int | None = 1) -> dict[str, Any]:
    """Latency of the compressed runtime vs the dense fp32 model (decoded), median of repeats.

    The dense reference is the same network with decoded fp32 weights run by plain PyTorch on
    the same machine and thread count. Returns ``{"rows": [{batch, mode, ms, speedup}], ...}``.
    """
    if threads:
        torch.set_num_threads(threads)
    dense = api.load(path, mode="dense")
    shape = input_shape_of(dense)
    rows = []
    for b in batch_sizes:
        if len(shape) == 1:  # language model: token windows
            vocab = (dense.wz_config.get("kwargs") or {}).get("vocab_size", 10000)
            x = torch.randint(0, vocab, (shape[0], b))
        else:
            x = torch.randn(b, *shape)
        t_dense = median_latency(lambda: dense(x), repeat, number)
        rows.append({"batch": b, "mode": "dense fp32", "ms": t_dense * 1e3, "speedup": 1.0})
        for mode in modes:
            m = api.load(path, mode=mode)
            swapped = sorted({type(mod).__name__ for mod in m.modules()} - {type(mod).__name__ for mod in dense.modules()})
            if not swapped:
                continue
            y_ref, y = dense(x), m(x)
            y_ref = y_ref[0] if isinstance(y_ref, tuple) else y_ref
            y = y[0] if isinstance(y, tuple) else y
            err = float((y - y_ref).abs().max())
            t = median_latency(lambda: m(x), repeat, number)
            rows.append({"batch": b, "mode": mode, "ms": t * 1e3, "speedup": t_dense / t,
                         "layers": swapped, "max_abs_diff": err})
    return {"path": str(path), "threads": torch.get_num_threads(), "input_shape": list(shape), "rows": rows}
