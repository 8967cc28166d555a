"""Whole jobs behind the CLI commands ``compress``, ``inspect``, ``bench``, ``export``.

Each function does one job end to end and returns plain data (dicts) that the CLI prints and
benchmark scripts save; none of them holds algorithmic logic of its own.
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from . import api, parametrize, runs
from .errors import WeightzipError
from .recipe import Recipe


def _test_metrics(model: nn.Module, loaders, device: str, loss: str = "ce") -> dict[str, float]:
    from .train import evaluate

    return evaluate(model, loaders.test, loaders.task, device, loss=loss)


def compress_run(source: str, recipe: str | Path | Recipe, out: str | Path, *, data: str | None = None,
                 workdir: str | Path | None = None, device: str = "cpu", resume: bool = False,
                 plot: str | Path | None = None, seed: int = 0, baseline_epochs: int | None = None,
                 log: Callable[[str], None] = print) -> dict[str, Any]:
    """Compress ``source`` (a ``.pt`` run checkpoint, or a zoo model name) with ``recipe``.

    A zoo name gets its baseline from :func:`weightzip.runs.ensure_baseline` (trained once,
    then cached under ``runs/baselines``). The model is compressed by the recipe's stages,
    written to ``out`` and re-loaded FROM THE FILE to measure test accuracy. Returns a summary
    with the baseline, compressed and from-file metrics, the size report and timings.
    """
    t_start = time.perf_counter()
    recipe = recipe if isinstance(recipe, Recipe) else Recipe.from_yaml(recipe)
    src = Path(source)
    if src.suffix == ".pt":
        if not src.is_file():
            raise WeightzipError(f"checkpoint {source!r} not found")
        model, info = runs.load_model(src, device)
        data = data or info.get("data") or recipe.data
        data_args = dict(info.get("data_args") or {})
    else:
        runs.check_model_name(source)
        data = data or recipe.data or runs.default_data_for(source)
        train = dict(recipe.baseline)
        path = runs.ensure_baseline(source, data, device=device, train=train or None,
                                    model_args=recipe.model_args or None, epochs=baseline_epochs)
        model, info = runs.load_model(path, device)
        data_args = dict(info.get("data_args") or {})
    if not data:
        raise WeightzipError("no dataset: pass --data DATASET (or set `data:` in the recipe)")
    name = (getattr(model, "wz_config", None) or {}).get("name", "*")
    rec = runs.recipe_for(name, data)
    opts = {k: data_args.get(k, rec["data"].get(k)) for k in ("val_size", "bptt", "augment")}
    opts.update(recipe.data_args)
    batch = int(recipe.data_args.get("batch_size", rec["train"].get("batch_size", 128)))
    opts.pop("batch_size", None)
    loaders = runs.make_loaders(data, batch, **opts)
    loss = (info.get("train_config") or {}).get("loss", "ce")
    base_test = _test_metrics(model, loaders, device, loss)
    log(f"baseline test: {base_test}")
    before = {k: v.clone() for k, v in parametrize.effective_state(model).items()}
    result = api.compress(model, recipe, loaders=loaders, workdir=workdir, device=device,
                          resume=resume, seed=seed, log=log)
    comp_test = _test_metrics(model, loaders, device, loss)
    model.cpu()
    metrics = {"baseline_test": base_test, "compressed_test": comp_test, "data": data}
    report = api.save(model, out, recipe=recipe, metrics=metrics)
    from .analysis.size import size_report

    size = size_report(out)
    reloaded = api.load(out)
    file_test = _test_metrics(reloaded, loaders, "cpu", loss)
    summary = {
        "model": name, "data": data, "recipe": recipe.name, "out": str(out),
        "baseline_test": base_test, "compressed_test": comp_test, "from_file_test": file_test,
        "file_bytes": report.file_bytes, "baseline_bytes": report.baseline_bytes,
        "file_ratio": size.file_ratio, "payload_ratio": size.payload_ratio, "paper": size.paper,
        "pipeline": result.to_dict(), "seconds": time.perf_counter() - t_start,
    }
    if plot:
        from .report.plots import compression_summary

        after = parametrize.effective_state(model)
        compression_summary(before, after, size.rows, plot,
                            title=f"{name} / {recipe.name}: {size.file_ratio:.1f}x, "
                                  f"test acc {file_test.get('accuracy', float('nan')):.4f}")
        summary["plot"] = str(plot)
    return summary


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
    """The shape of one input example, from the model's constructor arguments."""
    cfg = (getattr(model, "wz_config", None) or {})
    kw = cfg.get("kwargs") or {}
    name = cfg.get("name", "")
    if name.startswith("lstm"):
        return (35,)
    import inspect as _inspect

    from .registry import _MODELS  # defaults of the constructor

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


def export(path: str | Path, to: str, out: str | Path) -> Path:
    """Write the decoded dense model of a ``.wz`` as safetensors or ONNX."""
    out = Path(out)
    model = api.load(path, mode="dense")
    if to == "safetensors":
        from safetensors.torch import save_file

        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        # tied weights share storage; safetensors refuses shared tensors, so store copies
        save_file({k: v.clone() for k, v in state.items()}, str(out),
                  metadata={"weightzip_source": str(path), "model": str(model.wz_config)})
    elif to == "onnx":
        shape = input_shape_of(model)
        x = torch.randn(1, *shape) if len(shape) > 1 else torch.randint(0, 10, (shape[0], 1))
        torch.onnx.export(model, (x,), str(out), dynamo=False, input_names=["input"], output_names=["output"])
    else:
        raise WeightzipError(f"unknown export format {to!r}; valid: safetensors, onnx")
    return out
