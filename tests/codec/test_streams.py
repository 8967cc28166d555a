"""StreamWriter / StreamReader: round trips and refusals naming the stream."""
import numpy as np
import pytest

from weightzip.codec import Format
from weightzip.codec.streams import StreamReader, StreamWriter
from weightzip.errors import WeightzipFormatError


def _fmt(st: StreamWriter) -> Format:
    return Format("dense", (3,), "float32", {"stream_info": st.info}, st.streams, name="t")


def test_round_trip_symbols_and_floats():
    st = StreamWriter(("raw", "huffman", "ans"))
    st.symbols("codes", [0, 3, 2, 2, 2, 1], 4)
    st.floats("values", [1.5, -2.0, 0.25])
    st.floats("half", [1.5, -2.0], "float16")
    assert st.info["codes"] == {"coding": st.info["codes"]["coding"], "count": 6, "alphabet": 4}
    assert st.nbytes == sum(len(v) for v in st.streams.values())
    rd = StreamReader(_fmt(st))
    assert rd.symbols("codes", 6, 4).tolist() == [0, 3, 2, 2, 2, 1]
    assert rd.floats("values", 3).tolist() == [1.5, -2.0, 0.25]
    assert rd.floats("half").dtype == np.float32 and rd.floats("half").tolist() == [1.5, -2.0]
    assert rd.alphabet("codes") == 4


def test_sub_and_merge():
    st = StreamWriter(("raw",))
    sub = st.sub()
    sub.symbols("bitmap", [1, 0, 1], 2)
    assert not st.streams
    st.merge(sub)
    assert set(st.streams) == {"bitmap"} and st.codings == ("raw",)


@pytest.mark.parametrize("call, match", [
    (lambda rd: rd.symbols("codes", 5, 4), "holds 6 symbols, expected 5"),
    (lambda rd: rd.symbols("codes", 6, 8), "alphabet is 4, expected 8"),
    (lambda rd: rd.symbols("nope", 1, 2), "'nope'.*missing"),
    (lambda rd: rd.floats("codes"), "coding must be float32 or float16"),
    (lambda rd: rd.floats("values", 2), "holds 3 values, expected 2"),
])
def test_reader_refusals_name_tensor_and_stream(call, match):
    st = StreamWriter(("raw",))
    st.symbols("codes", [0, 3, 2, 2, 2, 1], 4)
    st.floats("values", [1.0, 2.0, 3.0])
    with pytest.raises(WeightzipFormatError, match=f"tensor 't'.*{match}"):
        call(StreamReader(_fmt(st)))


def test_reader_refuses_truncated_floats_and_missing_info():
    st = StreamWriter(("raw",))
    st.floats("values", [1.0, 2.0, 3.0])
    f = _fmt(st)
    f.streams["values"] = f.streams["values"][:-1]
    with pytest.raises(WeightzipFormatError, match="11 bytes"):
        StreamReader(f).floats("values", 3)
    with pytest.raises(WeightzipFormatError, match="stream_info"):
        StreamReader(Format("dense", (3,), "float32", {}, {}))


def test_grid_float_coding_round_trips_and_is_bounded():
    """Values on a grid ``k 2^-f`` (re-quantized codebooks / biases) are stored as varint deltas,
    bit-exactly; other values stay float32; hostile grid streams are refused."""
    import numpy as np
    import pytest

    from weightzip.codec.streams import decode_grid, encode_grid
    from weightzip.errors import WeightzipFormatError

    for v in ([-0.25, -0.125, 0.0, 0.125, 0.375], [3.0, -7.0, 1e6], [2.0 ** -30, -(2.0 ** -40)], [0.0]):
        a = np.asarray(v, np.float32)
        g = encode_grid(a)
        assert g is not None and np.array_equal(decode_grid(g, a.size).view(np.uint32), a.view(np.uint32))
    assert len(encode_grid(np.arange(16, dtype=np.float32) / 64 - 0.1171875)) < 64
    assert encode_grid(np.asarray([1e-13], np.float32)) is None          # not on a grid up to 2^-40
    assert encode_grid(np.asarray([np.inf], np.float32)) is None
    for data, n in ((b"", 0), (b"\x03", 1), (b"\x29\x00", 1), (b"\x03\x80\x80", 1), (b"\x03\x00\x00", 1),
                    (b"\x03" + b"\xff" * 9 + b"\x01", 1), (b"\x03\x00", 2)):
        with pytest.raises(WeightzipFormatError):
            decode_grid(data, n)
