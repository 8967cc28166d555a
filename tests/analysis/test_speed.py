"""`weightzip bench` logic: every runtime in one process, speed-ups, load average, limit estimate."""
from pathlib import Path

import pytest

from weightzip.analysis.speed import bench_text, compare, plan_text

FILE = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "lenet300_100-deep-compression.wz"


def test_compare_has_onnxruntime_compiled_and_the_limit():
    pytest.importorskip("onnxruntime")
    out = compare(FILE, batch_sizes=(1,), repeat=1, number=2, threads=1)
    modes = {r["mode"] for r in out["rows"]}
    assert {"torch eager dense", "onnxruntime fp32", "onnxruntime int8", "weightzip compiled"} <= modes
    comp = [r for r in out["rows"] if r["mode"] == "weightzip compiled"][0]
    assert comp["max_abs_diff"] < 1e-4 and comp["vs_onnxruntime"] > 0 and comp["over_limit"] > 0
    assert out["compiled"]["nonzero_macs_per_sample"] == 16464 + 4500 + 500
    assert len(out["load_average"]) == 3
    text = bench_text(out)
    assert "limit" in text and "load average" in text and "onnxruntime fp32" in text


def test_plan_text_names_every_layer():
    text = plan_text(FILE)
    assert "layers.0" in text and "csr codebook" in text and "1 native call" in text
