"""Data-parallel training on 2 gloo processes on 127.0.0.1: identical weights, exact averaging,
every communication scheme, a compression recipe, and a clean failure when a worker dies."""
from __future__ import annotations

import os
import pickle
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from weightzip.training.distributed import estimate_step_bytes, run_local
from weightzip.training.distributed import launch
from weightzip.errors import WeightzipError

pytestmark = pytest.mark.distributed

SCHEMES = ["mbit:bits=2,clip=3,error_feedback=true", "mbit:bits=3", "fp32", "sign:error_feedback=true",
           "ternary:clip=3", "powersgd:powersgd_start_iter=2"]
N, D, C, B, STEPS, LR = 256, 20, 4, 16, 6, 0.1


@dataclass
class _Loaders:
    train: Any
    val: Any
    test: Any = None
    task: str = "classify"


def _data() -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, D, generator=g)
    y = (x[:, :C].argmax(1) + (x[:, C] > 1).long()) % C
    return TensorDataset(x, y)


def _loaders() -> _Loaders:
    ds = _data()
    train = DataLoader(ds, batch_size=B, shuffle=True, generator=torch.Generator().manual_seed(1))
    val = DataLoader(ds, batch_size=64)
    return _Loaders(train, val)


def _model() -> nn.Module:
    """330,208 parameters: DDP makes two buckets (its first one closes past 1 MiB)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(D, 1024), nn.ReLU(), nn.Linear(1024, 300), nn.ReLU(), nn.Linear(300, C))


def _flat(model: nn.Module) -> np.ndarray:
    return torch.cat([t.detach().reshape(-1).float() for t in model.state_dict().values()]).numpy()


def _train_cfg(**kw: Any) -> dict:
    return {"epochs": 1, "lr": LR, "optimizer": "sgd", "momentum": 0.0, "max_steps_per_epoch": STEPS,
            "progress": False, "test_at_end": False, "device": "cpu", **kw}


def _quiet(msg: str) -> None:
    pass


def _worker(rank: int, world: int, tmp: str) -> dict | None:
    """Phase 1: every scheme through the Trainer, then a compression recipe through
    weightzip.compress; each rank pickles its results. Phase 2: rank 1 dies during training;
    rank 0 must fail with a clear error (returned with the time it took)."""
    from weightzip.core import registry
    from weightzip.api import compress
    from weightzip.core.recipe import Recipe
    from weightzip.training.trainer import Trainer

    out: dict[str, Any] = {}
    for scheme in SCHEMES:
        launch.configure(scheme)
        model = _model()
        ck = os.path.join(tmp, f"run-{scheme.split(':')[0]}.pt")
        trainer = Trainer(model, _train_cfg(), _loaders(), checkpoint=ck, record=ck + ".json")
        fit = trainer.fit()
        out[scheme] = {"weights": _flat(model), "comm": fit["distributed"]["comm"],
                       "history": fit["history"], "module": type(trainer.train_module).__name__,
                       "steps_per_epoch": len(trainer.loaders.train)}
    launch.configure("mbit:bits=2,clip=3")
    import weightzip.methods  # noqa: F401  (registration)
    method = "loss_aware" if "loss_aware" in registry.list_methods() else "finetune"
    stage = {"method": method, "train": _train_cfg(optimizer="adam", lr=0.01)}
    if method == "loss_aware":
        stage["mode"] = "lat"
    model = _model()
    compress(model, Recipe.from_dict({"name": "ddp-test", "stages": [stage]}), loaders=_loaders(), log=_quiet)
    out["recipe"] = {"method": method, "weights": _flat(model)}
    with open(os.path.join(tmp, f"rank{rank}.pkl"), "wb") as f:
        pickle.dump(out, f)

    class Die:
        def on_after_step(self, trainer, step):
            if rank == 1 and step == 1:
                os._exit(3)  # a worker that crashes without a word

    t0 = time.perf_counter()
    try:
        with launch.comm_errors():
            Trainer(_model(), _train_cfg(max_steps_per_epoch=50, epochs=3), _loaders(), callbacks=[Die()]).fit()
    except WeightzipError as e:
        return {"error": str(e), "seconds": time.perf_counter() - t0}
    return {"error": None, "seconds": time.perf_counter() - t0}


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    t0 = time.perf_counter()
    res = run_local(_worker, 2, args=(str(tmp),), timeout_s=10, deadline_s=150, raise_errors=False)
    elapsed = time.perf_counter() - t0
    assert res[0]["ok"], res[0].get("traceback") or res[0]["error"]
    loaded = []
    for r in range(2):
        with open(tmp / f"rank{r}.pkl", "rb") as f:
            loaded.append(pickle.load(f))
    return {"tmp": tmp, "runs": loaded, "death": res[0]["result"], "dead": res[1], "elapsed": elapsed}


def _reference_fp32() -> np.ndarray:
    """Plain SGD on the mean of both ranks' batch gradients (what DDP with fp32 must compute)."""
    ds = _data()
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.0)
    iters = []
    for r in range(2):
        s = DistributedSampler(ds, num_replicas=2, rank=r, shuffle=True, seed=0)
        s.set_epoch(0)
        iters.append(iter(DataLoader(ds, batch_size=B, sampler=s)))
    for _ in range(STEPS):
        grads = []
        for it in iters:
            x, y = next(it)
            model.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            grads.append([p.grad.clone() for p in model.parameters()])
        for p, g0, g1 in zip(model.parameters(), *grads):
            p.grad = (g0 + g1) / 2
        opt.step()
    return _flat(model)


