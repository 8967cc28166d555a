"""CLI smoke tests of the compression commands on a tiny model and a slice of real MNIST."""
import json

import pytest
from typer.testing import CliRunner

from weightzip.cli import app

import os

if not os.environ.get("WEIGHTZIP_DATA"):
    pytest.skip("real datasets not available: set WEIGHTZIP_DATA", allow_module_level=True)

RECIPE = """
name: tiny-cli
stages:
  - method: prune_magnitude
    sparsity: 0.8
  - method: finetune
    train: {epochs: 1, lr: 0.001, optimizer: adam, max_steps_per_epoch: 3}
  - method: kmeans_share
    bits: 3
"""


@pytest.fixture(scope="module")
def compressed(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    r = CliRunner()
    res = r.invoke(app, ["train", "lenet300_100_tiny", "--data", "mnist", "--subset", "512", "--epochs", "1",
                         "--max-steps", "4", "--no-progress", "-o", str(d / "base.pt")])
    assert res.exit_code == 0, res.output
    (d / "r.yaml").write_text(RECIPE)
    res = r.invoke(app, ["compress", str(d / "base.pt"), "-r", str(d / "r.yaml"), "-o", str(d / "m.wz"),
                         "--plot", str(d / "m.png"), "--json"])
    assert res.exit_code == 0, res.output
    return d, json.loads(res.stdout[res.stdout.index("{"):])


def test_compress_reports_file_ratio_and_from_file_accuracy(compressed):
    d, out = compressed
    assert (d / "m.wz").is_file() and (d / "m.png").is_file()
    assert out["file_bytes"] == (d / "m.wz").stat().st_size
    assert out["file_ratio"] == pytest.approx(out["baseline_bytes"] / out["file_bytes"])
    # accuracy measured from the file equals that of the in-memory compressed model
    assert out["from_file_test"]["accuracy"] == pytest.approx(out["compressed_test"]["accuracy"], abs=1e-9)


def test_inspect_eval_bench_export(compressed):
    d, _ = compressed
    r = CliRunner()
    res = r.invoke(app, ["inspect", str(d / "m.wz")])
    assert res.exit_code == 0 and "file ratio" in res.output and "layers.0.weight" in res.output
    res = r.invoke(app, ["eval", str(d / "m.wz"), "--data", "mnist", "--json"])
    assert res.exit_code == 0, res.output
    assert 0.0 <= json.loads(res.stdout)["accuracy"] <= 1.0
    res = r.invoke(app, ["bench", str(d / "m.wz"), "-b", "1", "--repeat", "2", "--number", "3"])
    assert res.exit_code == 0, res.output
    res = r.invoke(app, ["export", str(d / "m.wz"), "--to", "safetensors", "-o", str(d / "m.safetensors")])
    assert res.exit_code == 0, res.output
    from safetensors.torch import load_file

    from weightzip.export import load_dense

    stored = load_file(str(d / "m.safetensors"))  # compressed by default: named parts
    assert "layers.0.weight::codes" in stored and "layers.0.weight" in load_dense(d / "m.safetensors")
    res = r.invoke(app, ["export", str(d / "m.wz"), "--to", "safetensors", "--dense", "-o", str(d / "d.safetensors")])
    assert res.exit_code == 0, res.output
    assert "layers.0.weight" in load_file(str(d / "d.safetensors"))
    res = r.invoke(app, ["report", str(d), "-o", str(d / "rep")])
    assert res.exit_code == 0 and (d / "rep" / "report.md").is_file()


@pytest.mark.parametrize("args,msg", [
    (["inspect", "nope.wz"], "not found"),
    (["compress", "nope_model", "-r", "{recipe}", "-o", "x.wz"], "unknown model"),
    (["compress", "lenet5", "-r", "no-such.yaml", "-o", "x.wz"], "not found"),
    (["compress", "lenet5", "-r", "{bad_recipe}", "-o", "x.wz"], "stage 0"),
])
def test_bad_input_gives_one_line_error(args, msg, tmp_path):
    (tmp_path / "r.yaml").write_text(RECIPE)
    (tmp_path / "bad.yaml").write_text("stages:\n  - method: prune_magnitude\n    sparsity: 2.0\n")
    args = [a.format(recipe=tmp_path / "r.yaml", bad_recipe=tmp_path / "bad.yaml") for a in args]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2
    assert msg in res.output and "Traceback" not in res.output


def test_corrupt_wz_gives_format_error(compressed, tmp_path):
    d, _ = compressed
    data = bytearray((d / "m.wz").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "bad.wz").write_bytes(bytes(data))
    res = CliRunner().invoke(app, ["inspect", str(tmp_path / "bad.wz")])
    assert res.exit_code == 2 and "error:" in res.output and "Traceback" not in res.output
