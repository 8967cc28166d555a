"""Batched augmentation and the in-memory image dataset."""
from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader

from weightzip.data.image import ImageTensorDataset, collate_batch, derive_seed, random_crop_flip


def _reference_crops(img: torch.Tensor, p: int) -> list[torch.Tensor]:
    """Every crop of the zero-padded image and its mirror image (the allowed outputs)."""
    C, H, W = img.shape
    padded = torch.zeros(C, H + 2 * p, W + 2 * p, dtype=img.dtype)
    padded[:, p : p + H, p : p + W] = img
    out = []
    for oy in range(2 * p + 1):
        for ox in range(2 * p + 1):
            crop = padded[:, oy : oy + H, ox : ox + W]
            out += [crop, crop.flip(-1)]
    return out


@settings(max_examples=25, deadline=None)
@given(
    b=st.integers(1, 4), c=st.integers(1, 3), h=st.integers(1, 6), w=st.integers(1, 6),
    p=st.integers(0, 3), seed=st.integers(0, 2**31),
)
def test_every_output_is_a_padded_crop_or_its_mirror(b, c, h, w, p, seed):
    x = torch.randint(1, 256, (b, c, h, w), dtype=torch.uint8)  # no zeros: padding is visible
    y = random_crop_flip(x, p, generator=torch.Generator().manual_seed(seed))
    assert y.shape == x.shape and y.dtype == x.dtype
    for i in range(b):
        assert any(torch.equal(y[i], r) for r in _reference_crops(x[i], p))


def test_no_padding_no_flip_is_identity_and_flip_mirrors():
    x = torch.randn(5, 3, 8, 8)
    assert torch.equal(random_crop_flip(x, 0, flip=False), x)
    g = torch.Generator().manual_seed(0)
    y = random_crop_flip(x, 0, generator=g)
    assert all(torch.equal(y[i], x[i]) or torch.equal(y[i], x[i].flip(-1)) for i in range(5))


def test_augmentation_uses_all_offsets_and_both_orientations():
    x = torch.arange(1, 17, dtype=torch.uint8).view(1, 1, 4, 4).repeat(400, 1, 1, 1)
    y = random_crop_flip(x, 1, generator=torch.Generator().manual_seed(0))
    distinct = {tuple(t.flatten().tolist()) for t in y}
    assert len(distinct) == 18  # 3 x 3 offsets x 2 orientations


def test_augmentation_is_deterministic_under_a_seed():
    x = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    a = random_crop_flip(x, 4, generator=torch.Generator().manual_seed(7))
    b = random_crop_flip(x, 4, generator=torch.Generator().manual_seed(7))
    c = random_crop_flip(x, 4, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def _dataset(augment=False, **kw):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (20, 3, 8, 8), dtype=torch.uint8, generator=g)
    labels = torch.arange(20) % 10
    return ImageTensorDataset(images, labels, (0.5, 0.4, 0.3), (0.2, 0.25, 0.3), augment=augment, **kw)


def test_normalization_formula_and_item_access():
    ds = _dataset()
    x, y = ds.__getitems__([3, 0, 7])
    mean = torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1)
    std = torch.tensor([0.2, 0.25, 0.3]).view(1, 3, 1, 1)
    ref = (ds.images[[3, 0, 7]].float() / 255 - mean) / std
    torch.testing.assert_close(x, ref)
    assert x.dtype == torch.float32 and y.tolist() == [3, 0, 7]
    xi, yi = ds[3]
    torch.testing.assert_close(xi, ref[0])
    assert int(yi) == 3 and yi.dtype == torch.int64


def test_indices_select_a_view():
    ds = _dataset(indices=torch.tensor([5, 9, 11]))
    assert len(ds) == 3 and ds.targets.tolist() == [5, 9, 1]
    assert torch.equal(ds.__getitems__([1])[0], _dataset().__getitems__([9])[0])


def test_set_epoch_makes_augmentation_a_function_of_seed_and_epoch():
    a, b = _dataset(augment=True, seed=1), _dataset(augment=True, seed=1)
    a.set_epoch(3)
    first = a.__getitems__(list(range(20)))[0]
    a.__getitems__(list(range(20)))  # advance the stream
    b.set_epoch(3)
    assert torch.equal(b.__getitems__(list(range(20)))[0], first)
    a.set_epoch(3)
    assert torch.equal(a.__getitems__(list(range(20)))[0], first)
    a.set_epoch(4)
    assert not torch.equal(a.__getitems__(list(range(20)))[0], first)


def test_worker_processes_give_deterministic_batches():
    def batches():
        ds = _dataset(augment=True, seed=2)
        ds.set_epoch(0)
        dl = DataLoader(ds, batch_size=8, collate_fn=collate_batch, num_workers=1)
        return [x for x, _ in dl]

    a, b = batches(), batches()
    assert [t.shape for t in a] == [(8, 3, 8, 8), (8, 3, 8, 8), (4, 3, 8, 8)]
    assert all(torch.equal(p, q) for p, q in zip(a, b))


def test_derive_seed_streams_differ():
    assert derive_seed(0, 0) != derive_seed(0, 1) != derive_seed(1, 0)
    assert derive_seed(5, 2) == derive_seed(5, 2) and 0 <= derive_seed(-3, 1) < 2**63
