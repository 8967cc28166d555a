import pytest
import torch
from torch import nn

from weightzip.runtime.fastest import FastestOf


def test_fastest_of_picks_per_shape_and_stays_equivalent():
    torch.manual_seed(1)
    a, b = nn.Linear(8, 3), nn.Linear(8, 3)
    b.load_state_dict(a.state_dict())
    f = FastestOf({"a": a, "b": b}, repeats=2)
    x = torch.randn(2, 8)
    torch.testing.assert_close(f(x), a(x))
    assert len(f.choices) == 1 and set(next(iter(f.timings.values()))) == {"a", "b"}
    f(torch.randn(5, 8))
    assert len(f.choices) == 2
    f(torch.randn(5, 8))                                            # same shape: no new timing
    assert len(f.choices) == 2


def test_fastest_of_needs_a_candidate():
    with pytest.raises(ValueError, match="at least one"):
        FastestOf({})
