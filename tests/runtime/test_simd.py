"""The SIMD intrinsics and the register-tiled weights-stationary loop against numpy.

``_tiles`` computes ``acc[s] = sum_j wb[j] * xT[bb[j] + s]``; the reference is the same sum in
float64 (a slow, obviously correct loop over ``j``). Sizes cover every tile path: n < 16 (scalar
only), multiples of 16 and 64, and odd remainders; ``cnt = 0`` (an empty row) gives zeros.
"""
from __future__ import annotations

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from weightzip.runtime.compiled.kernels import _tiles
from weightzip.runtime.compiled.simd import LANES, vadd, vfma, vload, vstore, vzero


@numba.njit
def _roundtrip(a, i, out, j):
    vstore(out, j, vload(a, i))


@numba.njit
def _axpy(acc, w, x, b):
    v = vfma(vload(acc, 0), w, vload(x, b))
    vstore(acc, 0, vadd(v, vzero()))


def test_load_store_unaligned():
    a = np.arange(40, dtype=np.float32)
    out = np.full(40, -1, np.float32)
    _roundtrip(a, 3, out, 5)
    np.testing.assert_array_equal(out[5:5 + LANES], a[3:3 + LANES])
    assert (out[:5] == -1).all() and (out[5 + LANES:] == -1).all()   # nothing outside the 16 lanes


def test_fma_broadcasts_the_scalar():
    rng = np.random.default_rng(0)
    acc = rng.standard_normal(LANES).astype(np.float32)
    x = rng.standard_normal(LANES + 7).astype(np.float32)
    want = acc + np.float32(0.75) * x[7:]
    _axpy(acc, 0.75, x, 7)
    np.testing.assert_allclose(acc, want, rtol=1e-6)


def test_rejects_non_float32_arrays():
    with pytest.raises((TypeError, numba.core.errors.TypingError), match="float32"):
        _roundtrip(np.zeros(32, np.float64), 0, np.zeros(32, np.float64), 0)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 200), cnt=st.integers(0, 9), seed=st.integers(0, 2**16))
def test_tiles_equal_reference(n, cnt, seed):
    rng = np.random.default_rng(seed)
    span = 3 * n + 5
    xT = rng.standard_normal(span + n + 15).astype(np.float32)   # _tiles reads up to 15 past bb[j] + n
    wb = rng.standard_normal(max(cnt, 1)).astype(np.float32)
    bb = rng.integers(0, span, max(cnt, 1)).astype(np.int64)
    full = np.full(n + 32, np.nan, np.float32)
    _tiles(wb, bb, cnt, xT, n, full)
    assert np.isnan(full[n + 15:]).all()   # writes stay within acc[: n + 15] (the callers' slack)
    acc = full[:n]
    want = np.zeros(n)
    for j in range(cnt):
        want += np.float64(wb[j]) * xT[bb[j]:bb[j] + n].astype(np.float64)
    scale = sum(abs(float(wb[j])) * np.abs(xT[bb[j]:bb[j] + n]) for j in range(cnt)) if cnt else np.zeros(n)
    assert np.all(np.abs(acc - want) <= 1e-5 * np.abs(want) + 1e-6 * (scale + 1)), (n, cnt)


# --- table look-ups (PQ) ---------------------------------------------------------------------

def _lut_fn():
    """A fresh njit function per call: it is compiled for the path ``simd.AVX512`` selects now."""
    from weightzip.runtime.compiled.simd import vcodes, vlut32, vlut64, vlut128, vlut256

    @numba.njit
    def look(tab, base, codes, i, entries, out):
        if entries == 32:
            v = vlut32(tab, base, vcodes(codes, i))
        elif entries == 64:
            v = vlut64(tab, base, vcodes(codes, i))
        elif entries == 128:
            v = vlut128(tab, base, vcodes(codes, i))
        else:
            v = vlut256(tab, base, vcodes(codes, i))
        vstore(out, 0, v)
    return look


