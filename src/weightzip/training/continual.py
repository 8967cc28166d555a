"""Continual learning of a sparse MLP by growing connections (Hou & Kwok, arXiv 1805.01891).

A sparse network learns a sequence of tasks. After the first task it is pruned to a budget of
connections; for every later task it gets the same number of new connections per task, placed

* ``pa`` - by **preferential attachment**: absent connection ``i -> j`` of a layer is drawn with
  probability proportional to ``(d_j + c)(d_i + c)`` (rule ``product``) or ``d_j + d_i + c``
  (rule ``sum``), ``d`` the current degree of the end units (:mod:`weightzip.primitives.growth`);
* ``random`` - uniformly among the absent connections (the control for the placement rule);

and in both the old connections are **kept frozen** (their gradients are masked to zero, so the
knowledge of earlier tasks is not overwritten) while only the new ones train on the new task.
The third arm, ``finetune``, is plain fine-tuning of the same sparse net: it gets the same
number of new connections per task (uniformly placed, so that every arm has EQUAL parameter
counts after every task) but nothing is frozen - every connection trains on each new task.

Everything here is [reconstructed]: Hou & Kwok propose internal preferential attachment to
explain how the topology evolves when a new task arrives; the growth procedure, the budgets and
the freezing below are this project's way of turning that into a learner, configurable in
:class:`ContinualConfig`:

* unit degree ``d`` (``degree``): ``"total"`` - the unit's degree in the whole network (its
  in-degree from the layer below plus its out-degree into the layer above); ``"layer"`` - only
  within the layer being grown (in-degree of ``j``, out-degree of ``i`` in this layer);
  degrees are those before the round of growth (all layers grow at once);
* offset ``c`` (``offset``, default 1): a unit without connections can still attract some;
* task 1: the dense net trains ``first_epochs`` on task 1, is pruned by magnitude to the
  per-layer ``density`` (default 8% / 9% / 26% kept for 784-300-100-10: Han et al. 2015's
  LeNet-300-100), then fine-tuned ``epochs`` with the masks fixed; every arm starts from this
  same net;
* growth per new task: ``growth`` x the layer's task-1 connection count (default 0.25); a
  multi-head output layer instead gets, for the new task's output units, as many connections
  as task 1's head had;
* new connections start at 0 (the function on old tasks is unchanged at the moment of growth);
  biases are frozen after task 1 in the growing arms (``freeze_bias``) except the new task's
  own output units in multi-head mode; SGD without weight decay (decay would move frozen weights).

Task sequences (:func:`permuted_mnist`, :func:`split_mnist`): permuted MNIST - task ``t``
permutes the pixels by a fixed random permutation (task 1 is the identity) and shares the 10
outputs (single head); split MNIST - task ``t`` is digits ``{2t, 2t+1}``; ``multi_head=True``
(default) trains and tests each task on its own two output units (logits of the other units
ignored, the task identity is given at test time: "task-incremental"), ``multi_head=False``
uses all 10 outputs (harder, "class-incremental").

Metrics (Chaudhry et al. 2018), with ``a[t][i]`` the test accuracy on task ``i`` after learning
task ``t`` (``T`` tasks)::

    average accuracy  A = mean_i a[T-1][i]
    forgetting        F = mean_{i < T-1} ( max_{i <= t < T-1} a[t][i] - a[T-1][i] )
    learning accuracy L = mean_i a[i][i]                 (how well each task was learned at all)
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Literal, Sequence

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import Tensor, nn

from ..core import parametrize
from ..errors import WeightzipError
from ..primitives.growth import attachment_scores, grow_mask

__all__ = [
    "Task",
    "permuted_mnist",
    "split_mnist",
    "mnist_tensors",
    "TaskHead",
    "GradientMask",
    "ContinualConfig",
    "ARMS",
    "sparse_layers",
    "unit_degrees",
    "grow_layers",
    "initial_sparse_net",
    "learn_sequence",
    "sequence_metrics",
    "compare_arms",
]

ARMS = ("finetune", "random", "pa")


# ---------------------------------------------------------------------------------------------
# Tasks


@dataclass
class Task:
    """One task: training and test tensors and, for a multi-head output, its output units.

    ``x_*``: float32 ``[N, D]`` (flattened images); ``y_*``: int64 ``[N]`` labels in the
    task's own numbering: ``0..len(classes)-1`` when ``classes`` is set (multi-head; output
    unit ``classes[k]`` scores label ``k``), else the model's output index (single head).
    """

    name: str
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    classes: list[int] | None = None


def permuted_mnist(x_train: Tensor, y_train: Tensor, x_test: Tensor, y_test: Tensor, n_tasks: int, *,
                   seed: int = 0, first_identity: bool = True) -> list[Task]:
    """``n_tasks`` tasks that permute the ``D`` input features by fixed random permutations.

    ``x_*``: ``[N, ...]`` (flattened to ``[N, D]``); task ``t`` uses ``x[:, perm_t]`` with
    ``perm_0 = identity`` when ``first_identity``; permutations come from ``seed``. Single head.
    """
    if n_tasks < 1:
        raise ValueError(f"n_tasks must be >= 1, got {n_tasks}")
    xtr, xte = x_train.reshape(len(x_train), -1), x_test.reshape(len(x_test), -1)
    d = xtr.shape[1]
    g = torch.Generator().manual_seed(int(seed))
    tasks = []
    for t in range(n_tasks):
        perm = torch.arange(d) if (t == 0 and first_identity) else torch.randperm(d, generator=g)  # (D,)
        tasks.append(Task(f"permuted-{t + 1}", xtr[:, perm].contiguous(), y_train.clone(),
                          xte[:, perm].contiguous(), y_test.clone(), None))
    return tasks


def split_mnist(x_train: Tensor, y_train: Tensor, x_test: Tensor, y_test: Tensor, *,
                splits: Sequence[Sequence[int]] = ((0, 1), (2, 3), (4, 5), (6, 7), (8, 9)),
                multi_head: bool = True) -> list[Task]:
    """One task per group of classes (default: 5 tasks of 2 digits).

    ``multi_head``: labels become ``0..len(group)-1`` and the task scores only its own output
    units ``group``; otherwise labels stay the digits and all outputs compete.
    """
    tasks = []
    xtr, xte = x_train.reshape(len(x_train), -1), x_test.reshape(len(x_test), -1)
    seen: set[int] = set()
    for group in splits:
        group = [int(c) for c in group]
        if not group or seen & set(group):
            raise ValueError(f"split groups must be non-empty and disjoint, got {splits}")
        seen |= set(group)
        sel_tr = torch.isin(y_train, torch.tensor(group))
        sel_te = torch.isin(y_test, torch.tensor(group))
        ytr, yte = y_train[sel_tr], y_test[sel_te]
        if multi_head:
            lut = torch.full((int(max(group)) + 1,), -1, dtype=torch.long)
            lut[torch.tensor(group)] = torch.arange(len(group))
            ytr, yte = lut[ytr], lut[yte]
        tasks.append(Task("split-" + "".join(str(c) for c in group), xtr[sel_tr].contiguous(), ytr,
                          xte[sel_te].contiguous(), yte, group if multi_head else None))
    return tasks


def mnist_tensors(root: str | None = None, train_subset: int | None = None, test_subset: int | None = None
                  ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Normalized MNIST as tensors: ``x_train [N, 784], y_train [N], x_test [M, 784], y_test [M]``.

    The first ``train_subset`` training images (no validation split) and ``test_subset`` test images.
    """
    from ..data import get_loaders

    loaders = get_loaders("mnist", batch_size=256, root=root, val_size=0, subset=train_subset,
                          eval_subset=test_subset)
    out = []
    for ds in (loaders.train.dataset, loaders.test.dataset):
        x, y = ds.__getitems__(list(range(len(ds))))  # [N, 1, 28, 28], [N]
        out += [x.reshape(len(x), -1), y]
    return out[0], out[1], out[2], out[3]


