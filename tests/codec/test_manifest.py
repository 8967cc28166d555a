"""codec/manifest.py: the caller's manifest fields, checked by type and range (issue 24, item 4)."""
from pathlib import Path

import pytest

from weightzip.codec import container
from weightzip.codec.manifest import MAX_DEPTH, check_depth, check_manifest
from weightzip.errors import WeightzipFormatError

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
LIMIT = 2 << 30
GOOD = {"weightzip_version": "0.1.0", "model": {"name": "mlp", "kwargs": {"widths": [256, 256], "batch_norm": True,
                                                                           "width": 0.25, "embed_size": None}},
        "recipe": None, "metrics": {"acc": float("nan")}, "extra": {}, "baseline_bytes": 0, "tied": {"a": "b"},
        "runtime": {"activation_quant": [{"module": "head", "bits": 2, "clip": 1}, {"module": "x", "bits": 16}]},
        "graph": {"nodes": [], "modules": {}, "params": ["w"], "example_inputs": [{"shape": [2, 3, 32, 32],
                                                                                   "dtype": "float32"}]}}


def test_good_manifest_and_every_committed_file_pass():
    check_manifest(GOOD, LIMIT)
    check_manifest({}, LIMIT)
    for p in sorted(RESULTS.rglob("*.wz"))[:60]:
        container.read_manifest(p)


@pytest.mark.parametrize("key, value, match", [
    ("model", "lenet5", r"'model': must be an object"),
    ("model", {"kwargs": {"image_size": 10**5}}, r"'model\.kwargs\.image_size'.*per input sample"),
    ("model", {"kwargs": {"in_channels": 3, "image_size": 30_000}}, r"10800000000 bytes per input sample"),
    ("runtime", "x", r"'runtime': must be an object"),
    ("runtime", {"activation_quant": [{"module": "a", "bits": 99}]}, r"activation_quant\[0\]\.bits"),
    ("graph", {"nodes": [None] * 100_001}, r"'graph\.nodes': must be a list of at most 100000"),
    ("graph", {"nodes": [], "modules": {str(i): {} for i in range(100_001)}}, r"'graph\.modules'"),
    ("baseline_bytes", -5, r"'baseline_bytes'"),
    ("weightzip_version", 1, r"'weightzip_version'"),
    ("metrics", [1], r"'metrics': must be an object"),
])
def test_refusals_name_the_field(key, value, match):
    with pytest.raises(WeightzipFormatError, match=match):
        check_manifest({**GOOD, key: value}, LIMIT)


def test_image_size_follows_the_limit():
    doc = {"model": {"kwargs": {"in_channels": 3, "image_size": 224}}}
    check_manifest(doc, LIMIT)
    with pytest.raises(WeightzipFormatError, match="max_decoded_bytes=1000"):
        check_manifest(doc, 1000)


def test_depth_is_checked_without_recursion():
    deep = []
    node = deep
    for _ in range(100_000):   # deeper than Python's recursion limit
        node.append([])
        node = node[0]
    with pytest.raises(WeightzipFormatError, match=f"extra.*nested more than {MAX_DEPTH}"):
        check_depth({"extra": deep})
    check_depth({"a": [[[[1]]]]})


def test_read_and_read_manifest_refuse(tmp_path):
    from weightzip.codec import encode
    import torch

    path = tmp_path / "m.wz"
    container.write(path, {"model": ["lenet5"]}, {"w": encode(torch.ones(3))})
    for fn in (container.read, container.read_manifest):
        with pytest.raises(WeightzipFormatError, match=r"m\.wz: manifest field 'model': must be an object"):
            fn(path)
