"""Sparse layouts: relative index accounting, the documented example bytes, block masks."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from weightzip.codec import decode, decode_parts, encode, format_summary
from weightzip.codec.sparse import filler_count

from .helpers import FAST, assert_exact, canonical


def test_deep_compression_relative_index_accounting():
    g = torch.Generator().manual_seed(0)
    table = torch.linspace(-1, 1, 32)
    w = table[torch.randint(0, 32, (300, 100), generator=g)] * (torch.rand(300, 100, generator=g) < 0.05)
    w[w == 0] = 0.0
    fmt = encode(w, options={"sparse": ["relative"], "index_bits": 5, "entropy": "none", "kinds": ["codebook"]})
    assert fmt.kind == "codebook" and fmt.meta["sparse"] == "relative" and fmt.meta["index_bits"] == 5
    pos = np.flatnonzero(canonical(w).numpy())
    nf = filler_count(pos, 5)
    assert fmt.meta["n_fillers"] == nf and fmt.meta["n_entries"] == pos.size + nf
    code_bits = 6 if nf else 5   # 32 nonzero centroids (+ the zero code when fillers exist)
    assert len(fmt.streams["index"]) == math.ceil(fmt.meta["n_entries"] * 5 / 8)
    assert len(fmt.streams["codes"]) == math.ceil(fmt.meta["n_entries"] * code_bits / 8)
    assert_exact(w, fmt)
    s = format_summary(fmt)
    assert s["index_bits"] == 5 and s["value_bits"] == code_bits and s["n_fillers"] == nf


def test_documented_relative_index_example_bytes():
    """The worked example of docs/file-format.md section 4.2, byte for byte."""
    w = torch.zeros(24)
    w[1], w[12], w[13] = 0.5, -0.25, 0.5
    fmt = encode(w, options={"sparse": ["relative"], "index_bits": 3, "entropy": "none", "kinds": ["codebook"]})
    assert fmt.meta["n_fillers"] == 1 and fmt.meta["n_entries"] == 4
    assert fmt.streams["index"] == bytes.fromhex("b900")
    assert fmt.streams["codebook"] == np.array([0.0, -0.25, 0.5], dtype="<f4").tobytes()
    assert fmt.streams["codes"] == bytes.fromhex("92")
    assert torch.equal(decode(fmt), w)


@FAST
@given(st.integers(1, 20), st.integers(1, 20), st.integers(1, 5), st.integers(1, 5), st.floats(0, 1),
       st.sampled_from(["random", "codebook", "uniform"]), st.integers(0, 10**6))
def test_block_mask_exact(rows, cols, br, bc, keep, values, seed):
    g = torch.Generator().manual_seed(seed)
    grid = (-(-rows // br), -(-cols // bc))
    bm = torch.rand(grid, generator=g) < keep
    em = bm.repeat_interleave(br, 0).repeat_interleave(bc, 1)[:rows, :cols]
    hint = {"block": (br, bc), "block_mask": bm}
    if values == "random":
        w = torch.randn(rows, cols, generator=g)
    elif values == "codebook":
        w = torch.tensor([-0.5, 0.25, 1.5])[torch.randint(0, 3, (rows, cols), generator=g)]
        hint["kind"] = "codebook"
    else:
        w = torch.randint(-3, 4, (rows, cols), generator=g).float() * 0.1
        hint.update(kind="uniform", scale=0.1, bits=3)
    w = w * em
    fmt = encode(w, hint)
    assert_exact(w, fmt)
    forced = encode(w, hint, options={"sparse": ["block"]})
    assert_exact(w, forced)
    if forced.meta.get("sparse") == "block":
        parts = decode_parts(forced)
        assert np.array_equal(parts["block_mask"], bm.numpy())
        assert "index" not in forced.streams and "bitmap" not in forced.streams


def test_block_mask_with_weights_outside_is_rejected():
    w = torch.ones(4, 4)
    bm = torch.tensor([[True, False], [False, True]])
    fmt = encode(w, {"block": (2, 2), "block_mask": bm})
    assert fmt.meta["hint"]["status"]["block"].startswith("invalid")
    assert_exact(w, fmt)



def test_block_grid_and_element_mask():
    from weightzip.codec.layout import block_element_mask, block_grid

    assert block_grid((2, 3), (5, 7)) == (3, 3)
    assert block_grid((2, 2), (4, 1, 3, 3)) == (2, 5)       # conv: 2-D view (4, 9)
    bm = np.array([[True, False], [False, True]])
    em = block_element_mask(bm, (2, 2), (3, 3)).reshape(3, 3)
    assert em.tolist() == [[True, True, False], [True, True, False], [False, False, True]]


@pytest.mark.parametrize("layout", ["relative", "bitmap"])
def test_every_sparse_layout_decodes_its_positions(layout):
    w = torch.zeros(40)
    w[[0, 7, 8, 39]] = torch.tensor([1.0, -2.0, 3.0, 4.0])
    fmt = encode(w, options={"sparse": [layout], "kinds": ["dense"]})
    if fmt.meta["sparse"] == layout:
        parts = decode_parts(fmt)
        assert parts["positions"].tolist() == [0, 7, 8, 39]
    assert torch.equal(decode(fmt), w)
