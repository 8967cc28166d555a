"""Losses and evaluation, for both tasks.

* ``"classify"``: batches ``(x [B, ...], y int64 [B])``, ``model(x) -> logits [B, C]``
  (``x`` may be int64 token ids ``[B, T]``, as Hugging Face classifiers take).
* ``"lm"``: time-major windows ``(x int64 [T, B], y int64 [T, B])``,
  ``model(x, hidden) -> (logits [T, B, V], hidden)``; the hidden state is carried across windows
  and detached between them; perplexity is ``exp(mean cross-entropy per token)``.

The logits may come wrapped (:func:`logits_of`): a Hugging Face ``ModelOutput`` (``.logits``),
a dict with ``"logits"``, or a tuple whose first item is the logits (classify) - so
``BertForSequenceClassification`` trains and evaluates as it is, without an adapter.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import InvalidModelError, WeightzipError
from .config import resolve_device


def squared_hinge_loss(logits: Tensor, target: Tensor) -> Tensor:
    """One-vs-all squared hinge loss of BinaryConnect / LAB.

    ``t = 2 * onehot(y) - 1`` (``+1`` for the true class, ``-1`` elsewhere);
    ``loss = mean_{b, c} max(0, 1 - t_bc * o_bc) ** 2`` over the ``[B, C]`` outputs ``o``.
    """
    t = F.one_hot(target, logits.shape[-1]).to(logits.dtype) * 2 - 1  # (B x C)
    return torch.clamp(1.0 - t * logits, min=0).pow(2).mean()


def compute_loss(output: Tensor, target: Tensor, loss: str = "ce") -> Tensor:
    """Mean loss of ``output [N, C]`` (or ``[T, B, V]``) against integer ``target``."""
    output = output.reshape(-1, output.shape[-1])  # (N x C)
    target = target.reshape(-1)  # (N)
    if loss == "ce":
        return F.cross_entropy(output, target)
    if loss == "squared_hinge":
        return squared_hinge_loss(output, target)
    raise ValueError(f"unknown loss {loss!r}; valid losses: ce, squared_hinge")


def _model_device(model: nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def _detach(hidden: Any) -> Any:
    """Cut the autograd history of an LSTM hidden state (a tensor or nested tuple/list)."""
    if hidden is None:
        return None
    if isinstance(hidden, Tensor):
        return hidden.detach()
    return type(hidden)(_detach(h) for h in hidden)


def _hidden_batch(hidden: Any) -> int | None:
    """Batch size of a hidden state ``[layers, B, H]`` (first tensor found)."""
    if hidden is None:
        return None
    if isinstance(hidden, Tensor):
        return hidden.shape[1] if hidden.dim() >= 2 else hidden.shape[0]
    for h in hidden:
        b = _hidden_batch(h)
        if b is not None:
            return b
    return None


def logits_of(out: Any, model: nn.Module | None = None) -> Tensor:
    """The logits tensor in a model's output.

    ``out`` is the logits itself; or a mapping with ``"logits"`` (a dict, or a Hugging Face
    ``ModelOutput``, which is an ``OrderedDict``); or an object with a tensor ``.logits``; or a
    tuple / list whose first item is the logits. Anything else raises
    :class:`~weightzip.errors.InvalidModelError` saying what came back and what is expected.
    """
    if isinstance(out, Tensor):
        return out
    found = None
    if isinstance(out, Mapping):
        found = out.get("logits")
    elif isinstance(getattr(out, "logits", None), Tensor):
        found = out.logits
    elif isinstance(out, (tuple, list)) and out and isinstance(out[0], Tensor):
        found = out[0]
    if isinstance(found, Tensor):
        return found
    what = type(out).__name__
    if isinstance(out, Mapping):
        what += f" with keys {sorted(map(str, out.keys()))}"
    name = type(model).__name__ if model is not None else "the model"
    raise InvalidModelError(
        f"{name} returned {what}: no logits found. weightzip needs the logits tensor [B, C] "
        "(or [T, B, V] for an LM), a tuple whose first item is the logits, or a dict / ModelOutput "
        "with 'logits'; return one of these from forward(), or wrap the model "
        "(weightzip.models.adapters.Classifier / CausalLM)")


def _forward(model: nn.Module, x: Tensor, task: str, hidden: Any = None) -> tuple[Tensor, Any]:
    """``(logits, hidden)`` of one batch; classify models have no hidden state (None).

    lm: ``model(x, hidden)`` returns ``(logits, hidden)``, or a dict / ``ModelOutput`` with
    ``logits`` (and ``hidden`` when it carries a recurrent state; else None)."""
    if task == "lm":
        if hidden is not None and _hidden_batch(hidden) != x.shape[1]:
            hidden = None  # a last, narrower batch: start a fresh state
        out = model(x, hidden)
        if isinstance(out, tuple) and len(out) == 2 and isinstance(out[0], Tensor):
            return out[0], out[1]
        if isinstance(out, Mapping) or isinstance(getattr(out, "logits", None), Tensor):
            new_hidden = out.get("hidden") if isinstance(out, Mapping) else getattr(out, "hidden", None)
            return logits_of(out, model), new_hidden
        raise InvalidModelError(
            f"{type(model).__name__} returned {type(out).__name__} for a language-model batch; "
            "an LM must return (logits [T, B, V], hidden) from forward(x [T, B], hidden), or a "
            "dict / ModelOutput with 'logits' (see weightzip.models.adapters.CausalLM)")
    return logits_of(model(x), model), None


def _windows(x: Tensor, y: Tensor, task: str, bptt: int | None) -> Iterator[tuple[Tensor, Tensor]]:
    """LM windows longer than ``bptt`` are split along time into ``bptt``-long chunks."""
    if task != "lm" or bptt is None or x.shape[0] <= bptt:
        yield x, y
        return
    for s in range(0, x.shape[0], bptt):
        yield x[s:s + bptt], y[s:s + bptt]


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, task: str = "classify",
             device: str | torch.device | None = None, *, loss: str = "ce",
             max_steps: int | None = None, bptt: int | None = None) -> dict[str, float]:
    """Loss and accuracy (classify) or loss and perplexity (lm) of ``model`` over ``loader``.

    classify: ``loss = sum_i l(x_i, y_i) / N`` (per example), ``accuracy = #correct / N``.
    lm: ``loss = sum_t CE(logits_t, y_t) / #tokens``, ``perplexity = exp(loss)``; the hidden
    state is carried across windows, as in training.
    The model is put in eval mode and restored to its previous mode afterwards.
    """
    if loader is None:
        raise WeightzipError("evaluate() got no loader; this dataset has no such split (check val_size)")
    dev = _model_device(model) if device is None else resolve_device(device)
    was_training = model.training
    model.eval()
    total_loss, correct, count = 0.0, 0, 0
    hidden = None
    try:
        for i, (x, y) in enumerate(loader):
            if max_steps is not None and i >= max_steps:
                break
            x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
            for xw, yw in _windows(x, y, task, bptt):
                out, hidden = _forward(model, xw, task, hidden)
                n = yw.numel()
                total_loss += compute_loss(out, yw, loss).item() * n
                count += n
                if task != "lm":
                    correct += (out.argmax(dim=-1) == yw).sum().item()
    finally:
        model.train(was_training)
    if count == 0:
        raise WeightzipError("evaluate() got an empty loader; check the dataset split and subset size")
    mean = total_loss / count
    if task == "lm":
        return {"loss": mean, "perplexity": math.exp(min(mean, 700.0))}
    return {"loss": mean, "accuracy": correct / count}
