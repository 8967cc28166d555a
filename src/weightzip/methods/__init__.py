"""Compression methods: one file per family, each registering its methods at import."""
import importlib
import pkgutil

from .base import Method, MethodConfig, StageContext

# import every submodule so that @register_method runs
for _m in pkgutil.iter_modules(__path__):
    if _m.name != "base":
        importlib.import_module(f"{__name__}.{_m.name}")

__all__ = ["Method", "MethodConfig", "StageContext"]
