"""CIFAR-10: the restricted unpickler, synthetic batches in the real format, the real data."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from weightzip.data import get_dataset, get_loaders, load_raw
from weightzip.data.cifar10 import RestrictedUnpickler, load_pickle
from weightzip.errors import WeightzipError

from .fakes import make_cifar_dir, py2_pickle

MEAN = torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1)
STD = torch.tensor([0.2470, 0.2435, 0.2616]).view(1, 3, 1, 1)


def _expected(images_u8: np.ndarray) -> torch.Tensor:
    """Reference layout + normalization: row n = 1024 R, 1024 G, 1024 B values, row-major."""
    x = torch.from_numpy(images_u8.astype(np.float32)).view(-1, 3, 32, 32) / 255.0
    return (x - MEAN) / STD


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzipped"])
def test_synthetic_batches_load_in_both_forms(tmp_path, fake_home, gz):
    tr_x, tr_y, te_x, te_y = make_cifar_dir(tmp_path / "c", n=6, gz=gz, seed=int(gz))
    assert (tmp_path / "c" / ("data_batch_1.gz" if gz else "data_batch_1")).exists()
    loaders = get_loaders("cifar10", batch_size=7, root=tmp_path / "c", val_size=0, check_md5=False)
    assert loaders.val is None and loaders.task == "classify"
    assert loaders.info["num_classes"] == 10 and loaders.info["in_channels"] == 3
    assert loaders.info["image_size"] == 32 and loaders.info["classes"][0] == "airplane"
    xs, ys = zip(*loaders.test)
    x, y = torch.cat(xs), torch.cat(ys)
    assert x.dtype == torch.float32 and x.shape == (6, 3, 32, 32) and y.dtype == torch.int64
    torch.testing.assert_close(x, _expected(te_x))
    assert y.tolist() == te_y.tolist()
    full = get_dataset("cifar10", "train", root=tmp_path / "c", check_md5=False)
    assert len(full) == 30
    torch.testing.assert_close(full.__getitems__(list(range(30)))[0], _expected(tr_x))
    assert full.targets.tolist() == tr_y.tolist()


def test_synthetic_batches_fail_the_md5_check(tmp_path, fake_home):
    make_cifar_dir(tmp_path / "c", n=2)
    with pytest.raises(WeightzipError, match=r"md5 mismatch for .*data_batch_1"):
        get_loaders("cifar10", root=tmp_path / "c")


def test_python3_protocol2_pickles_are_read_too():
    # Python 3 writes bytes in protocol 2 as _codecs.encode(str, "latin1"): admitted, latin-1 only.
    data = np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3072) % 251
    blob = pickle.dumps({b"data": data, b"labels": [1, 2]}, protocol=2)
    obj = load_pickle(blob, source="py3.pkl")
    np.testing.assert_array_equal(obj[b"data"], data)
    bad = blob.replace(b"latin1", b"base64")  # same length: _codecs.encode(..., "base64")
    with pytest.raises(WeightzipError, match="py3.pkl"):
        load_pickle(bad, source="py3.pkl")


def test_restricted_unpickler_refuses_code(tmp_path, fake_home):
    d = tmp_path / "evil"
    make_cifar_dir(d, n=2)
    sentinel = tmp_path / "pwned"
    # GLOBAL os.system, called with one argument: what a malicious "batch" would contain.
    cmd = f"touch {sentinel}".encode()
    evil = b"\x80\x02cos\nsystem\nq\x00U" + bytes([len(cmd)]) + cmd + b"q\x01\x85q\x02Rq\x03."
    (d / "data_batch_3").write_bytes(evil)
    with pytest.raises(WeightzipError) as exc:
        get_loaders("cifar10", root=d, check_md5=False)
    msg = str(exc.value)
    assert "os.system" in msg and str(d / "data_batch_3") in msg
    assert not sentinel.exists()
    with pytest.raises(pickle.UnpicklingError):
        import io

        RestrictedUnpickler(io.BytesIO(pickle.dumps(print, protocol=2))).load()


def test_batch_with_wrong_structure_is_refused(tmp_path, fake_home):
    d = tmp_path / "c"
    make_cifar_dir(d, n=2)
    (d / "test_batch").write_bytes(py2_pickle({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}))
    with pytest.raises(WeightzipError, match=r"test_batch: b'data' must be a uint8 array \[N, 3072\]"):
        get_loaders("cifar10", root=d, check_md5=False)


def test_synthetic_augmentation_and_split(tmp_path, fake_home):
    make_cifar_dir(tmp_path / "c", n=8)
    kw = dict(batch_size=16, root=tmp_path / "c", val_size=8, augment=True, check_md5=False)
    a = [x for x, _ in get_loaders("cifar10", seed=3, **kw).train]
    b = [x for x, _ in get_loaders("cifar10", seed=3, **kw).train]
    c = [x for x, _ in get_loaders("cifar10", seed=4, **kw).train]
    assert [t.shape for t in a] == [(16, 3, 32, 32), (16, 3, 32, 32)]
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    assert not torch.equal(a[0], c[0])
    L = get_loaders("cifar10", seed=3, **kw)
    assert L.info["num_train"] == 32 and L.info["num_val"] == 8


# ----------------------------------------------------------------------------- real data


@pytest.fixture(scope="module")
def cifar(data_root):
    return load_raw("cifar10", data_root)


@pytest.mark.slow
def test_real_cifar10_contents(cifar):
    assert cifar.train_x.shape == (50000, 3, 32, 32) and cifar.train_x.dtype == torch.uint8
    assert cifar.test_x.shape == (10000, 3, 32, 32)
    assert cifar.train_y[:10].tolist() == [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]
    assert cifar.test_y[:10].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]
    assert torch.bincount(cifar.train_y).tolist() == [5000] * 10
    assert torch.bincount(cifar.test_y).tolist() == [1000] * 10
    assert torch.bincount(cifar.train_y[:10000]).tolist() == [1005, 974, 1032, 1016, 999, 937, 1030, 1001, 1025, 981]
    assert cifar.classes[-1] == "truck"
    # per-channel statistics of pixels/255 over the training set: the published normalization
    values = torch.arange(256, dtype=torch.float64)
    hist = torch.stack([torch.bincount(cifar.train_x[:, c].flatten(), minlength=256) for c in range(3)])
    p = hist.double() / hist.sum(1, keepdim=True)  # [3, 256] pixel value distribution per channel
    mean = (p * values).sum(1) / 255
    std = ((p * values**2).sum(1) / 255**2 - mean**2).sqrt()
    torch.testing.assert_close(mean, MEAN.flatten().double(), atol=1e-4, rtol=0)
    torch.testing.assert_close(std, STD.flatten().double(), atol=1e-4, rtol=0)


@pytest.mark.slow
def test_real_cifar10_loaders(data_root, cifar):
    L = get_loaders("cifar10", batch_size=64, root=data_root, augment=True, seed=1)
    assert (L.info["num_train"], L.info["num_val"], L.info["num_test"]) == (45000, 5000, 10000)
    assert len(L.train) == -(-45000 // 64) and len(L.test) == -(-10000 // 64)
    x, y = next(iter(L.train))
    assert x.shape == (64, 3, 32, 32) and x.dtype == torch.float32 and y.shape == (64,)
    # test batches are not augmented: first test image, normalized
    xt, yt = next(iter(L.test))
    torch.testing.assert_close(xt[:1], (cifar.test_x[:1].float() / 255 - MEAN) / STD)
    assert yt[:3].tolist() == [3, 8, 8]
    # train + val = the 50,000 training images, disjoint
    tr, va = L.train.dataset.indices, L.val.dataset.indices
    assert torch.equal(torch.cat([tr, va]).sort().values, torch.arange(50000))
