"""Gradient quantization for communication, as pure tensor functions (no processes, no state).

The scheme of Hou, Zhang & Kwok, "Analysis of quantized models" (ICLR 2019; METHODS.md D,
**[partly reconstructed]**). A flat gradient ``g [n]`` is cut into *segments* (one per
parameter tensor of a DDP bucket, or the whole bucket; ``lengths`` gives their sizes) and each
segment ``j`` is quantized on its own:

    clip (optional):  g <- clamp(g, -c sigma_j, c sigma_j)       sigma_j = std(g_j) (population)
    scale:            s_j = max_i |g_i|                          (after clipping)
    m-bit levels:     {0, 1/k, ..., 1},  k = 2^(b-1) - 1
    stochastic round: u = k |g| / s_j ;  l = floor(u) + [r < u - floor(u)],  r ~ U[0, 1)
    value:            g_hat = sign(g) * l / k * s_j

so that ``E[g_hat] = g`` (the clipped ``g`` when clipping is on): unbiased. The sign ``q =
sign(g) * l`` in ``[-k, k]`` is stored sign-magnitude in ``b`` bits, ``code = [g < 0] * 2^(b-1)
+ l``, and the codes are packed LSB-first into bytes (``pack_bits``). Two variants:

* ``sign`` (1 bit): ``g_hat = s_j * sign(g)`` with ``s_j = mean |g|`` (signSGD with a scale;
  biased - use error feedback), ``sign(0) = +1``;
* ``ternary`` (TernGrad-like): the ``b = 2`` scheme (levels ``{-s, 0, s}``, unbiased) packed
  5 trits per byte (``3^5 = 243 <= 256``): 1.6 bits per element instead of 2.

A *packet* (what one worker puts on the wire for one bucket) is ``[scales fp32 [S] as 4 S bytes]
[packed codes]``; its length depends only on ``(scheme, bits, lengths)``
(:func:`packet_nbytes`), so every worker's packet of a bucket has the same size and an
all-gather of the uint8 packets exchanges exactly those bytes.

    >>> g = torch.tensor([0.5, -0.25, 0.0, 1.0])
    >>> pkt = encode_packet(g, [4], scheme="mbit", bits=8)     # 4 bytes of scale + 4 codes
    >>> pkt.dtype, pkt.numel()
    (torch.uint8, 8)
    >>> decode_packets(pkt[None], [4], scheme="mbit", bits=8)   # mean over 1 worker; each value
    tensor([ 0.4961, -0.2520,  0.0000,  1.0000])                 # within s/127 of g (random rounding)
"""
from __future__ import annotations

from typing import Literal, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "Scheme",
    "SCHEMES",
    "levels_for_bits",
    "segment_ids",
    "segment_stats",
    "expand_segments",
    "clip_by_std",
    "stochastic_levels",
    "quantize",
    "dequantize",
    "mbit_codes",
    "mbit_values",
    "pack_bits",
    "unpack_bits",
    "pack_trits",
    "unpack_trits",
    "packet_nbytes",
    "codes_nbytes",
    "encode_packet",
    "decode_packets",
    "bits_per_element",
]

Scheme = Literal["mbit", "sign", "ternary"]
SCHEMES: tuple[str, ...] = ("mbit", "sign", "ternary")


def levels_for_bits(bits: int) -> int:
    """``k = 2^(b-1) - 1``: the number of non-zero magnitude levels of ``b``-bit codes (b in 2..8)."""
    if not isinstance(bits, int) or isinstance(bits, bool) or not 2 <= bits <= 8:
        raise ValueError(f"gradient bits must be an integer in [2, 8] (sign-magnitude codes need >= 2), "
                         f"got {bits!r}; use scheme 'sign' for 1 bit")
    return 2 ** (bits - 1) - 1


def _check_lengths(lengths: Sequence[int], n: int) -> list[int]:
    lengths = [int(v) for v in lengths]
    if any(v <= 0 for v in lengths) or sum(lengths) != n:
        raise ValueError(f"segment lengths {lengths[:8]}{'...' if len(lengths) > 8 else ''} must be positive "
                         f"and sum to the gradient size {n}")
    return lengths


def segment_ids(lengths: Sequence[int], device: torch.device | str | None = None) -> Tensor:
    """``[0]*l_0 + [1]*l_1 + ...``: int64 ``[sum(lengths)]`` segment index of every element."""
    lens = torch.as_tensor(list(lengths), dtype=torch.long, device=device)  # [S]
    return torch.repeat_interleave(torch.arange(len(lens), device=device), lens)  # [n]


def expand_segments(values: Tensor, lengths: Sequence[int]) -> Tensor:
    """Per-segment values ``[..., S]`` repeated over their segments: ``[..., sum(lengths)]``."""
    lead = values.shape[:-1]
    # one copy of expanded views (much faster than repeat_interleave's index gather on CPU)
    return torch.cat([values[..., j:j + 1].expand(*lead, int(L)) for j, L in enumerate(lengths)], dim=-1)


