import math
from fractions import Fraction

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from weightzip.primitives.fixed_point import (
    frac_bits_for,
    fxp_codes,
    fxp_quantize,
    fxp_ste,
    integer_bits,
    maxabs_scale,
    pow2_scale,
    uniform_quantize,
)


def reference_fxp(x: float, b: int, f: int) -> float:
    """Nearest representable value k 2^-f, k in [-2^(b-1), 2^(b-1)-1]; ties to even k (exact arithmetic)."""
    if b == 0:
        return 0.0
    xf = Fraction(x)
    best = None
    for k in range(-(2 ** (b - 1)), 2 ** (b - 1)):
        v = Fraction(k) * Fraction(2) ** (-f)
        d = abs(xf - v)
        if best is None or d < best[0] or (d == best[0] and k % 2 == 0):
            best = (d, k)
    return float(Fraction(best[1]) * Fraction(2) ** (-f))


def probe_points(b: int, f: int) -> list[float]:
    """Every representable value, every midpoint (tie), points just off the ties, and out of range."""
    step = 2.0 ** (-f)
    lo, hi = -(2 ** (b - 1)), 2 ** (b - 1) - 1
    pts = []
    for k in range(lo - 2, hi + 3):
        v = k * step
        pts += [v, v + step / 2, v + step / 2 * (1 - 2 ** -10), v + step / 2 * (1 + 2 ** -10)]
    pts += [1e3, -1e3, 0.0, -0.0]
    return pts


@pytest.mark.parametrize("b", [0, 1, 2, 3, 4, 5])
@pytest.mark.parametrize("f", [-2, -1, 0, 1, 2, 3, 5, 7])
def test_fxp_matches_exhaustive_reference(b, f):
    pts = probe_points(max(b, 1), f)
    x = torch.tensor(pts, dtype=torch.float32)
    got = fxp_quantize(x, b, f)
    want = torch.tensor([reference_fxp(float(v), b, f) for v in x.tolist()], dtype=torch.float32)
    assert torch.equal(got, want)
    # pruned entries are +0.0 bitwise (no negative zero), and codes reproduce the values exactly
    assert not torch.any(torch.signbit(got) & (got == 0))
    k = fxp_codes(x, b, f)
    assert torch.equal(k.double() * 2.0 ** (-f), got.double())
    if b > 0:
        assert int(k.min()) >= -(2 ** (b - 1)) and int(k.max()) <= 2 ** (b - 1) - 1


@settings(max_examples=200, deadline=None)
@given(st.floats(-40, 40, allow_nan=False, width=32), st.integers(0, 6), st.integers(-3, 8))
def test_fxp_random_against_reference_and_idempotent(x, b, f):
    t = torch.tensor([x], dtype=torch.float32)
    q = fxp_quantize(t, b, f)
    assert float(q) == reference_fxp(float(t), b, f)
    assert torch.equal(fxp_quantize(q, b, f), q)


def test_per_element_formats_broadcast():
    x = torch.tensor([0.3, 0.3, 0.3, -0.7])
    b = torch.tensor([8, 4, 2, 0])
    f = torch.tensor([7, 3, 1, 0])
    got = fxp_quantize(x, b, f)
    want = torch.tensor([reference_fxp(0.3, 8, 7), reference_fxp(0.3, 4, 3), reference_fxp(0.3, 2, 1), 0.0])
    assert torch.equal(got, want)


def _ref_int_bits(m: float, tight: bool) -> int:
    if m == 0:
        return 1
    i = -200 if tight else 1
    while m > 2.0 ** (i - 1):
        i += 1
    return i


@pytest.mark.parametrize("m", [0.0, 1e-6, 0.1, 0.25, 0.3, 0.5, 0.51, 1.0, 1.0001, 2.0, 3.0, 4.0, 100.0])
def test_integer_bits_rules(m):
    x = torch.tensor([m, -m / 3])
    assert integer_bits(x) == _ref_int_bits(m, tight=False)
    assert integer_bits(x, "tight") == _ref_int_bits(m, tight=True)
    assert frac_bits_for(x, 8) == 8 - integer_bits(x)


@settings(max_examples=100, deadline=None)
@given(st.floats(1e-4, 50, allow_nan=False), st.integers(2, 10), st.sampled_from(["thesis", "tight"]))
def test_layer_range_is_covered(m, b, rule):
    """With f = b - i the format reaches -m exactly-or-beyond and +m up to one step."""
    x = torch.tensor([m, -m], dtype=torch.float64)
    f = frac_bits_for(x, b, rule)
    q = fxp_quantize(x, b, f)
    step = 2.0 ** (-f)
    assert abs(float(q[1]) + m) <= step / 2 + 1e-12
    assert float(q[0]) >= m - step - 1e-12


def test_thesis_rule_example_values():
    x = torch.tensor([0.30, -0.07, 0.02, -0.6])
    assert integer_bits(x) == 1 and integer_bits(x, "tight") == 1
    assert fxp_quantize(x, 4, 3).tolist() == [0.25, -0.125, 0.0, -0.625]
    assert integer_bits(torch.tensor([0.3]), "tight") == 0


def test_ste_gradient_is_identity():
    x = torch.tensor([0.3, -2.0, 0.001], requires_grad=True)
    y = fxp_ste(x, 3, 1)
    assert torch.equal(y.detach(), fxp_quantize(x.detach(), 3, 1))
    (y * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert x.grad.tolist() == [1.0, 2.0, 3.0]


def test_uniform_scales_and_levels():
    torch.manual_seed(0)
    w = torch.randn(200) * 0.3
    for b in (2, 3, 4, 8):
        s = maxabs_scale(w, b)
        q = uniform_quantize(w, b, s)
        assert q.unique().numel() <= 2 ** b
        assert math.isclose(float(q.abs().max()), float(w.abs().max()), rel_tol=1e-6)
        s2 = pow2_scale(w, b)
        assert math.log2(s2) == -(b - integer_bits(w))
        assert torch.equal(uniform_quantize(w, b, s2), fxp_quantize(w, b, b - integer_bits(w)))


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="bits must be in"):
        fxp_quantize(torch.ones(2), 30, 0)
    with pytest.raises(ValueError, match="NaN"):
        integer_bits(torch.tensor([float("nan")]))
    with pytest.raises(ValueError, match="bits >= 2"):
        maxabs_scale(torch.ones(2), 1)
