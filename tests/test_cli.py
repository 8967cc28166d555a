"""CLI smoke tests (typer's CliRunner): list, one-line errors, train + eval on tiny runs."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

from weightzip.cli import app
from weightzip.core.registry import list_models

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


def test_help_explains_every_command_and_option():
    res = invoke("--help")
    assert res.exit_code == 0
    for cmd in ("train", "eval", "list"):
        assert cmd in res.output
    res = invoke("train", "--help")
    assert res.exit_code == 0
    for opt in ("--data", "--output", "--epochs", "--lr", "--batch-size", "--optimizer", "--seed", "--device",
                "--schedule", "--milestones", "--val-size", "--subset", "--augment", "--model-arg", "--resume"):
        assert opt in res.output, opt


def test_list_models_and_pattern():
    res = invoke("list", "models")
    assert res.exit_code == 0
    assert res.output.split() == list_models()
    res = invoke("list", "models", "lenet*")
    assert res.exit_code == 0 and set(res.output.split()) == set(list_models("lenet*"))
    res = invoke("list", "datasets")
    assert res.exit_code == 0 and "mnist" in res.output.split()


def _one_line_error(res) -> str:
    assert res.exit_code == 2, res.output
    text = res.stderr if res.stderr else res.output
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert len(lines) == 1, text
    assert lines[0].startswith("error: ") and "Traceback" not in text
    return lines[0]


def test_unknown_model_is_one_line_with_valid_names(tmp_path):
    line = _one_line_error(invoke("train", "lenet6", "--data", "mnist", "-o", str(tmp_path / "x.pt")))
    assert "lenet6" in line and "lenet5" in line and "lenet300_100" in line


def test_bad_arguments_are_one_line_errors(tmp_path):
    _one_line_error(invoke("train", "lenet5"))  # missing --data / -o
    _one_line_error(invoke("list", "widgets"))
    line = _one_line_error(invoke("train", "lenet5_tiny", "--data", "mnist", "-o", str(tmp_path / "x.pt"),
                                  "--train-arg", "lr=-1"))
    assert "lr" in line
    line = _one_line_error(invoke("train", "lenet5_tiny", "--data", "nosuchdata", "-o", str(tmp_path / "x.pt")))
    assert "mnist" in line  # lists the valid datasets
    line = _one_line_error(invoke("eval", str(tmp_path / "missing.pt")))
    assert "not found" in line
    _one_line_error(invoke("train", "lenet5_tiny", "--data", "mnist", "-o", str(tmp_path / "x.pt"),
                           "--model-arg", "novalue"))


def test_train_then_eval_tiny(tmp_path, data_root):
    out = tmp_path / "run.pt"
    res = invoke("train", "lenet5_tiny", "--data", "mnist", "--epochs", "1", "--subset", "256",
                 "--val-size", "500", "--max-steps", "3", "--device", "cpu", "--no-progress",
                 "--model-arg", "hidden=16", "--milestones", "1", "--schedule", "multistep",
                 "-o", str(out))
    assert res.exit_code == 0, res.output
    ck = torch.load(out, weights_only=True)
    assert ck["model_config"]["name"] == "lenet5_tiny"
    assert ck["model_config"]["kwargs"]["hidden"] == 16
    assert ck["model_config"]["kwargs"]["num_classes"] == 10  # from the dataset info
    assert ck["train_config"]["max_steps_per_epoch"] == 3 and ck["global_step"] == 2  # 256 / 128
    rec = json.loads(out.with_suffix(".json").read_text())
    assert rec["status"] == "done" and rec["meta"]["data"] == "mnist"

    res = invoke("eval", str(out), "--json")
    assert res.exit_code == 0, res.output
    metrics = json.loads(res.stdout)
    assert metrics["data"] == "mnist" and metrics["split"] == "test"
    assert metrics["accuracy"] == pytest.approx(ck["test"]["accuracy"])

    res = invoke("eval", str(out), "--data", "mnist", "--split", "val", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["accuracy"] == pytest.approx(ck["metrics"][-1]["val_accuracy"])

    # resume a finished run: nothing to do, same checkpoint
    res = invoke("train", "lenet5_tiny", "--data", "mnist", "--epochs", "1", "--subset", "256",
                 "--val-size", "500", "--max-steps", "3", "--device", "cpu", "--no-progress",
                 "--model-arg", "hidden=16", "--milestones", "1", "--schedule", "multistep",
                 "-o", str(out), "--resume")
    assert res.exit_code == 0, res.output
    assert torch.load(out, weights_only=True)["global_step"] == 2


def test_train_lm_tiny(tmp_path, data_root):
    out = tmp_path / "lm.pt"
    res = invoke("train", "lstm_lm_tiny", "--data", "ptb", "--epochs", "1", "--subset", "2000",
                 "--max-steps", "2", "--device", "cpu", "--no-progress", "-o", str(out))
    assert res.exit_code == 0, res.output
    ck = torch.load(out, weights_only=True)
    assert ck["model_config"]["kwargs"]["vocab_size"] == 10000  # PTB word vocabulary from the data
    assert ck["train_config"]["grad_clip"] == 0.25 and ck["train_config"]["schedule"] == "plateau"
    assert ck["test"]["perplexity"] > 1


def test_python_dash_m_entry_point():
    res = subprocess.run([sys.executable, "-m", "weightzip", "list", "models", "lenet5*"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == list_models("lenet5*")


def test_explore_report_only_with_heartbeat(tmp_path, monkeypatch):
    """`explore -n 0` opens (creates) the study and writes the report without training; `--heartbeat`
    reaches the storage."""
    import weightzip.jobs.explore as ex
    from tests.jobs.test_explore import TINY

    seen, storage = [], ex._storage
    monkeypatch.setattr(ex, "_storage", lambda url, hb, grace, **kw: seen.append(hb) or storage(url, hb, grace, **kw))
    (tmp_path / "space.yaml").write_text(TINY)
    res = CliRunner().invoke(app, ["explore", "--space", str(tmp_path / "space.yaml"), "-n", "0", "--heartbeat", "2",
                                   "--storage", f"sqlite:///{tmp_path / 'study.db'}", "-o", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    assert "0 designs" in res.output and (tmp_path / "out" / "pareto.md").is_file() and seen == [2]
    res = CliRunner().invoke(app, ["explore", "--space", str(tmp_path / "space.yaml"), "--heartbeat", "0"])
    assert res.exit_code == 2