def segment_stats(x: Tensor, lengths: Sequence[int]) -> dict[str, Tensor]:
    """Per-segment ``max |x|``, ``mean |x|``, ``mean`` and population ``std`` of ``x [n]``; each ``[S]`` fp32.

    ``std_j = sqrt(mean_j((x - mean_j(x))^2))`` (``torch.std_mean(correction=0)`` per segment;
    segments are the parameter tensors of a bucket, a few to a few hundred).
    """
    lengths = _check_lengths(lengths, x.numel())
    x = x.reshape(-1).float()  # [n]
    rows = []
    for part in torch.split(x, lengths):  # views, no copies
        std, mean = torch.std_mean(part, correction=0)
        a = part.abs()
        rows.append(torch.stack([a.max(), a.mean(), mean, std]))
    st = torch.stack(rows, 1)  # [4, S]
    return {"max_abs": st[0], "mean_abs": st[1], "mean": st[2], "std": st[3]}


def clip_by_std(x: Tensor, lengths: Sequence[int], c: float) -> Tensor:
    """``clamp(x, -c sigma_j, c sigma_j)`` per segment, ``sigma_j`` the population std of segment j.

    ``x [n]`` -> ``[n]`` fp32. ``c > 0`` (about 3 in the paper: few entries are clipped, the
    scale ``s = max|g|`` shrinks to at most ``c sigma`` and the rounding variance with it).
    """
    if not c > 0:
        raise ValueError(f"clipping factor c must be > 0 (standard deviations), got {c!r}")
    x = x.reshape(-1).float()  # [n]
    bound = expand_segments(c * segment_stats(x, lengths)["std"], lengths)  # [n]
    return torch.maximum(torch.minimum(x, bound), -bound)


