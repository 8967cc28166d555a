"""Compression methods: one file per family, each registering its methods at import.

``base.py`` holds the interface every method implements and the context it is given;
``pipeline.py`` runs a recipe's stages through the registered methods, in order.
"""
import importlib
import pkgutil

from .base import Method, MethodConfig, StageContext

# import every submodule so that @register_method runs
for _m in pkgutil.iter_modules(__path__):
    if _m.name not in ("base", "pipeline"):
        importlib.import_module(f"{__name__}.{_m.name}")

__all__ = ["Method", "MethodConfig", "StageContext"]
