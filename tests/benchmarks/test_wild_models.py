"""benchmarks/wild_models.py: failure cells, the page of a partial run, output picking."""
import importlib.util
import sys
from pathlib import Path

import torch

_DIR = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(_DIR))  # the script imports _common as a sibling
_spec = importlib.util.spec_from_file_location("benchmarks_wild_models", _DIR / "wild_models.py")
W = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(W)


def test_why_is_type_and_first_line():
    assert W.why(ValueError("bad shape\nmore detail")) == "ValueError: bad shape"
    assert W.why(KeyError()) == "KeyError"


def test_main_output_and_relative_error():
    t = torch.ones(2, 3)
    assert W.main_output(t) is t
    assert W.main_output({"loss": None, "logits": t}) is t
    assert W.main_output({"last_hidden_state": t, "pooler_output": t[:, 0]}) is t
    assert W.main_output((t, None)) is t
    assert W.rel_err(t, t) == 0.0
    assert abs(W.rel_err(2 * t, t) - 1.0) < 1e-12


def _res(rows):
    return {"command": "python benchmarks/wild_models.py", "machine": "cpu, 2 cores", "torch": "2", "transformers": "5",
            "threads": 1, "jobs": 1, "small": False, "started": "now", "loadavg_before": 1.0, "loadavg_after": 2.0,
            "seconds": 60.0, "timeout_min": 20, "budget_min": 60, "partial": True, "rows": rows}


def test_page_shows_failures_timeouts_and_rows_not_run():
    ok = {"model": "resnet50", "recipe": "kmeans4", "status": "finished", "errors": {},
          "phases_done": ["build", "compress", "save", "load", "compiled", "onnx"], "params": 25_600_000,
          "selected_params": 25_500_000, "selected_tensors": 54, "fp32_bytes": 102_000_000, "wz_bytes": 12_000_000,
          "file_ratio": 8.5, "rel_err_file_vs_fp32": 0.2, "rel_err_file_vs_memory": 0.0, "onnx_bytes": 13_000_000,
          "onnx_rel_err_vs_file": 1e-7, "seconds": {"compress": 30.0, "save": 10.0}, "load_s": 1.0,
          "peak_rss": {"build": 2**30}, "compiled": {"coverage": "torch fallback", "reason": "not a chain"},
          "config": {"cls": "ResNetForImageClassification"}, "types_present": ["Conv2d", "Linear"],
          "output_shape": [1, 1000]}
    failed = {"model": "gpt2", "recipe": "kmeans4", "status": "finished", "phases_done": ["build", "compress", "save"],
              "errors": {"save": "NameError: x"}, "params": 124_000_000, "fp32_bytes": 500_000_000,
              "selected_params": 124_000_000, "selected_tensors": 50}
    slow = {"model": "bert_base", "recipe": "kmeans4", "phases_done": ["build"], "errors": {},
            "status": "timed out after 20.0 min in phase 'compress'", "params": 110_000_000}
    never = {"model": "llama_100m", "recipe": "kmeans4", "status": "not run", "errors": {}, "phases_done": []}
    page = W.markdown(_res([ok, failed, slow, never]))
    assert "8.50x" in page and "torch fallback: not a chain" in page
    assert "FAILED (save): NameError: x" in page
    assert "timed out after 20.0 min in phase 'compress'" in page and "not reached" in page
    assert "| llama_100m | kmeans4 | not run |" in page and "| llama_100m | kmeans4 |  |" in page
    assert "**Partial**" in page
