"""raw kind: integer / bool tensors."""
import pytest
import torch

from weightzip.codec import decode, encode


@pytest.mark.parametrize("t", [torch.tensor(7), torch.tensor([1, -2, 3], dtype=torch.int64),
                               torch.tensor([True, False]), torch.arange(6, dtype=torch.int32).reshape(2, 3),
                               torch.tensor([255, 0], dtype=torch.uint8)])
def test_integer_tensors_stored_raw(t):
    fmt = encode(t)
    assert fmt.kind == "raw"
    out = decode(fmt)
    assert out.dtype == t.dtype and torch.equal(out, t)

