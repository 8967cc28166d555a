"""Growth by preferential attachment: exact counts, never on existing connections, right probabilities."""
import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import chisquare

from weightzip.primitives.growth import attachment_scores, grow_mask


def test_scores_match_a_double_loop():
    d_out, d_in = torch.tensor([0.0, 3.0, 1.0]), torch.tensor([2.0, 0.0, 5.0, 1.0])
    for rule in ("product", "sum", "uniform"):
        s = attachment_scores(d_out, d_in, rule, offset=0.5)
        for j, i in itertools.product(range(3), range(4)):
            want = {"product": (d_out[j] + 0.5) * (d_in[i] + 0.5), "sum": d_out[j] + d_in[i] + 0.5,
                    "uniform": 1.0}[rule]
            assert float(s[j, i]) == pytest.approx(float(want))


def test_unknown_rule_and_negative_degrees_are_refused():
    with pytest.raises(ValueError, match="valid: product"):
        attachment_scores(torch.ones(2), torch.ones(2), "square")
    with pytest.raises(ValueError, match="non-negative"):
        attachment_scores(torch.tensor([-1.0]), torch.ones(2))


@settings(max_examples=40, deadline=None)
@given(n_out=st.integers(1, 9), n_in=st.integers(1, 9), density=st.floats(0, 0.9), frac=st.floats(0, 1),
       seed=st.integers(0, 2**16), dtype=st.sampled_from([torch.float32, torch.bool, torch.int64]))
def test_adds_exactly_k_new_connections_never_on_existing_ones(n_out, n_in, density, frac, seed, dtype):
    g = torch.Generator().manual_seed(seed)
    mask = (torch.rand(n_out, n_in, generator=g) < density).to(dtype)
    absent = int((mask == 0).sum())
    k = int(frac * absent)
    scores = attachment_scores(torch.rand(n_out, generator=g) * 5, torch.rand(n_in, generator=g) * 5)
    new, added = grow_mask(mask, k, scores, generator=g)
    assert new.dtype == mask.dtype and new.shape == mask.shape
    assert int(added.sum()) == k
    assert not (added & (mask != 0)).any()                   # never on an existing connection
    assert torch.equal(new != 0, (mask != 0) | added)         # old kept, new added
    assert int((new != 0).sum()) == int((mask != 0).sum()) + k


def test_zero_score_positions_are_never_drawn_and_too_many_is_an_error():
    mask = torch.zeros(2, 3)
    scores = torch.tensor([[1.0, 0.0, 2.0], [0.0, 0.0, 3.0]])
    for s in range(20):
        _, added = grow_mask(mask, 3, scores, torch.Generator().manual_seed(s))
        assert not added[scores == 0].any()
    with pytest.raises(ValueError, match="only 3 absent positions"):
        grow_mask(mask, 4, scores)
    with pytest.raises(ValueError, match="non-negative"):
        grow_mask(mask, 1, -scores)


def _tiny_case():
    # 2 x 3 layer, one connection present; degrees give distinct product scores
    mask = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    scores = attachment_scores(torch.tensor([1.0, 3.0]), torch.tensor([1.0, 0.0, 2.0]), "product")
    return mask, scores  # scores: [[4, 2, 6], [8, 4, 12]]


def test_single_draw_probability_is_proportional_to_the_score():
    mask, scores = _tiny_case()
    absent = (mask == 0).reshape(-1)
    s = scores.reshape(-1)[absent].numpy()                    # (5,) scores of the absent positions
    expected = s / s.sum()
    n = 6000
    g = torch.Generator().manual_seed(1234)
    counts = np.zeros(absent.numel())
    for _ in range(n):
        _, added = grow_mask(mask, 1, scores, g)
        counts += added.reshape(-1).numpy()
    assert counts[~absent.numpy()].sum() == 0
    stat, p = chisquare(counts[absent.numpy()], expected * n)
    assert p > 1e-3, (counts, expected * n)


def test_two_draws_follow_successive_sampling_without_replacement():
    mask, scores = _tiny_case()
    flat = scores.reshape(-1).numpy()
    cand = [i for i in range(flat.size) if mask.reshape(-1)[i] == 0]
    S = sum(flat[i] for i in cand)
    pairs = list(itertools.combinations(cand, 2))
    # P({a, b}) = s_a/S * s_b/(S - s_a) + s_b/S * s_a/(S - s_b)
    exact = np.array([flat[a] / S * flat[b] / (S - flat[a]) + flat[b] / S * flat[a] / (S - flat[b])
                      for a, b in pairs])
    assert exact.sum() == pytest.approx(1.0)
    n = 6000
    g = torch.Generator().manual_seed(99)
    index = {p: k for k, p in enumerate(pairs)}
    counts = np.zeros(len(pairs))
    for _ in range(n):
        _, added = grow_mask(mask, 2, scores, g)
        a, b = torch.nonzero(added.reshape(-1)).reshape(-1).tolist()
        counts[index[(a, b)]] += 1
    stat, p = chisquare(counts, exact * n)
    assert p > 1e-3, (counts, exact * n)