def stochastic_levels(u: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Unbiased stochastic rounding of ``u >= 0``: ``floor(u) + Bernoulli(u - floor(u))`` (same shape).

    ``E[result] = u`` exactly; the result is ``floor(u)`` or ``floor(u) + 1``.
    """
    lo = torch.floor(u)
    r = torch.rand(u.shape, generator=generator, device=u.device, dtype=u.dtype)
    return lo + (r < (u - lo)).to(u.dtype)


def quantize(g: Tensor, lengths: Sequence[int], *, scheme: Scheme = "mbit", bits: int = 2,
             clip: float | None = None, generator: torch.Generator | None = None
             ) -> tuple[Tensor, Tensor]:
    """Quantize ``g [n]`` per segment; returns ``(q, scales)``.

    ``q``: int16 ``[n]`` signed levels, ``g_hat = q / k * scales[seg]`` with ``k = 2^(bits-1) - 1``
    (``mbit``), ``k = 1`` (``ternary``: ``q`` in ``{-1, 0, 1}``), or ``q`` in ``{-1, +1}`` and
    ``g_hat = q * scales[seg]`` (``sign``). ``scales``: fp32 ``[S]`` (``max|g|`` per segment for
    mbit/ternary, ``mean|g|`` for sign), computed after the optional clipping at ``clip`` stds.
    """
    if scheme not in SCHEMES:
        raise ValueError(f"unknown gradient quantization scheme {scheme!r}; valid: {', '.join(SCHEMES)}")
    g = g.reshape(-1).float()  # [n]
    lengths = _check_lengths(lengths, g.numel())
    if clip is not None:
        g = clip_by_std(g, lengths, clip)
    stats = segment_stats(g, lengths)
    if scheme == "sign":
        q = torch.where(g < 0, -1, 1).to(torch.int16)  # [n]
        return q, stats["mean_abs"]
    k = 1 if scheme == "ternary" else levels_for_bits(bits)
    scales = stats["max_abs"]  # [S]
    inv = expand_segments(torch.where(scales > 0, k / scales, torch.zeros_like(scales)), lengths)  # [n]
    u = (g.abs() * inv).clamp_(0, k)  # [n] in [0, k]; 0 where the segment is all zero
    lvl = stochastic_levels(u, generator).clamp_(0, k)  # [n] in {0..k}
    q = (torch.sign(g) * lvl).to(torch.int16)  # [n]
    return q, scales


def dequantize(q: Tensor, scales: Tensor, lengths: Sequence[int], *, scheme: Scheme = "mbit",
               bits: int = 2) -> Tensor:
    """``g_hat = q / k * scales[seg]`` (``k = 1`` for sign and ternary); fp32, ``q``'s shape.

    ``q [..., n]`` and ``scales [..., S]`` may carry a leading worker dimension.
    """
    k = 1 if scheme in ("sign", "ternary") else levels_for_bits(bits)
    return q.float() * expand_segments(scales.float() / k, lengths)


# ---- codes and packing -------------------------------------------------------------------
def mbit_codes(q: Tensor, bits: int) -> Tensor:
    """Sign-magnitude ``b``-bit codes of signed levels ``q`` in ``[-k, k]``: ``[q<0] 2^(b-1) + |q|``; uint8."""
    levels_for_bits(bits)
    return ((q < 0).to(torch.int16) * (1 << (bits - 1)) + q.abs()).to(torch.uint8)


def mbit_values(codes: Tensor, bits: int) -> Tensor:
    """Inverse of :func:`mbit_codes`: signed levels int16 (the code with magnitude 0 and sign 1 is 0)."""
    c = codes.to(torch.int16)
    mag = c & ((1 << (bits - 1)) - 1)
    return torch.where((c >> (bits - 1)) & 1 == 1, -mag, mag)


def codes_nbytes(n: int, *, scheme: Scheme = "mbit", bits: int = 2) -> int:
    """Bytes of ``n`` packed codes: ``ceil(n b / 8)`` (mbit), ``ceil(n / 8)`` (sign), ``ceil(n / 5)`` (ternary)."""
    if scheme == "sign":
        return -(-n // 8)
    if scheme == "ternary":
        return -(-n // 5)
    levels_for_bits(bits)
    return -(-n * bits // 8)


def packet_nbytes(lengths: Sequence[int], *, scheme: Scheme = "mbit", bits: int = 2) -> int:
    """Bytes of one worker's packet for segments ``lengths``: ``4 S + codes_nbytes(sum(lengths))``."""
    return 4 * len(lengths) + codes_nbytes(sum(int(v) for v in lengths), scheme=scheme, bits=bits)


def pack_bits(codes: Tensor, bits: int) -> Tensor:
    """Pack ``codes [..., n]`` (integers < 2^bits, bits in 1..8) LSB-first into uint8 ``[..., ceil(n bits / 8)]``.

    Bit ``j`` of code ``i`` is bit ``(i bits + j) % 8`` of byte ``(i bits + j) // 8``. Groups of
    8 codes (``8 bits`` bits = ``bits`` bytes) are assembled in an int64 and split into bytes,
    so the work is a handful of vectorized shifts (also on CUDA).
    """
    if not 1 <= bits <= 8:
        raise ValueError(f"pack_bits: bits must be in [1, 8], got {bits}")
    n = codes.shape[-1]
    lead = codes.shape[:-1]
    out_len = -(-n * bits // 8)
    if bits == 8:
        return codes.to(torch.uint8).contiguous()
    c = F.pad(codes.to(torch.int64), (0, (-n) % 8)).reshape(*lead, -1, 8)  # [..., G, 8]
    shifts = torch.arange(8, device=codes.device, dtype=torch.int64) * bits  # [8]
    word = (c << shifts).sum(-1)  # [..., G]  (fields do not overlap: sum == or)
    byte_shifts = torch.arange(bits, device=codes.device, dtype=torch.int64) * 8  # [bits]
    out = ((word.unsqueeze(-1) >> byte_shifts) & 0xFF).to(torch.uint8)  # [..., G, bits]
    return out.reshape(*lead, -1)[..., :out_len].contiguous()


def unpack_bits(packed: Tensor, bits: int, n: int) -> Tensor:
    """Inverse of :func:`pack_bits`: uint8 ``[..., ceil(n bits / 8)]`` -> codes uint8 ``[..., n]``."""
    if not 1 <= bits <= 8:
        raise ValueError(f"unpack_bits: bits must be in [1, 8], got {bits}")
    lead = packed.shape[:-1]
    need = -(-n * bits // 8)
    if packed.shape[-1] != need:
        raise ValueError(f"unpack_bits: {packed.shape[-1]} bytes given, {need} expected for {n} {bits}-bit codes")
    if bits == 8:
        return packed.to(torch.uint8)[..., :n]
    G = -(-n // 8)
    p = F.pad(packed.to(torch.int64), (0, G * bits - need)).reshape(*lead, G, bits)  # [..., G, bits]
    byte_shifts = torch.arange(bits, device=packed.device, dtype=torch.int64) * 8  # [bits]
    word = (p << byte_shifts).sum(-1)  # [..., G]
    shifts = torch.arange(8, device=packed.device, dtype=torch.int64) * bits  # [8]
    codes = (word.unsqueeze(-1) >> shifts) & ((1 << bits) - 1)  # [..., G, 8]
    return codes.reshape(*lead, -1)[..., :n].to(torch.uint8)


_POW3 = (1, 3, 9, 27, 81)


def pack_trits(t: Tensor) -> Tensor:
    """Pack trits ``t [..., n]`` in ``{0, 1, 2}`` five per byte: ``sum_j t_{5i+j} 3^j``; uint8 ``[..., ceil(n/5)]``."""
    n = t.shape[-1]
    lead = t.shape[:-1]
    p = F.pad(t.to(torch.int16), (0, (-n) % 5)).reshape(*lead, -1, 5)  # [..., G, 5]
    w = torch.tensor(_POW3, dtype=torch.int16, device=t.device)  # [5]
    return (p * w).sum(-1).to(torch.uint8)  # [..., G] (max 242)


def unpack_trits(packed: Tensor, n: int) -> Tensor:
    """Inverse of :func:`pack_trits`: uint8 ``[..., ceil(n/5)]`` -> trits uint8 ``[..., n]``."""
    if packed.shape[-1] != -(-n // 5):
        raise ValueError(f"unpack_trits: {packed.shape[-1]} bytes given, {-(-n // 5)} expected for {n} trits")
    v = packed.to(torch.int16)
    digits = []
    for _ in range(5):
        digits.append(v % 3)
        v = v // 3
    return torch.stack(digits, -1).reshape(*packed.shape[:-1], -1)[..., :n].to(torch.uint8)


# ---- packets --------------------------------------------------------------------------
def encode_packet(g: Tensor, lengths: Sequence[int], *, scheme: Scheme = "mbit", bits: int = 2,
                  clip: float | None = None, generator: torch.Generator | None = None,
                  return_decoded: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    """Quantize ``g [n]`` and pack it into one uint8 packet ``[packet_nbytes(lengths)]``.

    Layout: the fp32 scales ``[S]`` as ``4 S`` little-endian bytes (the native byte order of
    the tensor), then the packed codes (``b``-bit sign-magnitude, 1-bit signs with 1 = negative,
    or base-3 trits ``q + 1``). With ``return_decoded=True`` also returns this worker's own
    ``g_hat [n]`` fp32 (for error feedback).
    """
    q, scales = quantize(g, lengths, scheme=scheme, bits=bits, clip=clip, generator=generator)
    if scheme == "sign":
        body = pack_bits((q < 0).to(torch.uint8), 1)
    elif scheme == "ternary":
        body = pack_trits((q + 1).to(torch.uint8))
    else:
        body = pack_bits(mbit_codes(q, bits), bits)
    head = scales.to(torch.float32).contiguous().view(torch.uint8)  # [4 S]
    packet = torch.cat([head, body])
    if return_decoded:
        return packet, dequantize(q, scales, lengths, scheme=scheme, bits=bits)
    return packet


def decode_packets(packets: Tensor, lengths: Sequence[int], *, scheme: Scheme = "mbit", bits: int = 2,
                   reduce: Literal["mean", "sum", "none"] = "mean") -> Tensor:
    """Decode the packets of ``W`` workers ``[W, P]`` (uint8) and average them: fp32 ``[n]``.

    ``reduce="none"`` returns every worker's ``g_hat`` ``[W, n]``. The sum runs over workers in
    rank order, so every worker computes bit-identical results from the same gathered bytes.
    """
    lengths = [int(v) for v in lengths]
    n, S = sum(lengths), len(lengths)
    if packets.dim() == 1:
        packets = packets.unsqueeze(0)
    W, P = packets.shape
    want = packet_nbytes(lengths, scheme=scheme, bits=bits)
    if P != want:
        raise ValueError(f"decode_packets: packets of {P} bytes, expected {want} for scheme {scheme!r}, "
                         f"bits {bits}, {S} segment(s) of {n} elements; every worker must use the same settings")
    scales = packets[:, : 4 * S].contiguous().reshape(-1).view(torch.float32).reshape(W, S)  # [W, S]
    body = packets[:, 4 * S:]  # [W, P - 4 S]
    if scheme == "sign":
        q = 1 - 2 * unpack_bits(body, 1, n).to(torch.int16)  # [W, n] in {-1, +1}
    elif scheme == "ternary":
        q = unpack_trits(body, n).to(torch.int16) - 1  # [W, n] in {-1, 0, 1}
    else:
        q = mbit_values(unpack_bits(body, bits, n), bits)  # [W, n]
    values = dequantize(q, scales, lengths, scheme=scheme, bits=bits)  # [W, n]
    if reduce == "none":
        return values
    total = values[0].clone()
    for w in range(1, W):  # fixed order: identical floating-point sums on every worker
        total += values[w]
    return total / W if reduce == "mean" else total


def bits_per_element(scheme: Scheme = "mbit", bits: int = 2) -> float:
    """Code bits per gradient element, scales not counted: ``b`` (mbit), 1 (sign), 1.6 (ternary)."""
    if scheme == "sign":
        return 1.0
    if scheme == "ternary":
        return 8 / 5
    levels_for_bits(bits)
    return float(bits)
