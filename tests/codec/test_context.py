"""Context-conditioned coding of masks and codes: bit-exact round trips, and it pays on structure."""
import numpy as np
import pytest
import torch

from weightzip.codec import context, decode, encode, entropy, entropy_bound_bytes, format_summary
from weightzip.errors import WeightzipFormatError


def structured_mask(rows=60, cols=90, seed=0):
    rng = np.random.default_rng(seed)
    colp = np.where(rng.random(cols) < 0.4, 0.0, rng.random(cols) * 0.3)   # dead + live columns
    m = rng.random((rows, cols)) < colp[None, :]
    m[rng.random(rows) < 0.3] = False                                        # dead rows
    return m


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mask_round_trip_bit_exact(seed):
    m = structured_mask(seed=seed)
    for mm in (m, m.T.copy(), np.zeros((5, 7), bool), np.ones((3, 4), bool), m[:1]):
        assert np.array_equal(context.decode_mask(context.encode_mask(mm), *mm.shape), mm)


def test_mask_beats_order0_on_structure():
    m = structured_mask(120, 200)
    assert len(context.encode_mask(m)) < 0.8 * entropy.order0_entropy_bits(m.ravel()) / 8


@pytest.mark.parametrize("seed", [0, 3])
def test_codes_round_trip_bit_exact(seed):
    m = structured_mask(seed=seed)
    pos = np.flatnonzero(m)
    rng = np.random.default_rng(seed)
    codes = (rng.integers(0, 3, pos.size) + (pos % 90) % 5).astype(np.int64)     # column-dependent
    data = context.encode_codes(codes, pos, 60, 90)
    assert np.array_equal(context.decode_codes(data, pos, 60, 90), codes)
    one = np.full(pos.size, 7)
    assert np.array_equal(context.decode_codes(context.encode_codes(one, pos, 60, 90), pos, 60, 90), one)


def test_corrupt_streams_raise_format_errors():
    m = structured_mask()
    data = context.encode_mask(m)
    with pytest.raises(WeightzipFormatError):
        context.decode_mask(data[:2], *m.shape)
    with pytest.raises(WeightzipFormatError):
        context.decode_mask(bytes([0xFF]) + data[1:], *m.shape)


def test_codec_picks_context_layout_and_inspect_reports_order0_bound():
    torch.manual_seed(0)
    m = torch.from_numpy(structured_mask(100, 300, seed=4))
    w = (torch.randint(-3, 4, (100, 300)).float() / 8) * m
    fmt = encode(w, None)
    assert fmt.meta["sparse"] == "context"
    assert torch.equal(decode(fmt), w + 0.0)
    s = format_summary(fmt)
    assert s["codings"]["mask"] == "context_mask"
    bound = entropy_bound_bytes(fmt)
    assert bound["mask"] > s["streams"]["mask"]          # context coding goes below order-0
    restricted = encode(w, None, options={"sparse": ["bitmap", "relative"]})
    assert restricted.meta["sparse"] != "context" and restricted.nbytes > fmt.nbytes


def test_inspect_streams_table_shows_order0_bound_and_achieved_bits(tmp_path):
    import weightzip as wz
    from torch import nn
    from weightzip.report.tables import stream_table

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(300, 100))
    m = torch.from_numpy(structured_mask(100, 300, seed=5))
    with torch.no_grad():
        model[0].weight.copy_((torch.randint(-3, 4, (100, 300)).float() / 8) * m)
    path = tmp_path / "ctx.wz"
    wz.save(model, path)
    out = stream_table(path)
    assert "context_mask" in out and "order-0" in out and "bits/sym" in out
    back = wz.load(path, model=nn.Sequential(nn.Linear(300, 100)))
    assert torch.equal(back[0].weight, model[0].weight + 0.0)
