"""Swap layers of a loaded model for packed runtime layers: the converter registry.

A converter is ``fn(module, module_name, formats, mode) -> replacement nn.Module or None``
(``formats``: the file's ``{tensor name: Format}``, ``mode``: ``sparse`` / ``lut`` / ``auto``).
:func:`convert` walks ``model.named_modules()`` top-down and, for each module not inside one
already swapped, asks the converters in registry order; the first non-None answer replaces it.

The built-in converters and their order are stated once, in :data:`BUILTIN`:

1. ``pq_lut`` (:func:`weightzip.runtime.lut.pq_lut_converter`): a PQ format is more specific
   than "a Linear with zeros", so it runs before the sparse ones (which would otherwise claim
   pruned PQ layers); in ``auto`` mode it races them (and the dense layer) in a ``FastestOf``.
2. ``fused_sparse_mlp`` (:func:`weightzip.runtime.sparse.fuse_sequential`): a whole sparse
   Linear/ReLU stack as one compiled CSR chain, before
3. ``sparse_linear`` (:func:`weightzip.runtime.sparse.sparse_linear_converter`): one pruned Linear.

:func:`register_converter` adds further converters after these (or replaces one by name, in
place).
"""
from __future__ import annotations

from typing import Any, Callable

from torch import nn

from . import lut, sparse

__all__ = ["Converter", "BUILTIN", "register_converter", "converter_names", "alternatives", "convert"]

Converter = Callable[[nn.Module, str, "dict[str, Any]", str], "nn.Module | None"]

_CONVERTERS: dict[str, Converter] = {}


def register_converter(name: str) -> Callable[[Converter], Converter]:
    """Decorator: register ``fn(module, module_name, formats, mode) -> replacement or None`` as
    ``name`` (appended after those already registered; an existing name keeps its place)."""

    def deco(fn: Converter) -> Converter:
        _CONVERTERS[name] = fn
        return fn

    return deco


def converter_names() -> list[str]:
    """The registered converters, in the order :func:`convert` asks them."""
    return list(_CONVERTERS)


def alternatives(module: nn.Module, name: str, formats: dict[str, Any], mode: str,
                 exclude: tuple[str, ...] = ()) -> dict[str, nn.Module]:
    """``{converter name: replacement}`` from every registered converter not in ``exclude`` that
    applies to ``module`` (what ``auto`` mode times against the LUT layer)."""
    out: dict[str, nn.Module] = {}
    for key, fn in list(_CONVERTERS.items()):
        if key in exclude:
            continue
        alt = fn(module, name, formats, mode)
        if alt is not None:
            out[key] = alt
    return out


def _pq_lut(module: nn.Module, name: str, formats: dict[str, Any], mode: str) -> nn.Module | None:
    """:func:`lut.pq_lut_converter`, racing the other registered converters in ``auto`` mode."""
    return lut.pq_lut_converter(module, name, formats, mode,
                                others=lambda: alternatives(module, name, formats, mode, exclude=("pq_lut",)))


BUILTIN: tuple[tuple[str, Converter], ...] = (
    ("pq_lut", _pq_lut),
    ("fused_sparse_mlp", sparse.fuse_sequential),
    ("sparse_linear", sparse.sparse_linear_converter),
)
for _name, _fn in BUILTIN:
    register_converter(_name)(_fn)


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def convert(model: nn.Module, formats: dict[str, Any], mode: str) -> nn.Module:
    """Swap layers of ``model`` in place for packed runtime layers, where a converter applies."""
    replaced: list[str] = []
    for name, module in list(model.named_modules()):
        if not name or any(name.startswith(p + ".") for p in replaced):
            continue  # the root, or inside a module already swapped
        for conv in _CONVERTERS.values():
            new = conv(module, name, formats, mode)
            if new is not None:
                _replace(model, name, new)
                replaced.append(name)
                break
    return model
