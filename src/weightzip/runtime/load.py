"""``.wz`` -> runnable ``nn.Module``.

    model = load("lenet5.wz")                 # zoo model rebuilt from the manifest, dense weights
    model = load("lenet5.wz", mode="sparse")  # pruned Linear layers run as sparse CSR kernels
    model = load("mine.wz", model=MyNet())    # a user model: the caller supplies the module

Nothing here imports training code (``methods``, ``train``, ``pipeline``): a file loads
with the codec, the zoo and this package only. Activation quantizers recorded in the manifest
are re-installed, so evaluating the loaded model gives the accuracy it was trained to.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..codec import container
from ..codec import decode
from ..errors import WeightzipFormatError

MODES = ("dense", "sparse", "lut", "compiled", "auto")


def read_model_state(path: str | Path, *, max_decoded_bytes: int | str | None = None, lazy: bool = False
                     ) -> tuple[dict[str, Any], Mapping[str, torch.Tensor], Mapping[str, Any]]:
    """Read a ``.wz``: ``(manifest, decoded dense state_dict, formats)``; refused before decoding
    when its tensors declare more than ``max_decoded_bytes`` (:func:`weightzip.codec.container.read`).

    ``lazy=True``: the file is opened with mmap (:class:`weightzip.codec.lazy.LazyFile`) and every
    stream checked, but nothing is decoded or kept: ``state`` is a read-only mapping that decodes a
    tensor on each access and ``formats`` one that reads its Format on each access; the values are
    equal to the eager ones. Close the file with ``state.close()`` (or let it be collected)."""
    if lazy:
        from ..codec.lazy import LazyFile

        lf = LazyFile(path, max_decoded_bytes=max_decoded_bytes)
        try:
            lf.check_all()
        except BaseException:
            lf.close()
            raise
        return lf.manifest, lf, lf.formats()
    manifest, formats = container.read(path, max_decoded_bytes=max_decoded_bytes)
    state = {}
    for name, fmt in formats.items():
        try:
            state[name] = decode(fmt)
        except WeightzipFormatError:
            raise
        except Exception as e:  # a decoder bug or hostile stream must not crash with a raw error
            raise WeightzipFormatError(f"{path}: tensor {name!r} cannot be decoded ({type(e).__name__}: {e})") from None
    return manifest, state, formats


def tied_names(manifest: dict[str, Any], state: dict[str, torch.Tensor], path: str | Path = "file") -> dict[str, str]:
    """The manifest's ``"tied"`` map ``{alias: stored name}``, checked against the stored tensors."""
    tied = manifest.get("tied") or {}
    if not isinstance(tied, dict):
        raise WeightzipFormatError(f"{path}: manifest field 'tied' must be an object {{alias: stored name}}")
    for alias, canon in tied.items():
        if not isinstance(alias, str) or not isinstance(canon, str) or canon not in state or alias in state:
            raise WeightzipFormatError(f"{path}: manifest field 'tied': {alias!r} -> {canon!r} must name a "
                                       f"stored tensor by a name that is not stored itself")
    return tied


def retie(model: nn.Module, tied: dict[str, str]) -> None:
    """Make every alias the SAME Parameter as its stored name again (a rebuilt graph module
    creates them apart; a class that ties its weights itself already shares them)."""
    for alias, canon in tied.items():
        a_mod, _, a_leaf = alias.rpartition(".")
        c_mod, _, c_leaf = canon.rpartition(".")
        owner = model.get_submodule(a_mod)
        target = getattr(model.get_submodule(c_mod), c_leaf)
        if isinstance(target, nn.Parameter) and a_leaf in owner._parameters and owner._parameters[a_leaf] is not target:
            owner._parameters[a_leaf] = target


def _model_bytes(model: nn.Module) -> int:
    """Bytes of every parameter and buffer of ``model`` (each tensor once; works on meta tensors)."""
    seen: dict[int, int] = {}
    for t in [*model.parameters(), *model.buffers()]:
        seen[id(t)] = t.numel() * t.element_size()
    return sum(seen.values())


class _OverBudget(Exception):
    pass


