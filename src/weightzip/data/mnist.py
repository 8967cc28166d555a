"""MNIST and Fashion-MNIST from the IDX ``.gz`` files.

IDX format (big-endian): two zero bytes, a type byte (``0x08`` = uint8), the number of
dimensions ``d``, then ``d`` uint32 sizes, then the row-major payload. Images are
``[N, 28, 28]`` (magic ``0x00000803``), labels ``[N]`` (magic ``0x00000801``).

Splits: 60,000 train (of which ``val_size``, default 5,000, are held out for validation) and
10,000 test. Normalization: MNIST mean 0.1307, std 0.3081; Fashion-MNIST mean 0.2860,
std 0.3530 (pixels / 255, over the training set).
"""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from ..errors import WeightzipError
from ..core.registry import register_dataset
from .base import DatasetSpec, Loaders, add_dataset
from .files import DatasetFiles, FileSpec, read_verified
from .image import ImageData, image_loaders

__all__ = ["parse_idx", "MNIST_FILES", "FASHION_MNIST_FILES"]

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

_MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
_FMNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"

_NAMES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)

MNIST_FILES = DatasetFiles(
    key="mnist",
    subdir="mnist",
    files=tuple(
        FileSpec(n, md5, url=_MNIST_URL + n)
        for n, md5 in zip(
            _NAMES,
            (
                "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                "d53e105ee54ea40749a09fcbcd1e9432",
                "9fb629c4189551a2d022fa330f9573f3",
                "ec29112dd5afa0611ce80d1b7f02629c",
            ),
        )
    ),
)

FASHION_MNIST_FILES = DatasetFiles(
    key="fashion_mnist",
    subdir="fashion-mnist",
    files=tuple(
        FileSpec(n, md5, url=_FMNIST_URL + n)
        for n, md5 in zip(
            _NAMES,
            (
                "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                "25c81989df183df01b3e8a0aad5dffbe",
                "bef4ecab320f06d8554ea6380940ec79",
                "bb300cfdad3c16e7a12a480ee83cd310",
            ),
        )
    ),
)


def parse_idx(data: bytes, *, source: str = "<bytes>") -> np.ndarray:
    """Decode an (uncompressed) IDX file into an array of its header's shape and type."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise WeightzipError(f"{source} is not an IDX file (bad magic {data[:4].hex()})")
    ndim = data[3]
    header = 4 + 4 * ndim
    shape = tuple(int(v) for v in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) - header != expected:
        raise WeightzipError(
            f"{source}: IDX header says shape {shape} ({expected} bytes of data) but the file "
            f"holds {len(data) - header}; the file is truncated or corrupt, replace it"
        )
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape).copy()


def _read_idx(directory: Path, spec: FileSpec, check_md5: bool) -> np.ndarray:
    raw = read_verified(directory, spec, check_md5=check_md5)  # the published .gz bytes
    try:
        data = gzip.decompress(raw)
    except (OSError, EOFError) as e:
        raise WeightzipError(f"{directory / spec.name} is not a valid gzip file ({e}); replace it") from e
    return parse_idx(data, source=str(directory / spec.name))


def _load_idx_dataset(files: DatasetFiles, classes, mean, std):
    def load(directory: Path, check_md5: bool) -> ImageData:
        tr_x, tr_y, te_x, te_y = (_read_idx(directory, f, check_md5) for f in files.files)
        for x, y, split in ((tr_x, tr_y, "train"), (te_x, te_y, "t10k")):
            if x.ndim != 3 or y.ndim != 1 or x.shape[0] != y.shape[0]:
                raise WeightzipError(
                    f"{directory}: {split} images {x.shape} and labels {y.shape} do not match"
                )
        return ImageData(
            train_x=torch.from_numpy(tr_x).unsqueeze(1),  # uint8 [60000, 1, 28, 28]
            train_y=torch.from_numpy(tr_y.astype(np.int64)),  # int64 [60000]
            test_x=torch.from_numpy(te_x).unsqueeze(1),  # uint8 [10000, 1, 28, 28]
            test_y=torch.from_numpy(te_y.astype(np.int64)),  # int64 [10000]
            classes=tuple(classes),
            mean=(mean,),
            std=(std,),
        )

    return load


add_dataset(
    DatasetSpec(
        name="mnist",
        task="classify",
        files=MNIST_FILES,
        load=_load_idx_dataset(MNIST_FILES, [str(i) for i in range(10)], 0.1307, 0.3081),
        default_val_size=5000,
        description="MNIST handwritten digits, 1x28x28, 10 classes, 60k train / 10k test",
    )
)

add_dataset(
    DatasetSpec(
        name="fashion_mnist",
        task="classify",
        files=FASHION_MNIST_FILES,
        load=_load_idx_dataset(
            FASHION_MNIST_FILES,
            ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
             "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"],
            0.2860,
            0.3530,
        ),
        default_val_size=5000,
        description="Fashion-MNIST (Zalando), 1x28x28, 10 classes, 60k train / 10k test",
    )
)


@register_dataset("mnist")
def mnist(batch_size: int = 128, **kwargs) -> Loaders:
    """MNIST loaders: ``x`` float32 ``[B,1,28,28]`` normalized, ``y`` int64 ``[B]``."""
    return image_loaders("mnist", batch_size=batch_size, **kwargs)


@register_dataset("fashion_mnist")
def fashion_mnist(batch_size: int = 128, **kwargs) -> Loaders:
    """Fashion-MNIST loaders: ``x`` float32 ``[B,1,28,28]`` normalized, ``y`` int64 ``[B]``."""
    return image_loaders("fashion_mnist", batch_size=batch_size, **kwargs)
