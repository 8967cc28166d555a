"""The public verbs: ``compress``, ``save``, ``load``. Thin glue over pipeline, codec and runtime."""
from __future__ import annotations

import os

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from . import __version__
from .core import parametrize
from .methods.pipeline import Pipeline, PipelineResult, check_finite
from .core.recipe import Recipe, StorageConfig
from .methods.base import StageContext


@dataclass
class _Loaders:
    train: Any
    val: Any
    test: Any = None
    task: str = "classify"
    info: dict | None = None


def compress(model: nn.Module, recipe: Recipe | str | Path, train_loader=None, val_loader=None, *,
             loaders=None, device: str = "cpu", workdir: str | Path | None = None,
             resume: bool = False, seed: int = 0, log=print, task: str = "classify",
             workers: int | None = None) -> PipelineResult:
    """Run ``recipe``'s stages on ``model`` (in place) and return the :class:`PipelineResult`.

    Pass either ``train_loader``/``val_loader`` or a ``loaders`` object (``.train .val .test
    .task``, as returned by :func:`weightzip.data.get_loaders`), or no data at all: a
    post-training recipe (magnitude pruning, k-means / PQ sharing without ``finetune``, uniform
    quantization) runs on the weights alone, and evaluation is then skipped (the baseline and
    every stage's ``val`` read ``{"skipped": "no validation data"}``). A stage that trains
    (``train`` / ``finetune`` blocks, ``finetune``, ``variational_dropout``, ...) without a
    ``train_loader`` raises :class:`~weightzip.errors.MissingDataError` naming it, before any
    stage runs.

    Example (no data)::

        plan = wz.Recipe.from_dict({"name": "ptq", "stages": [
            {"method": "prune_magnitude", "sparsity": 0.5}, {"method": "kmeans_share", "bits": 4}]})
        result = wz.compress(model, plan)
        result.baseline   # {"val": {"skipped": "no validation data"}}
    """
    if not isinstance(recipe, Recipe):
        recipe = Recipe.from_yaml(recipe)
    if loaders is None:
        loaders = _Loaders(train_loader, val_loader, None, task)
    ctx = StageContext(loaders=loaders, device=device, seed=seed, log=log, workers=workers)
    return Pipeline(recipe, ctx, workdir=workdir, resume=resume).run(model)


@dataclass
class SaveReport:
    path: Path
    file_bytes: int
    payload_bytes: int
    baseline_bytes: int

    @property
    def file_ratio(self) -> float:
        return self.baseline_bytes / self.file_bytes


def encode_model(model: nn.Module, storage: StorageConfig | None = None, *,
                 state: Mapping[str, torch.Tensor] | None = None, tied: dict[str, str] | None = None,
                 progress: bool | None = False) -> dict[str, Any]:
    """Encode every tensor of the baked model into codec Formats (``{name: Format}``); a tied
    parameter is encoded once, under its first name (:func:`~weightzip.core.parametrize.tied_parameters`).

    The tensors are made one at a time (:class:`~weightzip.core.parametrize.EffectiveState`),
    encoded and dropped: beside the model, memory holds one tensor's value and the encoder's
    working copies of it, plus the Formats. ``state``: the model's effective state (a dict or an
    ``EffectiveState``), if already at hand; ``tied``: its ``tied_parameters``, likewise.
    ``progress``: a per-tensor progress bar (None: only when stderr is a terminal)."""
    from tqdm.auto import tqdm

    from .codec import encode
    from .core.heap import release_free_memory

    storage = storage or StorageConfig()
    check_finite(model)
    state = parametrize.EffectiveState(model) if state is None else state
    tied = parametrize.tied_parameters(model, state) if tied is None else tied
    names = [n for n in state if n not in tied]        # stored once, re-tied by load
    hints = parametrize.storage_hints(model)
    formats = {}
    for name in tqdm(names, total=len(names), unit="tensor", desc="encode", disable=None if progress is None else not progress):
        opts = {"name": name, "entropy": storage.entropy, "sparse": storage.sparse,
                "float_dtype": storage.float_dtype if name not in hints else "float32"}
        t = state[name]
        formats[name] = encode(t, hints.get(name), options=opts)
        del t
        release_free_memory()   # the encoder's working copies, before the next tensor's
    return formats


def save(model: nn.Module, path: str | Path, *, recipe: Recipe | None = None,
         metrics: dict[str, Any] | None = None, storage: StorageConfig | None = None,
         extra: dict[str, Any] | None = None, example_inputs=None, graph: bool | str = "auto",
         progress: bool | None = None) -> SaveReport:
    """Write ``model`` (parametrizations baked) to a ``.wz`` file, atomically.

    The manifest records the zoo name and constructor arguments (``model.wz_config``) or
    ``"user model"``; the recipe; metrics; runtime settings such as activation quantizers.

    ``graph``: record the computation graph as data (``weightzip.graph``, allowlisted ops only)
    so that ``load`` rebuilds the model without its class. ``"auto"`` (default): for models
    outside the zoo; ``True``: also for zoo models; ``False``: never. ``example_inputs`` (a tuple
    of tensors, e.g. one batch) lets models that ``torch.fx`` cannot trace be captured with
    ``torch.export`` and checks the recorded graph against the model. A model whose graph
    cannot be recorded is saved without it, with a warning naming the reason.
    ``progress``: a per-tensor progress bar while encoding (default: only on a terminal).

    Memory: the baked tensors are made and encoded one at a time (:func:`encode_model`), never
    all at once beside the model; the graph's clean copy is made before them.
    """
    from .core.heap import large_blocks_mapped

    with large_blocks_mapped():   # each tensor's working copies go back to the OS when freed
        return _save(model, path, recipe=recipe, metrics=metrics, storage=storage, extra=extra,
                     example_inputs=example_inputs, graph=graph, progress=progress)


