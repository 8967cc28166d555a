"""Degrees of the units of a sparse network seen as a graph (the rules are in
:mod:`weightzip.analysis.powerlaw`): per weight layer, and chained over the whole network."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ...errors import WeightzipError

ConvMode = Literal["weight", "kernel"]
LINEAR_TYPES = ("Linear",)
CONV_TYPES = ("Conv2d", "Conv1d")


@dataclass
class LayerDegrees:
    """Degrees of one weight layer: ``in_degree (n_out_units,)``, ``out_degree (n_in_units,)``."""

    name: str
    kind: str                 # "linear" | "conv"
    shape: tuple[int, ...]
    in_degree: np.ndarray     # int64 (n_out_units,): connections into each output unit / channel
    out_degree: np.ndarray    # int64 (n_in_units,): connections out of each input unit / channel
    nnz: int
    numel: int

    @property
    def density(self) -> float:
        return self.nnz / max(1, self.numel)


def layer_degrees(weight: Tensor, *, conv_mode: ConvMode = "weight", groups: int = 1
                  ) -> tuple[np.ndarray, np.ndarray]:
    """``(in_degree, out_degree)`` of a weight tensor's units, from its nonzero pattern.

    ``weight (n_out, n_in)``: ``in_degree[j] = #{i: W[j,i] != 0}``, ``out_degree[i] = #{j: W[j,i] != 0}``.
    ``weight (c_out, c_in/groups, *kernel)``: per channel as in the module docstring; with
    ``groups > 1`` input channel ``g * (c_in/groups) + c`` is read by the output channels of
    group ``g`` only. Returns int64 arrays ``(n_out,)`` and ``(n_in,)`` (``n_in = c_in``).

    >>> w = torch.tensor([[1., 0., 2.], [0., 0., 3.]])
    >>> [a.tolist() for a in layer_degrees(w)]
    [[2, 1], [1, 0, 2]]
    """
    if conv_mode not in ("weight", "kernel"):
        raise ValueError(f"unknown conv_mode {conv_mode!r}; use 'weight' (every nonzero kernel weight is a "
                         "connection) or 'kernel' (a channel pair is connected when its kernel slice is nonzero)")
    w = weight.detach()
    if w.dim() < 2:
        raise ValueError(f"a weight layer needs at least 2 dimensions, got shape {tuple(w.shape)}")
    nz = (w != 0).cpu()
    if w.dim() > 2:
        nz = nz.flatten(2)                                       # (c_out, c_in/g, kh*kw)
        nz = nz.any(dim=2) if conv_mode == "kernel" else nz.sum(dim=2)  # (c_out, c_in/g)
    nz = nz.to(torch.int64)                                      # (n_out, n_in/g)
    in_degree = nz.sum(dim=1)                                    # (n_out,)
    if groups == 1:
        out_degree = nz.sum(dim=0)                               # (n_in,)
    else:
        n_out, per = nz.shape
        if n_out % groups:
            raise ValueError(f"{n_out} output channels do not split into {groups} groups")
        out_degree = nz.reshape(groups, n_out // groups, per).sum(dim=1).reshape(-1)  # (groups * per,)
    return in_degree.numpy(), out_degree.numpy()


def _type_name(module: nn.Module) -> str:
    from ...core.select import type_name

    return type_name(module)


def weight_layers(source: nn.Module | Mapping[str, Tensor]) -> list[tuple[str, str, Tensor, int]]:
    """The weight layers of a model, in order: ``[(name, kind, weight, groups)]``.

    ``nn.Module``: every ``Linear`` / ``Conv1d`` / ``Conv2d`` (seen through parametrizations:
    the effective, e.g. masked, weight is used). A state_dict: every ``*.weight`` tensor with 2
    dimensions (linear) or 3-4 (convolution, groups assumed 1), in the dict's order.
    """
    out: list[tuple[str, str, Tensor, int]] = []
    if isinstance(source, nn.Module):
        with torch.no_grad():
            for mname, mod in source.named_modules():
                t = _type_name(mod)
                if t in LINEAR_TYPES or t in CONV_TYPES:
                    name = f"{mname}.weight" if mname else "weight"
                    out.append((name, "linear" if t in LINEAR_TYPES else "conv",
                                mod.weight.detach().cpu(), int(getattr(mod, "groups", 1))))
        return out
    for name, t in source.items():
        if not isinstance(t, Tensor) or not t.is_floating_point() or not name.endswith("weight"):
            continue
        if ".parametrizations." in name:
            continue  # latent tensors of a parametrized checkpoint: use an nn.Module instead
        if t.dim() == 2:
            out.append((name, "linear", t.detach().cpu(), 1))
        elif t.dim() in (3, 4):
            out.append((name, "conv", t.detach().cpu(), 1))
    return out


def _units_in(kind: str, weight: Tensor, groups: int) -> int:
    return int(weight.shape[1]) * (groups if kind == "conv" else 1)


def network_degrees(layers: Sequence[tuple[str, str, Tensor, int]], *, conv_mode: ConvMode = "weight"
                    ) -> dict[str, Any]:
    """Per-layer degrees and the total degree of every unit of the chained network.

    Returns ``{"layers": [LayerDegrees], "units": [{"name", "degree" (int64 array), "joined"}],
    "network": int64 array (every unit, concatenated), "cuts": [names where the chain broke]}``.
    ``units`` lists the unit groups in order: the inputs of the first layer, then the outputs
    of each layer (joined with the inputs of the next one when the counts fit, see module
    docstring).
    """
    if not layers:
        raise WeightzipError("the model has no Linear or Conv weight layers to analyse")
    per: list[LayerDegrees] = []
    for name, kind, w, groups in layers:
        ind, outd = layer_degrees(w, conv_mode=conv_mode, groups=groups)
        per.append(LayerDegrees(name, kind, tuple(int(s) for s in w.shape), ind, outd,
                                int((w != 0).sum()), int(w.numel())))
    units: list[dict[str, Any]] = []
    cuts: list[str] = []
    first = per[0]
    units.append({"name": f"{first.name}:inputs", "degree": first.out_degree.copy(), "joined": False})
    for idx, ld in enumerate(per):
        deg = ld.in_degree.copy()  # (n_out_units,)
        joined = False
        if idx + 1 < len(per):
            nxt = per[idx + 1]
            n_in_next = nxt.out_degree.size
            if n_in_next == deg.size:
                deg = deg + nxt.out_degree
                joined = True
            elif ld.kind == "conv" and nxt.kind == "linear" and n_in_next % deg.size == 0:
                # channel-major flatten: columns [o*s, (o+1)*s) of the FC weight read channel o
                deg = deg + nxt.out_degree.reshape(deg.size, n_in_next // deg.size).sum(axis=1)
                joined = True
            else:
                cuts.append(nxt.name)
        units.append({"name": f"{ld.name}:outputs", "degree": deg, "joined": joined})
        if idx + 1 < len(per) and not joined:
            nxt = per[idx + 1]
            units.append({"name": f"{nxt.name}:inputs", "degree": nxt.out_degree.copy(), "joined": False})
    network = np.concatenate([u["degree"] for u in units]).astype(np.int64)
    return {"layers": per, "units": units, "network": network, "cuts": cuts}
