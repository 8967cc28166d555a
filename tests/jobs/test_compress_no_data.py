"""``weightzip compress FILE.wz -r RECIPE -o OUT.wz`` without ``--data``: post-training stages run,
the file is written, evaluation is reported as skipped; a fine-tune is refused naming its stage."""
from __future__ import annotations

import json

import torch
from torch import nn
from typer.testing import CliRunner

import weightzip as wz
from weightzip.cli import app
from weightzip.jobs.compress import NO_TEST, compress_run

POST_TRAINING = """
name: ptq-no-data
stages:
  - method: prune_magnitude
    sparsity: 0.5
  - method: kmeans_share
    bits: 3
"""

WITH_FINETUNE = POST_TRAINING + """  - method: finetune
    train: {epochs: 1}
"""


class UserNet(nn.Module):  # a model outside the zoo: the .wz carries its graph
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(6, 16), nn.Linear(16, 3)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def _source(tmp_path):
    torch.manual_seed(0)
    model = UserNet()
    wz.save(model, tmp_path / "user.wz", example_inputs=(torch.randn(2, 6),))
    (tmp_path / "ptq.yaml").write_text(POST_TRAINING)
    (tmp_path / "ft.yaml").write_text(WITH_FINETUNE)
    return model


def test_compress_run_without_data_writes_the_file_and_skips_metrics(tmp_path):
    model = _source(tmp_path)
    out = compress_run(str(tmp_path / "user.wz"), tmp_path / "ptq.yaml", tmp_path / "out.wz", log=lambda *_: None)
    assert out["data"] is None
    assert out["baseline_test"] == out["compressed_test"] == out["from_file_test"] == NO_TEST
    assert out["pipeline"]["baseline"] == {"val": {"skipped": "no validation data"}}
    loaded = wz.load(tmp_path / "out.wz")  # rebuilt from the graph carried over
    x = torch.randn(4, 6)
    assert loaded(x).shape == (4, 3)
    w = loaded.state_dict()["fc1.weight"]
    assert float((w == 0).float().mean()) >= 0.5 and len(torch.unique(w)) <= 2 ** 3 + 1
    assert not torch.equal(w, model.fc1.weight)


def test_cli_compress_without_data(tmp_path):
    _source(tmp_path)
    r = CliRunner()
    res = r.invoke(app, ["compress", str(tmp_path / "user.wz"), "-r", str(tmp_path / "ptq.yaml"),
                         "-o", str(tmp_path / "out.wz")])
    assert res.exit_code == 0, res.output
    assert "evaluation skipped (no test data)" in res.output and "--data" in res.output
    assert (tmp_path / "out.wz").is_file()
    res = r.invoke(app, ["compress", str(tmp_path / "user.wz"), "-r", str(tmp_path / "ptq.yaml"),
                         "-o", str(tmp_path / "out2.wz"), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout[res.stdout.index("{"):])["from_file_test"] == NO_TEST


def test_cli_compress_refuses_a_fine_tune_without_data(tmp_path):
    _source(tmp_path)
    res = CliRunner().invoke(app, ["compress", str(tmp_path / "user.wz"), "-r", str(tmp_path / "ft.yaml"),
                                   "-o", str(tmp_path / "out.wz")])
    assert res.exit_code != 0
    text = " ".join(res.output.split())
    assert "stage 2 (finetune) needs training data" in text and "--data" in text
    assert not (tmp_path / "out.wz").exists()
