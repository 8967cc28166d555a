"""Module kinds of the graph allowlist that are not in ``torch.nn``, defined here.

``Conv1D``: the GPT-style linear layer with a transposed weight (``weight`` [nx, nf], ``bias``
[nf]; ``y = x W + b``), as in Hugging Face ``transformers.pytorch_utils.Conv1D`` (Radford et
al.). A graph that names kind ``Conv1D`` gets this class, so a file never needs transformers.
"""
from __future__ import annotations

import torch
from torch import nn


class Conv1D(nn.Module):
    """``y = x @ weight + bias`` with ``weight`` [nx, nf] (in x out), ``bias`` [nf]."""

    def __init__(self, nf: int, nx: int):
        super().__init__()
        self.nf, self.nx = nf, nx
        self.weight = nn.Parameter(torch.empty(nx, nf))
        self.bias = nn.Parameter(torch.zeros(nf))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size_out = x.size()[:-1] + (self.nf,)
        return torch.addmm(self.bias, x.view(-1, x.size(-1)), self.weight).view(size_out)

    def extra_repr(self) -> str:
        return f"nf={self.nf}, nx={self.nx}"


def is_gpt_conv1d(m: nn.Module) -> bool:
    """A module that behaves as GPT's Conv1D (transformers' class, or ours)."""
    return (type(m).__name__ == "Conv1D" and isinstance(getattr(m, "nf", None), int)
            and isinstance(getattr(m, "nx", None), int) and isinstance(getattr(m, "weight", None), torch.Tensor)
            and tuple(m.weight.shape) == (m.nx, m.nf))
