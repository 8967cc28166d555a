"""Per-input-shape choice between equivalent modules by timing (the ``auto`` runtime mode).

:class:`FastestOf` times every candidate on the first input of each shape and then runs the
fastest one for that shape; used by :mod:`weightzip.runtime.lut` to race the LUT layer, the
dense layer and what the other converters offer.
"""
from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

__all__ = ["FastestOf"]


class FastestOf(nn.Module):
    """Runs the fastest of several equivalent modules, chosen per input shape.

    On the first input of a given (shape, dtype, device, grad) key each candidate runs
    ``repeats`` times (after one warm-up, interleaved with the others) under
    ``torch.inference_mode``; the one with the smallest median wall time is used for that key
    from then on. ``choices`` records the
    decisions and ``timings`` the medians (seconds).
    """

    def __init__(self, candidates: dict[str, nn.Module], repeats: int = 15):
        super().__init__()
        if not candidates:
            raise ValueError("FastestOf needs at least one candidate module")
        self.candidates = nn.ModuleDict(candidates)
        self.repeats = int(repeats)
        self.choices: dict[tuple, str] = {}
        self.timings: dict[tuple, dict[str, float]] = {}

    def _key(self, x: torch.Tensor) -> tuple:
        return (x.shape, x.dtype, x.device.type, x.requires_grad and torch.is_grad_enabled())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        key = self._key(x)
        name = self.choices.get(key)
        if name is None:
            name = self._choose(key, x)
        return self.candidates[name](x)

    def _choose(self, key: tuple, x: torch.Tensor) -> str:
        ts: dict[str, list[float]] = {name: [] for name in self.candidates}
        with torch.inference_mode():
            xi = x.detach()
            for mod in self.candidates.values():
                mod(xi)                                   # warm-up (and numba compilation)
            for _ in range(self.repeats):                 # interleaved, so load drifts hit all alike
                for name, mod in self.candidates.items():
                    t0 = time.perf_counter()
                    mod(xi)
                    ts[name].append(time.perf_counter() - t0)
        times = {name: float(np.median(v)) for name, v in ts.items()}
        best = min(times, key=times.get)
        self.choices[key] = best
        self.timings[key] = times
        return best

    def extra_repr(self) -> str:
        return f"choices={ {k[0]: v for k, v in self.choices.items()} }"
