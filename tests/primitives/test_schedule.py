"""Schedules are pure functions of the position in training: values at known points."""
from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from weightzip.primitives.schedule import (
    cosine_lr,
    lr_at,
    multistep_lr,
    plateau_init,
    plateau_update,
    step_lr,
    warmup_factor,
)


def test_constant():
    assert lr_at(0, {"lr": 0.3}) == 0.3
    assert lr_at(17.5, {"lr": 0.3, "schedule": "constant"}) == 0.3


def test_step():
    cfg = {"lr": 1.0, "schedule": "step", "step_size": 2, "gamma": 0.5}
    assert [lr_at(t, cfg) for t in (0, 1.99, 2, 3.5, 4, 6)] == [1.0, 1.0, 0.5, 0.5, 0.25, 0.125]


def test_multistep_matches_torch_per_epoch():
    import torch

    cfg = {"lr": 0.01, "schedule": "multistep", "milestones": [15, 25], "gamma": 0.1}
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.01)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[15, 25], gamma=0.1)
    for epoch in range(30):
        assert lr_at(epoch, cfg) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-12)
        assert lr_at(epoch + 0.99, cfg) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-12)
        opt.step()
        sched.step()


def test_cosine_values():
    cfg = {"lr": 0.1, "schedule": "cosine", "epochs": 10}
    assert lr_at(0, cfg) == pytest.approx(0.1)
    assert lr_at(5, cfg) == pytest.approx(0.05)
    assert lr_at(10, cfg) == pytest.approx(0.0)
    assert lr_at(2.5, cfg) == pytest.approx(0.05 * (1 + math.cos(math.pi / 4)))
    assert cosine_lr(12, 0.1, 10, min_lr=0.001) == pytest.approx(0.001)


def test_warmup_then_cosine():
    cfg = {"lr": 1.0, "schedule": "cosine", "epochs": 12, "warmup_epochs": 2, "warmup_start_factor": 0.1}
    assert lr_at(0, cfg) == pytest.approx(0.1)
    assert lr_at(1, cfg) == pytest.approx(0.55)
    assert lr_at(2, cfg) == pytest.approx(1.0)  # the cosine starts after the warmup
    assert lr_at(7, cfg) == pytest.approx(0.5)
    assert warmup_factor(5, 0) == 1.0


def test_config_object_and_unknown_schedule():
    from weightzip.training.config import TrainConfig

    cfg = TrainConfig(lr=0.2, schedule="multistep", milestones=[1], gamma=0.5)
    assert lr_at(0.5, cfg) == 0.2 and lr_at(1.0, cfg) == 0.1
    with pytest.raises(ValueError, match="valid schedules"):
        lr_at(0, {"lr": 1.0, "schedule": "exp"})


def test_plateau_divides_when_no_improvement():
    s = plateau_init()
    s = plateau_update(s, 5.0, gamma=0.25)
    assert s["scale"] == 1.0 and s["best"] == 5.0
    s = plateau_update(s, 4.0, gamma=0.25)
    assert s["scale"] == 1.0
    s = plateau_update(s, 4.1, gamma=0.25)  # worse: divide by 4
    assert s["scale"] == 0.25 and s["best"] == 4.0
    s = plateau_update(s, 4.0, gamma=0.25)  # equal is not an improvement
    assert s["scale"] == 0.0625
    assert lr_at(3, {"lr": 20.0, "schedule": "plateau"}, plateau_scale=s["scale"]) == 1.25
    # patience: decay only after `patience` + 1 bad epochs in a row
    p = plateau_update(plateau_update({"scale": 1.0, "best": 1.0}, 2.0, 0.5, patience=1), 2.0, 0.5, patience=1)
    assert p["scale"] == 0.5


@given(t=st.floats(0, 100), lr=st.floats(1e-4, 10), gamma=st.floats(0.01, 1.0))
def test_decay_schedules_bounded_and_monotone(t, lr, gamma):
    for f in (lambda u: step_lr(u, lr, 3, gamma), lambda u: multistep_lr(u, lr, [5, 30, 60], gamma),
              lambda u: cosine_lr(u, lr, 100)):
        a, b = f(t), f(t + 0.5)
        assert 0 <= b <= a <= lr * (1 + 1e-12)
