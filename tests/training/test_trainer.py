"""Trainer: determinism, exact resume, callback order, LM training, losses, checkpoints."""
from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch
from pydantic import ValidationError
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from weightzip.errors import InvalidModelError, WeightzipError
from weightzip.training.checkpoint import load_checkpoint, rng_state, set_rng_state
from weightzip.training.config import TrainConfig, seed_everything
from weightzip.training.evaluate import evaluate, squared_hinge_loss
from weightzip.training.trainer import Callback, Trainer

torch.set_num_threads(1)


# ---- tiny models and data -------------------------------------------------------------------
def make_mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    # dropout makes the run depend on the RNG stream: resume must restore it exactly
    return nn.Sequential(nn.Flatten(), nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 3))


def make_loaders(n: int = 96, batch_size: int = 16, seed: int = 0, val: bool = True) -> SimpleNamespace:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n + 48, 8, generator=g)
    w = torch.randn(8, 3, generator=g)
    y = (x @ w).argmax(dim=1)  # a learnable rule
    train = DataLoader(TensorDataset(x[:n], y[:n]), batch_size=batch_size, shuffle=True)
    vl = DataLoader(TensorDataset(x[n:n + 24], y[n:n + 24]), batch_size=32) if val else None
    test = DataLoader(TensorDataset(x[n + 24:], y[n + 24:]), batch_size=32)
    return SimpleNamespace(train=train, val=vl, test=test, task="classify", info={"num_classes": 3})


class TinyLM(nn.Module):
    """Embedding -> LSTM -> Linear; forward(x [T, B], hidden) -> (logits [T, B, V], hidden)."""

    def __init__(self, vocab: int = 7, hidden: int = 16):
        super().__init__()
        self.emb = nn.Embedding(vocab, hidden)
        self.rnn = nn.LSTM(hidden, hidden)
        self.out = nn.Linear(hidden, vocab)

    def forward(self, x, hidden=None):
        h, hidden = self.rnn(self.emb(x), hidden)  # (T x B x H)
        return self.out(h), hidden


