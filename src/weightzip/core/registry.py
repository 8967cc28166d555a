"""Registries of models and compression methods, timm-style.

    @register_model("lenet300_100")
    def lenet300_100(num_classes=10, in_channels=1, image_size=28): ...

    create_model("lenet300_100")           # -> nn.Module, remembers how it was built
    list_models("resnet*")                 # -> ["resnet20", "resnet32", "resnet56", ...]

A model built by :func:`create_model` carries ``model.wz_config = {"name": ..., "kwargs": ...}``
so a ``.wz`` manifest can rebuild it without training code.
"""
from __future__ import annotations

import fnmatch
import importlib
from typing import Any, Callable

from ..errors import UnknownNameError

_MODELS: dict[str, Callable[..., Any]] = {}
_METHODS: dict[str, Any] = {}
_DATASETS: dict[str, Callable[..., Any]] = {}


def import_plugins() -> None:
    """Import the zoo, the methods (with their parametrization kinds) and the datasets by name:
    they register themselves at import. Named by string, so that ``core`` stays below them."""
    for mod in ("weightzip.models", "weightzip.methods", "weightzip.data"):
        importlib.import_module(mod)


def _unknown(kind: str, name: str, valid: list[str]) -> UnknownNameError:
    return UnknownNameError(
        f"unknown {kind} {name!r}; valid {kind}s: {', '.join(sorted(valid)) or '(none registered)'}"
    )


def register_model(name: str | None = None) -> Callable:
    """Decorator registering a model constructor under ``name`` (default: the function name)."""

    def deco(fn: Callable) -> Callable:
        key = name or fn.__name__
        if key in _MODELS and _MODELS[key] is not fn:
            raise ValueError(f"model {key!r} registered twice")
        _MODELS[key] = fn
        return fn

    return deco


def create_model(name: str, **kwargs: Any):
    """Build a registered model; ``model.wz_config`` records ``name`` and ``kwargs``."""
    import_plugins()
    if name not in _MODELS:
        raise _unknown("model", name, list(_MODELS))
    model = _MODELS[name](**kwargs)
    model.wz_config = {"name": name, "kwargs": dict(kwargs)}
    return model


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a glob ``pattern``, sorted."""
    import_plugins()
    return sorted(n for n in _MODELS if fnmatch.fnmatch(n, pattern))


def register_method(name: str) -> Callable:
    """Class decorator registering a compression method (see ``weightzip.methods.base.Method``)."""

    def deco(cls):
        if name in _METHODS and _METHODS[name] is not cls:
            raise ValueError(f"method {name!r} registered twice")
        cls.name = name
        _METHODS[name] = cls
        return cls

    return deco


def get_method(name: str):
    """The registered method class for ``name``."""
    import_plugins()
    if name not in _METHODS:
        raise _unknown("method", name, list(_METHODS))
    return _METHODS[name]


def list_methods(pattern: str = "*") -> list[str]:
    import_plugins()
    return sorted(n for n in _METHODS if fnmatch.fnmatch(n, pattern))


def register_dataset(name: str) -> Callable:
    """Decorator registering a dataset loader function under ``name``."""

    def deco(fn):
        _DATASETS[name] = fn
        return fn

    return deco


def get_dataset_fn(name: str):
    import_plugins()
    if name not in _DATASETS:
        raise _unknown("dataset", name, list(_DATASETS))
    return _DATASETS[name]


def list_datasets(pattern: str = "*") -> list[str]:
    import_plugins()
    return sorted(n for n in _DATASETS if fnmatch.fnmatch(n, pattern))
