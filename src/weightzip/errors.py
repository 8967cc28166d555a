"""Exceptions raised by weightzip. Every message says what is wrong and how to fix it."""


class WeightzipError(Exception):
    """Base class of every error weightzip raises on purpose."""


class UnknownNameError(WeightzipError, KeyError):
    """A model, dataset or method name that is not registered. The message lists valid names."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DataNotFoundError(WeightzipError, FileNotFoundError):
    """Dataset files could not be found in any searched directory."""


class RecipeError(WeightzipError, ValueError):
    """An invalid recipe; the message names the stage and the field."""


class MissingDataError(RecipeError):
    """A stage needs data (training, a validation scan) that the compression was not given."""


class WeightzipFormatError(WeightzipError, ValueError):
    """A .wz file that is truncated, corrupted, of a wrong version, or otherwise unreadable."""


class InvalidModelError(WeightzipError, ValueError):
    """A model that cannot be compressed as it is (NaN or Inf weights, unsupported layer, ...)."""
