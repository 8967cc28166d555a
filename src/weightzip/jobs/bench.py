"""The ``bench`` job: latency of a ``.wz`` in every runtime mode against its decoded dense model."""
from __future__ import annotations

import re
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from .. import api
from ..analysis.speed import InputSpec


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


def token_bound(model: nn.Module, cap: int = 100) -> int:
    """Exclusive upper bound of random token ids for ``model``: ``min(cap, rows)`` over its
    embedding tables, so every id is in range whatever the vocabulary.

    ``rows``: each ``nn.Embedding``'s ``num_embeddings``; else the first dimension of 2-D state
    tensors named like an embedding (``emb``, ``wte``, ``tok``); else of every 2-D tensor (a
    conservative bound: ids below every table's rows).
    """
    rows = [m.num_embeddings for m in model.modules() if isinstance(m, nn.Embedding)]
    if not rows:
        mats = {k: t for k, t in model.state_dict().items() if t.dim() == 2}
        rows = [t.shape[0] for k, t in mats.items() if re.search(r"emb|wte|tok", k.lower())]
        rows = rows or [t.shape[0] for t in mats.values()]
    return max(1, min([cap, *rows]))


def input_spec_of(model: nn.Module) -> InputSpec:
    """One input of ``model`` for timing: per-sample shape, dtype, batch axis, token bound.

    * a zoo LSTM LM: time-major token windows ``[35, B]`` (int64, batch axis 1);
    * a model rebuilt from its recorded graph (``"user model"``): the graph's first example
      input (``manifest["graph"]["example_inputs"]``: shape and dtype). Integer inputs are token
      ids: batch-first ``[B, T]`` (a Hugging Face model), time-major ``[T, B]`` for the
      :class:`~weightzip.models.adapters.CausalLM` adapter; ids in ``[0, token_bound(model))``;
    * a zoo image model: ``(in_channels, image_size, image_size)`` from its constructor.
    """
    cfg = (getattr(model, "wz_config", None) or {})
    kw = cfg.get("kwargs") or {}
    name = cfg.get("name", "")
    if name.startswith("lstm"):
        return InputSpec((35,), torch.int64, batch_axis=1, high=token_bound(model))
    ex = ((getattr(model, "wz_manifest", None) or {}).get("graph") or {}).get("example_inputs")
    if ex and name == "user model":
        shape, dtype = list(ex[0]["shape"]), getattr(torch, ex[0]["dtype"])
        if dtype.is_floating_point:
            return InputSpec(tuple(shape[1:]), dtype)
        axis = 1 if cfg.get("class") == "CausalLM" and len(shape) > 1 else 0
        per_sample = tuple(shape[:axis] + shape[axis + 1:])
        high = token_bound(model) if dtype != torch.bool else None
        return InputSpec(per_sample, dtype, batch_axis=axis, high=high)
    import inspect as _inspect

    from ..core.registry import _MODELS  # defaults of the constructor

    params = _inspect.signature(_MODELS[name]).parameters if name in _MODELS else {}
    c = kw.get("in_channels", params.get("in_channels").default if "in_channels" in params else 1)
    s = kw.get("image_size", params.get("image_size").default if "image_size" in params else 28)
    return InputSpec((c, s, s))


def input_shape_of(model: nn.Module) -> tuple[int, ...]:
    """The shape of one input example (batch axis removed); see :func:`input_spec_of`."""
    return input_spec_of(model).shape


def recorded_examples(model: nn.Module, seed: int = 0) -> tuple[torch.Tensor, ...] | None:
    """Random inputs exactly as shaped (and typed) as the example inputs the model's recorded graph
    was captured with (``manifest["graph"]["example_inputs"]``); None when none are recorded.
    Floats are standard normal, integers token ids in ``[0, token_bound(model))``, bools True."""
    ex = ((getattr(model, "wz_manifest", None) or {}).get("graph") or {}).get("example_inputs")
    if not ex:
        return None
    g = torch.Generator().manual_seed(seed)
    out = []
    for spec in ex:
        shape, dtype = tuple(spec["shape"]), getattr(torch, spec["dtype"])
        if dtype.is_floating_point:
            out.append(torch.randn(shape, generator=g).to(dtype))
        elif dtype == torch.bool:
            out.append(torch.ones(shape, dtype=dtype))
        else:
            out.append(torch.randint(0, token_bound(model), shape, generator=g, dtype=dtype))
    return tuple(out)


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
                   threads=threads or 1, baselines=baselines, log=log, input_shape=input_spec_of,
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
