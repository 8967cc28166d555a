"""mixed_fixed kind: exact per cluster, no per-value cluster tag."""
import math

import numpy as np
import torch
from hypothesis import given
from hypothesis import strategies as st

from weightzip.codec import decode_parts, encode

from ..helpers import FAST, assert_exact, canonical, sparsify


@FAST
@given(st.lists(st.integers(1, 12), min_size=1, max_size=3).map(tuple), st.integers(1, 4), st.floats(0, 1),
       st.integers(0, 10**6), st.sampled_from([{}, {"sparse": ["bitmap"]}, {"entropy": "none"}]))
def test_mixed_fixed_exact(shape, n_clusters, density, seed, options):
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    bits = [int(b) for b in rng.integers(2, 9, n_clusters)]
    frac = [int(f) for f in rng.integers(-2, 8, n_clusters)]
    cluster = torch.randint(0, n_clusters, shape, generator=g)
    w = torch.zeros(shape)
    for c in range(n_clusters):
        q = torch.randint(-(2 ** (bits[c] - 1)), 2 ** (bits[c] - 1), shape, generator=g).float()
        w = torch.where(cluster == c, q * 2.0 ** -frac[c], w)
    w = sparsify(w, density, g)
    hint = {"kind": "mixed_fixed", "cluster": cluster, "bits": bits, "frac_bits": frac}
    fmt = encode(w, hint, options=options)
    assert_exact(w, fmt)
    assert not fmt.meta["hint"]["status"]["mixed_fixed"].startswith("invalid"), fmt.meta["hint"]
    forced = encode(w, hint, options={**options, "kinds": ["mixed_fixed"]})
    assert_exact(w, forced)
    if forced.kind == "mixed_fixed":
        parts = decode_parts(forced)
        dense = np.zeros(math.prod(shape), np.float32)
        dense[parts["positions"]] = parts["values"]
        assert np.array_equal(dense, canonical(w).numpy().ravel())
        for c, cl in enumerate(parts["clusters"]):
            assert cl["frac_bits"] == frac[c]
            assert np.all(cluster.numpy().ravel()[cl["positions"][cl["q"] != 0]] == c)


def test_mixed_fixed_no_per_value_tag():
    # 2 clusters at 8 and 2 bits: code streams cost ~ their own widths, no cluster tag per value
    g = torch.Generator().manual_seed(3)
    cluster = (torch.rand(100, 100, generator=g) < 0.1).long()          # 10% in cluster 1
    q8 = torch.randint(-128, 128, (100, 100), generator=g).float() * 2.0**-7
    q2 = torch.randint(-2, 2, (100, 100), generator=g).float() * 2.0**-1
    w = torch.where(cluster == 1, q8, q2)
    fmt = encode(w, {"kind": "mixed_fixed", "cluster": cluster, "bits": [2, 8], "frac_bits": [1, 7]},
                 options={"kinds": ["mixed_fixed"], "entropy": "none"})
    assert fmt.kind == "mixed_fixed"
    assert_exact(w, fmt)
    info = fmt.meta["stream_info"]
    assert info["c1.codes"]["alphabet"] <= 256 and info["c0.codes"]["alphabet"] <= 5
    assert len(fmt.streams["c0.codes"]) <= math.ceil(info["c0.codes"]["count"] * 3 / 8)

