"""CIFAR-10, python version: the pickled batches of ``cifar-10-batches-py/``.

Each batch (``data_batch_1`` .. ``data_batch_5``, ``test_batch``; plain or gzipped as
``NAME.gz``) is a Python 2 protocol-2 pickle of a dict with bytes keys: ``b"data"`` (uint8
``[10000, 3072]``: 1024 red, 1024 green, 1024 blue values, each plane row-major),
``b"labels"`` (list of 10,000 ints 0-9), ``b"batch_label"`` and ``b"filenames"``.
``batches.meta`` holds ``label_names``.

The pickles are read with :class:`RestrictedUnpickler`, which admits only the globals this
format uses (numpy's array reconstruction, ``ndarray``, ``dtype``), so a tampered file cannot
run code. Splits: 50,000 train (``val_size``, default 5,000, held out) and 10,000 test.
Normalization: per-channel mean (0.4914, 0.4822, 0.4465), std (0.2470, 0.2435, 0.2616).
"""
from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import WeightzipError
from ..core.registry import register_dataset
from .base import DatasetSpec, Loaders, add_dataset
from .files import ArchiveSpec, DatasetFiles, FileSpec, locate_file, read_verified
from .image import ImageData, image_loaders

__all__ = ["RestrictedUnpickler", "load_pickle", "read_batch", "CIFAR10_FILES"]

try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct as _np_reconstruct
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct as _np_reconstruct


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` restricted to latin-1: how Python 3 writes bytes in a protocol-2 pickle."""
    if encoding.lower().replace("_", "-") not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"refused _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals a CIFAR-10 batch needs.

    Containers, bytes, str and ints need no globals. Allowed: numpy's array reconstruction
    (``numpy.core.multiarray._reconstruct`` as written by Python 2 / numpy 1, or
    ``numpy._core.multiarray._reconstruct``), ``numpy.ndarray``, ``numpy.dtype``, and
    ``_codecs.encode`` restricted to latin-1 (Python 3 protocol-2 pickles of bytes).
    Anything else raises ``pickle.UnpicklingError`` naming the global.
    """

    ALLOWED: dict[tuple[str, str], Any] = {
        ("numpy.core.multiarray", "_reconstruct"): _np_reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _np_reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
    }

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed") from None


def load_pickle(data: bytes, *, source: str) -> Any:
    """Unpickle ``data`` with :class:`RestrictedUnpickler` and ``encoding="bytes"`` (Python 2
    strings stay bytes). A refused global or a broken pickle raises
    :class:`~weightzip.errors.WeightzipError` naming ``source``."""
    try:
        return RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
    except pickle.UnpicklingError as e:
        raise WeightzipError(
            f"refusing to load {source}: {e}. A CIFAR-10 python batch only holds dicts, lists, "
            "bytes, ints and numpy uint8 arrays; this file is not a genuine batch (tampered or "
            "another format). Replace it with the original from "
            "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
        ) from e
    except Exception as e:
        raise WeightzipError(
            f"cannot read {source} as a CIFAR-10 python batch ({type(e).__name__}: {e}); "
            "the file is truncated or corrupt, replace it"
        ) from e


def read_batch(directory: Path, spec: FileSpec, *, check_md5: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """One batch file -> (images uint8 ``[N, 3, 32, 32]``, labels int64 ``[N]``)."""
    source = str(locate_file(Path(directory), spec) or Path(directory) / spec.name)
    obj = load_pickle(read_verified(directory, spec, check_md5=check_md5), source=source)
    if not isinstance(obj, dict) or b"data" not in obj or b"labels" not in obj:
        keys = sorted(obj)[:6] if isinstance(obj, dict) else type(obj).__name__
        raise WeightzipError(f"{source} is not a CIFAR-10 batch: expected a dict with b'data' and b'labels', got {keys}")
    data, labels = obj[b"data"], np.asarray(obj[b"labels"], dtype=np.int64)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise WeightzipError(
            f"{source}: b'data' must be a uint8 array [N, 3072], got "
            f"{getattr(data, 'dtype', type(data).__name__)} {getattr(data, 'shape', '')}"
        )
    if labels.shape != (data.shape[0],) or (labels.size and not 0 <= labels.min() <= labels.max() <= 9):
        raise WeightzipError(f"{source}: b'labels' must be {data.shape[0]} ints in 0..9")
    return data.reshape(-1, 3, 32, 32), labels  # [N, 3, 32, 32] (plane-major RGB), [N]


_TRAIN = tuple(
    FileSpec(f"data_batch_{i}", md5, gz_ok=True)
    for i, md5 in enumerate(
        (
            "c99cafc152244af753f735de768cd75f",
            "d4bba439e000b95fd0a9bffe97cbabec",
            "54ebc095f3ab1f0389bbae665268c751",
            "634d18415352ddfa80567beed471001a",
            "482c414d41f54cd18b22e5b47cb7c3cb",
        ),
        start=1,
    )
)
_TEST = FileSpec("test_batch", "40351d587109b95175f43aff81a1287e", gz_ok=True)
_META = FileSpec("batches.meta", "5ff9c542aee3614f3951f8cda6e48888", gz_ok=True)

CIFAR10_FILES = DatasetFiles(
    key="cifar10",
    subdir="cifar10/cifar-10-batches-py",
    files=(*_TRAIN, _TEST, _META),
    archive=ArchiveSpec(
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        md5="c58f30108f718f92721af3b95e74349a",
        member_dir="cifar-10-batches-py",
    ),
)

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def _load(directory: Path, check_md5: bool) -> ImageData:
    batches = [read_batch(directory, f, check_md5=check_md5) for f in _TRAIN]
    test_x, test_y = read_batch(directory, _TEST, check_md5=check_md5)
    meta = load_pickle(read_verified(directory, _META, check_md5=check_md5), source=str(directory / _META.name))
    names = meta.get(b"label_names") if isinstance(meta, dict) else None
    classes = tuple(n.decode("latin1") if isinstance(n, bytes) else str(n) for n in names) if names else CLASSES
    return ImageData(
        train_x=torch.from_numpy(np.concatenate([b[0] for b in batches])),  # uint8 [50000, 3, 32, 32]
        train_y=torch.from_numpy(np.concatenate([b[1] for b in batches])),  # int64 [50000]
        test_x=torch.from_numpy(np.ascontiguousarray(test_x)),  # uint8 [10000, 3, 32, 32]
        test_y=torch.from_numpy(test_y),  # int64 [10000]
        classes=classes,
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2470, 0.2435, 0.2616),
    )


add_dataset(
    DatasetSpec(
        name="cifar10",
        task="classify",
        files=CIFAR10_FILES,
        load=_load,
        default_val_size=5000,
        description="CIFAR-10 python batches, 3x32x32, 10 classes, 50k train / 10k test",
        options={"augment": True},
    )
)


@register_dataset("cifar10")
def cifar10(batch_size: int = 128, **kwargs) -> Loaders:
    """CIFAR-10 loaders: ``x`` float32 ``[B,3,32,32]`` normalized, ``y`` int64 ``[B]``;
    ``augment=True`` adds random crops (4-pixel padding) and horizontal flips to train batches."""
    return image_loaders("cifar10", batch_size=batch_size, **kwargs)
