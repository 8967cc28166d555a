"""dense kind: float32 exact, float16 lossy and reported."""
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from weightzip.codec import decode, encode

from ..helpers import FAST, assert_exact, shapes, sparsify


@FAST
@given(shapes, st.floats(0, 1), st.integers(0, 10**6))
def test_dense_random_exact(shape, density, seed):
    g = torch.Generator().manual_seed(seed)
    w = sparsify(torch.randn(shape, generator=g) * 3, density, g)
    assert_exact(w, encode(w))


def test_float16_storage_is_lossy_and_reported():
    w = torch.randn(64, 64)
    fmt = encode(w, options={"float_dtype": "float16"})
    assert fmt.meta["value_dtype"] == "float16" and fmt.nbytes == 64 * 64 * 2
    assert torch.equal(decode(fmt), w.half().float())
    assert fmt.meta["lossy"]["max_abs_err"] == pytest.approx((w.half().float() - w).abs().max().item())
    big = torch.tensor([1e6, 2.0])
    assert torch.equal(decode(encode(big, options={"float_dtype": "float16"})), big)  # overflow: stays fp32

