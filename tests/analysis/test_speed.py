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


# ---- a runtime that cannot run the model gets a row with its reason, never an exception ----

import torch  # noqa: E402
from torch import nn  # noqa: E402

import weightzip as wz  # noqa: E402
from weightzip.analysis import speed  # noqa: E402
from weightzip.jobs.bench import input_spec_of  # noqa: E402


def _tiny(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    path = tmp_path / "tiny.wz"
    wz.save(model, path, example_inputs=(torch.randn(2, 6),))
    return path


class _Raises(nn.Module):
    """What torch.ao gave a MobileNetV3-like graph: a module whose call fails."""

    def forward(self, x):
        raise RuntimeError("aten::linear() Expected a value of type 'Tensor' for argument 'weight' "
                           "but instead found type 'method'.\nPosition: 1")


def _rows(out, mode):
    return [r for r in out["rows"] if r["mode"] == mode]


def test_failing_runtimes_get_rows_with_their_reason(tmp_path, monkeypatch):
    path = _tiny(tmp_path)
    monkeypatch.setattr(speed, "_onnx_sessions", lambda *a, **k: {"onnxruntime fp32": "export failed (test)"})
    monkeypatch.setattr(speed, "_torch_ao_int8", lambda dense: _Raises())

    def plan_fails(*a):
        raise ZeroDivisionError("float division by zero")

    monkeypatch.setattr(speed, "_plan_stats", plan_fails)
    out = compare(path, batch_sizes=(1, 3), repeat=1, number=2, threads=1, modes=("compiled",),
                  input_shape=input_spec_of)
    for b in (1, 3):
        dense = [r for r in _rows(out, "torch eager dense") if r["batch"] == b][0]
        assert dense["us"] > 0 and dense["speedup"] == 1.0 and "error" not in dense
    ao = _rows(out, "torch.ao int8")
    assert len(ao) == 2 and all("found type 'method'" in r["error"] and r["us"] is None for r in ao)
    assert all(r["error"] == "export failed (test)" for r in _rows(out, "onnxruntime fp32"))
    comp = _rows(out, "weightzip compiled")
    assert len(comp) == 2 and all("ZeroDivisionError" in r["error"] for r in comp)
    assert set(out["failed"]) == {"torch.ao int8", "onnxruntime fp32", "weightzip compiled"}
    text = bench_text(out)
    assert "not run: cannot run the model (RuntimeError: aten::linear()" in text


def test_a_plan_with_nothing_native_has_no_limit_and_no_division_by_zero(tmp_path, monkeypatch):
    """An all-fallback compiled plan: 0 MACs and 0 weight bytes (the ResNet-18-like crash)."""
    path = _tiny(tmp_path)
    dense = wz.load(path)
    monkeypatch.setattr(speed, "_plan_stats",
                        lambda *a: (dense, 0, 0, [("<model>", "not compiled")], {"total": 0}))
    out = compare(path, batch_sizes=(1,), repeat=1, number=2, threads=1, modes=("compiled",), baselines=False,
                  input_shape=input_spec_of)
    comp = _rows(out, "weightzip compiled")[0]
    assert comp["us"] > 0 and comp["over_limit"] is None and out["limits"] == {}
    assert "fallback to decoded dense: <model>: not compiled" in bench_text(out)


def test_a_call_failing_while_timed_is_dropped_with_its_reason():
    n = {"calls": 0}

    def flaky():
        n["calls"] += 1
        if n["calls"] > 2:
            raise ValueError("boom")

    errors = {}
    med = speed.interleaved_medians({"ok": lambda: None, "flaky": flaky}, repeat=3, number=2, errors=errors)
    assert set(med) == {"ok"} and errors == {"flaky": "failed while timed (ValueError: boom)"}
    with pytest.raises(ValueError):
        speed.interleaved_medians({"flaky": flaky}, repeat=1, number=1)


def test_input_spec_examples():
    spec = speed.InputSpec((5,), torch.int64, batch_axis=1, high=7)
    x = spec.example(4)
    assert x.shape == (5, 4) and x.dtype == torch.int64 and 0 <= int(x.min()) and int(x.max()) < 7
    assert speed.InputSpec((3, 8, 8)).example(2).shape == (2, 3, 8, 8)
    assert "ids in [0, 7)" in spec.describe()


def test_onnxruntime_export_falls_back_to_the_torch_export_exporter(tmp_path, capsys, monkeypatch):
    """A model whose graph the TorchScript exporter refuses (HF MobileNetV2 rebuilt from its
    file: ``_native_batch_norm_legit_no_training``; simulated here, with the whole graph the
    exporter prints on failure) is exported by the torch.export based exporter instead, quietly,
    and onnxruntime gives the same outputs."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    import sys

    real = torch.onnx.export

    def torchscript_refuses(*a, dynamo=True, **k):
        if not dynamo:
            print("Torch IR graph at exception: graph(%x : Float(...)) ...", file=sys.stderr)
            raise RuntimeError("Exporting the operator 'aten::_native_batch_norm_legit_no_training' "
                               "to ONNX opset version 20 is not supported.\n(the whole graph)")
        return real(*a, dynamo=dynamo, **k)

    monkeypatch.setattr(torch.onnx, "export", torchscript_refuses)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 6 * 6, 3)).eval()
    path = tmp_path / "cbn.wz"
    wz.save(model, path, example_inputs=(torch.randn(2, 3, 6, 6),))
    dense = wz.load(path)
    x = torch.randn(1, 3, 6, 6)
    sess = speed._onnx_sessions(dense, x, 1)
    assert not isinstance(sess["onnxruntime fp32"], str), sess["onnxruntime fp32"]
    for xb in (x, torch.randn(3, 3, 6, 6)):   # the batch stays dynamic
        got = sess["onnxruntime fp32"].run(None, {"input": xb.numpy()})[0]
        torch.testing.assert_close(torch.from_numpy(got), dense(xb).detach(), rtol=1e-4, atol=1e-5)
    err = capsys.readouterr()
    assert "graph(" not in err.err and "graph(" not in err.out


def test_an_export_failure_is_one_line(monkeypatch):
    def refuses(*a, **k):
        raise RuntimeError("no exporter for this\n" + "graph line\n" * 1000)

    monkeypatch.setattr(torch.onnx, "export", refuses)
    pytest.importorskip("onnxruntime")
    sess = speed._onnx_sessions(nn.Linear(3, 2), torch.randn(1, 3), 1)
    assert sess["onnxruntime fp32"] == "export failed (RuntimeError: no exporter for this)"
