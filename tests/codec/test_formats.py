"""encode/decode: bit-exact for every format, smallest candidate kept, parts, summaries, errors."""
import math
import time

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from weightzip.codec import decode, decode_parts, encode, entropy_bound_bytes, format_summary
from weightzip.codec.formats import Format, validate
from weightzip.codec.sparse import csr_to_dense, filler_count
from weightzip.errors import InvalidModelError, WeightzipFormatError

FAST = settings(max_examples=25, deadline=None)

shapes = st.one_of(
    st.lists(st.integers(1, 12), min_size=1, max_size=3).map(tuple),
    st.sampled_from([(), (0,), (3, 0), (4, 3, 2, 2)]),
)


def canonical(w: torch.Tensor) -> torch.Tensor:
    return w.detach().float() + 0.0


def assert_exact(w: torch.Tensor, fmt: Format) -> torch.Tensor:
    out = decode(fmt)
    assert out.shape == w.shape and out.dtype == torch.float32
    assert torch.equal(out.view(torch.int32), canonical(w).view(torch.int32)), fmt
    assert fmt.nbytes == sum(len(s) for s in fmt.streams.values())
    validate(fmt)
    return out


def sparsify(w: torch.Tensor, density: float, g: torch.Generator) -> torch.Tensor:
    keep = torch.rand(w.shape, generator=g) < density
    return torch.where(keep, w, -torch.zeros_like(w) if density < 0.5 else torch.zeros_like(w))


@FAST
@given(shapes, st.floats(0, 1), st.integers(0, 10**6))
def test_dense_random_exact(shape, density, seed):
    g = torch.Generator().manual_seed(seed)
    w = sparsify(torch.randn(shape, generator=g) * 3, density, g)
    assert_exact(w, encode(w))


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


@FAST
@given(st.lists(st.integers(1, 10), min_size=1, max_size=3).map(tuple), st.integers(2, 12),
       st.sampled_from([0.01, 0.5, 1 / 3, 2.0**-5, 1e-3]), st.floats(0, 1), st.integers(1, 3), st.integers(0, 10**6))