class TaskHead(nn.Module):
    """``model`` restricted to a task's output units: ``logits[:, classes]`` (all when ``None``)."""

    def __init__(self, model: nn.Module, classes: Sequence[int] | None = None):
        super().__init__()
        self.model = model
        self.register_buffer("classes", torch.as_tensor(list(classes), dtype=torch.long)
                             if classes is not None else torch.zeros(0, dtype=torch.long), persistent=False)
        self.use_all = classes is None

    def forward(self, x: Tensor) -> Tensor:
        logits = self.model(x)  # [B, n_out]
        return logits if self.use_all else logits[:, self.classes]  # [B, len(classes)]


class GradientMask:
    """Trainer callback freezing entries: ``p.grad *= m`` for each ``(p, m)`` before the optimizer step.

    With SGD (any momentum) and no weight decay, entries whose gradient is always zero never move.
    """

    def __init__(self, pairs: Sequence[tuple[Tensor, Tensor]]):
        self.pairs = [(p, m.to(device=p.device, dtype=p.dtype)) for p, m in pairs]

    def on_step(self, trainer, step: int) -> None:
        for p, m in self.pairs:
            if p.grad is not None:
                p.grad.mul_(m)


# ---------------------------------------------------------------------------------------------
# Configuration


class ContinualConfig(BaseModel):
    """Settings of the growth learner (module docstring; all [reconstructed])."""

    model_config = ConfigDict(extra="forbid")

    hidden: list[int] = Field(default_factory=lambda: [300, 100], description="hidden layer sizes")
    density: list[float] = Field(default_factory=lambda: [0.08, 0.09, 0.26],
                                 description="fraction of connections kept per layer after task 1")
    growth: float = Field(0.25, ge=0, description="new connections per task, x the layer's task-1 count")
    rule: Literal["product", "sum"] = Field("product", description="preferential-attachment score")
    degree: Literal["total", "layer"] = Field("total", description="which degree of the end units attracts")
    offset: float = Field(1.0, ge=0, description="c in (d_j + c)(d_i + c) / d_j + d_i + c")
    first_epochs: int = Field(1, ge=1, description="dense training epochs on task 1 before pruning")
    epochs: int = Field(1, ge=1, description="epochs per task (and of the fine-tuning after pruning)")
    lr: float = Field(0.05, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    batch_size: int = Field(64, ge=1)
    freeze_bias: bool = True
    seed: int = 0

    @field_validator("density")
    @classmethod
    def _density(cls, v):
        if not v or any(not 0 < d <= 1 for d in v):
            raise ValueError(f"density needs one value in (0, 1] per layer, got {v}")
        return v


# ---------------------------------------------------------------------------------------------
# Masks and degrees


def sparse_layers(model: nn.Module) -> list[nn.Linear]:
    """The ``nn.Linear`` layers of an MLP, input to output."""
    from ..core.select import type_name

    layers = [m for m in model.modules() if type_name(m) == "Linear"]
    if not layers:
        raise WeightzipError(f"{type(model).__name__} has no Linear layers to grow")
    return layers


def _mask(layer: nn.Module) -> Tensor:
    m = parametrize.find(layer, "weight", parametrize.Mask)
    if m is None:
        raise WeightzipError("layer has no pruning Mask; build the net with initial_sparse_net")
    return m.mask


def unit_degrees(masks: Sequence[Tensor], degree: Literal["total", "layer"] = "total"
                 ) -> list[tuple[Tensor, Tensor]]:
    """For each layer ``l`` (mask ``(n_out, n_in)``), ``(d_out_units (n_out,), d_in_units (n_in,))``.

    ``layer``: in-degree of each output unit and out-degree of each input unit within the layer.
    ``total``: the units' degrees in the chained network, ``deg(unit) = in-degree from the
    layer below + out-degree into the layer above`` (inputs and outputs have one side only).
    """
    ins = [m.detach().float().sum(dim=1) for m in masks]   # in-degree of each layer's outputs
    outs = [m.detach().float().sum(dim=0) for m in masks]  # out-degree of each layer's inputs
    if degree == "layer":
        return list(zip(ins, outs))
    if degree != "total":
        raise ValueError(f"degree must be 'total' or 'layer', got {degree!r}")
    res = []
    for l in range(len(masks)):
        d_out = ins[l] + (outs[l + 1] if l + 1 < len(masks) else 0.0)  # (n_out,)
        d_in = outs[l] + (ins[l - 1] if l > 0 else 0.0)                # (n_in,)
        res.append((d_out, d_in))
    return res


def grow_layers(masks: Sequence[Tensor], n_new: Sequence[int], *, rule: str, offset: float = 1.0,
                degree: Literal["total", "layer"] = "total", allowed: Sequence[Tensor | None] | None = None,
                generator: torch.Generator | None = None) -> tuple[list[Tensor], list[Tensor]]:
    """Grow every layer ``l`` by ``n_new[l]`` connections (``rule``: product | sum | uniform).

    Scores come from the degrees before this round (:func:`unit_degrees`); ``allowed[l]`` (bool,
    the mask's shape) restricts where layer ``l`` may grow. Returns ``(new_masks, added)``.
    """
    degs = unit_degrees(masks, degree)
    new_masks, added = [], []
    for l, (m, k) in enumerate(zip(masks, n_new)):
        d_out, d_in = degs[l]
        s = attachment_scores(d_out, d_in, rule, offset)  # (n_out, n_in)
        if allowed is not None and allowed[l] is not None:
            s = s * allowed[l].to(s.dtype)
        nm, a = grow_mask(m, int(k), s, generator)
        new_masks.append(nm)
        added.append(a)
    return new_masks, added


# ---------------------------------------------------------------------------------------------
# Training


class _Pairs(torch.utils.data.Dataset):
    """``(x [N, D], y [N])`` served a batch at a time (``__getitems__``: one indexing per batch)."""

    def __init__(self, x: Tensor, y: Tensor):
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.x[i], self.y[i]

    def __getitems__(self, indices: Sequence[int]) -> tuple[Tensor, Tensor]:
        idx = torch.as_tensor(indices, dtype=torch.long)  # (B,)
        return self.x[idx], self.y[idx]                   # [B, D], [B]


def _fit(model: nn.Module, task: Task, cfg: ContinualConfig, epochs: int, seed: int,
         callbacks: Sequence[Any] = ()) -> None:
    from .config import TrainConfig
    from .trainer import Trainer

    from ..data.image import collate_batch

    loader = torch.utils.data.DataLoader(_Pairs(task.x_train, task.y_train), batch_size=cfg.batch_size,
                                         shuffle=True, collate_fn=collate_batch)
    loaders = SimpleNamespace(train=loader, val=None, test=None, task="classify")
    tc = TrainConfig(epochs=epochs, lr=cfg.lr, optimizer="sgd", momentum=cfg.momentum, weight_decay=0.0,
                     batch_size=cfg.batch_size, seed=seed, device="cpu", progress=False, test_at_end=False,
                     log_every=10**9, distributed=False)
    Trainer(TaskHead(model, task.classes), tc, loaders, callbacks=list(callbacks)).fit()


@torch.no_grad()
def _accuracy(model: nn.Module, task: Task, batch: int = 2000) -> float:
    head = TaskHead(model, task.classes).eval()
    correct = 0
    for i in range(0, len(task.x_test), batch):
        correct += int((head(task.x_test[i:i + batch]).argmax(1) == task.y_test[i:i + batch]).sum())
    return correct / max(1, len(task.x_test))


def _head_rows(n_out: int, classes: Sequence[int] | None) -> Tensor:
    rows = torch.zeros(n_out, dtype=torch.bool)
    if classes is None:
        rows[:] = True
    else:
        rows[torch.as_tensor(list(classes))] = True
    return rows


def initial_sparse_net(task: Task, cfg: ContinualConfig, n_in: int, n_out: int) -> nn.Module:
    """LeNet-300-100-style MLP trained on ``task``, pruned to ``cfg.density`` and fine-tuned.

    Every Linear weight gets a :class:`~weightzip.core.parametrize.Mask`. In multi-head mode the
    output layer keeps connections only into ``task.classes`` (``density`` of those rows); the
    other tasks' output units are created empty.
    """
    from ..models.lenet import LeNet300100

    torch.manual_seed(cfg.seed)
    model = LeNet300100(num_classes=n_out, in_features=n_in, hidden=cfg.hidden)
    layers = sparse_layers(model)
    if len(cfg.density) != len(layers):
        raise WeightzipError(f"density has {len(cfg.density)} values but the MLP has {len(layers)} layers; "
                             f"give one per layer (hidden={cfg.hidden})")
    _fit(model, task, cfg, cfg.first_epochs, cfg.seed)
    for l, (layer, dens) in enumerate(zip(layers, cfg.density)):
        w = layer.weight.detach()  # (n_out, n_in)
        allowed = torch.ones_like(w, dtype=torch.bool)
        if l == len(layers) - 1:
            allowed = _head_rows(w.shape[0], task.classes)[:, None].expand_as(w)
        keep = max(1, int(round(dens * int(allowed.sum()))))
        score = torch.where(allowed, w.abs(), torch.full_like(w, -1.0)).reshape(-1)  # disallowed never kept
        m = torch.zeros(w.numel())
        m[torch.topk(score, keep).indices] = 1.0  # the `keep` largest |w| among the allowed positions
        m = m.reshape(w.shape)
        parametrize.attach(layer, "weight", parametrize.Mask(m))
        with torch.no_grad():
            parametrize.original(layer, "weight").mul_(m)
            if l == len(layers) - 1 and task.classes is not None:
                layer.bias[~_head_rows(w.shape[0], task.classes)] = 0.0
    _fit(model, task, cfg, cfg.epochs, cfg.seed + 1)
    return model


def learn_sequence(tasks: Sequence[Task], arm: str, cfg: ContinualConfig, start: nn.Module | None = None,
                   log=None, return_model: bool = False) -> dict[str, Any]:
    """Learn ``tasks`` in order with ``arm`` (``finetune`` | ``random`` | ``pa``); see module docstring.

    ``start``: the net after task 1 (from :func:`initial_sparse_net`; deep-copied, so arms can
    share it); built here when ``None``. Returns ``{"arm", "acc" (T x T, row t = after task t,
    NaN above the diagonal), "connections" (per task), "per_layer_connections", "masks"
    (final, bool), "seconds", **sequence_metrics}`` and, with ``return_model``, ``"model"``.
    """
    if arm not in ARMS:
        raise WeightzipError(f"unknown arm {arm!r}; valid: {', '.join(ARMS)}")
    t0 = time.perf_counter()
    n_in = tasks[0].x_train.shape[1]
    n_out = int(max(int(t.y_train.max()) + 1 if t.classes is None else max(t.classes) + 1 for t in tasks))
    model = copy.deepcopy(start) if start is not None else initial_sparse_net(tasks[0], cfg, n_in, n_out)
    layers = sparse_layers(model)
    multi_head = tasks[0].classes is not None
    base = [int(_mask(l).sum()) for l in layers]  # task-1 connection counts
    gen = torch.Generator().manual_seed(cfg.seed * 7919 + 17)
    T = len(tasks)
    acc = np.full((T, T), np.nan)
    acc[0, 0] = _accuracy(model, tasks[0])
    conns = [sum(base)]
    per_layer = [base]
    for t in range(1, T):
        task = tasks[t]
        masks = [_mask(l).clone() for l in layers]
        n_new = [int(round(cfg.growth * b)) for b in base]
        allowed: list[Tensor | None] = [None] * len(layers)
        if multi_head:
            rows = _head_rows(masks[-1].shape[0], task.classes)
            allowed[-1] = rows[:, None].expand_as(masks[-1])
            n_new[-1] = base[-1]  # the new head gets as many connections as task 1's head had
        rule = "uniform" if arm in ("random", "finetune") else cfg.rule
        new_masks, added = grow_layers(masks, n_new, rule=rule, offset=cfg.offset, degree=cfg.degree,
                                       allowed=allowed, generator=gen)
        pairs = []
        for l, (layer, nm, a) in enumerate(zip(layers, new_masks, added)):
            with torch.no_grad():
                _mask(layer).copy_(nm)
                parametrize.original(layer, "weight")[a] = 0.0  # new connections start at 0
            if arm != "finetune":
                pairs.append((parametrize.original(layer, "weight"), a.float()))
                if cfg.freeze_bias:
                    if l == len(layers) - 1 and multi_head:
                        pairs.append((layer.bias, _head_rows(layer.bias.numel(), task.classes).float()))
                    else:
                        pairs.append((layer.bias, torch.zeros_like(layer.bias)))
        _fit(model, task, cfg, cfg.epochs, cfg.seed + 100 * t, callbacks=[GradientMask(pairs)] if pairs else ())
        for i in range(t + 1):
            acc[t, i] = _accuracy(model, tasks[i])
        per_layer.append([int(_mask(l).sum()) for l in layers])
        conns.append(sum(per_layer[-1]))
        if log:
            log(f"  {arm if arm != 'pa' else 'pa-' + cfg.rule}: task {t + 1}/{T} ({task.name}) acc " + " ".join(f"{100 * a:.1f}" for a in acc[t, :t + 1]))
    out = {"arm": arm, "rule": None if arm != "pa" else cfg.rule, "acc": acc.tolist(), "connections": conns,
           "per_layer_connections": per_layer, "masks": [_mask(l).bool().clone() for l in layers],
           "seconds": time.perf_counter() - t0}
    out.update(sequence_metrics(acc))
    if return_model:
        out["model"] = model
    return out


def sequence_metrics(acc: np.ndarray | Sequence[Sequence[float]]) -> dict[str, float]:
    """Average accuracy, forgetting and learning accuracy of an accuracy matrix (module docstring).

    >>> m = sequence_metrics([[0.9, float('nan')], [0.7, 0.8]])
    >>> [round(m[k], 3) for k in ("avg_acc", "forgetting", "learning_acc")]
    [0.75, 0.2, 0.85]
    """
    a = np.asarray(acc, dtype=float)
    T = a.shape[0]
    avg = float(np.mean(a[T - 1, :T]))
    forget = float(np.mean([np.max(a[i:T - 1, i]) - a[T - 1, i] for i in range(T - 1)])) if T > 1 else 0.0
    learn = float(np.mean([a[i, i] for i in range(T)]))
    return {"avg_acc": avg, "forgetting": forget, "learning_acc": learn}


def compare_arms(tasks: Sequence[Task], cfg: ContinualConfig, arms: Sequence[str] = ARMS,
                 rules: Sequence[str] | None = None, log=None) -> dict[str, Any]:
    """Run every arm from the same task-1 net (one seed); ``pa`` once per rule in ``rules``.

    Checks that all arms end every task with the same number of connections. Returns
    ``{"start_acc", "runs": {label: learn_sequence result}}`` (labels ``pa-product``, ...).
    """
    n_in = tasks[0].x_train.shape[1]
    n_out = int(max(int(t.y_train.max()) + 1 if t.classes is None else max(t.classes) + 1 for t in tasks))
    start = initial_sparse_net(tasks[0], cfg, n_in, n_out)
    runs: dict[str, Any] = {}
    for arm in arms:
        for rule in (rules or [cfg.rule]) if arm == "pa" else [None]:
            c = cfg if rule is None else cfg.model_copy(update={"rule": rule})
            label = arm if rule is None else f"pa-{rule}"
            runs[label] = learn_sequence(tasks, arm, c, start=start, log=log)
    counts = {k: v["connections"] for k, v in runs.items()}
    if len({tuple(v) for v in counts.values()}) != 1:
        raise WeightzipError(f"arms ended with different connection counts: {counts}")
    return {"start_acc": _accuracy(start, tasks[0]), "runs": runs}
