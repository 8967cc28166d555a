"""Token-stream batching: batchify and the time-major bptt windows."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from weightzip.data.lm import LMBatches, Vocab, batchify
from weightzip.errors import WeightzipError


def test_batchify_columns_are_contiguous_chunks():
    t = torch.arange(23)
    d = batchify(t, 4)  # 23 // 4 = 5 rows, last 3 tokens dropped
    assert d.shape == (5, 4) and d.dtype == torch.int64
    assert d[:, 0].tolist() == [0, 1, 2, 3, 4] and d[:, 3].tolist() == [15, 16, 17, 18, 19]


@settings(max_examples=40, deadline=None)
@given(T=st.integers(2, 200), B=st.integers(1, 8), bptt=st.integers(1, 12))
def test_windows_cover_the_columns_with_next_token_targets(T, B, bptt):
    if T < 2 * B:
        with pytest.raises(ValueError, match="too short"):
            LMBatches(torch.arange(T), B, bptt)
        return
    lm = LMBatches(torch.arange(T), B, bptt)
    data = batchify(torch.arange(T), B)
    windows = list(lm)
    assert len(windows) == len(lm) and lm.batch_size == B
    xs = torch.cat([x for x, _ in windows])
    ys = torch.cat([y for _, y in windows])
    assert torch.equal(xs, data[:-1]) and torch.equal(ys, data[1:])  # y = x shifted by one step
    assert all(x.shape == y.shape and x.shape[0] <= bptt and x.shape[1] == B for x, y in windows)
    assert all(x.shape[0] == bptt for x, _ in windows[:-1])
    assert lm.num_tokens == ys.numel()


def test_vocab_first_appearance_order_and_unknowns():
    v = Vocab.build("the cat sat on the mat <eos>".split())
    assert v.itos == ["the", "cat", "sat", "on", "mat", "<eos>"] and len(v) == 6
    assert v.encode(["mat", "the"]).tolist() == [4, 0]
    assert v.decode([1, 5]) == ["cat", "<eos>"]
    with pytest.raises(WeightzipError, match="'dog' that is not in the training vocabulary"):
        v.encode(["dog"], source="ptb.test.txt")
    assert v.encode(["dog"], unk="the").tolist() == [0]
