"""Lazy load (issue 21, item 3): a .wz opened with mmap, tensors decoded on first use; ``load``,
``verify`` and ``inspect`` walk the file one tensor at a time and give what the eager reader gives."""
import weakref

import pytest
import torch
from torch import nn

import weightzip
from weightzip.analysis.size import size_report
from weightzip.codec import container, decode, forge, lazy
from weightzip.codec.lazy import LazyFile
from weightzip.codec.verify import verify as eager_verify
from weightzip.core.registry import create_model
from weightzip.errors import WeightzipFormatError
from weightzip.runtime.load import read_model_state

KMEANS = {"name": "k", "stages": [{"method": "prune_magnitude", "sparsity": 0.5},
                                  {"method": "kmeans_share", "bits": 3}]}


class Tied(nn.Module):
    """An LM-head style tie: ``head.weight`` IS ``emb.weight``."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(11, 6)
        self.mid = nn.Linear(6, 6)
        self.head = nn.Linear(6, 11, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, x):
        return self.head(torch.relu(self.mid(self.emb(x))))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("lazy")
    torch.manual_seed(0)
    zoo = create_model("lenet5_tiny")
    weightzip.compress(zoo, weightzip.Recipe.from_dict(KMEANS), log=lambda s: None)
    weightzip.save(zoo, d / "zoo.wz")
    user = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    weightzip.save(user, d / "user.wz", example_inputs=(torch.randn(2, 6),))
    tied = Tied()
    weightzip.save(tied, d / "tied.wz", graph=False)
    return d


def _live_decodes(monkeypatch):
    """Patch the lazy module's ``decode``: count calls and the most decoded tensors alive at once."""
    stats = {"calls": 0, "live": 0, "max_live": 0}

    def gone():
        stats["live"] -= 1

    def counting(fmt):
        t = decode(fmt)
        stats["calls"] += 1
        stats["live"] += 1
        stats["max_live"] = max(stats["max_live"], stats["live"])
        weakref.finalize(t, gone)
        return t

    monkeypatch.setattr(lazy, "decode", counting)
    return stats


@pytest.mark.parametrize("name", ["zoo.wz", "user.wz", "tied.wz"])
def test_lazy_values_equal_the_eager_read(files, name):
    manifest, formats = container.read(files / name)
    with LazyFile(files / name) as f:
        assert f.n_read == 0 and f.n_decoded == 0          # open = header + manifest + table only
        assert f.manifest == manifest and list(f) == list(formats)
        for k, fmt in formats.items():
            t = f[k]
            assert t.dtype == decode(fmt).dtype and torch.equal(t, decode(fmt))
            assert f.shape(k) == tuple(fmt.shape) and f.dtype(k) == t.dtype and f.nbytes(k) == fmt.nbytes
            assert f.meta_tensor(k).is_meta and f.meta_tensor(k).shape == t.shape
        assert f.n_decoded == len(formats) and f.payload_bytes() == sum(x.nbytes for x in formats.values())
    m2, state, fmts = read_model_state(files / name, lazy=True)
    assert m2 == manifest and set(state) == set(formats)
    assert all(torch.equal(state[k], decode(formats[k])) for k in formats)
    assert fmts[next(iter(formats))].streams == formats[next(iter(formats))].streams
    state.close()


def test_one_tensor_read_decodes_one(files, monkeypatch):
    stats = _live_decodes(monkeypatch)
    with LazyFile(files / "zoo.wz") as f:
        name = list(f)[-1]
        f[name]
        assert stats["calls"] == 1 and f.n_read == 1


@pytest.mark.parametrize("name", ["zoo.wz", "user.wz", "tied.wz"])
def test_lazy_load_equals_eager_load(files, name, monkeypatch):
    kw = {"model": Tied()} if name == "tied.wz" else {}
    eager = weightzip.load(files / name, lazy=False, **kw)
    kw = {"model": Tied()} if name == "tied.wz" else {}
    stats = _live_decodes(monkeypatch)
    m = weightzip.load(files / name, **kw)                  # lazy is the default
    a, b = eager.state_dict(), m.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) and a[k].dtype == b[k].dtype for k in a)
    assert m.wz_manifest == eager.wz_manifest and not m.training
    n_stored = len(container.read_manifest(files / name)["tensors"])
    assert stats["calls"] == n_stored                      # each stored tensor decoded once, ties included
    if name != "user.wz":                                 # a graph's constants are kept for the rebuild
        assert stats["max_live"] == 1                      # one decoded tensor alive at a time
    if name == "tied.wz":
        assert m.head.weight is m.emb.weight
    x = torch.randint(0, 11, (2, 4)) if name == "tied.wz" else (torch.randn(2, 6) if name == "user.wz" else torch.randn(2, 1, 28, 28))
    assert torch.equal(eager(x), m(x))


