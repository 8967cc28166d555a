"""Accumulated-gradient importance ``A[p] += |p.grad|`` (every step, before the update) and the
``train_tracked`` stage that trains with it."""
from __future__ import annotations

from typing import Any, Literal, Sequence

import torch
from torch import Tensor, nn

from ...core import parametrize
from ...core.registry import register_method
from ...core.select import qualified
from ...errors import WeightzipError
from ..base import Method, MethodConfig, StageContext

ImportanceKind = Literal["gradient", "magnitude"]
STATE_KEY = "importance"


# ---------------------------------------------------------------------------------------------
# Importance tracking


def named_latent_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """Every model Parameter under its plain state_dict-style name.

    ``fc1.parametrizations.weight.original`` -> ``"fc1.weight"``; parameters owned by the
    parametrizations themselves (e.g. codebook centroids) are not model tensors and are left out.
    """
    out: dict[str, nn.Parameter] = {}
    for name, p in model.named_parameters():
        if ".parametrizations." in f".{name}":
            head, _, rest = name.partition("parametrizations.")
            tname, _, leaf = rest.partition(".")
            if leaf != "original":
                continue
            name = head + tname
        out[name] = p
    return out


class ImportanceTracker:
    """Trainer callback: ``A[name] += |grad|`` for every parameter, each step, before the update.

    ``store`` is the dict holding ``A`` (pass ``ctx.state.setdefault("importance", {})`` so that
    the accumulation continues across stages). Entries are created as zeros the first time a
    parameter is seen; an existing entry of the wrong shape is an error (the model changed).
    ``steps`` counts the accumulated minibatches.
    """

    def __init__(self, store: dict[str, Tensor] | None = None, names: Sequence[str] | None = None):
        self.store: dict[str, Tensor] = store if store is not None else {}
        self.names = set(names) if names is not None else None
        self.params: dict[str, nn.Parameter] = {}
        self.steps = 0

    def bind(self, model: nn.Module) -> "ImportanceTracker":
        """Resolve the parameters of ``model`` (done by ``on_train_begin``; call it when used alone)."""
        params = named_latent_parameters(model)
        if self.names is not None:
            params = {k: v for k, v in params.items() if k in self.names}
        for k, p in params.items():
            a = self.store.get(k)
            if a is None:
                self.store[k] = torch.zeros_like(p, dtype=torch.float32, memory_format=torch.contiguous_format).detach()
            elif a.shape != p.shape:
                raise WeightzipError(
                    f"importance of {k!r} has shape {tuple(a.shape)} but the parameter is {tuple(p.shape)}; "
                    "the model changed since importance was tracked - clear ctx.state['importance']")
            elif a.device != p.device:
                self.store[k] = a.to(p.device)
        self.params = params
        return self

    def on_train_begin(self, trainer) -> None:
        self.bind(trainer.model)

    @torch.no_grad()
    def accumulate(self) -> None:
        """``A += |grad|`` for every bound parameter that has a gradient."""
        for k, p in self.params.items():
            if p.grad is not None:
                self.store[k].add_(p.grad.detach().abs())
        self.steps += 1

    def on_step(self, trainer, step: int) -> None:
        self.accumulate()

    def state_dict(self) -> dict[str, Any]:
        return {"importance": {k: v.detach().cpu().clone() for k, v in self.store.items()}, "steps": self.steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k, v in (state.get("importance") or {}).items():
            dev = self.params[k].device if k in self.params else v.device
            self.store[k] = v.to(dev).clone()
        self.steps = int(state.get("steps", 0))


def importance_tensors(model: nn.Module, entries, ctx_state: dict[str, Any],
                       kind: ImportanceKind = "gradient") -> list[Tensor]:
    """The importance of each selected tensor: ``A`` from ``ctx.state`` or ``|w|`` (magnitude).

    ``entries`` are ``(module_name, module, tensor_name)`` triples (from :func:`select`).
    Magnitude uses the latent weights (what the method quantizes).
    """
    out = []
    store = ctx_state.get(STATE_KEY) or {}
    missing = []
    for mname, mod, t in entries:
        key = qualified(mname, t)
        w = parametrize.original(mod, t)
        if kind == "magnitude":
            out.append(w.detach().abs().float())
        else:
            a = store.get(key)
            if a is None:
                missing.append(key)
                continue
            if a.shape != w.shape:
                raise WeightzipError(f"importance of {key!r} has shape {tuple(a.shape)}, the tensor {tuple(w.shape)}; "
                                     "the model changed since importance was tracked")
            out.append(a.detach().to(w.device).float())
    if missing:
        raise WeightzipError(
            f"no accumulated-gradient importance for {missing[:5]}{' ...' if len(missing) > 5 else ''}; "
            "add a `train_tracked` stage before this one (it trains with the ImportanceTracker), "
            "or set `importance: magnitude`")
    return out


# ---------------------------------------------------------------------------------------------
# train_tracked


@register_method("train_tracked")
class TrainTracked(Method):
    """Train with the :class:`ImportanceTracker` (the thesis accumulates from the first epoch).

    ``from_scratch: true`` re-initialises every layer (``reset_parameters``, seeded with the
    stage seed) and clears the importance, so the baseline itself is trained while tracking.
    Otherwise training continues from the current weights and ``A`` continues to accumulate.
    """

    class Config(MethodConfig):
        train: dict[str, Any] = {"epochs": 10, "lr": 0.01, "optimizer": "sgd", "momentum": 0.9}
        from_scratch: bool = False

    def apply(self, model, ctx: StageContext) -> dict[str, Any]:
        if self.config.from_scratch:
            if any(True for _ in parametrize.parametrized_tensors(model)):
                raise WeightzipError("train_tracked from_scratch: the model already has parametrizations; "
                                     "train from scratch before any compression stage")
            torch.manual_seed(ctx.seed)
            for m in model.modules():
                if hasattr(m, "reset_parameters") and m is not model:
                    m.reset_parameters()
            ctx.state[STATE_KEY] = {}
        tracker = ImportanceTracker(ctx.state.setdefault(STATE_KEY, {}))
        hist = ctx.fit(model, self.config.train, callbacks=[tracker], tag="train_tracked")
        return {"val": ctx.evaluate(model), "tracked_tensors": len(tracker.params),
                "tracked_steps": tracker.steps,
                "train_history": hist.get("history", []) if isinstance(hist, dict) else []}
