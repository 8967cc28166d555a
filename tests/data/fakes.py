"""Small synthetic dataset files in the real on-disk formats (for fast tests without real data)."""
from __future__ import annotations

import gzip
import hashlib
import pickle
import struct
from pathlib import Path

import numpy as np


class Py2StylePickler(pickle._Pickler):
    """Writes protocol-2 pickles the way Python 2's cPickle wrote CIFAR-10: ``str``/``bytes`` as
    (SHORT_)BINSTRING opcodes, which ``pickle.load(..., encoding="bytes")`` reads back as bytes."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj):
        data = obj if isinstance(obj, bytes) else obj.encode("ascii")
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str
    dispatch[str] = save_py2_str


def py2_pickle(obj) -> bytes:
    """A protocol-2 pickle of ``obj`` laid out like a Python 2 / numpy 1 CIFAR-10 batch."""
    import io

    buf = io.BytesIO()
    Py2StylePickler(buf, protocol=2).dump(obj)
    # numpy 2 names its array rebuilder numpy._core...; the real files say numpy.core...
    return buf.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def write_bytes(path: Path, data: bytes, gz: bool) -> Path:
    path = Path(str(path) + ".gz") if gz else Path(path)
    path.write_bytes(gzip.compress(data, 9, mtime=0) if gz else data)
    return path


def make_cifar_dir(directory: Path, *, n: int = 6, gz: bool = False, seed: int = 0):
    """Write 5 train batches and a test batch of ``n`` random images each, plus batches.meta.

    Returns (train images uint8 [5n, 3072], train labels [5n], test images [n, 3072], test labels [n]).
    """
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, size=n)]
        batch = {
            b"batch_label": b"synthetic " + name.encode(),
            b"labels": labels,
            b"data": data,
            b"filenames": [f"img_{i}.png".encode() for i in range(n)],
        }
        write_bytes(directory / name, py2_pickle(batch), gz)
        xs.append(data)
        ys.append(np.array(labels, dtype=np.int64))
    meta = {b"num_cases_per_batch": n, b"label_names": [c.encode() for c in
            ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")],
            b"num_vis": 3072}
    (directory / "batches.meta").write_bytes(py2_pickle(meta))
    return np.concatenate(xs[:5]), np.concatenate(ys[:5]), xs[5], ys[5]


def make_ptb_dir(directory: Path, train: str, valid: str, test: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for split, text in (("train", train), ("valid", valid), ("test", test)):
        (directory / f"ptb.{split}.txt").write_text(text)
    return directory


def idx_bytes(array: np.ndarray) -> bytes:
    """An uncompressed IDX file of a uint8 array."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(">" + "I" * array.ndim, *array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def make_mnist_dir(root: Path, *, n_train: int = 600, n_test: int = 200, seed: int = 0) -> Path:
    """``root/mnist/`` with the four IDX ``.gz`` files of a learnable fake MNIST; returns ``root``.

    Image ``i`` has label ``i % 10`` and a bright horizontal band at rows ``2*label .. 2*label+5``
    over uniform noise in [0, 60). Not the real md5s: read with ``check_md5=False`` or
    ``WEIGHTZIP_NO_MD5=1``.
    """
    d = Path(root) / "mnist"
    d.mkdir(parents=True)
    rng = np.random.default_rng(seed)

    def split(n):
        y = (np.arange(n) % 10).astype(np.uint8)
        x = rng.integers(0, 60, (n, 28, 28), dtype=np.uint8)
        for i in range(n):
            x[i, 2 * y[i]:2 * y[i] + 6, 4:24] = 250
        return x, y

    names = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
    for name, a in zip(names, (*split(n_train), *split(n_test))):
        (d / name).write_bytes(gzip.compress(idx_bytes(a), mtime=0))
    return Path(root)
