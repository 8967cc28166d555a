"""validate / decode / decode_parts: malformed formats are WeightzipFormatErrors naming the tensor."""
import numpy as np
import pytest
import torch

from weightzip.codec import Format, decode, decode_parts, encode, validate
from weightzip.errors import WeightzipFormatError


def test_invalid_formats_raise_format_error():
    w = torch.linspace(-1, 1, 4)[torch.randint(0, 4, (30, 30), generator=torch.Generator().manual_seed(0))]
    fmt = encode(w)

    def mutated(**changes):
        f = Format(fmt.kind, fmt.shape, fmt.dtype, dict(fmt.meta), dict(fmt.streams), name="layer.w")
        for k, v in changes.items():
            setattr(f, k, v)
        return f

    bad = [
        mutated(kind="nope"),
        mutated(dtype="complex64"),
        mutated(shape=(30, -30)),
        mutated(streams={k: v for k, v in fmt.streams.items() if k != "codes"}),
        mutated(meta={**fmt.meta, "codebook_size": 999}),
        mutated(meta={**fmt.meta, "sparse": "weird"}),
        mutated(meta={**fmt.meta, "stream_info": {**fmt.meta["stream_info"], "codes": {"coding": "zip"}}}),
        mutated(streams={**fmt.streams, "codebook": fmt.streams["codebook"][:-1]}),
        mutated(shape=(31, 30)),
    ]
    for f in bad:
        with pytest.raises(WeightzipFormatError, match="layer.w"):
            decode(f)



def test_validate_checks_streams_against_the_kind():
    fmt = encode(torch.tensor([1, 2, 3], dtype=torch.int32))
    validate(fmt)
    as_dense = Format("dense", fmt.shape, "float32", fmt.meta, fmt.streams, name="n")
    with pytest.raises(WeightzipFormatError, match="'bytes' streams only exist in raw formats"):
        validate(as_dense)
    with pytest.raises(WeightzipFormatError, match="not valid for kind 'raw'"):
        validate(Format("raw", fmt.shape, "float32", fmt.meta, fmt.streams))


def test_decode_parts_of_raw_and_dense():
    parts = decode_parts(encode(torch.tensor([[1, 2], [3, 4]], dtype=torch.int64)))
    assert parts["kind"] == "raw" and parts["values"].tolist() == [[1, 2], [3, 4]]
    w = torch.randn(3, 4)
    parts = decode_parts(encode(w))
    assert parts["sparse"] == "none" and parts["positions"] is None and parts["csr"] is None
    assert parts["matrix_shape"] == (3, 4) and np.array_equal(parts["values"], w.numpy().ravel())
