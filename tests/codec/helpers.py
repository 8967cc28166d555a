"""Shared helpers of the codec tests: hypothesis settings, shapes, exactness check."""
import torch
from hypothesis import settings
from hypothesis import strategies as st

from weightzip.codec import Format, decode, validate

FAST = settings(max_examples=25, deadline=None)

shapes = st.one_of(
    st.lists(st.integers(1, 12), min_size=1, max_size=3).map(tuple),
    st.sampled_from([(), (0,), (3, 0), (4, 3, 2, 2)]),
)


def canonical(w: torch.Tensor) -> torch.Tensor:
    return w.detach().float() + 0.0


def assert_exact(w: torch.Tensor, fmt: Format) -> torch.Tensor:
    out = decode(fmt)
    assert out.shape == w.shape and out.dtype == torch.float32
    assert torch.equal(out.view(torch.int32), canonical(w).view(torch.int32)), fmt
    assert fmt.nbytes == sum(len(s) for s in fmt.streams.values())
    validate(fmt)
    return out


def sparsify(w: torch.Tensor, density: float, g: torch.Generator) -> torch.Tensor:
    keep = torch.rand(w.shape, generator=g) < density
    return torch.where(keep, w, -torch.zeros_like(w) if density < 0.5 else torch.zeros_like(w))