def test_uniform_hint_exact(shape, bits, scale, density, groups, seed):
    g = torch.Generator().manual_seed(seed)
    rows = shape[0]
    groups = groups if rows % groups == 0 else 1
    scales = torch.tensor([scale * (1 + i) for i in range(groups)], dtype=torch.float32)
    q = torch.randint(-(2 ** (bits - 1)), 2 ** (bits - 1), shape, generator=g).float()
    row_scale = scales.repeat_interleave(rows // groups).reshape((rows,) + (1,) * (len(shape) - 1))
    w = sparsify(q * row_scale, density, g)
    hint = {"kind": "uniform", "scale": scales if groups > 1 else float(scales[0]), "bits": bits}
    fmt = encode(w, hint)
    assert_exact(w, fmt)
    assert not fmt.meta["hint"]["status"]["uniform"].startswith("invalid")
    forced = encode(w, hint, options={"kinds": ["uniform"]})
    assert_exact(w, forced)
    assert fmt.nbytes <= forced.nbytes


def test_uniform_hint_prefers_codes_over_floats():
    g = torch.Generator().manual_seed(0)
    s = torch.tensor(0.0123, dtype=torch.float32)
    w = torch.randint(-8, 8, (200, 100), generator=g).float() * s
    fmt = encode(w, {"kind": "uniform", "scale": float(s), "bits": 4})
    assert fmt.kind in ("uniform", "codebook") and fmt.nbytes < 200 * 100 * 4 / 7
    assert_exact(w, fmt)
    # a scale the values are not multiples of: rejected (recorded), still exact via another kind
    bad = encode(w, {"kind": "uniform", "scale": 0.037, "bits": 4})
    assert bad.meta["hint"]["status"]["uniform"].startswith("invalid")
    assert_exact(w, bad)
    with pytest.raises(InvalidModelError):
        encode(w, {"kind": "uniform", "scale": 0.037, "bits": 4}, options={"strict": True})


def test_fixed_point_hint():
    w = torch.tensor([[0.25, -0.5, 0.0], [0.125, 0.875, -1.0]])
    fmt = encode(w, {"kind": "fixed_point", "bits": 4, "frac_bits": 3}, options={"kinds": ["uniform"]})
    assert_exact(w, fmt)


@FAST
@given(st.integers(1, 12), st.integers(1, 4), st.integers(1, 4), st.integers(1, 20), st.booleans(),
       st.floats(0, 1), st.integers(0, 3), st.booleans(), st.integers(0, 10**6))
def test_pq_exact(rows, m, d, k, shared, density, cut, conv, seed):
    g = torch.Generator().manual_seed(seed)
    cols = max(1, m * d - min(cut, d - 1))
    cbs = torch.randn((1 if shared else m), k, d, generator=g)
    codes = torch.randint(0, k, (rows, m), generator=g)
    full = (cbs[0][codes] if shared else cbs[torch.arange(m)[None, :], codes]).reshape(rows, m * d)[:, :cols]
    mask = torch.rand(rows, cols, generator=g) < density if density < 1 else None
    w = full if mask is None else full * mask
    shape = (rows, cols)
    if conv and cols % 2 == 0:
        shape = (rows, cols // 2, 2, 1)
        w = w.reshape(shape)
    hint = {"kind": "pq", "codes": codes, "codebooks": cbs, "matrix_shape": (rows, cols)}
    if mask is not None:
        hint["mask"] = mask.reshape(shape)
    fmt = encode(w, hint)
    assert_exact(w, fmt)
    assert not fmt.meta["hint"]["status"]["pq"].startswith("invalid"), fmt.meta["hint"]
    forced = encode(w, hint, options={"kinds": ["pq"], "sparse": False})
    assert_exact(w, forced)
    if forced.kind == "pq":
        parts = decode_parts(forced)
        recon = parts["codebooks"][0 if shared else np.arange(m)[None, :], parts["codes"]].reshape(rows, -1)[:, :cols]
        if parts["mask"] is not None:
            recon = np.where(parts["mask"], recon, 0)
        assert np.array_equal(recon + 0.0, canonical(w).reshape(rows, cols).numpy())


def test_pq_wins_over_codebook_on_pq_weights():
    g = torch.Generator().manual_seed(1)
    rows, m, d, k = 64, 8, 4, 16
    cbs = torch.randn(m, k, d, generator=g)
    codes = torch.randint(0, k, (rows, m), generator=g)
    w = cbs[torch.arange(m)[None, :], codes].reshape(rows, m * d)
    mask = torch.rand(rows, m * d, generator=g) < 0.7
    hint = {"kind": "pq", "codes": codes, "codebooks": cbs, "mask": mask, "matrix_shape": (rows, m * d)}
    fmt = encode(w * mask, hint)
    assert fmt.kind == "pq" and fmt.meta["mask"] in ("bitmap", "relative")
    assert_exact(w * mask, fmt)
    wrong = dict(hint, codes=(codes + 1) % k)
    fmt2 = encode(w * mask, wrong)
    assert fmt2.kind != "pq" and fmt2.meta["hint"]["status"]["pq"].startswith("invalid")


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


@pytest.mark.parametrize("t", [torch.tensor(7), torch.tensor([1, -2, 3], dtype=torch.int64),
                               torch.tensor([True, False]), torch.arange(6, dtype=torch.int32).reshape(2, 3),
                               torch.tensor([255, 0], dtype=torch.uint8)])
def test_integer_tensors_stored_raw(t):
    fmt = encode(t)
    assert fmt.kind == "raw"
    out = decode(fmt)
    assert out.dtype == t.dtype and torch.equal(out, t)


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


def test_float16_storage_is_lossy_and_reported():
    w = torch.randn(64, 64)
    fmt = encode(w, options={"float_dtype": "float16"})
    assert fmt.meta["value_dtype"] == "float16" and fmt.nbytes == 64 * 64 * 2
    assert torch.equal(decode(fmt), w.half().float())
    assert fmt.meta["lossy"]["max_abs_err"] == pytest.approx((w.half().float() - w).abs().max().item())
    big = torch.tensor([1e6, 2.0])
    assert torch.equal(decode(encode(big, options={"float_dtype": "float16"})), big)  # overflow: stays fp32


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


def test_summary_and_entropy_bound():
    g = torch.Generator().manual_seed(0)
    w = torch.linspace(-1, 1, 8)[torch.randint(0, 8, (50, 40), generator=g)] * (torch.rand(50, 40, generator=g) < 0.3)
    fmt = encode(w)
    s = format_summary(fmt)
    assert {"kind", "sparse", "nnz", "value_bits", "index_bits", "streams", "codings", "nbytes"} <= set(s)
    assert s["nnz"] == int((w != 0).sum()) and s["nbytes"] == fmt.nbytes
    bound = entropy_bound_bytes(fmt)
    assert set(bound) == set(fmt.streams)
    for name, b in bound.items():
        assert b <= len(fmt.streams[name]) + 1e-9, name


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


def test_invalid_formats_raise_format_error():
    w = torch.linspace(-1, 1, 4)[torch.randint(0, 4, (30, 30), generator=torch.Generator().manual_seed(0))]
    fmt = encode(w)

    def mutated(**changes):
        f = Format(fmt.kind, fmt.shape, fmt.dtype, dict(fmt.meta), dict(fmt.streams), name="layer.w")
        for k, v in changes.items():
            setattr(f, k, v)
        return f

    bad = [
        mutated(kind="nope"),
        mutated(dtype="complex64"),
        mutated(shape=(30, -30)),
        mutated(streams={k: v for k, v in fmt.streams.items() if k != "codes"}),
        mutated(meta={**fmt.meta, "codebook_size": 999}),
        mutated(meta={**fmt.meta, "sparse": "weird"}),
        mutated(meta={**fmt.meta, "stream_info": {**fmt.meta["stream_info"], "codes": {"coding": "zip"}}}),
        mutated(streams={**fmt.streams, "codebook": fmt.streams["codebook"][:-1]}),
        mutated(shape=(31, 30)),
    ]
    for f in bad:
        with pytest.raises(WeightzipFormatError, match="layer.w"):
            decode(f)


def test_unknown_option_rejected():
    with pytest.raises(ValueError, match="unknown encode options"):
        encode(torch.ones(3), options={"bogus": 1})


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


def test_decode_parts_uniform_groups():
    scales = torch.tensor([0.5, 0.25], dtype=torch.float32)
    q = torch.randint(-3, 4, (4, 6), generator=torch.Generator().manual_seed(2))
    w = q.float() * scales.repeat_interleave(2)[:, None]
    fmt = encode(w, {"kind": "uniform", "scale": scales, "bits": 3}, options={"kinds": ["uniform"]})
    assert fmt.kind == "uniform" and fmt.meta["scale_groups"] == 2
    parts = decode_parts(fmt)
    assert np.array_equal(parts["scale"], scales.numpy())
    if parts["positions"] is None:
        assert np.array_equal(parts["q"].reshape(4, 6), q.numpy())
    else:
        assert np.array_equal(parts["q"], q.numpy().ravel()[parts["positions"]])
    s = format_summary(fmt)
    assert s["kind"] == "uniform" and s["value_bits"] <= 3


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
