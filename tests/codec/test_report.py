"""format_summary and entropy_bound_bytes."""
import torch

from weightzip.codec import encode, entropy_bound_bytes, format_summary


def test_summary_and_entropy_bound():
    g = torch.Generator().manual_seed(0)
    w = torch.linspace(-1, 1, 8)[torch.randint(0, 8, (50, 40), generator=g)] * (torch.rand(50, 40, generator=g) < 0.3)
    fmt = encode(w)
    s = format_summary(fmt)
    assert {"kind", "sparse", "nnz", "value_bits", "index_bits", "streams", "codings", "nbytes"} <= set(s)
    assert s["nnz"] == int((w != 0).sum()) and s["nbytes"] == fmt.nbytes
    bound = entropy_bound_bytes(fmt)
    assert set(bound) == set(fmt.streams)
    for name, b in bound.items():
        assert b <= len(fmt.streams[name]) + 1e-9, name