def make_lm_loaders(vocab: int = 7, batch: int = 4, bptt: int = 8, length: int = 800) -> SimpleNamespace:
    # a deterministic, learnable stream: token_{i+1} = (token_i + 1) mod vocab, with noise
    g = torch.Generator().manual_seed(0)
    stream = torch.arange(length) % vocab
    noise = torch.rand(length, generator=g) < 0.1
    stream = torch.where(noise, torch.randint(0, vocab, (length,), generator=g), stream)
    data = stream[: (length // batch) * batch].view(batch, -1).t().contiguous()  # (N x B)
    windows = []
    for i in range(0, data.shape[0] - 1 - bptt, bptt):
        windows.append((data[i:i + bptt], data[i + 1:i + 1 + bptt]))  # (bptt x B) each
    return SimpleNamespace(train=windows, val=windows[:5], test=windows[5:10], task="lm", info={"vocab_size": vocab})


def weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_weights(a: nn.Module, b: nn.Module) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


CFG = dict(epochs=3, lr=0.05, optimizer="sgd", momentum=0.9, schedule="cosine", batch_size=16,
           seed=3, device="cpu", progress=False)


# ---- config ---------------------------------------------------------------------------------
def test_config_validates():
    with pytest.raises(ValidationError):
        TrainConfig(epochs=0)
    with pytest.raises(ValidationError):
        TrainConfig(lr=-1.0)
    with pytest.raises(ValidationError):
        TrainConfig(optimizer="rmsprop")
    with pytest.raises(ValidationError):
        TrainConfig(epochz=3)  # extra="forbid": a typo is an error
    with pytest.raises(ValidationError, match="milestones"):
        TrainConfig(schedule="multistep")
    cfg = TrainConfig(schedule="multistep", milestones=[25, 15])
    assert cfg.milestones == [15, 25]
    assert TrainConfig(**cfg.model_dump()) == cfg


def test_bf16_precision_runs_forward_under_autocast_and_keeps_fp32_state():
    """precision='bf16': the forward sees bfloat16 activations, weights / optimizer state stay fp32,
    and training still learns; fp16 (no loss scaling here) is refused."""
    with pytest.raises(ValidationError):
        TrainConfig(precision="fp16")
    seen: list[torch.dtype] = []
    model = make_mlp()
    model[1].register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    loaders = make_loaders()
    before = evaluate(model, loaders.train, "classify")
    out = Trainer(model, {**CFG, "precision": "bf16", "epochs": 6}, loaders).fit()
    after = evaluate(model, loaders.train, "classify")
    assert torch.bfloat16 in seen                  # training steps ran in bf16 ...
    assert seen[-1] == torch.float32               # ... evaluation (the last forward) in fp32
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert after["accuracy"] > before["accuracy"] and after["accuracy"] > 0.7
    assert out["epochs"] == 6


# ---- determinism and resume -----------------------------------------------------------------
def test_same_seed_same_weights():
    runs = []
    for _ in range(2):
        model = make_mlp()
        Trainer(model, TrainConfig(**CFG), make_loaders()).fit()
        runs.append(model)
    assert_same_weights(*runs)
    other = make_mlp()
    Trainer(other, TrainConfig(**{**CFG, "seed": 4}), make_loaders()).fit()
    assert not torch.equal(weights(runs[0])["1.weight"], weights(other)["1.weight"])


class Interrupt(Callback):
    """Stops the run at the start of epoch ``at`` (after the previous epoch's checkpoint)."""

    def __init__(self, at: int):
        self.at = at

    def on_epoch_begin(self, trainer, epoch):
        if epoch == self.at:
            raise KeyboardInterrupt


class CountSteps(Callback):
    """A stateful callback: its state must survive the resume."""

    def __init__(self):
        self.steps = 0
        self.grad_sum = torch.zeros(())

    def on_step(self, trainer, step):
        self.steps += 1
        self.grad_sum += trainer.model[1].weight.grad.abs().sum()

    def state_dict(self):
        return {"steps": self.steps, "grad_sum": self.grad_sum.clone()}

    def load_state_dict(self, d):
        self.steps = d["steps"]
        self.grad_sum = d["grad_sum"].clone()


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_resume_gives_identical_weights(tmp_path, optimizer):
    cfg = TrainConfig(**{**CFG, "optimizer": optimizer, "lr": 0.01 if optimizer == "adam" else 0.05})
    straight, cb_straight = make_mlp(), CountSteps()
    out = Trainer(straight, cfg, make_loaders(), callbacks=[cb_straight]).fit()

    ck = tmp_path / "run.pt"
    interrupted, cb1 = make_mlp(), CountSteps()
    with pytest.raises(KeyboardInterrupt):
        Trainer(interrupted, cfg, make_loaders(), callbacks=[cb1, Interrupt(2)], checkpoint=ck).fit()
    assert load_checkpoint(ck)["epoch"] == 2

    torch.manual_seed(12345)  # a different global RNG state: resume must restore its own
    resumed, cb2 = make_mlp(seed=99), CountSteps()  # different init: resume must overwrite it
    out2 = Trainer(resumed, cfg, make_loaders(), callbacks=[cb2, Callback()], checkpoint=ck).fit(resume=True)
    assert_same_weights(straight, resumed)
    assert cb2.steps == cb_straight.steps == 3 * 6
    assert torch.equal(cb2.grad_sum, cb_straight.grad_sum)
    assert [h["train_loss"] for h in out2["history"]] == [h["train_loss"] for h in out["history"]]
    assert out2["test"] == out["test"]


def test_resume_after_shorter_run_constant_schedule(tmp_path):
    """2 epochs, then the same run extended to 3 with resume == 3 epochs straight."""
    base = {**CFG, "schedule": "constant"}
    straight = make_mlp()
    Trainer(straight, TrainConfig(**base), make_loaders()).fit()
    ck = tmp_path / "run.pt"
    part = make_mlp()
    Trainer(part, TrainConfig(**{**base, "epochs": 2}), make_loaders(), checkpoint=ck).fit()
    resumed = make_mlp(seed=5)
    Trainer(resumed, TrainConfig(**base), make_loaders(), checkpoint=ck).fit(resume=True)
    assert_same_weights(straight, resumed)


def test_resume_without_checkpoint_starts_fresh(tmp_path):
    a, b = make_mlp(), make_mlp()
    Trainer(a, TrainConfig(**CFG), make_loaders()).fit()
    out = Trainer(b, TrainConfig(**CFG), make_loaders(), checkpoint=tmp_path / "new.pt").fit(resume=True)
    assert_same_weights(a, b)
    assert out["epochs"] == 3


def test_finished_run_resume_is_a_no_op(tmp_path):
    ck = tmp_path / "run.pt"
    model = make_mlp()
    Trainer(model, TrainConfig(**CFG), make_loaders(), checkpoint=ck).fit()
    before = weights(model)
    again = make_mlp(seed=7)
    out = Trainer(again, TrainConfig(**CFG), make_loaders(), checkpoint=ck).fit(resume=True)
    assert all(torch.equal(before[k], v) for k, v in weights(again).items())
    assert len(out["history"]) == 3 and out["test"] is not None


# ---- callbacks --------------------------------------------------------------------------------
class Recorder(Callback):
    def __init__(self):
        self.events = []

    def on_train_begin(self, trainer):
        self.events.append("train_begin")

    def on_epoch_begin(self, trainer, epoch):
        self.events.append(("epoch_begin", epoch))

    def on_step(self, trainer, step):
        p = trainer.model[1].weight
        assert p.grad is not None and p.grad.abs().sum() > 0
        self.before = p.detach().clone()
        self.events.append(("step", step))

    def on_after_step(self, trainer, step):
        p = trainer.model[1].weight
        assert not torch.equal(p.detach(), self.before), "on_step must run before optimizer.step"
        self.events.append(("after_step", step))

    def on_epoch_end(self, trainer, epoch, metrics):
        assert {"train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr"} <= metrics.keys()
        self.events.append(("epoch_end", epoch))

    def on_train_end(self, trainer):
        self.events.append("train_end")


def test_callback_order_and_counts():
    rec = Recorder()
    cfg = TrainConfig(**{**CFG, "epochs": 2, "max_steps_per_epoch": 4})
    out = Trainer(make_mlp(), cfg, make_loaders(), callbacks=[rec]).fit()
    expected = ["train_begin"]
    step = 0
    for epoch in range(2):
        expected.append(("epoch_begin", epoch))
        for _ in range(4):
            expected += [("step", step), ("after_step", step)]
            step += 1
        expected.append(("epoch_end", epoch))
    expected.append("train_end")
    assert rec.events == expected
    assert out["global_step"] == 8


def test_user_optimizer_and_parametrized_model():
    """Parameters are collected at construction, after a parametrization moved them."""
    from torch.nn.utils import parametrize

    class Half(nn.Module):
        def forward(self, w):
            return w * 0.5

    model = make_mlp()
    parametrize.register_parametrization(model[1], "weight", Half())
    orig = model[1].parametrizations.weight.original
    before = orig.detach().clone()
    Trainer(model, TrainConfig(**{**CFG, "epochs": 1}), make_loaders()).fit()
    assert not torch.equal(before, orig.detach())  # the original tensor was trained

    model = make_mlp()
    opt = torch.optim.SGD([{"params": model[1].parameters(), "lr": 0.2},
                           {"params": model[4].parameters(), "lr": 0.0}])
    frozen = model[4].weight.detach().clone()
    seen = []

    class LR(Callback):
        def on_step(self, trainer, step):
            seen.append([g["lr"] for g in trainer.optimizer.param_groups])

    cfg = TrainConfig(**{**CFG, "epochs": 2, "lr": 0.1, "schedule": "step", "step_size": 1, "gamma": 0.5})
    tr = Trainer(model, cfg, make_loaders(), optimizer=opt, callbacks=[LR()])
    tr.fit()
    assert tr.optimizer is opt
    assert torch.equal(frozen, model[4].weight.detach())
    assert seen[0] == [0.2, 0.0] and seen[-1] == [pytest.approx(0.1), 0.0]  # group base x schedule


# ---- losses, tasks, evaluation ------------------------------------------------------------
def test_squared_hinge_loss_formula():
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.0, 0.3, 0.9]])
    y = torch.tensor([0, 2])
    t = torch.tensor([[1.0, -1, -1], [-1, -1, 1]])
    ref = sum(max(0.0, 1 - t[i, j].item() * logits[i, j].item()) ** 2 for i in range(2) for j in range(3)) / 6
    assert squared_hinge_loss(logits, y).item() == pytest.approx(ref)
    # a margin >= 1 on every output costs nothing
    assert squared_hinge_loss(torch.tensor([[1.5, -2.0]]), torch.tensor([0])).item() == 0.0


