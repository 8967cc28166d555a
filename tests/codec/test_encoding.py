"""encode: the smallest exact candidate is kept, -0.0 / NaN / dtypes, hint fallbacks."""
import time

import pytest
import torch

from weightzip.codec import decode, encode
from weightzip.errors import InvalidModelError

from .helpers import assert_exact


def test_smallest_candidate_is_kept():
    g = torch.Generator().manual_seed(0)
    table = torch.linspace(-1, 1, 16)
    w = table[torch.randint(0, 16, (100, 80), generator=g)] * (torch.rand(100, 80, generator=g) < 0.1)
    best = encode(w)
    for opts in ({"kinds": ["dense"]}, {"sparse": False}, {"entropy": "none"}, {"sparse": ["relative"]},
                 {"sparse": ["bitmap"]}, {"index_bits": 8, "sparse": ["relative"]}):
        other = encode(w, options=opts)
        assert_exact(w, other)
        assert best.nbytes <= other.nbytes, opts
    assert best.kind == "codebook" and best.meta["sparse"] in ("relative", "bitmap")


def test_negative_zero_is_canonicalized():
    w = torch.tensor([[-0.0, 1.0, -0.0], [0.0, -2.0, -0.0]])
    fmt = encode(w)
    out = decode(fmt)
    assert torch.equal(out, w)
    assert not torch.signbit(out[out == 0]).any()


def test_nan_inf_raise_with_name():
    w = torch.ones(5)
    w[2] = float("nan")
    with pytest.raises(InvalidModelError, match="fc1.weight"):
        encode(w, options={"name": "fc1.weight"})
    with pytest.raises(InvalidModelError, match="Inf"):
        encode(torch.tensor([1.0, float("inf")]), options={"name": "x"})


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_sources_round_trip(dtype):
    w = torch.randn(30, 7).to(dtype)
    fmt = encode(w)
    out = decode(fmt)
    assert out.dtype == dtype and torch.equal(out, w)


def test_float64_is_stored_as_float32():
    w = torch.randn(5, 5, dtype=torch.float64)
    fmt = encode(w)
    assert fmt.dtype == "float32" and fmt.meta["source_dtype"] == "float64"
    assert torch.equal(decode(fmt), w.float())


def test_malformed_hints_fall_back_or_raise_in_strict_mode():
    w = torch.randn(6, 8)
    for hint in ({"kind": "pq", "codes": torch.zeros(6, 2, dtype=torch.long)},          # no codebooks
                 {"kind": "mixed_fixed", "cluster": torch.zeros(6, 8), "bits": [4]},      # no frac_bits
                 {"kind": "uniform", "scale": [0.1, 0.2, 0.3, 0.4, 0.5]},                 # 5 groups, 6 rows
                 {"kind": "pq", "codes": torch.zeros(6, 2, dtype=torch.long), "codebooks": torch.zeros(2, 1, 3)}):
        fmt = encode(w, hint)
        assert_exact(w, fmt)
        assert fmt.meta["hint"]["status"][hint["kind"]].startswith("invalid")
        with pytest.raises(InvalidModelError):
            encode(w, hint, options={"strict": True})


def test_lenet300_100_encodes_fast():
    """266K weights (pruned to ~8%, 5-bit shared weights, as in Deep Compression) in a few seconds."""
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    shapes = [(300, 784), (300,), (100, 300), (100,), (10, 100), (10,)]
    t0 = time.perf_counter()
    total = 0
    for shape in shapes:
        w = torch.randn(shape, generator=g)
        if len(shape) == 2:
            table = torch.linspace(-1, 1, 32)
            w = table[torch.randint(0, 32, shape, generator=g)] * (torch.rand(shape, generator=g) < 0.08)
        fmt = encode(w)
        total += fmt.nbytes
        assert_exact(w, fmt)
    assert time.perf_counter() - t0 < 15.0  # a few seconds alone; generous on a shared 2-core box
    assert total < 266_200 * 4 / 15



def test_hint_status_reports_chosen_or_larger():
    w = torch.randint(-3, 4, (8, 8), generator=torch.Generator().manual_seed(0)).float() / 4
    fmt = encode(w, {"kind": "fixed_point", "bits": 3, "frac_bits": 2}, options={"kinds": ["uniform"]})
    assert fmt.kind == "uniform" and fmt.meta["hint"] == {"kind": "fixed_point", "status": {"fixed_point": "chosen"}}
    dense = encode(torch.randn(30, 30), {"kind": "codebook"})
    assert dense.meta["hint"]["status"] == {"codebook": "larger: 900 distinct values"}
    assert "hint" not in encode(torch.randn(3)).meta


@pytest.mark.parametrize("values", ["random", "codebook", "negzero"])
def test_encode_works_on_the_values_without_copying_or_changing_them(values):
    """The encoder reads a float32 tensor in place (no canonical copy unless -0.0 is present),
    never writes into it, and returns a Format that owns bytes (not views of the tensor)."""
    g = torch.Generator().manual_seed(1)
    w = torch.randn(64, 300, generator=g)
    if values == "codebook":
        w = torch.linspace(-1, 1, 16)[torch.randint(0, 16, (64, 300), generator=g)]
    if values == "negzero":
        w[0, :5] = -0.0
    before = w.clone()
    fmt = encode(w)
    assert all(type(s) is bytes for s in fmt.streams.values())
    assert torch.equal(w, before) and torch.equal(torch.signbit(w), torch.signbit(before))
    assert fmt.kind == ("codebook" if values == "codebook" else "dense")
    w.fill_(7.0)   # the Format does not share the tensor's memory
    assert_exact(before, fmt)


@pytest.mark.parametrize("entropy_opt", ["auto", "none"])
def test_codebook_values_decode_chunk_by_chunk(entropy_opt, monkeypatch):
    """A codebook tensor decodes a chunk of codes at a time (ANS / Huffman / raw streams): the
    same tensor as in one piece."""
    from weightzip.codec import entropy

    g = torch.Generator().manual_seed(2)
    p = torch.tensor([0.4, 0.2, 0.1, 0.1, 0.05, 0.05, 0.05, 0.05])
    w = torch.linspace(-1, 1, 8)[torch.multinomial(p, 7007, replacement=True, generator=g)].reshape(7, 1001)
    fmt = encode(w, options={"entropy": entropy_opt})
    assert fmt.kind == "codebook"
    whole = decode(fmt)
    monkeypatch.setattr(entropy, "CHUNK", 96)
    assert torch.equal(decode(fmt), whole)
    assert_exact(w, fmt)
