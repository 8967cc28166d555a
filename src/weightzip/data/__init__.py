"""Datasets: MNIST, Fashion-MNIST, CIFAR-10 and Penn Treebank (word and character level).

    from weightzip.data import get_loaders
    loaders = get_loaders("cifar10", batch_size=128, augment=True)
    for x, y in loaders.train: ...        # x float32 [128,3,32,32] normalized, y int64 [128]

Files are looked up in ``root`` (``--data-dir``), ``$WEIGHTZIP_DATA``, ``~/.cache/weightzip``
(see :mod:`weightzip.data.files`); ``docs/data.md`` describes splits and normalization.
Importing this package registers every dataset with :func:`weightzip.core.registry.register_dataset`.
"""
from . import cifar10, mnist, ptb  # noqa: F401  (registration)
from .base import (
    DATASETS,
    DatasetSpec,
    Loaders,
    clear_cache,
    get_dataset,
    get_loaders,
    load_raw,
    resolve_root,
)
from .files import set_downloader
from .image import ImageTensorDataset, random_crop_flip
from .lm import LMBatches, Vocab, batchify

__all__ = [
    "DATASETS",
    "DatasetSpec",
    "Loaders",
    "get_loaders",
    "get_dataset",
    "resolve_root",
    "load_raw",
    "clear_cache",
    "set_downloader",
    "ImageTensorDataset",
    "random_crop_flip",
    "LMBatches",
    "Vocab",
    "batchify",
]
