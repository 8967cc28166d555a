"""Adapters that let models from other libraries (Hugging Face ``transformers``, ...) meet the
trainer's contracts without changing them (docs/architecture.md, Trainer):

* :class:`CausalLM`: a batch-first causal LM (``model(input_ids [B, T]) -> logits [B, T, V]``
  or an output with ``.logits``) as a time-major weightzip LM:
  ``forward(x [T, B], hidden=None) -> (logits [T, B, V], None)`` (no recurrent state).
* :class:`Classifier`: a classifier whose output is an object with ``.logits`` (or a tuple whose
  first item is the logits) as ``forward(x) -> logits [B, C]``.

Both are plain modules: ``wz.save`` records their graph with the wrapped model's (no class
needed to load the file).
"""
from __future__ import annotations

import torch
from torch import nn


def _logits(out):
    if isinstance(out, torch.Tensor):
        return out
    if hasattr(out, "logits"):
        return out.logits
    if isinstance(out, (tuple, list)):
        return out[0]
    raise TypeError(f"cannot find logits in a {type(out).__name__}")


def _no_cache_kwargs(model: nn.Module) -> dict:
    cfg = getattr(model, "config", None)
    return {"use_cache": False} if cfg is not None and hasattr(cfg, "use_cache") else {}


class CausalLM(nn.Module):
    """Time-major LM view of a batch-first causal LM: ``x [T, B] -> (logits [T, B, V], None)``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self._kw = _no_cache_kwargs(model)

    def forward(self, x: torch.Tensor, hidden=None):
        return _logits(self.model(x.t(), **self._kw)).transpose(0, 1), None


class Classifier(nn.Module):
    """``x -> logits`` of a classifier that returns an output object (``.logits``)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _logits(self.model(x))
