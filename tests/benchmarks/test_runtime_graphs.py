"""benchmarks/runtime_graphs.py: the page re-rendered from its JSON (``--render-only``), targets judged."""
import importlib.util
import json
import sys
from pathlib import Path

_DIR = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(_DIR))
_spec = importlib.util.spec_from_file_location("benchmarks_runtime_graphs", _DIR / "runtime_graphs.py")
G = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(G)


def _result(name, batch, ort32, ours):
    return {"name": name, "file_bytes": 1000, "profile": {}, "dense_param_bytes": 4096,
            "resident_bytes": {"total": 2048}, "macs_per_sample": 10, "native_macs": 10, "ops": 3,
            "plan_build_s": 0.1, "fallback_warning": [], "sessions": {"onnxruntime fp32": "ok"},
            "load_average": [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]],
            "rows": [{"batch": batch, "max_abs_diff": 1e-6,
                      "us": {"torch eager": 30.0, "onnxruntime fp32": ort32, "onnxruntime int8": 20.0,
                             "weightzip compiled": ours}}]}


def test_render_only_rewrites_the_page_from_the_json_and_judges_the_targets(tmp_path):
    out = tmp_path / "page.md"
    res = [_result("bert-4x256-kmeans4-seq128", 1, 9.0, 10.0), _result("resnet20-prune80-kmeans4", 16, 13.0, 10.0)]
    out.with_suffix(".json").write_text(json.dumps({"when": "then", "vector_width": "AVX2", "results": res}))
    assert G.main(["--render-only", "--out", str(out)]) == 0
    page = out.read_text()
    assert "(then)" in page and "vector width AVX2" in page
    bert = next(line for line in page.splitlines() if line.startswith("| bert-4x256"))
    assert "| 0.90x |" in bert and "no (0.90 of 1.0x fp32)" in bert
    resnet = next(line for line in page.splitlines() if line.startswith("| resnet20"))
    assert "| 1.30x |" in resnet and "yes (1.08 of 1.2x fp32)" in resnet
    assert not list(tmp_path.glob("*.tmp"))
