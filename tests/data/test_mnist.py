"""MNIST / Fashion-MNIST: the IDX reader, splits, and the real files."""
from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch

from weightzip.data import get_loaders, load_raw
from weightzip.data.mnist import parse_idx
from weightzip.errors import WeightzipError

from .fakes import idx_bytes

NAMES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
         "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


def test_parse_idx_roundtrip_and_errors():
    a = np.random.default_rng(0).integers(0, 256, size=(3, 4, 5), dtype=np.uint8)
    np.testing.assert_array_equal(parse_idx(idx_bytes(a)), a)
    np.testing.assert_array_equal(parse_idx(idx_bytes(np.arange(7, dtype=np.uint8))), np.arange(7))
    with pytest.raises(WeightzipError, match="truncated"):
        parse_idx(idx_bytes(a)[:-1], source="x.idx")
    with pytest.raises(WeightzipError, match="not an IDX file"):
        parse_idx(b"\x1f\x8b\x08\x00rest", source="x.idx")


def _write_fake_mnist(d, n_train=12, n_test=4):
    d.mkdir(parents=True)
    rng = np.random.default_rng(1)
    arrays = (rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8), np.arange(n_train, dtype=np.uint8) % 10,
              rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8), np.arange(n_test, dtype=np.uint8) % 10)
    for name, arr in zip(NAMES, arrays):
        (d / name).write_bytes(gzip.compress(idx_bytes(arr)))
    return arrays


def test_synthetic_mnist_split_subset_and_normalization(tmp_path, fake_home):
    tr_x, tr_y, te_x, te_y = _write_fake_mnist(tmp_path / "mnist")
    kw = dict(root=tmp_path, check_md5=False)
    L = get_loaders("mnist", batch_size=4, val_size=3, split_seed=5, **kw)
    tr, va = L.train.dataset.indices, L.val.dataset.indices
    assert len(tr) == 9 and len(va) == 3 and not set(tr.tolist()) & set(va.tolist())
    assert tr.tolist() == sorted(tr.tolist())  # file order kept
    assert torch.equal(get_loaders("mnist", val_size=3, split_seed=5, **kw).val.dataset.indices, va)
    assert not torch.equal(get_loaders("mnist", val_size=3, split_seed=6, **kw).val.dataset.indices, va)
    # the split does not depend on the shuffling seed
    assert torch.equal(get_loaders("mnist", val_size=3, split_seed=5, seed=9, **kw).val.dataset.indices, va)
    sub = get_loaders("mnist", val_size=3, split_seed=5, subset=4, eval_subset=2, **kw)
    assert sub.train.dataset.indices.tolist() == tr[:4].tolist()
    assert len(sub.val.dataset) == 2 and len(sub.test.dataset) == 2
    x, y = next(iter(L.test))
    assert x.shape == (4, 1, 28, 28) and x.dtype == torch.float32
    torch.testing.assert_close(x[:, 0], (torch.from_numpy(te_x).float() / 255 - 0.1307) / 0.3081)
    assert y.tolist() == te_y.tolist()
    # every training example is seen once per epoch, in a seeded shuffled order
    e1 = torch.cat([y for _, y in L.train])
    assert sorted(e1.tolist()) == sorted(tr_y[tr.numpy()].tolist())
    e2 = torch.cat([y for _, y in get_loaders("mnist", batch_size=4, val_size=3, split_seed=5, **kw).train])
    assert torch.equal(e1, e2)


def test_val_size_zero_and_bad_arguments(tmp_path, fake_home):
    _write_fake_mnist(tmp_path / "mnist")
    kw = dict(root=tmp_path, check_md5=False)
    assert get_loaders("mnist", val_size=0, **kw).val is None
    with pytest.raises(ValueError, match="val_size must be an integer in"):
        get_loaders("mnist", val_size=12, **kw)
    with pytest.raises(ValueError, match="augment=True is not defined for 'mnist'"):
        get_loaders("mnist", augment=True, **kw)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        get_loaders("mnist", batch_size=0, **kw)


# ----------------------------------------------------------------------------- real data


def _pixel_stats(x_u8: torch.Tensor) -> tuple[float, float]:
    """Mean and standard deviation of pixels / 255, exactly, from the value histogram."""
    p = torch.bincount(x_u8.flatten(), minlength=256).double()
    p /= p.sum()
    v = torch.arange(256, dtype=torch.float64) / 255
    mean = float((p * v).sum())
    return mean, float(((p * v**2).sum() - mean**2).sqrt())


@pytest.mark.slow
def test_real_mnist(data_root):
    raw = load_raw("mnist", data_root)
    assert raw.train_x.shape == (60000, 1, 28, 28) and raw.train_x.dtype == torch.uint8
    assert raw.test_x.shape == (10000, 1, 28, 28)
    assert torch.bincount(raw.train_y).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert torch.bincount(raw.test_y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    mean, std = _pixel_stats(raw.train_x)
    assert abs(mean - 0.1307) < 1e-4 and abs(std - 0.3081) < 1e-4
    L = get_loaders("mnist", batch_size=128, root=data_root)
    assert (L.info["num_train"], L.info["num_val"], L.info["num_test"]) == (55000, 5000, 10000)
    assert (L.info["num_classes"], L.info["in_channels"], L.info["image_size"]) == (10, 1, 28)
    x, y = next(iter(L.train))
    assert x.shape == (128, 1, 28, 28) and y.shape == (128,) and y.dtype == torch.int64
    assert load_raw("mnist", data_root) is raw  # decoded once per process


@pytest.mark.slow
def test_real_fashion_mnist(data_root):
    raw = load_raw("fashion_mnist", data_root)
    assert raw.train_x.shape == (60000, 1, 28, 28) and raw.test_x.shape == (10000, 1, 28, 28)
    assert torch.bincount(raw.train_y).tolist() == [6000] * 10
    assert torch.bincount(raw.test_y).tolist() == [1000] * 10
    mean, std = _pixel_stats(raw.train_x)
    assert abs(mean - 0.2860) < 1e-4 and abs(std - 0.3530) < 1e-4
    L = get_loaders("fashion_mnist", batch_size=256, root=data_root, val_size=1000)
    assert L.info["num_train"] == 59000 and L.info["classes"][9] == "Ankle boot"