def test_two_processes_train_identically_with_every_scheme(two_workers):
    r0, r1 = two_workers["runs"]
    tmp_path = two_workers["tmp"]
    init = _flat(_model())
    shapes = [tuple(p.shape) for p in _model().parameters()]
    for scheme in SCHEMES:
        a, b = r0[scheme], r1[scheme]
        assert a["module"] == "DistributedDataParallel"
        assert a["steps_per_epoch"] == N // 2 // B  # each rank: half of the epoch
        np.testing.assert_array_equal(a["weights"], b["weights"], err_msg=scheme)  # bit-identical
        assert not np.allclose(a["weights"], init), scheme
        drop_time = lambda h: [{k: v for k, v in e.items() if k != "time_s"} for e in h]  # noqa: E731
        assert drop_time(a["history"]) == drop_time(b["history"])  # metrics summed over both ranks
        comm = a["comm"]
        assert comm["steps"] == STEPS
        if scheme.startswith("powersgd"):  # one bucket on gloo (its chained all-reduces need it)
            assert comm["buckets"] == STEPS
        else:  # several buckets in flight (DDP rebuilds them into 2 after the first step)
            assert comm["buckets"] > STEPS, scheme
        est = estimate_step_bytes(shapes, scheme, world_size=2)  # as one bucket: the same per tensor,
        if scheme.startswith("powersgd"):                          # up to a byte of padding per bucket
            # the first 2 steps are fp32 all-reduces, then P and Q
            assert comm["payload_bytes"] == 2 * est["fp32_payload"] + (STEPS - 2) * est["payload"]
        else:
            assert abs(comm["payload_bytes"] - STEPS * est["payload"]) <= STEPS, scheme
        assert comm["fp32_payload_bytes"] == STEPS * est["fp32_payload"]
        assert comm["wire_bytes"] == pytest.approx(comm["payload_bytes"])  # W = 2: both are one copy
    assert r0["mbit:bits=2,clip=3,error_feedback=true"]["comm"]["payload_ratio"] > 12
    # fp32 through the hook = the average of the two ranks' gradients, step by step
    np.testing.assert_allclose(r0["fp32"]["weights"], _reference_fp32(), rtol=0, atol=1e-6)
    # only rank 0 wrote the checkpoint and record
    assert (tmp_path / "run-fp32.pt").is_file() and (tmp_path / "run-fp32.pt.json").is_file()
    # a compression recipe trains data-parallel too (loss-aware weights once that method exists)
    np.testing.assert_array_equal(r0["recipe"]["weights"], r1["recipe"]["weights"])


def test_a_dead_worker_makes_the_other_fail_clearly_not_hang(two_workers):
    dead, death = two_workers["dead"], two_workers["death"]
    assert not dead["ok"] and "code 3" in dead["error"]
    assert death["error"] is not None, "the surviving worker should fail, not finish"
    assert "collective operation failed" in death["error"] and "another worker" in death["error"]
    assert death["seconds"] < 10  # noticed at once (the 10 s process-group timeout is for hung peers)


def test_shard_loader_partitions_every_kind_of_loader():
    from weightzip.data import LMBatches
    from weightzip.training.distributed.launch import ShardedLoaders, shard_loader

    ds = _data()
    loader = DataLoader(ds, batch_size=B, shuffle=True)
    seen = []
    for r in range(2):
        part = shard_loader(loader, r, 2, seed=3)
        part.sampler.set_epoch(1)  # the trainer calls set_epoch(epoch) on the sampler
        seen.append(torch.cat([x for x, _ in part]))
        assert len(part) == N // 2 // B
    both = torch.cat(seen)
    assert both.shape == ds.tensors[0].shape
    assert torch.equal(both[both[:, 0].argsort()], ds.tensors[0][ds.tensors[0][:, 0].argsort()])  # a partition

    tokens = torch.arange(1000)
    lm = LMBatches(tokens, batch_size=4, bptt=10)
    parts = [shard_loader(lm, r, 2) for r in range(2)]
    assert [p.tokens.tolist() for p in parts] == [list(range(500)), list(range(500, 1000))]
    assert len(parts[0]) == len(parts[1]) and parts[0].batch_size == 4

    plain = [(torch.full((2,), i), torch.zeros(2)) for i in range(7)]
    got = [[int(x[0]) for x, _ in shard_loader(plain, r, 3)] for r in range(3)]
    assert got == [[0, 3], [1, 4], [2, 5]]  # equal step counts: batch 6 is dropped

    wrapped = ShardedLoaders(_Loaders(loader, "val-loader"), 1, 2)
    assert wrapped.val == "val-loader" and wrapped.task == "classify" and len(wrapped.train) == N // 2 // B
