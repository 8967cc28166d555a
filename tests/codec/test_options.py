"""encode options: parsing and refusals."""
import pytest
import torch

from weightzip.codec import encode


def test_unknown_option_rejected():
    with pytest.raises(ValueError, match="unknown encode options"):
        encode(torch.ones(3), options={"bogus": 1})



def test_options_are_parsed_into_candidates_tried():
    from weightzip.codec import KINDS, LAYOUTS
    from weightzip.codec.options import EncodeOptions

    o = EncodeOptions.parse(None)
    assert o.layouts == LAYOUTS and o.kinds == KINDS and o.codings == ("raw", "huffman", "ans")
    assert EncodeOptions.parse({"sparse": False}).layouts == ("none", "block")
    assert EncodeOptions.parse({"sparse": ["bitmap"]}).layouts == ("none", "bitmap")
    assert EncodeOptions.parse({"kinds": ["pq"]}).kinds == ("pq", "dense")
    assert EncodeOptions.parse({"entropy": "none"}).codings == ("raw",)
    assert EncodeOptions.parse({"fp16": True}).float_dtype == "float16"


@pytest.mark.parametrize("options, match", [
    ({"entropy": "zip"}, "entropy"), ({"sparse": ["csr"]}, "unknown layouts"), ({"kinds": ["jpeg"]}, "unknown kinds"),
    ({"float_dtype": "bfloat16"}, "float_dtype"), ({"index_bits": 17}, "index_bits"),
])
def test_bad_options_name_the_option(options, match):
    with pytest.raises(ValueError, match=match):
        encode(torch.ones(3), options=options)
