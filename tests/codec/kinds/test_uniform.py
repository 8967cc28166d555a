"""uniform kind: uniform / fixed_point hints, scale groups, parts."""
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from weightzip.codec import decode_parts, encode, format_summary
from weightzip.errors import InvalidModelError

from ..helpers import FAST, assert_exact, sparsify


@FAST
@given(st.lists(st.integers(1, 10), min_size=1, max_size=3).map(tuple), st.integers(2, 12),
       st.sampled_from([0.01, 0.5, 1 / 3, 2.0**-5, 1e-3]), st.floats(0, 1), st.integers(1, 3), st.integers(0, 10**6))
def test_uniform_hint_exact(shape, bits, scale, density, groups, seed):
    g = torch.Generator().manual_seed(seed)
    rows = shape[0]
    groups = groups if rows % groups == 0 else 1
    scales = torch.tensor([scale * (1 + i) for i in range(groups)], dtype=torch.float32)
    q = torch.randint(-(2 ** (bits - 1)), 2 ** (bits - 1), shape, generator=g).float()
    row_scale = scales.repeat_interleave(rows // groups).reshape((rows,) + (1,) * (len(shape) - 1))
    w = sparsify(q * row_scale, density, g)
    hint = {"kind": "uniform", "scale": scales if groups > 1 else float(scales[0]), "bits": bits}
    fmt = encode(w, hint)
    assert_exact(w, fmt)
    assert not fmt.meta["hint"]["status"]["uniform"].startswith("invalid")
    forced = encode(w, hint, options={"kinds": ["uniform"]})
    assert_exact(w, forced)
    assert fmt.nbytes <= forced.nbytes


def test_uniform_hint_prefers_codes_over_floats():
    g = torch.Generator().manual_seed(0)
    s = torch.tensor(0.0123, dtype=torch.float32)
    w = torch.randint(-8, 8, (200, 100), generator=g).float() * s
    fmt = encode(w, {"kind": "uniform", "scale": float(s), "bits": 4})
    assert fmt.kind in ("uniform", "codebook") and fmt.nbytes < 200 * 100 * 4 / 7
    assert_exact(w, fmt)
    # a scale the values are not multiples of: rejected (recorded), still exact via another kind
    bad = encode(w, {"kind": "uniform", "scale": 0.037, "bits": 4})
    assert bad.meta["hint"]["status"]["uniform"].startswith("invalid")
    assert_exact(w, bad)
    with pytest.raises(InvalidModelError):
        encode(w, {"kind": "uniform", "scale": 0.037, "bits": 4}, options={"strict": True})


def test_fixed_point_hint():
    w = torch.tensor([[0.25, -0.5, 0.0], [0.125, 0.875, -1.0]])
    fmt = encode(w, {"kind": "fixed_point", "bits": 4, "frac_bits": 3}, options={"kinds": ["uniform"]})
    assert_exact(w, fmt)


def test_decode_parts_uniform_groups():
    scales = torch.tensor([0.5, 0.25], dtype=torch.float32)
    q = torch.randint(-3, 4, (4, 6), generator=torch.Generator().manual_seed(2))
    w = q.float() * scales.repeat_interleave(2)[:, None]
    fmt = encode(w, {"kind": "uniform", "scale": scales, "bits": 3}, options={"kinds": ["uniform"]})
    assert fmt.kind == "uniform" and fmt.meta["scale_groups"] == 2
    parts = decode_parts(fmt)
    assert np.array_equal(parts["scale"], scales.numpy())
    if parts["positions"] is None:
        assert np.array_equal(parts["q"].reshape(4, 6), q.numpy())
    else:
        assert np.array_equal(parts["q"], q.numpy().ravel()[parts["positions"]])
    s = format_summary(fmt)
    assert s["kind"] == "uniform" and s["value_bits"] <= 3

