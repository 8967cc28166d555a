"""Threshold / target-sparsity masks and the AGP schedule against direct references."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from weightzip.primitives.sparsity import (
    agp_is_update_step,
    agp_sparsity,
    magnitude_mask,
    sparsity_of,
    std_threshold,
    std_threshold_mask,
)


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 10_000), st.floats(0.0, 3.0))
def test_std_threshold_prunes_exactly_abs_le_s_std(seed, s):
    w = torch.randn(17, 9, generator=torch.Generator().manual_seed(seed))
    mask = std_threshold_mask(w, s)
    tau = s * float(w.double().std())
    # reference: a plain loop over the entries
    expected_pruned = sum(1 for v in w.flatten().tolist() if abs(v) <= tau)
    assert int((mask == 0).sum()) == expected_pruned
    assert torch.all(w[mask == 0].abs() <= tau + 1e-7) and torch.all(w[mask == 1].abs() > tau - 1e-7)


def test_std_threshold_refuses_negative_s():
    with pytest.raises(ValueError, match="s must be >= 0"):
        std_threshold(torch.randn(5), -0.1)


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 200), st.floats(0.0, 1.0))
def test_magnitude_mask_prunes_the_smallest(n, p):
    w = torch.randn(n, generator=torch.Generator().manual_seed(n))
    mask = magnitude_mask(w, p)
    k = int(round(p * n))
    assert int((mask == 0).sum()) == k
    if 0 < k < n:
        assert w[mask == 0].abs().max() <= w[mask == 1].abs().min()


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 300), st.floats(0.0, 1.0), st.integers(0, 10_000), st.integers(1, 6))
def test_magnitude_mask_equals_a_stable_argsort(n, p, seed, levels):
    """The O(n) selection (k-th value, then the lowest indices among its ties) prunes exactly the
    entries a stable ascending argsort of |w| puts first, with many ties (few distinct levels,
    both signs) and without."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randint(-levels, levels + 1, (n,), generator=g).float() if levels < 6 else torch.randn(n, generator=g)
    k = int(round(p * n))
    want = torch.ones(n)
    want[torch.argsort(w.abs(), stable=True)[:k]] = 0.0
    assert torch.equal(magnitude_mask(w, p), want)
    w2 = w.reshape(-1, 1).repeat(1, 2).reshape(2, n)   # any shape: the flat order decides ties
    want2 = torch.ones(2 * n)
    want2[torch.argsort(w2.reshape(-1).abs(), stable=True)[:int(round(p * 2 * n))]] = 0.0
    assert torch.equal(magnitude_mask(w2, p).reshape(-1), want2)


def test_magnitude_mask_with_nan_keeps_the_sort_order():
    w = torch.tensor([0.5, float("nan"), -0.1, 0.3])
    assert magnitude_mask(w, 0.5).tolist() == [1.0, 1.0, 0.0, 0.0]
    assert magnitude_mask(w, 0.75).tolist() == [0.0, 1.0, 0.0, 0.0]


def test_agp_schedule_values():
    # s_t = s_f + (s_i - s_f)(1 - (t - t0)/(n dt))^3 on the update grid, held in between
    s_i, s_f, t0, n, dt = 0.1, 0.9, 50, 4, 25
    for j in range(n + 1):
        t = t0 + j * dt
        ref = s_f + (s_i - s_f) * (1 - j / n) ** 3
        assert math.isclose(agp_sparsity(t, s_f, initial=s_i, begin=t0, n=n, dt=dt), ref, abs_tol=1e-12)
        assert math.isclose(agp_sparsity(t + dt - 1, s_f, initial=s_i, begin=t0, n=n, dt=dt), ref, abs_tol=1e-12)
        assert agp_is_update_step(t, begin=t0, n=n, dt=dt)
        assert not agp_is_update_step(t + 1, begin=t0, n=n, dt=dt)
    assert agp_sparsity(t0 - 1, s_f, initial=s_i, begin=t0, n=n, dt=dt) == s_i
    assert agp_sparsity(10_000, s_f, initial=s_i, begin=t0, n=n, dt=dt) == s_f
    assert not agp_is_update_step(t0 + (n + 1) * dt, begin=t0, n=n, dt=dt)
    vals = [agp_sparsity(t, s_f, initial=s_i, begin=t0, n=n, dt=dt) for t in range(0, 300)]
    assert all(a <= b for a, b in zip(vals, vals[1:]))  # monotone


def test_sparsity_of():
    assert sparsity_of(torch.tensor([0.0, 1.0, 0.0, 2.0])) == 0.5
