"""The streaming ``compress`` job: a safetensors checkpoint -> post-training recipe -> ``.wz``,
one tensor at a time, never building the model.

    weightzip compress model.safetensors -r recipes/kmeans4-transformer.yaml -o model.wz
    weightzip compress hf-folder/ -r recipe.yaml -o model.wz     # model.safetensors.index.json shards

Each tensor is read alone (``safetensors.safe_open``), wrapped in a one-layer stand-in module at
its own dotted path, the recipe's stages run on that stand-in exactly as on a whole model (the
same :class:`~weightzip.methods.pipeline.Pipeline`, the same method code), and its compressed
formats are kept; the ``.wz`` is written at the end. Peak memory is about the largest tensor
and its working copies plus the compressed output, whatever the model's size.

The layer kind a recipe selects by (``types: [Linear, Embedding, Conv2d, Conv1D]``) is inferred
from the tensor (a checkpoint holds no classes) [reconstructed rule, not a standard]: a 2-D
``*.weight`` is an ``Embedding`` when its path names an embedding (``embed``, ``wte``,
``wpe``, ``shared``), GPT-2's ``Conv1D`` for ``c_attn`` / ``c_proj`` / ``c_fc``, else a
``Linear``; 3-D is ``Conv1d``, 4-D ``Conv2d``; everything else (biases, norms) is stored as is.
Only stages that need no data and decide per tensor can stream: a training / fine-tune block,
a sensitivity scan or ``skip_first`` / ``skip_last`` (which need the layer order of a model)
are refused with the reason. The file loads with ``weightzip.load(path, model=MyModel(...))``.
"""
from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn

from ..core.recipe import Recipe
from ..errors import RecipeError, WeightzipError

INDEX_NAME = "model.safetensors.index.json"
_EMBED = re.compile(r"(embed|(^|\.)wte\.|(^|\.)wpe\.|(^|\.)shared\.)")
_GPT_CONV1D = re.compile(r"(^|\.)(c_attn|c_proj|c_fc)\.weight$")


def is_safetensors_source(src: str | Path) -> bool:
    """A ``.safetensors`` file, or a folder holding one or an HF shard index."""
    p = Path(src)
    if p.is_file():
        return p.suffix == ".safetensors"
    return p.is_dir() and ((p / INDEX_NAME).is_file() or any(p.glob("*.safetensors")))


