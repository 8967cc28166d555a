"""benchmarks/fused_pairs.py: every fused pair of the committed MobileNetV2 file is found and timed
both ways (one round: a smoke run, not a timing), and the page names each pair."""
import importlib.util
import sys
from pathlib import Path

_DIR = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(_DIR))
_spec = importlib.util.spec_from_file_location("benchmarks_fused_pairs", _DIR / "fused_pairs.py")
P = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(P)


def test_measure_finds_the_five_pairs_and_render_names_them():
    res = P.measure(1)
    assert [r["expand"].split(".")[2] for r in res["rows"]] == ["0", "1", "2", "3", "4"]   # layer.0-4
    for r in res["rows"]:
        assert r["fused_us"] > 0 and r["unfused_us"] > 0
        assert r["depthwise"].endswith("conv_3x3.convolution") and r["block"] % 4 == 0
    text = P.render(res)
    assert text.count("| `mobilenet_v2.layer.") == 5 and "All pairs:" in text
