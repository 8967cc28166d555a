"""Gradient quantizer and packer: unbiased rounding, exact round trips, packet sizes."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from weightzip.primitives.grad_quant import (
    bits_per_element,
    clip_by_std,
    codes_nbytes,
    decode_packets,
    dequantize,
    encode_packet,
    levels_for_bits,
    mbit_codes,
    mbit_values,
    pack_bits,
    pack_trits,
    packet_nbytes,
    quantize,
    segment_stats,
    stochastic_levels,
    unpack_bits,
    unpack_trits,
)


def reference_pack(codes: list[int], bits: int) -> bytes:
    """Bit by bit: bit j of code i goes to stream position i * bits + j, LSB-first in each byte."""
    nbits = len(codes) * bits
    out = bytearray(-(-nbits // 8))
    for i, c in enumerate(codes):
        for j in range(bits):
            if (c >> j) & 1:
                pos = i * bits + j
                out[pos // 8] |= 1 << (pos % 8)
    return bytes(out)


def test_levels_for_bits():
    assert [levels_for_bits(b) for b in range(2, 9)] == [1, 3, 7, 15, 31, 63, 127]
    for bad in (1, 9, 2.0, True):
        with pytest.raises(ValueError, match="sign"):
            levels_for_bits(bad)


@settings(max_examples=60, deadline=None)
@given(bits=st.integers(1, 8), n=st.integers(0, 70), rows=st.integers(1, 3), seed=st.integers(0, 2**31 - 1))
def test_pack_bits_matches_the_bitwise_reference_and_round_trips(bits, n, rows, seed):
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 2 ** bits, (rows, n), generator=g, dtype=torch.int64).to(torch.uint8)
    packed = pack_bits(codes, bits)
    assert packed.dtype == torch.uint8 and packed.shape == (rows, -(-n * bits // 8))
    for r in range(rows):
        assert bytes(packed[r].tolist()) == reference_pack(codes[r].tolist(), bits)
    assert torch.equal(unpack_bits(packed, bits, n), codes)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 60), seed=st.integers(0, 2**31 - 1))
def test_trits_round_trip_five_per_byte(n, seed):
    t = torch.randint(0, 3, (2, n), generator=torch.Generator().manual_seed(seed)).to(torch.uint8)
    packed = pack_trits(t)
    assert packed.shape == (2, -(-n // 5))
    assert packed.numel() == 0 or int(packed.max()) <= 242
    assert torch.equal(unpack_trits(packed, n), t)


@pytest.mark.parametrize("bits", range(2, 9))
def test_sign_magnitude_codes_round_trip(bits):
    k = levels_for_bits(bits)
    q = torch.arange(-k, k + 1, dtype=torch.int16)
    codes = mbit_codes(q, bits)
    assert int(codes.max()) < 2 ** bits and len(set(codes.tolist())) == 2 * k + 1
    assert torch.equal(mbit_values(codes, bits), q)


def test_unpack_refuses_a_wrong_length():
    with pytest.raises(ValueError, match="expected"):
        unpack_bits(torch.zeros(3, dtype=torch.uint8), 3, 10)
    with pytest.raises(ValueError, match="expected"):
        unpack_trits(torch.zeros(3, dtype=torch.uint8), 20)


def test_segment_stats_against_torch():
    x = torch.randn(50, generator=torch.Generator().manual_seed(0))
    st_ = segment_stats(x, [20, 30])
    for j, part in enumerate((x[:20], x[20:])):
        assert st_["max_abs"][j] == part.abs().max()
        assert st_["mean_abs"][j] == pytest.approx(part.abs().mean().item(), rel=1e-6)
        assert st_["std"][j] == pytest.approx(part.std(correction=0).item(), rel=1e-5)
    with pytest.raises(ValueError, match="sum to"):
        segment_stats(x, [20, 20])


def test_clip_by_std_bounds_each_segment():
    g = torch.cat([torch.randn(1000), 100 * torch.randn(1000)])
    g[3] = 50.0  # an outlier in the small segment
    c = clip_by_std(g, [1000, 1000], 3.0)
    s0, s1 = g[:1000].std(correction=0), g[1000:].std(correction=0)
    assert c[:1000].abs().max() <= 3 * s0 + 1e-6 and c[3] == pytest.approx(3 * s0.item(), rel=1e-5)
    assert c[1000:].abs().max() <= 3 * s1 + 1e-3
    inside = g.abs() < 3 * torch.cat([s0.expand(1000), s1.expand(1000)])
    assert torch.equal(c[inside], g[inside])  # values inside the band are untouched
    with pytest.raises(ValueError):
        clip_by_std(g, [2000], 0.0)


def test_stochastic_levels_take_the_two_neighbours():
    u = torch.tensor([0.0, 0.25, 1.0, 2.5, 3.0]).repeat(1000)
    r = stochastic_levels(u, torch.Generator().manual_seed(0))
    assert torch.all((r == torch.floor(u)) | (r == torch.floor(u) + 1))
    assert torch.equal(r[u == 3.0], u[u == 3.0]) and torch.equal(r[u == 0.0], u[u == 0.0])


@pytest.mark.parametrize("scheme,bits", [("mbit", 2), ("mbit", 3), ("mbit", 8), ("ternary", 2)])
@pytest.mark.parametrize("clip", [None, 2.0])
def test_quantizer_is_unbiased(scheme, bits, clip):
    """Mean of R independent quantizations = (clipped) g within 5 standard errors per element."""
    n, R = 48, 2500
    g = torch.randn(n, generator=torch.Generator().manual_seed(1)) * torch.linspace(0.1, 3, n)
    target = clip_by_std(g, [n], clip) if clip is not None else g
    # R copies, one segment each: every copy gets its own scale (the same) and its own draws
    q, scales = quantize(g.repeat(R), [n] * R, scheme=scheme, bits=bits, clip=clip,
                         generator=torch.Generator().manual_seed(2))
    g_hat = dequantize(q, scales, [n] * R, scheme=scheme, bits=bits).view(R, n)  # [R, n]
    k = 1 if scheme == "ternary" else levels_for_bits(bits)
    s = target.abs().max()
    assert torch.allclose(scales, s.expand(R))
    # one draw: the value is s/k times floor or floor + 1 -> variance <= (s / k)^2 / 4
    bound = 5 * (s / k) / 2 / math.sqrt(R)
    err = (g_hat.mean(0) - target).abs()
    assert err.max() <= bound, (err.max(), bound)
    grid = g_hat * k / s  # every value is on the grid {-k..k} * s / k
    assert torch.allclose(grid, grid.round(), atol=1e-4) and grid.abs().max() <= k + 1e-4


def test_sign_scheme_is_mean_abs_times_sign():
    g = torch.tensor([0.5, -1.5, 0.0, 2.0, -0.1, 0.1])
    q, s = quantize(g, [4, 2], scheme="sign")
    assert q.tolist() == [1, -1, 1, 1, -1, 1]  # sign(0) = +1
    assert torch.allclose(s, torch.tensor([1.0, 0.1]))
    assert torch.allclose(dequantize(q, s, [4, 2], scheme="sign"), torch.tensor([1.0, -1, 1, 1, -0.1, 0.1]))


def test_zero_gradient_and_zero_segments_decode_to_zero():
    g = torch.cat([torch.zeros(10), torch.randn(5)])
    for scheme in ("mbit", "ternary"):
        pkt = encode_packet(g, [10, 5], scheme=scheme, bits=3)
        out = decode_packets(pkt, [10, 5], scheme=scheme, bits=3)
        assert torch.equal(out[:10], torch.zeros(10)) and torch.isfinite(out).all()


@pytest.mark.parametrize("scheme,bits", [("mbit", 2), ("mbit", 3), ("mbit", 5), ("mbit", 8), ("sign", 2),
                                         ("ternary", 2)])
def test_packets_round_trip_and_average(scheme, bits):
    lengths = [7, 100, 33]
    gens = [torch.Generator().manual_seed(w) for w in range(3)]
    gs = [torch.randn(140, generator=torch.Generator().manual_seed(10 + w)) for w in range(3)]
    pkts, own = zip(*(encode_packet(g, lengths, scheme=scheme, bits=bits, clip=3.0, generator=gen,
                                    return_decoded=True) for g, gen in zip(gs, gens)))
    for p in pkts:
        assert p.dtype == torch.uint8 and p.numel() == packet_nbytes(lengths, scheme=scheme, bits=bits)
    gathered = torch.stack(pkts)  # [W, P], what the all-gather delivers
    each = decode_packets(gathered, lengths, scheme=scheme, bits=bits, reduce="none")
    for w in range(3):
        assert torch.equal(each[w], own[w])  # the bytes carry exactly the sender's quantized gradient
    mean = decode_packets(gathered, lengths, scheme=scheme, bits=bits)
    assert torch.allclose(mean, (own[0] + own[1] + own[2]) / 3, atol=1e-6)
    with pytest.raises(ValueError, match="same settings"):
        decode_packets(gathered[:, 1:], lengths, scheme=scheme, bits=bits)


def test_packet_sizes_are_the_documented_formula():
    lengths = [431080 - 5010, 5010]
    assert packet_nbytes(lengths, scheme="mbit", bits=2) == 8 + math.ceil(431080 * 2 / 8)
    assert packet_nbytes(lengths, scheme="mbit", bits=3) == 8 + math.ceil(431080 * 3 / 8)
    assert packet_nbytes(lengths, scheme="sign") == 8 + math.ceil(431080 / 8)
    assert packet_nbytes(lengths, scheme="ternary") == 8 + math.ceil(431080 / 5)
    assert packet_nbytes(lengths, scheme="mbit", bits=2) * 12 <= 4 * 431080  # 2 bits: < 1/12 of fp32
    assert [bits_per_element(s, 3) for s in ("mbit", "sign", "ternary")] == [3.0, 1.0, 1.6]
    assert [codes_nbytes(11, scheme=s, bits=3) for s in ("mbit", "sign", "ternary")] == [5, 2, 3]
