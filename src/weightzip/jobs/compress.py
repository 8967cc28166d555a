"""The ``compress`` job: a zoo model or a checkpoint -> recipe -> ``.wz`` -> accuracy re-measured from the file.

Returns plain data (a dict) that the CLI prints and benchmark scripts save; no algorithm of its own.
"""
from __future__ import annotations

import glob
import time
from pathlib import Path
from typing import Any, Callable

from torch import nn

from .. import api
from ..analysis.size import size_report
from ..core import parametrize
from ..core.recipe import Recipe
from ..training.evaluate import evaluate
from . import runs


NO_TEST: dict[str, str] = {"skipped": "no test data"}
"""The test metrics of a compression run without a dataset (post-training, nothing measured)."""


def _test_metrics(model: nn.Module, loaders, device: str, loss: str = "ce") -> dict[str, Any]:
    if getattr(loaders, "test", None) is None:
        return dict(NO_TEST)
    return evaluate(model, loaders.test, loaders.task, device, loss=loss)


def remove_stale_temp_files(out: str | Path, log: Callable[[str], None] = print) -> list[Path]:
    """Delete the temporary files a killed writer of ``out`` left next to it; returns them.

    :func:`weightzip.codec.container.write` writes ``.<name>.<random>.tmp`` in the output's folder
    and renames it over ``<name>`` only when complete, so a process killed mid-write (SIGKILL,
    power loss) leaves that temp file and never a partial ``.wz``. It is harmless (a hidden
    ``.tmp`` file, never read) and this removes it at the start of the next compression to the
    same output. Two jobs writing one output at once are not supported (the last rename would
    win anyway); a second job would remove the first one's unfinished temp file.
    """
    out = Path(out)
    stale = sorted(out.parent.glob(f".{glob.escape(out.name)}.*.tmp")) if out.parent.is_dir() else []
    for p in stale:
        p.unlink(missing_ok=True)
        log(f"removed {p}: the unfinished temp file of an interrupted write of {out.name}")
    return stale


def compress_run(source: str, recipe: str | Path | Recipe, out: str | Path, *, data: str | None = None,
                 workdir: str | Path | None = None, device: str = "cpu", resume: bool = False,
                 plot: str | Path | None = None, seed: int = 0, baseline_epochs: int | None = None,
                 log: Callable[[str], None] = print) -> dict[str, Any]:
    """Compress ``source`` (a ``.pt`` run checkpoint, a ``.wz`` file, or a zoo model name) with ``recipe``.

    A zoo name gets its baseline from :func:`weightzip.jobs.runs.ensure_baseline` (trained once,
    then cached under ``runs/baselines``). The model is compressed by the recipe's stages,
    written to ``out`` and re-loaded FROM THE FILE to measure test accuracy. Returns a summary
    with the baseline, compressed and from-file metrics, the size report and timings.

    Without a dataset (a ``.wz`` / ``.pt`` source, no ``data``, none recorded) a post-training
    recipe still runs and the file is written; every test metric is then
    ``{"skipped": "no test data"}`` and a stage that trains raises
    :class:`~weightzip.errors.MissingDataError` before any stage runs.
    """
    t_start = time.perf_counter()
    remove_stale_temp_files(out, log)
    recipe = recipe if isinstance(recipe, Recipe) else Recipe.from_yaml(recipe)
    src = runs.prepare_source(source, device=device, data=data, recipe_data=recipe.data,
                              baseline_train=dict(recipe.baseline) or None,
                              model_args=recipe.model_args or None, data_args=recipe.data_args,
                              baseline_epochs=baseline_epochs)
    model, info, data, loaders = src.model, src.info, src.data, src.loaders
    name = (getattr(model, "wz_config", None) or {}).get("name", "*")
    loss = (info.get("train_config") or {}).get("loss", "ce")
    base_test = _test_metrics(model, loaders, device, loss)
    log(f"baseline test: {base_test}")
    before = {k: v.clone() for k, v in parametrize.effective_state(model).items()}
    result = api.compress(model, recipe, loaders=loaders, workdir=workdir, device=device,
                          resume=resume, seed=seed, log=log)
    comp_test = _test_metrics(model, loaders, device, loss)
    model.cpu()
    metrics = {"baseline_test": base_test, "compressed_test": comp_test, "data": data}
    example = None
    if name == "user model":  # lets save record (and check) the graph of a model outside the zoo
        if getattr(loaders, "test", None) is not None:
            batch = next(iter(loaders.test))
            example = (batch[0] if isinstance(batch, (tuple, list)) else batch,)
        else:  # no data: inputs shaped like the ones the source file's graph recorded
            from .bench import recorded_examples

            example = recorded_examples(model)
    report = api.save(model, out, recipe=recipe, metrics=metrics, example_inputs=example)
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
                                  + ("test not measured (no data)" if "skipped" in file_test
                                     else f"test acc {file_test.get('accuracy', float('nan')):.4f}"))
        summary["plot"] = str(plot)
    return summary
