"""weightzip: compress trained PyTorch networks into real .wz files and run them.

    import weightzip as wz
    plan = wz.Recipe.from_yaml("recipes/deep-compression.yaml")
    result = wz.compress(model, plan, train_loader, val_loader)
    wz.save(result.model, "model.wz")
    model2 = wz.load("model.wz")
"""
__version__ = "0.1.0"

from .errors import (  # noqa: E402
    DataNotFoundError,
    InvalidModelError,
    RecipeError,
    UnknownNameError,
    WeightzipError,
    WeightzipFormatError,
)
from .core.registry import create_model, list_datasets, list_methods, list_models  # noqa: E402
from .core.recipe import Recipe  # noqa: E402
from .api import compress, load, save, verify  # noqa: E402

__all__ = [
    "compress", "save", "load", "verify", "Recipe", "create_model", "list_models", "list_methods",
    "list_datasets", "WeightzipError", "WeightzipFormatError", "UnknownNameError",
    "DataNotFoundError", "RecipeError", "InvalidModelError", "__version__",
]
