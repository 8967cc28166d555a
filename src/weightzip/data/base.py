"""The dataset table, the :class:`Loaders` bundle and the entry points shared by all datasets.

    loaders = get_loaders("mnist", batch_size=128)      # train / val / test + task + info
    x, y = next(iter(loaders.train))                    # x float32 [128,1,28,28], y int64 [128]
    lm = get_loaders("ptb", batch_size=20, bptt=35)
    x, y = next(iter(lm.train))                         # x, y int64 [35, 20], y = x shifted by 1

Every dataset module (``mnist.py``, ``cifar10.py``, ``ptb.py``) adds a :class:`DatasetSpec` to
:data:`DATASETS` and registers its loader builder with
:func:`weightzip.core.registry.register_dataset`; :func:`get_loaders` dispatches through the
registry, so an unknown name raises :class:`~weightzip.errors.UnknownNameError` listing the
valid names.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

from ..core import registry
from .files import DatasetFiles, find_dataset_dir

__all__ = [
    "Loaders",
    "DatasetSpec",
    "DATASETS",
    "add_dataset",
    "resolve_root",
    "load_raw",
    "get_dataset",
    "get_loaders",
    "clear_cache",
]


@dataclass
class Loaders:
    """What :func:`get_loaders` returns.

    ``train``/``val``/``test``: iterables of batches (``val`` is ``None`` when ``val_size=0``).
    Image datasets: ``torch.utils.data.DataLoader`` yielding ``(x float32 [B,C,H,W], y int64 [B])``.
    Language modelling: :class:`~weightzip.data.lm.LMBatches` yielding
    ``(x int64 [bptt,B], y int64 [bptt,B])``.
    ``task``: ``"classify"`` or ``"lm"``. ``info``: ``num_classes``, ``in_channels``,
    ``image_size`` (classify) or ``vocab_size`` (lm), plus split sizes and normalization.
    """

    train: Any
    val: Any | None
    test: Any
    task: Literal["classify", "lm"]
    info: dict = field(default_factory=dict)
    name: str = ""


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset: its files, task, documented default validation size and decoder.

    ``load(directory, check_md5)`` decodes every split from the files in ``directory``
    (an :class:`~weightzip.data.image.ImageData` or :class:`~weightzip.data.lm.TextData`).
    ``default_val_size``: training examples held out for validation when ``val_size=None``
    (``None`` for PTB, whose validation split is ``ptb.valid.txt``).
    """

    name: str
    task: Literal["classify", "lm"]
    files: DatasetFiles
    load: Callable[[Path, bool], Any]
    default_val_size: int | None
    description: str = ""
    options: dict = field(default_factory=dict)


DATASETS: dict[str, DatasetSpec] = {}


def add_dataset(spec: DatasetSpec) -> DatasetSpec:
    """Put ``spec`` in :data:`DATASETS` (the loader builder is registered separately)."""
    DATASETS[spec.name] = spec
    return spec


def _spec(name: str) -> DatasetSpec:
    registry.get_dataset_fn(name)  # raises UnknownNameError with the valid names
    return DATASETS[name]


def resolve_root(
    name: str, root: str | os.PathLike | None = None, *, download: bool | None = None
) -> Path:
    """The directory holding dataset ``name``'s files.

    Searched in order: ``root`` (``root/<subdir>`` or ``root`` itself), ``$WEIGHTZIP_DATA/<subdir>``,
    ``~/.cache/weightzip/<subdir>``; subdirs are ``mnist``, ``fashion-mnist``,
    ``cifar10/cifar-10-batches-py``, ``ptb``. Missing everywhere: downloaded into the cache
    when allowed and the network answers, else :class:`~weightzip.errors.DataNotFoundError`.
    """
    spec = _spec(name)
    return find_dataset_dir(spec.files, root, download=download, display_name=name)


@functools.lru_cache(maxsize=8)
def _load_cached(name: str, directory: str, check_md5: bool):
    return DATASETS[name].load(Path(directory), check_md5)


def load_raw(
    name: str,
    root: str | os.PathLike | None = None,
    *,
    check_md5: bool = True,
    download: bool | None = None,
):
    """Decoded splits of ``name`` (uint8 images + labels, or token ids + vocabulary).

    Cached per process by (name, directory, check_md5): repeated calls return the same
    object, so callers must not modify its tensors in place.
    """
    directory = resolve_root(name, root, download=download)
    return _load_cached(name, str(directory.resolve()), bool(check_md5))


def clear_cache() -> None:
    """Forget the decoded datasets kept in memory (they are reloaded on the next call)."""
    _load_cached.cache_clear()


def get_dataset(
    name: str,
    split: str = "train",
    *,
    root: str | os.PathLike | None = None,
    check_md5: bool = True,
    download: bool | None = None,
):
    """One official split, without validation hold-out, subsetting or augmentation.

    Image datasets, ``split`` in ``{"train", "test"}``: an
    :class:`~weightzip.data.image.ImageTensorDataset` (``ds[i] -> (x float32 [C,H,W], y int64)``).
    PTB, ``split`` in ``{"train", "valid", "test"}``: the token ids, int64 ``[T]``
    (``<eos>`` after each line); the vocabulary is ``load_raw(name).vocab``.
    """
    raw = load_raw(name, root, check_md5=check_md5, download=download)
    return raw.split(split)


def get_loaders(
    name: str,
    batch_size: int = 128,
    *,
    root: str | os.PathLike | None = None,
    val_size: int | None = None,
    augment: bool = False,
    subset: int | None = None,
    seed: int = 0,
    num_workers: int = 0,
    eval_batch_size: int | None = None,
    bptt: int = 35,
    eval_subset: int | None = None,
    split_seed: int = 0,
    check_md5: bool = True,
    download: bool | None = None,
) -> Loaders:
    """Train / validation / test loaders for a registered dataset.

    Image datasets (``mnist``, ``fashion_mnist``, ``cifar10``): ``val_size`` training examples
    (default 5000; ``0`` -> ``val`` is ``None``) are held out with a permutation seeded by
    ``split_seed``, both parts keep their original order; ``subset=N`` keeps the first ``N``
    remaining training examples and ``eval_subset=M`` the first ``M`` of val and test.
    Training batches are reshuffled every epoch (seeded by ``seed``) and, with ``augment``
    (CIFAR-10 only), randomly cropped from a 4-pixel zero padding and flipped horizontally.

    Language modelling (``ptb`` words, ``ptb_char`` characters): the token streams of
    ``ptb.{train,valid,test}.txt`` batchified into ``batch_size`` (train) or
    ``eval_batch_size`` (val/test) columns and cut into windows of ``bptt`` steps;
    ``subset``/``eval_subset`` keep the first tokens of the streams. ``val_size`` must be
    ``None`` (use ``ptb.valid.txt``) or ``0`` (no val loader).

    ``eval_batch_size`` defaults to ``batch_size``. ``check_md5=False`` skips the md5 check of
    the files; ``download`` overrides ``WEIGHTZIP_NO_DOWNLOAD``.
    """
    fn = registry.get_dataset_fn(name)
    return fn(
        batch_size=batch_size,
        root=root,
        val_size=val_size,
        augment=augment,
        subset=subset,
        seed=seed,
        num_workers=num_workers,
        eval_batch_size=eval_batch_size,
        bptt=bptt,
        eval_subset=eval_subset,
        split_seed=split_seed,
        check_md5=check_md5,
        download=download,
    )


def check_positive(what: str, value: int | None, *, allow_none: bool = True) -> None:
    """Raise ``ValueError`` unless ``value`` is a positive int (or ``None`` if allowed)."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
