"""Which tensors a stage touches: the ONE selection rule of weightzip.

A :class:`Selection` picks ``(module_name, module, tensor_name)`` triples:

* ``types``: module class names (``Linear``, ``Conv2d``, ``LSTMLayer``, ...); default: Linear and
  Conv2d (and the zoo's LSTM layers);
* ``tensors``: tensor names on those modules (default ``["weight"]``; LSTM layers use
  ``weight_ih``/``weight_hh``); ``"*"`` = every floating-point parameter of the module;
* ``names``: module-name patterns to include: globs (``"features.*"``) or regexes written
  ``"re:<regex>"``; default: all;
* ``exclude``: module-name patterns to leave out (same syntax);
* ``skip_first`` / ``skip_last``: leave out the first / last selected module (common for
  quantization of the input and output layers).

Example (YAML)::

    select: {types: [Linear], exclude: ["re:^classifier\\.2$"]}
"""
from __future__ import annotations

import fnmatch
import re
from typing import Iterator

from pydantic import BaseModel, ConfigDict, field_validator
from torch import nn

DEFAULT_TYPES = ("Linear", "Conv2d", "LSTMLayer")
DEFAULT_TENSORS = {"LSTMLayer": ("weight_ih", "weight_hh")}


def type_name(module: nn.Module) -> str:
    """The module's class name, seen through parametrize's ``Parametrized<Name>`` wrapper class."""
    name = type(module).__name__
    if name.startswith("Parametrized") and type(module).__bases__:
        return type(module).__bases__[0].__name__
    return name


def _match(name: str, pattern: str) -> bool:
    if pattern.startswith("re:"):
        return re.search(pattern[3:], name) is not None
    return fnmatch.fnmatchcase(name, pattern)


class Selection(BaseModel):
    """Typed, validated tensor selection (see module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    types: list[str] = list(DEFAULT_TYPES)
    tensors: list[str] | None = None
    names: list[str] | None = None
    exclude: list[str] = []
    skip_first: bool = False
    skip_last: bool = False

    @field_validator("names", "exclude")
    @classmethod
    def _valid_regex(cls, v):
        for p in v or []:
            if p.startswith("re:"):
                try:
                    re.compile(p[3:])
                except re.error as e:
                    raise ValueError(f"bad regex {p!r}: {e}") from None
        return v

    def tensor_names(self, module: nn.Module) -> list[str]:
        if self.tensors is None:
            return list(DEFAULT_TENSORS.get(type_name(module), ("weight",)))
        if self.tensors == ["*"]:
            return [n for n, p in _own_params(module) if p.is_floating_point()]
        return list(self.tensors)


def _own_params(module: nn.Module):
    """Parameters of a module including parametrized ones (by their plain name)."""
    from torch.nn.utils import parametrize as P

    names = [n for n, _ in module.named_parameters(recurse=False)]
    if P.is_parametrized(module):
        names += list(module.parametrizations.keys())
    return [(n, getattr(module, n)) for n in names]


def select(model: nn.Module, selection: Selection | dict | None = None) -> list[tuple[str, nn.Module, str]]:
    """The tensors ``selection`` picks in ``model``, in module order.

    Returns a list of ``(module_name, module, tensor_name)``; raises ``ValueError`` naming the
    selection when it picks nothing (almost always a typo in a name or type).
    """
    if selection is None:
        selection = Selection()
    elif isinstance(selection, dict):
        selection = Selection(**selection)
    modules = []
    for mname, mod in model.named_modules():
        if type_name(mod) not in selection.types:
            continue
        if selection.names is not None and not any(_match(mname, p) for p in selection.names):
            continue
        if any(_match(mname, p) for p in selection.exclude):
            continue
        modules.append((mname, mod))
    if selection.skip_first and modules:
        modules = modules[1:]
    if selection.skip_last and modules:
        modules = modules[:-1]
    out = []
    for mname, mod in modules:
        own = dict(_own_params(mod))
        for t in selection.tensor_names(mod):
            if t not in own or own[t] is None:
                continue
            out.append((mname, mod, t))
    if not out:
        raise ValueError(
            f"selection {selection.model_dump(exclude_defaults=True)} picks no tensor; module types "
            f"present: {sorted({type_name(m) for _, m in model.named_modules()})}"
        )
    return out


def iter_selected(model: nn.Module, selection: Selection | dict | None = None) -> Iterator[tuple[str, nn.Module, str]]:
    yield from select(model, selection)


def layer_matches(key: str, module_name: str, module: nn.Module) -> bool:
    """Whether a per-layer key names this module: a module name or glob, ``re:<regex>``, or
    ``type:<ClassName>`` (seen through parametrize's ``Parametrized<Name>``)."""
    if key.startswith("type:"):
        return type_name(module) == key[5:]
    return _match(module_name, key)


def per_layer_value(value, module_name: str, module: nn.Module, field: str = "value", where: str | None = None):
    """The value for ``module_name`` from a plain value or an ordered ``{pattern: value}`` mapping.

    The first matching key in the written order wins; ``default`` applies when none matches::

        per_layer_value({"layers.4": 6, "type:Conv2d": 8, "default": 5}, "layers.0", lin)  # -> 5

    Raises :class:`~weightzip.errors.RecipeError` when no key matches and there is no ``default``.
    """
    if not isinstance(value, dict):
        return value
    for key, v in value.items():
        if key != "default" and layer_matches(key, module_name, module):
            return v
    if "default" in value:
        return value["default"]
    from ..errors import RecipeError

    prefix = f"{where}: " if where else ""
    raise RecipeError(f"{prefix}field '{field}': no entry matches layer {module_name!r} and there is no "
                      f"`default`; add '{module_name}: <value>' or 'default: <value>' (keys given: {list(value)})")


def qualified(module_name: str, tensor_name: str) -> str:
    """``"fc1" + "weight" -> "fc1.weight"`` (state_dict-style key)."""
    return f"{module_name}.{tensor_name}" if module_name else tensor_name
