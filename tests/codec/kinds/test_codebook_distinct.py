"""``codebook.distinct``: np.unique's answer, by a sampled candidate table where values are few."""
import numpy as np
import pytest

from weightzip.codec.kinds.codebook import distinct


@pytest.mark.parametrize("k", [1, 2, 16, 255, 5000])
@pytest.mark.parametrize("rare", [False, True])
def test_distinct_equals_unique(k, rare):
    rng = np.random.default_rng(k)
    table = rng.standard_normal(k).astype(np.float32)
    a = table[rng.integers(0, k, 400_000)]
    if rare:  # one value the strided sample cannot see: the full sort must find it
        a[12345] = np.float32(7.5)
    assert np.array_equal(distinct(a), np.unique(a))


def test_distinct_limit_answers_more_than_limit_without_sorting():
    a = np.random.default_rng(0).standard_normal(1_000_000).astype(np.float32)
    assert distinct(a, limit=256).size > 256
    assert np.array_equal(distinct(a[:1000]), np.unique(a[:1000]))