def test_squared_hinge_training_learns():
    cfg = TrainConfig(**{**CFG, "loss": "squared_hinge", "optimizer": "adam", "lr": 0.01,
                         "schedule": "constant", "epochs": 8})
    model = make_mlp()
    loaders = make_loaders()
    before = evaluate(model, loaders.train, "classify", loss="squared_hinge")
    out = Trainer(model, cfg, loaders).fit()
    after = evaluate(model, loaders.train, "classify", loss="squared_hinge")
    assert after["loss"] < 0.5 * before["loss"]
    assert after["accuracy"] > 0.8
    assert out["history"][-1]["train_loss"] < out["history"][0]["train_loss"]


def test_lm_training_decreases_loss_and_reports_perplexity():
    loaders = make_lm_loaders()
    torch.manual_seed(0)
    model = TinyLM()
    before = evaluate(model, loaders.val, "lm")
    assert before["perplexity"] == pytest.approx(math.exp(before["loss"]))
    cfg = TrainConfig(epochs=3, lr=0.01, optimizer="adam", grad_clip=0.5, schedule="plateau", gamma=0.25,
                      device="cpu", progress=False)
    out = Trainer(model, cfg, loaders).fit()
    after = evaluate(model, loaders.val, "lm")
    assert after["loss"] < before["loss"] - 0.5
    assert {"train_perplexity", "val_perplexity"} <= out["history"][0].keys()
    assert out["test"]["perplexity"] < before["perplexity"]


