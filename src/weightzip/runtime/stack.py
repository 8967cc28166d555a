"""Recognise a plain ``Sequential`` of ``Linear`` / ``ReLU`` / ``Dropout`` layers (a fusable MLP)."""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

__all__ = ["LinearStack", "linear_relu_stack"]


@dataclass
class LinearStack:
    """``linears[i]`` is child ``positions[i]`` of the Sequential; ``relu_after[i]``: a ReLU follows it."""

    linears: list[nn.Linear]
    relu_after: list[bool]
    positions: list[int]

    def chains(self) -> bool:
        """At least two layers and every layer's outputs feed the next one's inputs."""
        return len(self.linears) >= 2 and all(a.out_features == b.in_features
                                              for a, b in zip(self.linears, self.linears[1:]))


def linear_relu_stack(module: nn.Module) -> LinearStack | None:
    """The :class:`LinearStack` of ``module`` if it is exactly an ``nn.Sequential`` of Linear /
    ReLU / Dropout, else None.

    A ReLU right after a Linear is folded into ``relu_after``; Dropout (identity at inference)
    is dropped; any other child (or subclass), or a ReLU not right after a Linear, gives None.
    """
    if type(module) is not nn.Sequential:
        return None
    stack = LinearStack([], [], [])
    for i, child in enumerate(module):
        if type(child) is nn.Linear:
            stack.linears.append(child)
            stack.relu_after.append(False)
            stack.positions.append(i)
        elif type(child) is nn.ReLU and stack.linears and not stack.relu_after[-1]:
            stack.relu_after[-1] = True
        elif type(child) is nn.Dropout:
            continue
        else:
            return None
    return stack