def _meta_zoo_model(name: str, kwargs: dict, path, limit: int, max_entries: int) -> nn.Module:
    """The zoo model on the meta device (no storage), refused as it is built once its registered
    tensors pass ``2 x limit`` bytes or it registers more than ``max_entries`` tensors and modules
    (a depth of 10^6 is stopped after ``max_entries`` layers, not after building them all)."""
    import threading

    from torch.nn.modules import module as nn_module

    from ..core.registry import create_model

    me, tally = threading.get_ident(), {"bytes": 0, "entries": 0}

    def count(_mod, _name, obj):
        if threading.get_ident() != me:
            return None
        tally["entries"] += 1
        if isinstance(obj, torch.Tensor):
            tally["bytes"] += obj.numel() * obj.element_size()
        if tally["bytes"] > 2 * limit or tally["entries"] > max_entries:
            raise _OverBudget
        return None

    handles = [nn_module.register_module_parameter_registration_hook(count),
               nn_module.register_module_buffer_registration_hook(count),
               nn_module.register_module_module_registration_hook(count)]
    try:
        with torch.device("meta"):
            return create_model(name, **kwargs)
    except _OverBudget:
        if tally["bytes"] > 2 * limit:
            what, allowed = (f"more than {2 * limit} bytes of parameters and buffers",
                             f"at most max_decoded_bytes={limit} bytes (raise the limit if the file is trusted)")
        else:
            what, allowed = (f"more than {max_entries} tensors and modules",
                             f"at most {max_entries} (8 per tensor of the file, plus 256)")
        raise WeightzipFormatError(f"{path}: manifest field 'model.kwargs': {name}(**{_short(kwargs)}) would build "
                                   f"{what}; allowed: {allowed}") from None
    except Exception as e:  # wrong argument names / types / values: the zoo's own message
        raise WeightzipFormatError(f"{path}: manifest field 'model.kwargs': {name}(**{_short(kwargs)}) cannot be "
                                   f"built: {type(e).__name__}: {str(e)[:300]}") from None
    finally:
        for h in handles:
            h.remove()


def _short(kwargs: dict) -> str:
    s = repr(kwargs)
    return s if len(s) <= 200 else s[:197] + "..."