def test_lm_hidden_state_is_carried_and_detached():
    loaders = make_lm_loaders()
    model = TinyLM()
    seen = []
    real_forward = model.forward

    def spy(x, hidden=None):
        seen.append(hidden)
        return real_forward(x, hidden)

    model.forward = spy
    Trainer(model, TrainConfig(epochs=1, max_steps_per_epoch=3, device="cpu", progress=False,
                               test_at_end=False), SimpleNamespace(train=loaders.train, val=None, test=None,
                                                                     task="lm")).fit()
    assert seen[0] is None  # fresh state at the start of the epoch
    assert all(h is not None and h[0].grad_fn is None for h in seen[1:3])  # carried, detached


def test_lm_windows_split_by_bptt():
    loaders = make_lm_loaders(bptt=8)
    steps = []

    class Shapes(Callback):
        def on_step(self, trainer, step):
            steps.append(tuple(trainer.batch[0].shape))

    Trainer(TinyLM(), TrainConfig(epochs=1, bptt=3, max_steps_per_epoch=4, device="cpu", progress=False,
                                  test_at_end=False),
            SimpleNamespace(train=loaders.train, val=None, test=None, task="lm"), callbacks=[Shapes()]).fit()
    assert steps == [(3, 4), (3, 4), (2, 4), (3, 4)]


def test_evaluate_restores_mode_and_counts_examples():
    model = make_mlp()
    model.train()
    loaders = make_loaders()
    m = evaluate(model, loaders.test, "classify")
    assert model.training
    x, y = loaders.test.dataset.tensors
    model.eval()
    with torch.no_grad():
        logits = model(x)
    assert m["accuracy"] == pytest.approx((logits.argmax(1) == y).float().mean().item())
    assert m["loss"] == pytest.approx(nn.functional.cross_entropy(logits, y).item(), rel=1e-5)


def test_divergence_is_reported():
    cfg = TrainConfig(**{**CFG, "lr": 1e30, "schedule": "constant", "momentum": 0.0})
    with pytest.raises(InvalidModelError, match="lower the learning rate"):
        Trainer(make_mlp(), cfg, make_loaders()).fit()


# ---- checkpoints and records ---------------------------------------------------------------
def test_checkpoint_contents_load_weights_only(tmp_path):
    ck_path, rec_path = tmp_path / "ck" / "run.pt", tmp_path / "run.json"
    model = make_mlp()
    model.wz_config = {"name": "tiny", "kwargs": {"hidden": 16}}
    cfg = TrainConfig(**{**CFG, "epochs": 2, "schedule": "plateau"})
    Trainer(model, cfg, make_loaders(), callbacks=[CountSteps()], checkpoint=ck_path, record=rec_path,
            meta={"data": "synthetic"}).fit()
    ck = torch.load(ck_path, weights_only=True)  # no pickled code inside
    assert {"model", "model_config", "parametrizations", "optimizer", "schedule", "epoch", "global_step",
            "rng", "callbacks", "train_config", "metrics"} <= ck.keys()
    assert ck["epoch"] == 2 and ck["global_step"] == 12
    assert ck["model_config"] == {"name": "tiny", "kwargs": {"hidden": 16}}
    assert ck["train_config"]["schedule"] == "plateau" and "plateau" in ck["schedule"]
    assert ck["callbacks"][0]["steps"] == 12
    assert ck["meta"] == {"data": "synthetic"}
    assert list(tmp_path.joinpath("ck").iterdir()) == [ck_path]  # no temp files left behind
    rec = json.loads(rec_path.read_text())
    assert rec["status"] == "done" and len(rec["metrics"]) == 2 and len(rec["epoch_time_s"]) == 2
    assert {"platform", "cpu_count", "torch", "device"} <= rec["machine"].keys()
    assert rec["total_time_s"] > 0 and rec["test"]["accuracy"] >= 0


def test_load_checkpoint_errors(tmp_path):
    with pytest.raises(WeightzipError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightzipError, match="cannot read checkpoint"):
        load_checkpoint(bad)


def test_rng_state_round_trip():
    import random

    import numpy as np

    seed_everything(1)
    state = rng_state()
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    set_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == a
