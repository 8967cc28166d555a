"""The ``compress`` job: a zoo model or a checkpoint -> recipe -> ``.wz`` -> accuracy re-measured from the file.

Returns plain data (a dict) that the CLI prints and benchmark scripts save; no algorithm of its own.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from .. import api
from ..core import parametrize
from ..core.recipe import Recipe
from ..errors import WeightzipError
from . import runs


def _test_metrics(model: nn.Module, loaders, device: str, loss: str = "ce") -> dict[str, float]:
    from ..training.evaluate import evaluate
    return evaluate(model, loaders.test, loaders.task, device, loss=loss)


def compress_run(source: str, recipe: str | Path | Recipe, out: str | Path, *, data: str | None = None,
                 workdir: str | Path | None = None, device: str = "cpu", resume: bool = False,
                 plot: str | Path | None = None, seed: int = 0, baseline_epochs: int | None = None,
                 log: Callable[[str], None] = print) -> dict[str, Any]:
    """Compress ``source`` (a ``.pt`` run checkpoint, or a zoo model name) with ``recipe``.

    A zoo name gets its baseline from :func:`weightzip.jobs.runs.ensure_baseline` (trained once,
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
    from ..analysis.size import size_report

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
        from ..report.plots import compression_summary

        after = parametrize.effective_state(model)
        compression_summary(before, after, size.rows, plot,
                            title=f"{name} / {recipe.name}: {size.file_ratio:.1f}x, "
                                  f"test acc {file_test.get('accuracy', float('nan')):.4f}")
        summary["plot"] = str(plot)
    return summary
