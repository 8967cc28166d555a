"""Coarse-grain block sparsity (CGS) masks: pure tensor functions.

A weight ``W`` of shape ``(out, in)`` (Linear) or ``(out, in, kh, kw)`` (Conv: blocks over
``(C_out, C_in)``, each kernel kept or dropped whole) is cut into ``B_r x B_c`` blocks::

    R = ceil(out / B_r)  block rows,   C = ceil(in / B_c)  block columns

Dimensions that are not multiples of the block are handled by padding the LAST block row /
column with zeros: it is a full entry of the ``[R, C]`` block mask, and its elements outside
``W`` are simply cropped when the mask is expanded. (So when ``in`` is not a multiple of
``B_c`` the kept fraction of *elements* in a row can differ slightly from ``1/c``; the kept
fraction of *blocks* is exact.)

For a compression ``c`` every block row keeps the same number of blocks,
``k = max(1, C // c)`` (``k = C / c`` exactly when ``c`` divides ``C``), chosen either at
random (seeded) or as the ``k`` blocks of largest L2 norm ``||W_block||_2``.

Example::

    >>> bm = random_block_mask(block_grid((64, 128), (16, 16)), 4, generator=torch.Generator().manual_seed(0))
    >>> bm.shape, bm.sum(1).tolist()
    (torch.Size([4, 8]), [2, 2, 2, 2])
    >>> expand_block_mask(bm, (64, 128), (16, 16)).shape
    torch.Size([64, 128])
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "as_block",
    "block_grid",
    "blocks_per_row",
    "block_norms",
    "topk_block_mask",
    "random_block_mask",
    "norm_block_mask",
    "expand_block_mask",
]


def as_block(block: int | Sequence[int]) -> tuple[int, int]:
    """``16 -> (16, 16)``; ``(8, 16) -> (8, 16)``; refuses non-positive sizes."""
    b = (int(block), int(block)) if isinstance(block, int) else tuple(int(x) for x in block)
    if len(b) != 2 or min(b) < 1:
        raise ValueError(f"block must be a positive int or a pair of positive ints, got {block!r}")
    return b  # type: ignore[return-value]


def _check_shape(shape: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2:
        raise ValueError(f"block sparsity needs a weight with >= 2 dims (out, in, ...), got shape {shape}")
    return shape


def block_grid(shape: Sequence[int], block: int | Sequence[int]) -> tuple[int, int]:
    """``(R, C) = (ceil(out / B_r), ceil(in / B_c))`` for a weight of ``shape``."""
    shape = _check_shape(shape)
    br, bc = as_block(block)
    return math.ceil(shape[0] / br), math.ceil(shape[1] / bc)


def blocks_per_row(n_cols: int, compression: int) -> int:
    """Blocks kept in every block row: ``max(1, C // c)``."""
    if int(compression) < 1:
        raise ValueError(f"compression must be >= 1, got {compression}")
    return max(1, int(n_cols) // int(compression))


def block_norms(w: Tensor, block: int | Sequence[int]) -> Tensor:
    """L2 norm of every block: ``[R, C]``; kernel dims of a conv weight are summed in.

    ``norms[r, c] = sqrt(sum_{i in rows r, j in cols c, k...} W[i, j, k...]^2)``, computed on
    the zero-padded ``(R B_r, C B_c)`` matrix.
    """
    shape = _check_shape(w.shape)
    br, bc = as_block(block)
    R, C = block_grid(shape, (br, bc))
    sq = w.detach().float().pow(2)
    if sq.dim() > 2:
        sq = sq.flatten(2).sum(2)                                   # (out, in)
    sq = F.pad(sq, (0, C * bc - shape[1], 0, R * br - shape[0]))    # (R*br, C*bc)
    return sq.reshape(R, br, C, bc).sum(dim=(1, 3)).sqrt()          # (R, C)


def topk_block_mask(scores: Tensor, keep: int) -> Tensor:
    """Boolean ``[R, C]`` keeping the ``keep`` largest scores of every row (ties: lower index)."""
    R, C = scores.shape
    keep = int(keep)
    if not 1 <= keep <= C:
        raise ValueError(f"keep must be in [1, {C}] blocks per row, got {keep}")
    # stable descending sort -> ties resolved by column index, deterministic
    order = torch.sort(scores.float(), dim=1, descending=True, stable=True).indices[:, :keep]  # (R, keep)
    mask = torch.zeros(R, C, dtype=torch.bool, device=scores.device)
    mask.scatter_(1, order, True)
    return mask


def random_block_mask(grid: tuple[int, int], compression: int,
                      generator: torch.Generator | None = None) -> Tensor:
    """Boolean ``[R, C]`` with ``blocks_per_row(C, c)`` blocks per row chosen uniformly at random."""
    R, C = (int(x) for x in grid)
    keep = blocks_per_row(C, compression)
    scores = torch.rand(R, C, generator=generator)                  # a random permutation per row
    return topk_block_mask(scores, keep)


def norm_block_mask(w: Tensor, block: int | Sequence[int], compression: int) -> Tensor:
    """Boolean ``[R, C]`` keeping the ``blocks_per_row(C, c)`` blocks of largest L2 norm per row."""
    norms = block_norms(w, block)
    return topk_block_mask(norms, blocks_per_row(norms.shape[1], compression))


def expand_block_mask(block_mask: Tensor, shape: Sequence[int], block: int | Sequence[int]) -> Tensor:
    """Element mask of ``shape`` (float {0, 1}) from a ``[R, C]`` block mask.

    ``m[i, j, ...] = block_mask[i // B_r, j // B_c]``; padded parts of the last blocks are
    cropped; conv kernel dims are broadcast (whole kernels kept or dropped).
    """
    shape = _check_shape(shape)
    br, bc = as_block(block)
    R, C = block_grid(shape, (br, bc))
    if tuple(block_mask.shape) != (R, C):
        raise ValueError(f"block mask has shape {tuple(block_mask.shape)}, expected {(R, C)} for a "
                         f"weight of shape {shape} in blocks of {(br, bc)}")
    m = block_mask.to(torch.float32)
    m = m.repeat_interleave(br, 0).repeat_interleave(bc, 1)[: shape[0], : shape[1]]  # (out, in)
    m = m.reshape(shape[:2] + (1,) * (len(shape) - 2))
    return m.expand(shape).contiguous()