@pytest.mark.parametrize("avx512", [True, False])
@settings(max_examples=25, deadline=None)
@given(entries=st.sampled_from([32, 64, 128, 256]), base=st.integers(0, 40), i=st.integers(0, 9),
       wide=st.booleans(), seed=st.integers(0, 2**16))
def test_vlut_gathers_table_entries(avx512, entries, base, i, wide, seed):
    from weightzip.runtime.compiled import simd

    if avx512 and not simd.AVX512:
        pytest.skip("this host has no AVX-512 (the portable path is the other case)")
    rng = np.random.default_rng(seed)
    tab = rng.standard_normal(base + entries).astype(np.float32)
    codes = rng.integers(0, entries, i + LANES).astype(np.uint16 if wide else np.uint8)
    codes[i] = entries - 1                               # the last entry of the table
    out = np.full(LANES, np.nan, np.float32)
    saved = simd.AVX512
    simd.AVX512 = avx512
    try:
        _lut_fn()(tab, base, codes, i, entries, out)
    finally:
        simd.AVX512 = saved
    np.testing.assert_array_equal(out, tab[base + codes[i:i + LANES].astype(np.int64)])


def test_vcodes_rejects_other_dtypes():
    from weightzip.runtime.compiled.simd import vcodes, vlut32

    @numba.njit
    def f(c, out):
        vstore(out, 0, vlut32(out, 0, vcodes(c, 0)))

    with pytest.raises((TypeError, numba.core.errors.TypingError), match="uint8"):
        f(np.zeros(32, np.int32), np.zeros(32, np.float32))


def test_vector_fma_and_lane_sum():
    from weightzip.runtime.compiled.simd import vfmav, vsum

    @numba.njit
    def f(acc, a, b):
        v = vfmav(vload(acc, 0), vload(a, 0), vload(b, 0))
        vstore(acc, 0, v)
        return vsum(v)

    rng = np.random.default_rng(3)
    acc, a, b = (rng.standard_normal(LANES).astype(np.float32) for _ in range(3))
    want = acc + a * b
    s = f(acc, a, b)
    np.testing.assert_allclose(acc, want, rtol=1e-6)
    assert abs(s - float(want.astype(np.float64).sum())) <= 1e-5 * float(np.abs(want).sum())


# --- vector exp / sigmoid / tanh (the LSTM cell) ----------------------------------------------

def test_vexp_vsigmoid_vtanh_against_numpy():
    from weightzip.runtime.compiled.simd import vexp, vsigmoid, vtanh

    @numba.njit
    def f(x, e, s, t):
        for i in range(0, x.size, LANES):
            v = vload(x, i)
            vstore(e, i, vexp(v))
            vstore(s, i, vsigmoid(v))
            vstore(t, i, vtanh(v))

    x = np.concatenate([np.linspace(-87.0, 88.0, 160 * LANES), np.linspace(-3, 3, 64 * LANES),
                        np.array([0.0, 1e-6, -1e-6, 1e-3] * 4)]).astype(np.float32)
    e, s, t = (np.empty_like(x) for _ in range(3))
    f(x, e, s, t)
    xd = x.astype(np.float64)
    np.testing.assert_allclose(e, np.exp(xd), rtol=3e-7 * 4)            # ~2 ulp
    np.testing.assert_allclose(s, 1 / (1 + np.exp(-xd)), rtol=1e-6, atol=1e-37)
    np.testing.assert_allclose(t, np.tanh(xd), rtol=1e-6, atol=2e-7)
    big = np.array([-200.0, 200.0] * 8, np.float32)                    # clamped: finite, saturated
    e, s, t = (np.empty_like(big) for _ in range(3))
    f(big, e, s, t)
    assert np.isfinite(e).all() and (s[1::2] == 1).all() and (s[0::2] < 1e-30).all()
    assert (t == np.sign(big)).all()
