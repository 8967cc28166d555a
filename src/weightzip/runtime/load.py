"""``.wz`` -> runnable ``nn.Module``.

    model = load("lenet5.wz")                 # zoo model rebuilt from the manifest, dense weights
    model = load("lenet5.wz", mode="sparse")  # pruned Linear layers run as sparse CSR kernels
    model = load("mine.wz", model=MyNet())    # a user model: the caller supplies the module

Nothing here imports training code (``methods``, ``train``, ``pipeline``): a file loads
with the codec, the zoo and this package only. Activation quantizers recorded in the manifest
are re-installed, so evaluating the loaded model gives the accuracy it was trained to.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..codec import container
from ..codec import decode
from ..errors import WeightzipFormatError

MODES = ("dense", "sparse", "lut", "compiled", "auto")


def read_model_state(path: str | Path, *, max_decoded_bytes: int | str | None = None
                     ) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, Any]]:
    """Read a ``.wz``: ``(manifest, decoded dense state_dict, formats)``; refused before decoding
    when its tensors declare more than ``max_decoded_bytes`` (:func:`weightzip.codec.container.read`)."""
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


def build_model(manifest: dict[str, Any], path: str | Path = "file", state: dict[str, torch.Tensor] | None = None,
                graph_tensors: dict[str, torch.Tensor] | None = None) -> nn.Module:
    """Rebuild the zoo model named in the manifest, or a user model from its recorded graph."""
    from ..core.registry import create_model

    cfg = manifest.get("model") or {}
    name = cfg.get("name")
    if (not name or name == "user model") and manifest.get("graph") is not None and state is not None:
        from ..graph import rebuild

        gm = rebuild(manifest["graph"], {k: (tuple(v.shape), v.dtype) for k, v in state.items()}, graph_tensors)
        gm.wz_config = dict(cfg)
        return gm
    if not name or name == "user model":
        cls = cfg.get("class", "?")
        raise WeightzipFormatError(
            f"{path} holds a user model (class {cls}); build that module yourself and pass it: "
            f"weightzip.load({str(path)!r}, model={cls}(...))"
        )
    kwargs = cfg.get("kwargs") or {}
    if not isinstance(kwargs, dict):
        raise WeightzipFormatError(f"{path}: manifest model kwargs must be a mapping")
    return create_model(name, **kwargs)


def load(path: str | Path, model: nn.Module | None = None, mode: str = "dense", *,
         max_decoded_bytes: int | str | None = None) -> nn.Module:
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
    """
    if mode not in MODES:
        raise ValueError(f"unknown runtime mode {mode!r}; valid modes: {', '.join(MODES)}")
    manifest, state, formats = read_model_state(path, max_decoded_bytes=max_decoded_bytes)
    from ..graph import EXTRA_PREFIX

    graph_tensors = {k[len(EXTRA_PREFIX):]: state.pop(k) for k in list(state) if k.startswith(EXTRA_PREFIX)}
    tied = tied_names(manifest, state, path)
    for alias, canon in tied.items():
        state[alias] = state[canon]
    if model is None:
        model = build_model(manifest, path, state, graph_tensors)
    else:  # names the model ties to a stored tensor (a checkpoint that kept one name of a tie)
        from ..core.parametrize import tied_parameters

        for alias, canon in tied_parameters(model).items():
            if alias not in state and canon in state:
                state[alias] = state[canon]
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
        state[k] = state[k].to(v.dtype)
    model.load_state_dict(state)
    retie(model, tied)
    act = (manifest.get("runtime") or {}).get("activation_quant")
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
