"""Run glue: recipes, key=value parsing, cached baselines (reuse, resume, retrain)."""
from __future__ import annotations

import pytest
import torch

from weightzip.errors import UnknownNameError, WeightzipError
from weightzip.jobs.runs import (
    baseline_path,
    default_data_for,
    ensure_baseline,
    evaluate_checkpoint,
    parse_key_values,
    recipe_for,
)
from weightzip.training.checkpoint import model_from_checkpoint
from weightzip.training.config import TrainConfig


def test_recipes_are_valid_train_configs():
    for model, data in [("lenet300_100", "mnist"), ("lenet5", "fashion_mnist"), ("mlp", "mnist"),
                        ("resnet20", "cifar10"), ("vgg_small", "cifar10"), ("lstm_lm", "ptb"),
                        ("lstm_lm", "ptb_char")]:
        rec = recipe_for(model, data)
        TrainConfig(**rec["train"])
    assert recipe_for("lstm_lm", "ptb")["train"]["lr"] == 20.0
    assert recipe_for("resnet20", "cifar10")["data"]["augment"] is True
    assert recipe_for("lenet5", "mnist")["data"].get("augment") is None
    assert default_data_for("lenet5") == "mnist" and default_data_for("resnet56") == "cifar10"
    assert default_data_for("lstm_lm") == "ptb"


def test_parse_key_values():
    assert parse_key_values(["hidden=[300, 100]", "width=0.5", "bn=true", "name=relu"]) == {
        "hidden": [300, 100], "width": 0.5, "bn": True, "name": "relu"}
    with pytest.raises(WeightzipError, match="key=value"):
        parse_key_values(["width"])


def test_baseline_path():
    assert baseline_path("resnet20", "cifar10").as_posix() == "runs/baselines/resnet20-cifar10.pt"
    assert baseline_path("resnet20", "cifar10", width=0.5, root="x").as_posix() == "x/resnet20-cifar10-w0.5.pt"


def test_ensure_baseline_reuses_resumes_and_retrains(tmp_path, data_root):
    kw = dict(root=tmp_path, device="cpu", train={"max_steps_per_epoch": 2},
              data_args={"subset": 256, "val_size": 300, "eval_subset": 300})
    path = ensure_baseline("lenet300_100_tiny", "mnist", epochs=1, **kw)
    assert path == tmp_path / "lenet300_100_tiny-mnist.pt"
    ck = torch.load(path, weights_only=True)
    assert ck["epoch"] == 1 and ck["test"] is not None
    stamp = path.stat().st_mtime_ns

    assert ensure_baseline("lenet300_100_tiny", "mnist", epochs=1, **kw) == path
    assert path.stat().st_mtime_ns == stamp  # cached: not retrained

    ensure_baseline("lenet300_100_tiny", "mnist", epochs=2, **kw)  # more epochs: resumed
    ck2 = torch.load(path, weights_only=True)
    assert ck2["epoch"] == 2 and ck2["global_step"] == 4
    assert ck2["metrics"][0] == ck["metrics"][0]  # the first epoch was kept, not redone

    ensure_baseline("lenet300_100_tiny", "mnist", epochs=1, **{**kw, "train": {"max_steps_per_epoch": 2,
                                                                               "lr": 0.01}})
    ck3 = torch.load(path, weights_only=True)
    assert ck3["epoch"] == 1 and ck3["train_config"]["lr"] == 0.01  # other settings: retrained

    model = model_from_checkpoint(path)
    m = evaluate_checkpoint(path, split="val")
    assert m["data"] == "mnist" and 0 <= m["accuracy"] <= 1
    assert sum(p.numel() for p in model.parameters()) > 0


def test_unknown_names_fail_before_loading_data(tmp_path):
    with pytest.raises(UnknownNameError, match="lenet300_100"):
        ensure_baseline("lenet301", "mnist", root=tmp_path)


def test_switching_optimizer_drops_sgd_only_recipe_settings():
    from weightzip.jobs.runs import _train_settings

    rec = recipe_for("lenet5", "mnist")["train"]
    assert rec["nesterov"] is True
    cfg = TrainConfig(**_train_settings(rec, {"optimizer": "adam", "lr": 1e-3}))
    assert cfg.optimizer == "adam" and cfg.nesterov is False
    assert TrainConfig(**_train_settings(rec, {"lr": 0.01})).nesterov is True
