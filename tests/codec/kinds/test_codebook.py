"""codebook kind: exact for values from a small set, parts with csr."""
import math

import numpy as np
import torch
from hypothesis import given
from hypothesis import strategies as st

from weightzip.codec import decode_parts, encode
from weightzip.codec.sparse import csr_to_dense

from ..helpers import FAST, assert_exact, shapes, sparsify


@FAST
@given(shapes, st.floats(0, 1), st.integers(1, 40), st.integers(0, 10**6),
       st.sampled_from([{}, {"entropy": "none"}, {"sparse": False}, {"index_bits": 3}, {"entropy": "huffman"},
                        {"sparse": ["relative"]}]))
def test_codebook_values_exact(shape, density, k, seed, options):
    g = torch.Generator().manual_seed(seed)
    table = torch.randn(k, generator=g)
    w = table[torch.randint(0, k, shape, generator=g)]
    w = sparsify(w, density, g)
    fmt = encode(w, options=options)
    assert_exact(w, fmt)
    n = math.prod(shape)
    if n >= 256 and k <= 8 and density > 0.5:
        assert fmt.kind == "codebook"


def test_decode_parts_codebook_csr():
    g = torch.Generator().manual_seed(0)
    table = torch.tensor([-0.3, 0.1, 0.7])
    w = table[torch.randint(0, 3, (20, 30), generator=g)] * (torch.rand(20, 30, generator=g) < 0.05)
    fmt = encode(w, options={"sparse": ["relative"], "kinds": ["codebook"], "index_bits": 3, "entropy": "none"})
    parts = decode_parts(fmt)
    assert parts["kind"] == "codebook" and parts["sparse"] == "relative"
    assert np.array_equal(parts["codebook"][parts["codes"]], parts["values"])
    assert (parts["values"] != 0).all() and parts["positions"].size == int((w != 0).sum())
    indptr, indices, values = parts["csr"]
    assert np.array_equal(csr_to_dense(indptr, indices, values, (20, 30)), w.numpy())

