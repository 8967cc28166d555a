"""Inference from ``.wz`` files. Imports ``codec`` and ``models``, never ``methods`` or training code."""
from .load import load, read_model_state

__all__ = ["load", "read_model_state"]
