"""Format and the small helpers every kind uses."""
import numpy as np
import pytest
import torch

from weightzip.codec import Format
from weightzip.codec.format import bad, bits_range, canonical, is_int, meta_int, to_numpy
from weightzip.errors import WeightzipFormatError


def test_format_size_and_repr():
    f = Format("dense", (2, 3), "float32", {"sparse": "none"}, {"values": b"\0" * 24, "x": b"ab"}, name="w")
    assert f.nbytes == 26 and f.numel == 6
    assert "nbytes=26" in repr(f) and "sparse='none'" in repr(f)
    assert Format("dense", (), "float32", {}, {}).numel == 1


def test_errors_name_tensor_and_stream():
    f = Format("dense", (1,), "float32", {"n": 3, "b": True}, {}, name="fc.weight")
    assert str(bad(f, "boom", "codes")) == "tensor 'fc.weight', stream 'codes': boom"
    assert meta_int(f, f.meta, "n", 0, 5) == 3
    with pytest.raises(WeightzipFormatError, match=r"meta\['n'\] must be an integer in \[4, 5\], got 3"):
        meta_int(f, f.meta, "n", 4, 5)
    with pytest.raises(WeightzipFormatError, match="got True"):
        meta_int(f, f.meta, "b")
    assert is_int(3) and not is_int(True) and not is_int(3.0)


def test_array_helpers():
    z = canonical(np.array([-0.0, 1.0], np.float32))
    assert not np.signbit(z[0]) and z.dtype == np.float32
    assert to_numpy(torch.ones(2, dtype=torch.bfloat16)).dtype == np.float32
    assert bits_range(-4, 3) == 3 and bits_range(5, 5) == 0