def tensor_files(src: str | Path) -> dict[str, Path]:
    """``{tensor name: file}`` of a safetensors file, a folder with an HF shard index
    (``model.safetensors.index.json``: ``{"weight_map": {name: shard}}``) or a folder of files."""
    from safetensors import safe_open

    p = Path(src)
    if p.is_dir() and (p / INDEX_NAME).is_file():
        try:
            wmap = json.loads((p / INDEX_NAME).read_text())["weight_map"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise WeightzipError(f"{p / INDEX_NAME}: not a shard index with a 'weight_map' ({e})") from None
        out = {str(k): p / str(v) for k, v in wmap.items()}
        missing = sorted({str(f) for f in out.values() if not f.is_file()})
        if missing:
            raise WeightzipError(f"{p}: shards named in the index are missing: {missing[:3]}")
        return out
    files = [p] if p.is_file() else sorted(p.glob("*.safetensors"))
    if not files:
        raise WeightzipError(f"{p}: no .safetensors file (give a file, or a folder with one or with {INDEX_NAME})")
    out: dict[str, Path] = {}
    for f in files:
        try:
            with safe_open(str(f), framework="pt") as fh:
                for k in fh.keys():
                    out[k] = f
        except Exception as e:
            raise WeightzipError(f"{f}: not a readable safetensors file ({type(e).__name__}: {e})") from None
    return out


def iter_tensors(files: dict[str, Path]) -> Iterator[tuple[str, torch.Tensor]]:
    """``(name, tensor)`` one at a time, in file order (each shard opened once)."""
    from safetensors import safe_open

    by_file: dict[Path, list[str]] = {}
    for name, f in files.items():
        by_file.setdefault(f, []).append(name)
    for f, names in by_file.items():
        with safe_open(str(f), framework="pt") as fh:
            for name in names:
                yield name, fh.get_tensor(name)


def stand_in(name: str, t: torch.Tensor) -> nn.Module | None:
    """The one-layer module a recipe sees for tensor ``name`` (see the module docstring), its
    ``weight`` the tensor itself; None for tensors no layer kind is inferred for."""
    if not name.endswith(".weight") or not t.is_floating_point() or t.dim() < 2:
        return None
    shape = tuple(t.shape)
    with torch.device("meta"):
        if t.dim() == 2 and _EMBED.search(name):
            mod: nn.Module = nn.Embedding(shape[0], shape[1])
        elif t.dim() == 2 and _GPT_CONV1D.search(name):
            mod = Conv1D(shape[1], shape[0])
        elif t.dim() == 2:
            mod = nn.Linear(shape[1], shape[0], bias=False)
        elif t.dim() == 3:
            mod = nn.Conv1d(shape[1], shape[0], shape[2], bias=False)
        elif t.dim() == 4:
            mod = nn.Conv2d(shape[1], shape[0], shape[2:], bias=False)
        else:
            return None
    # bf16 / fp16 checkpoints are clustered in float32 (exact for their values; CPU float32 ops
    # are several times faster); the file stores float32, which a bf16 model casts back on load
    mod.weight = nn.Parameter(t.float() if t.dtype in (torch.bfloat16, torch.float16) else t, requires_grad=False)
    return mod


class Conv1D(nn.Module):
    """Stand-in for GPT-2's ``Conv1D`` (``weight`` [nx, nf]): recipes select it by this class
    name; it is never run (the file stores only its tensor)."""

    def __init__(self, nf: int, nx: int):
        super().__init__()
        self.nf, self.nx = nf, nx
        self.weight = nn.Parameter(torch.empty(nx, nf))


def check_streamable(recipe: Recipe) -> None:
    """Refuse stages that need data or the whole model (see the module docstring)."""
    from ..core.registry import get_method

    for i, st in enumerate(recipe.stages):
        where = f"stage {i} ({st.method})"
        needs = get_method(st.method)(st).needs_data()
        if needs:
            split, why = next(iter(needs.items()))
            raise RecipeError(f"{where} needs {split} data ({why}); a safetensors checkpoint is compressed "
                              "tensor by tensor without data: use post-training stages only, or load the "
                              "model and run weightzip.compress(model, recipe, loaders)")
        sel = st.select
        if sel.skip_first or sel.skip_last:
            raise RecipeError(f"{where}: select.skip_first / skip_last need the model's layer order, which a "
                              "checkpoint does not give; name the layers to skip in select.exclude instead")


def _root(name: str, mod: nn.Module) -> nn.Module:
    """A container holding ``mod`` at the tensor's module path (``a.b.weight`` -> ``root.a.b``),
    so name patterns and per-layer values of the recipe see the real names."""
    root = nn.Module()
    parent = root
    parts = name.split(".")[:-1]
    for part in parts[:-1]:
        child = nn.Module()
        parent.add_module(part, child)
        parent = child
    parent.add_module(parts[-1], mod)
    return root


def compress_safetensors(src: str | Path, recipe: str | Path | Recipe, out: str | Path, *,
                         progress: bool | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Compress the checkpoint ``src`` tensor by tensor with a post-training ``recipe`` into ``out``.

    Returns ``{"out", "tensors", "selected", "file_bytes", "baseline_bytes", "file_ratio",
    "seconds"}``; ``baseline_bytes`` counts every floating-point tensor at 4 bytes per value, as
    for a model (a bf16 checkpoint's own size is half of it, reported as ``source_bytes``).
    """
    from .. import __version__
    from ..api import encode_model
    from ..codec import container, encode
    from ..methods.base import StageContext
    from ..methods.pipeline import Pipeline
    from .compress import remove_stale_temp_files

    t0 = time.perf_counter()
    recipe = recipe if isinstance(recipe, Recipe) else Recipe.from_yaml(recipe)
    check_streamable(recipe)
    files = tensor_files(src)
    remove_stale_temp_files(out, log)
    formats: dict[str, Any] = {}
    baseline = source = 0
    selected: list[str] = []
    matched = [0] * len(recipe.stages)
    storage = recipe.storage
    from tqdm.auto import tqdm

    bar = tqdm(total=len(files), unit="tensor", desc="compress", disable=not progress if progress is not None else None)
    for name, t in iter_tensors(files):
        bar.set_postfix_str(name[-40:], refresh=False)
        if t.is_floating_point():
            baseline += 4 * t.numel()
        source += t.numel() * t.element_size()
        mod = stand_in(name, t)
        if mod is None:
            opts = {"name": name, "entropy": storage.entropy, "sparse": storage.sparse,
                    "float_dtype": storage.float_dtype}
            formats[name] = encode(t, None, options=opts)
        else:
            root = _root(name, mod)
            picks = [i for i, st in enumerate(recipe.stages) if _picks(root, st.select)]
            for i in picks:
                matched[i] += 1
            if picks:  # the stages whose selection takes this tensor, in recipe order
                sub = recipe.model_copy(update={"stages": [recipe.stages[i] for i in picks]})
                Pipeline(sub, StageContext(loaders=_NoData(), log=lambda s: None)).run(root)
                selected.append(name)
            formats.update(encode_model(root, storage))
        del t, mod
        bar.update(1)
    bar.close()
    for i, n in enumerate(matched):
        if n == 0:
            st = recipe.stages[i]
            raise RecipeError(f"stage {i} ({st.method}): selection {st.select.model_dump(exclude_defaults=True)} "
                              f"picks no tensor of {src} (layer kinds are inferred from the tensors: see "
                              "weightzip.jobs.stream); nothing was written")
    manifest = {
        "weightzip_version": __version__,
        "model": {"name": "user model", "class": f"safetensors checkpoint {Path(src).name}"},
        "recipe": recipe.to_dict(),
        "metrics": {"stream": {"tensors": len(files), "selected": len(selected)}},
        "runtime": {},
        "baseline_bytes": baseline,
        "extra": {"source": Path(src).name, "source_bytes": source},
    }
    out = Path(out)
    container.write(out, manifest, formats)
    size = out.stat().st_size
    summary = {"out": str(out), "tensors": len(files), "selected": len(selected), "file_bytes": size,
               "baseline_bytes": baseline, "source_bytes": source, "file_ratio": baseline / size,
               "seconds": time.perf_counter() - t0}
    log(f"{len(files)} tensors ({len(selected)} compressed by the recipe) -> {out}: {size:,} bytes, "
        f"{summary['file_ratio']:.2f}x fp32 ({summary['seconds']:.1f}s)")
    return summary


def _picks(root: nn.Module, selection) -> bool:
    from ..core.select import select

    try:
        return bool(select(root, selection))
    except ValueError:  # "picks no tensor": not this stage's tensor
        return False


class _NoData:
    """Loaders of a run without data: every split is None (evaluation is skipped)."""

    train = val = test = None
    task = "classify"
    info: dict = {}
