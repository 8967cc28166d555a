"""Language-modelling batches: a token stream cut into time-major windows.

As in the PyTorch ``word_language_model`` example: the stream of ``T`` token ids is trimmed to
``n * B`` tokens and laid out in ``B`` columns (:func:`batchify`, ``[n, B]``; column ``b`` holds
tokens ``b*n .. (b+1)*n - 1``), then read in windows of ``bptt`` rows::

    x = data[i : i + L]          # int64 [L, B],  L = min(bptt, n - 1 - i)
    y = data[i + 1 : i + 1 + L]  # int64 [L, B],  the next token of every x entry

for ``i = 0, bptt, 2*bptt, ...`` while ``i < n - 1``. Windows are served in order, so a
recurrent model can carry its hidden state from one window to the next.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import torch

from ..errors import WeightzipError

__all__ = ["Vocab", "batchify", "LMBatches", "TextData"]


class Vocab:
    """Token <-> id mapping; ids follow the order in which :meth:`build` first saw each token."""

    def __init__(self, itos: Sequence[str]) -> None:
        self.itos: list[str] = list(itos)
        self.stoi: dict[str, int] = {t: i for i, t in enumerate(self.itos)}
        if len(self.stoi) != len(self.itos):
            raise ValueError("vocabulary has duplicate tokens")

    @classmethod
    def build(cls, tokens: Iterable[str]) -> "Vocab":
        """Vocabulary of ``tokens`` in order of first appearance (deterministic)."""
        return cls(dict.fromkeys(tokens))

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, token: str) -> bool:
        return token in self.stoi

    def encode(self, tokens: Sequence[str], *, unk: str | None = None, source: str = "text") -> torch.Tensor:
        """Ids of ``tokens`` as int64 ``[len(tokens)]``; unknown tokens map to ``unk`` if given
        (and in the vocabulary), else raise :class:`~weightzip.errors.WeightzipError`."""
        stoi = self.stoi
        unk_id = stoi.get(unk) if unk is not None else None
        try:
            if unk_id is None:
                ids = [stoi[t] for t in tokens]
            else:
                ids = [stoi.get(t, unk_id) for t in tokens]
        except KeyError as e:
            raise WeightzipError(
                f"{source} contains token {e.args[0]!r} that is not in the training vocabulary "
                f"({len(self)} tokens); the split files do not belong together"
            ) from None
        return torch.tensor(ids, dtype=torch.long)

    def decode(self, ids: Iterable[int]) -> list[str]:
        return [self.itos[int(i)] for i in ids]


def batchify(tokens: torch.Tensor, batch_size: int) -> torch.Tensor:
    """int64 ``[T]`` -> ``[T // B, B]``; column ``b`` is the ``b``-th contiguous chunk of the
    stream (the last ``T mod B`` tokens are dropped)."""
    n = tokens.numel() // batch_size
    return tokens[: n * batch_size].view(batch_size, n).t().contiguous()  # [n, B]


class LMBatches:
    """Iterable of ``(x, y)`` windows (int64 ``[L, B]``, ``L <= bptt``) over a token stream.

    Usable like a DataLoader: ``len(batches)`` windows, ``batches.batch_size``; also
    ``bptt``, ``data`` (``[n, B]``) and ``num_tokens`` (how many targets one pass predicts,
    ``(n - 1) * B``, for per-token averages).
    """

    def __init__(self, tokens: torch.Tensor, batch_size: int, bptt: int = 35) -> None:
        if tokens.dim() != 1:
            raise ValueError(f"tokens must be a 1-D stream, got shape {tuple(tokens.shape)}")
        if bptt < 1 or batch_size < 1:
            raise ValueError(f"batch_size and bptt must be >= 1, got {batch_size} and {bptt}")
        if tokens.numel() < 2 * batch_size:
            raise ValueError(
                f"a stream of {tokens.numel()} tokens is too short for batch_size={batch_size} "
                f"(needs at least {2 * batch_size}); use a smaller batch_size / eval_batch_size or more tokens"
            )
        self.tokens = tokens
        self.batch_size = int(batch_size)
        self.bptt = int(bptt)
        self.data = batchify(tokens.long(), self.batch_size)  # [n, B]

    @property
    def num_tokens(self) -> int:
        return (self.data.shape[0] - 1) * self.batch_size

    def __len__(self) -> int:
        return -(-(self.data.shape[0] - 1) // self.bptt)  # ceil((n - 1) / bptt)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = self.data.shape[0]
        for i in range(0, n - 1, self.bptt):
            L = min(self.bptt, n - 1 - i)
            yield self.data[i : i + L], self.data[i + 1 : i + 1 + L]  # [L, B], [L, B]

    def __repr__(self) -> str:
        return (
            f"LMBatches(tokens={self.tokens.numel()}, batch_size={self.batch_size}, "
            f"bptt={self.bptt}, windows={len(self)})"
        )


@dataclass(frozen=True)
class TextData:
    """Decoded token streams (int64 ``[T]``) of the three splits and the vocabulary."""

    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor
    vocab: Vocab
    level: str

    def split(self, split: str) -> torch.Tensor:
        """Token ids of ``"train"``, ``"valid"`` (alias ``"val"``) or ``"test"``."""
        key = {"val": "valid"}.get(split, split)
        if key not in ("train", "valid", "test"):
            raise ValueError(f"unknown split {split!r} for a text dataset; use 'train', 'valid' or 'test'")
        return getattr(self, key)
