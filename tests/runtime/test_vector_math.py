"""The compiled runtime's vectorizable exp / GELU / activations against float64 references."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from weightzip.runtime.compiled import kernels as K

F = np.zeros(4, np.float32)


def test_fexp_relative_error_over_the_float32_range():
    x = np.concatenate([np.linspace(-87.3, 88.0, 400_001), [0.0, -1e-8, 1e-8]]).astype(np.float32)
    y = x.copy()
    K._act_vec(y, K.A_EXP, F, 0)
    ref = np.exp(x.astype(np.float64))
    rel = np.abs(y - ref) / ref
    assert rel.max() < 3e-7


def test_fexp_underflows_to_zero_and_takes_minus_infinity():
    x = np.array([-87.31, -100.0, -1e30, -np.inf], np.float32)
    K._act_vec(x, K.A_EXP, F, 0)
    assert (x == 0).all()


def test_gelu_matches_the_exact_erf_form():
    """GELU(v) = v/2 (1 + erf(v / sqrt 2)), in float64, over the range activations take."""
    x = np.concatenate([np.linspace(-12, 12, 200_001), [0.0, -0.0]]).astype(np.float32)
    y = x.copy()
    K._act_vec(y, K.A_GELU, F, 0)
    ref = np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x.astype(np.float64)])
    err = np.abs(y - ref)
    assert (err <= 1e-6 * np.abs(ref) + 1e-7).all(), float((err - 1e-6 * np.abs(ref)).max())


@pytest.mark.parametrize("act, fn", [
    ("A_SILU", torch.nn.functional.silu),
    ("A_SIGMOID", torch.sigmoid),
    ("A_GELU_TANH", lambda t: torch.nn.functional.gelu(t, approximate="tanh")),
    ("A_HARDSWISH", torch.nn.functional.hardswish),
    ("A_RELU", torch.relu),
])
def test_vector_activations_equal_torch(act, fn):
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(10_007, generator=g, dtype=torch.float64) * 6)
    y = x.float().numpy().copy()
    K._act_vec(y, getattr(K, act), F, 0)
    ref = fn(x.float().double()).numpy()
    np.testing.assert_allclose(y, ref, rtol=2e-6, atol=1e-7)


def test_softmax_row_sums_to_one_and_masks():
    g = np.random.default_rng(0)
    a = (g.standard_normal(131) * 10).astype(np.float32)
    a[5] = -np.inf
    r = a.copy()
    K._softmax_row(r)
    ref = torch.softmax(torch.from_numpy(a).double(), 0).numpy()
    np.testing.assert_allclose(r, ref, rtol=1e-6, atol=1e-9)
    assert r[5] == 0.0


@pytest.mark.parametrize("rows, cols, lda, ldb", [
    (128, 1024, 1024, 128),   # 4 KiB row stride: the 8-row blocks
    (37, 2048, 2048, 40),     # 8 KiB stride, odd rows, padded destination
    (1024, 128, 128, 1024),
    (19, 33, 35, 21),         # odd shapes, padded leading dimensions
    (1, 1, 1, 1),
])
def test_transpose_equals_numpy(rows, cols, lda, ldb):
    """``K._transpose``: ``b[j * ldb + i] = a[i * lda + j]``; padding outside the block untouched."""
    rng = np.random.default_rng(rows * cols)
    a = rng.standard_normal(rows * lda).astype(np.float32)
    b = np.full(cols * ldb, 7.0, np.float32)
    K._transpose(a, rows, cols, lda, b, ldb)
    ref = np.full((cols, ldb), 7.0, np.float32)
    ref[:, :rows] = a.reshape(rows, lda)[:, :cols].T
    np.testing.assert_array_equal(b.reshape(cols, ldb), ref)


def _phase_planes_reference(x, sh, sw, ph, pw, Hq, Wq):
    """Slow, obviously correct: the zero-padded plane ``Pp`` (``ph`` / ``pw`` zeros first), then
    ``Q[a, b][r, c] = Pp[r sh + a, c sw + b]`` laid out as ``kernels.phase_dims`` says (phase
    ``(a, b)`` at ``(a sw + b) * plane``, ``plane = (Hq + 1) Wq``)."""
    H, W = x.shape
    Pp = np.zeros(((Hq + 1) * sh, Wq * sw), np.float32)
    Pp[ph:ph + H, pw:pw + W] = x
    plane = (Hq + 1) * Wq
    out = np.zeros(sh * sw * plane, np.float32)
    for a in range(sh):
        for b in range(sw):
            q = Pp[a::sh, b::sw][:Hq + 1, :Wq]
            out[(a * sw + b) * plane:(a * sw + b + 1) * plane] = q.reshape(-1)
    return out


@pytest.mark.parametrize("sw", [1, 2, 3])
@pytest.mark.parametrize("pw", [0, 1, 2, 3])
@pytest.mark.parametrize("W", [1, 6, 7, 17])
def test_phase_fill_equals_the_strided_reference(sw, pw, W):
    """Every column stride (2 has its own interleaved loop), left padding and odd / even width."""
    rng = np.random.default_rng(sw * 100 + pw * 10 + W)
    H, sh, ph, k = 5, 2, 1, 3
    Ho, Wo = (H + 2 * ph - k) // sh + 1, (W + 2 * pw - k) // sw + 1
    if Wo < 1:
        pytest.skip("no output column")
    Hq, Wq, plane = K.phase_dims(H, W, Ho, Wo, k, k, sh, sw, 1, 1, ph, pw)
    x = rng.standard_normal((2, H, W)).astype(np.float32)
    P = np.zeros(sh * sw * plane + 8, np.float32)
    K._phase_fill(x.reshape(-1), H * W, H, W, P, 4, sh, sw, ph, pw, Wq, plane)   # channel 1, at offset 4
    np.testing.assert_array_equal(P[4:4 + sh * sw * plane], _phase_planes_reference(x[1], sh, sw, ph, pw, Hq, Wq))
    assert not P[:4].any() and not P[4 + sh * sw * plane:].any()


def test_vclamp_is_python_min_of_max_per_lane():
    """``simd.vclamp(v, lo, hi)`` = ``min(max(v, lo), hi)`` lane by lane (ReLU with ``hi = inf``),
    a NaN lane staying NaN as with Python's ``max`` / ``min`` on a NaN first argument."""
    import numba

    from weightzip.runtime.compiled.simd import vclamp, vload, vstore

    @numba.njit
    def clamp(a, lo, hi, out):
        for i in range(0, a.shape[0], 16):
            vstore(out, i, vclamp(vload(a, i), lo, hi))

    rng = np.random.default_rng(0)
    a = (rng.standard_normal(64) * 8).astype(np.float32)
    a[[3, 40]] = [np.nan, np.inf]
    for lo, hi in ((0.0, 6.0), (0.0, np.inf), (-1.0, 1.0), (-np.inf, np.inf)):
        out = np.empty_like(a)
        clamp(a, np.float32(lo), np.float32(hi), out)
        want = np.array([min(max(v, np.float32(lo)), np.float32(hi)) for v in a], np.float32)
        np.testing.assert_array_equal(out, want)