def _save(model, path, *, recipe, metrics, storage, extra, example_inputs, graph, progress) -> SaveReport:
    from .analysis.size import baseline_bytes
    from .codec import container, encode
    from .core.heap import release_free_memory

    storage = storage or (recipe.storage if recipe is not None else StorageConfig())
    state = parametrize.EffectiveState(model)
    tied = parametrize.tied_parameters(model, state)
    cfg = getattr(model, "wz_config", None) or {"name": "user model", "class": type(model).__name__}
    # the graph first: its clean copy of the model (the baked weights) is the largest thing save
    # makes, so it is made while nothing else is held (not beside the encoded tensors)
    release_free_memory()
    graph_json, graph_tensors = _capture_graph(model, path, example_inputs, graph, cfg)
    formats = encode_model(model, storage, state=state, tied=tied, progress=progress)
    for name, t in graph_tensors.items():   # after the model's tensors, as always
        from .graph import EXTRA_PREFIX

        formats[EXTRA_PREFIX + name] = encode(t, None, options={"name": EXTRA_PREFIX + name})
    del graph_tensors
    # the baseline of the unique baked tensors, from their shapes and dtypes alone (meta tensors)
    baseline = baseline_bytes({k: torch.empty(state.shape(k), dtype=state.dtype(k), device="meta")
                               for k in state if k not in tied})
    del state
    manifest = {
        "weightzip_version": __version__,
        "model": cfg,
        "recipe": recipe.to_dict() if recipe is not None else None,
        "metrics": metrics or {},
        "runtime": getattr(model, "wz_runtime", {}) or {},
        "baseline_bytes": baseline,
        "extra": extra or {},
    }
    if graph_json is not None:
        manifest["graph"] = graph_json
    if tied:
        manifest["tied"] = tied  # {alias: stored name}: one tensor, several names
    path = Path(path)
    container.write(path, manifest, formats)
    payload = sum(f.nbytes for f in formats.values())
    return SaveReport(path, path.stat().st_size, payload, manifest["baseline_bytes"])


def _capture_graph(model, path, example_inputs, graph, cfg) -> tuple[dict | None, dict[str, torch.Tensor]]:
    """Capture the graph (see ``save``): ``(graph JSON or None, its constants {name: tensor}``,
    which ``save`` stores as ``__graph__.<name>``)."""
    import warnings

    from .core.heap import release_free_memory
    from .graph import GraphCaptureError, capture

    if graph is False or (graph == "auto" and cfg.get("name") != "user model"):
        return None, {}
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    try:
        g, tensors = capture(model, example_inputs)
    except GraphCaptureError as e:
        warnings.warn(f"{path}: the model's graph is not recorded ({e}); loading the file will need "
                      f"weightzip.load(path, model=...)", stacklevel=4)
        return None, {}
    finally:
        release_free_memory()   # the clean copy and the export's working memory are gone
    return g, {name: t.detach().cpu() for name, t in tensors.items()}


def load(path: str | Path, model: nn.Module | None = None, mode: str = "dense", *,
         max_decoded_bytes: int | str | None = None, lazy: bool = True) -> nn.Module:
    """Load a ``.wz`` as a runnable ``nn.Module`` (see :func:`weightzip.runtime.load.load`);
    ``max_decoded_bytes`` caps what a (possibly hostile) file may make the loader allocate;
    ``lazy`` (default) maps the file and decodes one tensor at a time into the model (peak: the
    model plus about one tensor); ``lazy=False`` reads and decodes the whole file first."""
    from .runtime.load import load as _load

    return _load(path, model=model, mode=mode, max_decoded_bytes=max_decoded_bytes, lazy=lazy)


def verify(path: str | Path, *, max_decoded_bytes: int | str | None = None) -> dict:
    """Check a ``.wz`` completely without building a model (``weightzip verify``): the report of
    :func:`weightzip.codec.verify.verify` (``ok``, ``errors``, per-tensor rows, sizes, seconds),
    read tensor by tensor from the mapped file (:func:`weightzip.codec.lazy.verify`: peak memory
    about one tensor)."""
    from .codec.lazy import verify as _verify

    return _verify(path, max_decoded_bytes=max_decoded_bytes)


def set_max_decoded_bytes(limit: int | str) -> int:
    """Set this process's default ``max_decoded_bytes`` (bytes, or ``"8G"``) for every later read
    of a ``.wz`` (it sets ``$WEIGHTZIP_MAX_DECODED_BYTES``); returns the limit in bytes."""
    from .codec.container import MAX_DECODED_ENV, parse_size

    n = parse_size(limit)
    os.environ[MAX_DECODED_ENV] = str(n)
    return n


def load_checkpoint_model(path: str | Path, device: str = "cpu") -> nn.Module:
    """Rebuild a zoo model (with its parametrizations) from a trainer/pipeline ``.pt`` checkpoint."""
    from .core.registry import create_model

    ck = torch.load(path, weights_only=True, map_location=device)
    cfg = ck.get("model_config")
    if not cfg:
        raise ValueError(f"{path}: checkpoint has no model_config; build the model yourself and load ck['model']")
    model = create_model(cfg["name"], **cfg.get("kwargs", {}))
    if ck.get("parametrizations"):
        parametrize.restore_parametrizations(model, ck["parametrizations"])
    model.load_state_dict(ck["model"])
    return model
