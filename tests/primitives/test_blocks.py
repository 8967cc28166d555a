import itertools

import pytest
import torch
from hypothesis import given, settings, strategies as st

from weightzip.primitives.blocks import (block_grid, block_norms, blocks_per_row, expand_block_mask,
                                         norm_block_mask, random_block_mask, topk_block_mask)


@pytest.mark.parametrize("c", [1, 2, 4, 8, 16])
def test_random_mask_keeps_exactly_one_in_c_per_block_row(c):
    g = torch.Generator().manual_seed(3)
    bm = random_block_mask((5, 16), c, generator=g)
    assert bm.dtype == torch.bool and bm.shape == (5, 16)
    assert bm.sum(1).tolist() == [16 // c] * 5
    # seeded: same generator seed, same mask; different rows differ in general
    assert torch.equal(bm, random_block_mask((5, 16), c, generator=torch.Generator().manual_seed(3)))


def test_blocks_per_row_rule():
    assert [blocks_per_row(16, c) for c in (1, 2, 4, 8, 16)] == [16, 8, 4, 2, 1]
    assert blocks_per_row(3, 4) == 1 and blocks_per_row(7, 2) == 3
    with pytest.raises(ValueError):
        blocks_per_row(4, 0)


def _norms_reference(w, br, bc):
    out, inp = w.shape[:2]
    R, C = -(-out // br), -(-inp // bc)
    ref = torch.zeros(R, C)
    for r, c in itertools.product(range(R), range(C)):
        ref[r, c] = w[r * br:(r + 1) * br, c * bc:(c + 1) * bc].pow(2).sum().sqrt()
    return ref


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 20), st.integers(1, 20), st.integers(1, 6), st.integers(1, 6), st.integers(0, 2))
def test_block_norms_and_expand_against_loops(out, inp, br, bc, kdims):
    torch.manual_seed(out * 31 + inp)
    shape = (out, inp) + (3,) * kdims
    w = torch.randn(shape)
    assert block_grid(shape, (br, bc)) == (-(-out // br), -(-inp // bc))
    assert torch.allclose(block_norms(w, (br, bc)), _norms_reference(w, br, bc), atol=1e-5)
    bm = torch.rand(block_grid(shape, (br, bc))) > 0.5
    m = expand_block_mask(bm, shape, (br, bc))
    assert m.shape == shape
    for idx in itertools.product(*(range(s) for s in shape)):
        assert m[idx] == float(bm[idx[0] // br, idx[1] // bc])


def test_norm_mask_picks_largest_blocks_per_row():
    w = torch.zeros(8, 16)
    w[0:4, 4:8] = 5.0   # row 0: block 1 is largest
    w[0:4, 12:16] = 3.0  # then block 3
    w[4:8, 0:4] = 1.0    # row 1: block 0
    w[4:8, 8:12] = 2.0   # then block 2
    bm = norm_block_mask(w, 4, 2)
    assert bm.tolist() == [[False, True, False, True], [True, False, True, False]]


def test_topk_exact_count_with_ties_and_bad_keep():
    bm = topk_block_mask(torch.zeros(3, 6), 2)
    assert bm.sum(1).tolist() == [2, 2, 2] and bm[:, :2].all()
    with pytest.raises(ValueError):
        topk_block_mask(torch.zeros(3, 6), 7)


def test_conv_blocks_keep_whole_kernels_and_non_divisible_dims():
    shape = (10, 6, 3, 3)              # 10 = 2 blocks of 4 + partial, 6 = 1 block of 4 + partial
    bm = random_block_mask(block_grid(shape, 4), 2, generator=torch.Generator().manual_seed(0))
    assert bm.shape == (3, 2) and bm.sum(1).tolist() == [1, 1, 1]
    m = expand_block_mask(bm, shape, 4)
    per_kernel = m.flatten(2)
    assert torch.all((per_kernel == 0).all(2) | (per_kernel == 1).all(2))   # kernels whole
    with pytest.raises(ValueError, match="expected"):
        expand_block_mask(bm, (13, 6, 3, 3), 4)