def test_lazy_load_modes_sparse(files):
    eager = weightzip.load(files / "zoo.wz", mode="sparse", lazy=False)
    m = weightzip.load(files / "zoo.wz", mode="sparse")
    x = torch.randn(3, 1, 28, 28)
    assert torch.allclose(eager(x), m(x), atol=1e-6)


def test_verify_is_the_eager_report_one_tensor_at_a_time(files, monkeypatch):
    want = eager_verify(files / "zoo.wz")
    stats = _live_decodes(monkeypatch)
    got = weightzip.verify(files / "zoo.wz")
    for r in (want, got):
        r.pop("seconds")
    assert got == want and got["ok"]
    assert stats["calls"] == got["n_tensors"] and stats["max_live"] == 1


def test_inspect_report_is_unchanged_one_tensor_at_a_time(files, monkeypatch):
    import weightzip.codec as codec

    rep = size_report(files / "zoo.wz")
    manifest, formats = container.read(files / "zoo.wz")
    from weightzip.analysis.size import deep_compression_ratio, payload_bytes, size_rows

    assert rep.rows == size_rows(formats) and rep.payload_bytes == payload_bytes(formats)
    assert rep.paper["deep_compression"] == deep_compression_ratio(formats)
    alive = {"n": 0, "max": 0}

    def gone():
        alive["n"] -= 1

    real = codec.decode

    def counting(fmt):
        t = real(fmt)
        alive["n"] += 1
        alive["max"] = max(alive["max"], alive["n"])
        weakref.finalize(t, gone)
        return t

    monkeypatch.setattr(codec, "decode", counting)           # size_rows calls weightzip.codec.decode
    size_report(files / "zoo.wz")
    assert alive["max"] == 1


def _corrupt_last_stream(src, dst):
    raw = forge.load(src)
    name, s = [(n, s) for n, e in raw.doc["tensors"].items() for s in e["streams"].values() if s["length"]][-1]
    raw.area[s["offset"]] ^= 0xFF
    dst.write_bytes(forge.dump(raw, fix_crcs=False))
    return name


def test_corrupted_and_truncated_files_are_refused(files, tmp_path, monkeypatch):
    bad = tmp_path / "bad.wz"
    name = _corrupt_last_stream(files / "zoo.wz", bad)
    with pytest.raises(WeightzipFormatError, match=f"{name}.*checksum mismatch"):
        read_model_state(bad, lazy=True)
    import sys

    L = sys.modules["weightzip.runtime.load"]      # (the package's ``load`` attribute is the function)

    def no_build(*a, **k):  # the whole file is checked before the model is built
        raise AssertionError("model built before the streams were checked")

    monkeypatch.setattr(L, "build_model", no_build)
    with pytest.raises(WeightzipFormatError, match="checksum mismatch"):
        weightzip.load(bad)
    monkeypatch.undo()
    want, got = eager_verify(bad), weightzip.verify(bad)
    assert not got["ok"] and got["errors"] == want["errors"]
    with pytest.raises(WeightzipFormatError, match="checksum mismatch"):
        size_report(bad)
    data = (files / "zoo.wz").read_bytes()
    for cut in (0, 10, 31, 40, len(data) // 2, len(data) - 1):
        short = tmp_path / f"short{cut}.wz"
        short.write_bytes(data[:cut])
        with pytest.raises(WeightzipFormatError, match="truncated|magic"):
            LazyFile(short)
        with pytest.raises(WeightzipFormatError):
            weightzip.load(short)
        assert not weightzip.verify(short)["ok"]
    with pytest.raises(WeightzipFormatError, match="max_decoded_bytes"):
        LazyFile(files / "zoo.wz", max_decoded_bytes=64)


def test_closed_file_refuses_reads(files):
    f = LazyFile(files / "user.wz")
    f.close()
    with pytest.raises(ValueError):
        f[next(iter(f))]
