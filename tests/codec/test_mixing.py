"""The context-mixing coder (codings ``cm_mask`` / ``cm``): exact round trips, sizes against the
order-0 bound, bounded decoding of hostile streams, and its use by the encoder."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from weightzip.codec import container, decode, encode, mixing
from weightzip.codec.mixing import SQUASH_T, STRETCH, _squash_py
from weightzip.errors import WeightzipFormatError


def _sparse_matrix(rng, rows, cols, density, k):
    """A pruned-layer-like matrix: column and row densities vary, k distinct nonzero codes."""
    col = rng.beta(0.5, 0.5 / density, size=cols)
    row = rng.uniform(0.3, 1.7, size=rows)
    mask = rng.random((rows, cols)) < np.clip(row[:, None] * col[None, :], 0, 1)
    codes = rng.integers(0, k, size=int(mask.sum()))
    return mask, codes


def test_squash_and_stretch_tables():
    """squash is monotone on [-2047, 2047], and stretch is its exact inverse from below."""
    sq = [_squash_py(d) for d in range(-2047, 2048)]
    assert all(a <= b for a, b in zip(sq, sq[1:])) and sq[0] >= 1 and sq[-1] <= 4095
    assert SQUASH_T[16] == 2047 and abs(_squash_py(0) - 2048) <= 1
    for p in range(1, 4096):
        d = int(STRETCH[p])
        assert _squash_py(d) >= p or d == 2047
        assert d == -2047 or _squash_py(d - 1) < p


@pytest.mark.parametrize("shape,density", [((1, 1), 0.5), ((3, 5), 0.3), ((40, 70), 0.05), ((7, 300), 0.5),
                                           ((64, 9), 0.01), ((25, 25), 0.0), ((10, 10), 1.0)])
def test_mask_round_trip(shape, density):
    rng = np.random.default_rng(hash(shape) % 1000)
    m = rng.random(shape) < density
    data = mixing.encode_mask(m)
    assert np.array_equal(mixing.decode_mask(data, *shape), m)
    for tr in (False, True):       # both orientations decode, whichever the encoder keeps
        d2 = mixing.encode_mask(m, transposed=tr)
        assert np.array_equal(mixing.decode_mask(d2, *shape), m)
        assert len(data) <= len(d2)


def test_mask_size_near_the_order0_bound_on_iid_bits():
    """On i.i.d. Bernoulli(p) bits no model can beat n H(p); the adaptive mixer must come close."""
    rng = np.random.default_rng(1)
    m = rng.random((200, 300)) < 0.04
    p = m.mean()
    bound = m.size * -(p * math.log2(p) + (1 - p) * math.log2(1 - p)) / 8
    n = len(mixing.encode_mask(m))
    assert bound * 0.97 < n < bound * 1.06 + 16


def test_mask_beats_column_model_on_a_real_pruned_layer():
    """LeNet-300-100's first layer (a committed record file): rows (neurons) and columns (pixels) of
    different densities; the mixing coder is >= 5% smaller than the column-only coder there."""
    from pathlib import Path

    from weightzip.codec import context

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "lenet300_100-records-80ep-3bits.wz"
    w = decode(container.read(path)[1]["layers.0.weight"]).numpy()
    m = w != 0
    n = len(mixing.encode_mask(m))
    assert np.array_equal(mixing.decode_mask(mixing.encode_mask(m), *m.shape), m)
    assert n < 0.95 * len(context.encode_mask(m))


@pytest.mark.parametrize("k", [2, 3, 8, 13, 64, 256])
def test_codes_round_trip(k):
    rng = np.random.default_rng(k)
    m, codes = _sparse_matrix(rng, 30, 50, 0.2, k)
    pos = np.flatnonzero(m.ravel())
    data = mixing.encode_codes(codes, pos, 30, 50, k)
    assert np.array_equal(mixing.decode_codes(data, pos, 30, 50, k), codes)


def test_codes_skew_is_learned():
    """Codes from a skewed distribution cost about their entropy (< 1.1 H + a few bytes)."""
    rng = np.random.default_rng(3)
    pr = np.array([0.6, 0.2, 0.1, 0.05, 0.03, 0.02])
    codes = rng.choice(6, size=5000, p=pr)
    pos = np.arange(5000)
    h = -(pr * np.log2(pr)).sum() * 5000 / 8
    n = len(mixing.encode_codes(codes, pos, 50, 100, 6))
    assert n < 1.1 * h + 16


def test_codes_limits():
    assert mixing.encode_codes(np.zeros(3, np.int64), np.arange(3), 1, 3, 1) is None            # K = 1
    assert mixing.encode_codes(np.zeros(3, np.int64), np.arange(3), 1, 3, mixing.MAX_ALPHABET + 1) is None
    with pytest.raises(WeightzipFormatError, match="limits"):
        mixing.decode_codes(b"\x00", np.arange(3), 1, 3, mixing.MAX_ALPHABET + 1)
    with pytest.raises(WeightzipFormatError, match="flags"):
        mixing.decode_codes(b"\xff", np.arange(3), 1, 3, 4)
    with pytest.raises(WeightzipFormatError, match="truncated"):
        mixing.decode_mask(b"", 3, 3)


def test_hostile_streams_decode_within_their_shape():
    """Any byte string decodes to an array of the declared shape with codes in range (garbage in,
    bounded garbage out: the CRCs and the layout's counts refuse it later), never a crash."""
    rng = np.random.default_rng(4)
    pos = np.flatnonzero(rng.random(400) < 0.3)
    for _ in range(50):
        data = bytes([rng.integers(0, 8)]) + rng.bytes(int(rng.integers(0, 40)))
        m = mixing.decode_mask(data, 20, 20)
        assert m.shape == (20, 20) and m.dtype == bool
        c = mixing.decode_codes(data, pos, 20, 20, 11)
        assert c.shape == pos.shape and c.min(initial=0) >= 0 and c.max(initial=0) < 11


def test_encoder_uses_cm_for_a_pruned_layer_and_file_round_trips(tmp_path):
    """The encoder keeps ``cm`` / ``cm_mask`` where they are smaller (the real LeNet-300-100 layer),
    the file round-trips bit for bit, and ``entropy="none"`` never uses them."""
    from pathlib import Path

    path0 = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "lenet300_100-records-80ep-3bits.wz"
    w = decode(container.read(path0)[1]["layers.0.weight"])
    f = encode(w, None, options={"name": "w"})
    codings = {s: i["coding"] for s, i in f.meta["stream_info"].items()}
    assert f.meta["sparse"] == "context" and codings["mask"] == "cm_mask" and codings["codes"] == "cm", codings
    assert torch.equal(decode(f), w)
    path = tmp_path / "m.wz"
    container.write(path, {}, {"w": f})
    assert torch.equal(decode(container.read(path)[1]["w"]), w)
    none = encode(w, None, options={"name": "w", "entropy": "none"})
    assert not {"cm", "cm_mask"} & {i["coding"] for i in none.meta["stream_info"].values()}
