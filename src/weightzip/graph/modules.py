"""Module kinds of the graph allowlist that are not in ``torch.nn``, and the output container.

``Conv1D``: the GPT-style linear layer with a transposed weight (``weight`` [nx, nf], ``bias``
[nf]; ``y = x W + b``), as in Hugging Face ``transformers.pytorch_utils.Conv1D`` (Radford et
al.). A graph that names kind ``Conv1D`` gets this class, so a file never needs transformers.

``GraphOutput``: what a rebuilt graph returns where the model returned a mapping (a Hugging Face
``ModelOutput``, a dict): a ``dict`` that also reads as ``out.logits`` and ``out[0]``.
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


class GraphOutput(dict):
    """A dict output that reads like ``transformers.ModelOutput``: ``out["logits"]``,
    ``out.logits``, ``out[0]`` (the first value that is not None) and ``out.to_tuple()``."""

    def __getattr__(self, key: str):
        try:
            return self[key]
        except KeyError:
            raise AttributeError(f"the model's output has no field {key!r}; fields: {list(self)}") from None

    def __getitem__(self, key):
        if isinstance(key, (int, slice)):
            return self.to_tuple()[key]
        return super().__getitem__(key)

    def to_tuple(self) -> tuple:
        return tuple(v for v in self.values() if v is not None)


def _register_output_pytree() -> None:
    import torch.utils._pytree as pytree

    pytree.register_pytree_node(
        GraphOutput, lambda d: (list(d.values()), list(d.keys())),
        lambda values, keys: GraphOutput(zip(keys, values)), serialized_type_name="weightzip.GraphOutput",
        flatten_with_keys_fn=lambda d: ([(pytree.MappingKey(k), v) for k, v in d.items()], list(d.keys())))


_register_output_pytree()