def _check_against_state(expected: dict[str, torch.Tensor], state: dict[str, torch.Tensor], path, field: str) -> None:
    """The tensors a model (or module) would hold are the file's, by name and shape."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise WeightzipFormatError(
            f"{path}: manifest field {field!r} builds a model that does not match the file's tensors: missing "
            f"{missing[:5]}, unexpected {unexpected[:5]} (was it written from another model or configuration?)")
    for k, v in expected.items():
        if tuple(v.shape) != tuple(state[k].shape):
            raise WeightzipFormatError(f"{path}: manifest field {field!r}: tensor {k!r} has shape "
                                       f"{tuple(state[k].shape)} in the file, the model built from it expects "
                                       f"{tuple(v.shape)}")


def _check_graph_modules(graph: dict, state: dict[str, torch.Tensor], path, limit: int) -> None:
    """Before ``rebuild`` allocates its modules: each one, built on the meta device, holds the file's
    tensors (names and shapes), and all of them together at most ``limit`` bytes."""
    from ..graph.ops import build_module

    total = 0
    for mpath, spec in (graph.get("modules") or {}).items():
        mod = build_module(spec, str(mpath))          # on the meta device
        prefix = f"{mpath}." if mpath else ""
        for k, v in mod.state_dict().items():
            name = prefix + k
            if name not in state or tuple(state[name].shape) != tuple(v.shape):
                have = tuple(state[name].shape) if name in state else "no such tensor"
                raise WeightzipFormatError(f"{path}: manifest field 'graph.modules': module {mpath!r} holds "
                                           f"{name!r} of shape {tuple(v.shape)}, the file has {have}")
        total += _model_bytes(mod)
        if total > limit:
            raise WeightzipFormatError(f"{path}: manifest field 'graph.modules': the modules hold more than "
                                       f"max_decoded_bytes={limit} bytes of parameters and buffers")


def build_model(manifest: dict[str, Any], path: str | Path = "file", state: dict[str, torch.Tensor] | None = None,
                graph_tensors: dict[str, torch.Tensor] | None = None, *,
                max_decoded_bytes: int | str | None = None) -> nn.Module:
    """Rebuild the zoo model named in the manifest, or a user model from its recorded graph.

    Nothing the manifest declares is allocated before it is checked: a zoo model is first built
    on the meta device, and refused (:class:`WeightzipFormatError` naming ``model.kwargs``) when
    its parameters and buffers exceed ``max_decoded_bytes`` (default: the container's limit) or,
    given the file's ``state``, do not match its tensor names and shapes; a graph's modules are
    checked the same way before ``rebuild`` allocates them.
    """
    from ..codec.container import default_max_decoded_bytes, parse_size
    from ..codec.manifest import check_model
    from ..core.registry import create_model, list_models

    limit = default_max_decoded_bytes() if max_decoded_bytes is None else parse_size(max_decoded_bytes)
    try:
        check_model(manifest.get("model"), limit)
    except WeightzipFormatError as e:
        raise WeightzipFormatError(f"{path}: {e}") from None
    cfg = manifest.get("model") or {}
    name = cfg.get("name")
    graph = manifest.get("graph")
    if (not name or name == "user model") and graph is not None and state is not None:
        from ..codec.manifest import check_graph
        from ..graph import rebuild

        try:
            check_graph(graph, limit)
        except WeightzipFormatError as e:
            raise WeightzipFormatError(f"{path}: {e}") from None
        _check_graph_modules(graph, state, path, limit)
        try:
            gm = rebuild(graph, {k: (tuple(v.shape), v.dtype) for k, v in state.items()}, graph_tensors)
        except WeightzipFormatError as e:
            raise WeightzipFormatError(f"{path}: {e}") from None
        except Exception as e:  # the graph's own checks missed it: still a file that cannot be read
            raise WeightzipFormatError(f"{path}: manifest field 'graph' cannot be rebuilt: "
                                       f"{type(e).__name__}: {str(e)[:300]}") from None
        gm.wz_config = dict(cfg)
        return gm
    if not name or name == "user model":
        cls = cfg.get("class", "?")
        raise WeightzipFormatError(
            f"{path} holds a user model (class {cls}); build that module yourself and pass it: "
            f"weightzip.load({str(path)!r}, model={cls}(...))"
        )
    zoo = list_models()
    if name not in zoo:
        raise WeightzipFormatError(f"{path}: manifest field 'model.name': unknown zoo model {name!r}; allowed: "
                                   f"{', '.join(zoo)} (or a user model saved with its graph)")
    kwargs = dict(cfg.get("kwargs") or {})
    max_entries = 8 * (len(state) + 32) if state is not None else 1 << 16
    meta = _meta_zoo_model(name, kwargs, path, limit, max_entries)
    nbytes = _model_bytes(meta)
    if nbytes > limit:
        raise WeightzipFormatError(
            f"{path}: manifest field 'model.kwargs': {name}(**{_short(kwargs)}) holds {nbytes} bytes of parameters "
            f"and buffers, more than max_decoded_bytes={limit}; allowed: at most that many (raise the limit if the "
            "file is trusted: weightzip.load(..., max_decoded_bytes=N) or --max-decoded-bytes N)")
    if state is not None:
        _check_against_state(meta.state_dict(), state, path, "model.kwargs")
    del meta
    try:
        return create_model(name, **kwargs)
    except Exception as e:  # pragma: no cover - it built on the meta device
        raise WeightzipFormatError(f"{path}: manifest field 'model.kwargs': {name}(**{_short(kwargs)}) cannot be "
                                   f"built: {type(e).__name__}: {str(e)[:300]}") from None


def check_activation_quant(model: nn.Module, spec: Any, path: str | Path = "file") -> list[dict]:
    """``runtime.activation_quant`` checked (:func:`weightzip.codec.manifest.check_activation_quant`)
    and every module it names present in ``model``; returns the spec."""
    from ..codec.manifest import check_activation_quant as check_types

    try:
        check_types(spec)
    except WeightzipFormatError as e:
        raise WeightzipFormatError(f"{path}: {e}") from None
    modules = dict(model.named_modules())
    for i, item in enumerate(spec or []):
        if item["module"] not in modules:
            raise WeightzipFormatError(f"{path}: manifest field 'runtime.activation_quant[{i}].module': the model has "
                                       f"no module {item['module']!r}; allowed: one of its module names "
                                       f"(e.g. {', '.join(list(modules)[1:6])})")
    return spec or []


def load(path: str | Path, model: nn.Module | None = None, mode: str = "dense", *,
         max_decoded_bytes: int | str | None = None, lazy: bool = True) -> nn.Module:
    """Load ``path`` into ``model`` (or the zoo model its manifest names); returns it in eval mode.

    ``mode``: ``dense`` decodes every tensor to a dense fp32 weight; ``sparse`` additionally
    runs pruned ``nn.Linear`` layers from their CSR form; ``lut`` runs product-quantized layers
    by lookup tables where the file has them; ``compiled`` runs the whole model as one native
    program over the compressed weights (:mod:`weightzip.runtime.compiled`; layers without a
    kernel run decoded dense); ``auto`` is ``compiled`` when every layer compiles, else it picks
    per layer what the benchmarks found fastest. The loaded module carries ``wz_manifest``.
    ``max_decoded_bytes`` (bytes, or ``"8G"``): refuse files whose tensors declare more decoded
    bytes (default 2 GiB, or the environment variable ``WEIGHTZIP_MAX_DECODED_BYTES``); nothing is
    decoded before every tensor is checked.

    ``lazy`` (default): the file is opened with mmap (:mod:`weightzip.codec.lazy`), every stream
    checked, the model built against the tensors' shapes alone, then each tensor decoded and
    copied into it in turn: peak memory is the model plus about one decoded tensor, where
    ``lazy=False`` holds the whole stream area and every decoded tensor beside the model. The
    loaded model is the same either way.
    """
    if mode not in MODES:
        raise ValueError(f"unknown runtime mode {mode!r}; valid modes: {', '.join(MODES)}")
    manifest, stored, formats = read_model_state(path, max_decoded_bytes=max_decoded_bytes, lazy=lazy)
    try:
        if lazy and mode != "dense":  # the runtimes keep Formats: read them (compressed bytes) now
            formats = dict(formats.items())
        return _load_into(path, model, mode, manifest, stored, formats, max_decoded_bytes, lazy)
    finally:
        if lazy:
            stored.close()


def _load_into(path, model: nn.Module | None, mode: str, manifest: dict[str, Any], stored: Mapping[str, torch.Tensor],
               formats: Mapping[str, Any], max_decoded_bytes, lazy: bool) -> nn.Module:
    """:func:`load` once the file is read: ``stored`` is the decoded state (eager) or a
    :class:`~weightzip.codec.lazy.LazyFile` that decodes on access (lazy)."""
    from ..graph import EXTRA_PREFIX

    graph_tensors = {k[len(EXTRA_PREFIX):]: stored[k] for k in list(stored) if k.startswith(EXTRA_PREFIX)}
    source = {k: k for k in stored if not k.startswith(EXTRA_PREFIX)}       # model name -> stored name
    # what the checks and the graph rebuild look at (names, shapes, dtypes): the tensors, or
    # storage-less stand-ins of them
    state = {k: (stored.meta_tensor(k) if lazy else stored[k]) for k in source}
    tied = tied_names(manifest, state, path)
    for alias, canon in tied.items():
        state[alias] = state[canon]
        source[alias] = canon
    if model is None:
        model = build_model(manifest, path, state, graph_tensors, max_decoded_bytes=max_decoded_bytes)
    else:  # names the model ties to a stored tensor (a checkpoint that kept one name of a tie)
        from ..core.parametrize import tied_parameters

        for alias, canon in tied_parameters(model).items():
            if alias not in state and canon in state:
                state[alias] = state[canon]
                source[alias] = source[canon]
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise WeightzipFormatError(
            f"{path} does not match the model: missing tensors {missing[:5]}, unexpected {unexpected[:5]}"
            " (was it written from another model or configuration?)"
        )
    for k, v in expected.items():
        if tuple(v.shape) != tuple(state[k].shape):
            raise WeightzipFormatError(f"{path}: tensor {k!r} has shape {tuple(state[k].shape)}, "
                                       f"the model expects {tuple(v.shape)}")
    if lazy:  # one stored tensor decoded at a time, copied into every name it has, then dropped
        groups: dict[str, list[str]] = {}
        for k in expected:
            groups.setdefault(source[k], []).append(k)
        del state, expected
        for canon, names in groups.items():
            t = stored[canon]
            model.load_state_dict({k: t for k in names}, strict=False)  # copies, converting the dtype
            del t
    else:
        for k, v in expected.items():
            state[k] = state[k].to(v.dtype)
        model.load_state_dict(state)
    retie(model, tied)
    act = check_activation_quant(model, (manifest.get("runtime") or {}).get("activation_quant"), path)
    if act:
        from ..core.parametrize import install_activation_quant

        install_activation_quant(model, act)
    if mode in ("compiled", "auto"):
        from .compiled.module import compile_from_file

        cm = compile_from_file(path, model, formats, manifest, required=mode == "compiled",
                               reload=lambda: (load(path, mode="dense", max_decoded_bytes=max_decoded_bytes),
                                               container.read(path, max_decoded_bytes=max_decoded_bytes)[1]))
        if cm is not None:
            return cm
    if mode != "dense":
        from .convert import convert

        convert(model, formats, mode)
    model.eval()
    model.wz_manifest = manifest
    return model
