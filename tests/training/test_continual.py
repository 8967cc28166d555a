"""Continual learning by growth: task sequences, degrees, growth, freezing, equal budgets, metrics."""
import numpy as np
import pytest
import torch
from torch import nn

from weightzip.training import continual as C
from weightzip.core import parametrize
from weightzip.errors import WeightzipError


def _data(n=300, m=120, d=12, classes=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(d, classes, generator=g)
    x, xt = torch.randn(n, d, generator=g), torch.randn(m, d, generator=g)
    return x, (x @ w).argmax(1), xt, (xt @ w).argmax(1)


def test_permuted_tasks_permute_features_and_keep_labels():
    x, y, xt, yt = _data()
    tasks = C.permuted_mnist(x, y, xt, yt, 3, seed=5)
    assert torch.equal(tasks[0].x_train, x) and tasks[0].classes is None
    for t in tasks[1:]:
        assert torch.equal(t.y_train, y) and torch.equal(t.y_test, yt)
        assert not torch.equal(t.x_train, x)
        # the same permutation of the columns for train and test
        perm = [int(torch.nonzero((x == t.x_train[:, j:j + 1]).all(0))[0]) for j in range(x.shape[1])]
        assert sorted(perm) == list(range(x.shape[1]))
        assert torch.equal(xt[:, perm], t.x_test)
    assert not torch.equal(tasks[1].x_train, tasks[2].x_train)


def test_split_tasks_remap_labels_per_head():
    x, y, xt, yt = _data()
    tasks = C.split_mnist(x, y, xt, yt, splits=((0, 1), (2, 3)))
    for t, group in zip(tasks, ((0, 1), (2, 3))):
        assert t.classes == list(group)
        assert set(t.y_train.tolist()) <= {0, 1}
        assert len(t.x_train) == int(torch.isin(y, torch.tensor(group)).sum())
    single = C.split_mnist(x, y, xt, yt, splits=((0, 1), (2, 3)), multi_head=False)
    assert single[1].classes is None and set(single[1].y_train.tolist()) <= {2, 3}
    with pytest.raises(ValueError, match="disjoint"):
        C.split_mnist(x, y, xt, yt, splits=((0, 1), (1, 2)))


def test_task_head_selects_output_units():
    net = nn.Linear(3, 5)
    x = torch.randn(4, 3)
    assert torch.equal(C.TaskHead(net, [4, 1])(x), net(x)[:, [4, 1]])
    assert torch.equal(C.TaskHead(net)(x), net(x))


def test_unit_degrees_match_a_direct_count():
    g = torch.Generator().manual_seed(0)
    masks = [(torch.rand(5, 7, generator=g) < 0.4).float(), (torch.rand(3, 5, generator=g) < 0.5).float()]
    (o0, i0), (o1, i1) = C.unit_degrees(masks, "total")
    for j in range(5):  # hidden unit j: inputs from layer 0 + outputs into layer 1
        assert o0[j] == masks[0][j].sum() + masks[1][:, j].sum()
        assert i1[j] == o0[j]
    assert torch.equal(i0, masks[0].sum(0)) and torch.equal(o1, masks[1].sum(1))
    (lo0, li0), _ = C.unit_degrees(masks, "layer")
    assert torch.equal(lo0, masks[0].sum(1)) and torch.equal(li0, masks[0].sum(0))


def test_grow_layers_respects_counts_and_allowed_positions():
    masks = [torch.zeros(4, 6), torch.zeros(3, 4)]
    masks[0][0, :3] = 1
    allowed = [None, torch.tensor([False, True, False])[:, None].expand(3, 4)]
    new, added = C.grow_layers(masks, [5, 2], rule="product", allowed=allowed,
                               generator=torch.Generator().manual_seed(0))
    assert [int(a.sum()) for a in added] == [5, 2]
    assert not (added[0] & (masks[0] != 0)).any()
    assert added[1][[0, 2]].sum() == 0                      # only row 1 may grow
    assert torch.equal(new[0] != 0, (masks[0] != 0) | added[0])


def test_gradient_mask_freezes_entries_under_the_trainer():
    from types import SimpleNamespace

    from weightzip.training.config import TrainConfig

    from weightzip.training.trainer import Trainer

    x, y, _, _ = _data()
    net = nn.Linear(12, 4)
    frozen = torch.rand(4, 12, generator=torch.Generator().manual_seed(1)) < 0.5
    before = net.weight.detach().clone()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32, shuffle=True)
    cb = C.GradientMask([(net.weight, (~frozen).float()), (net.bias, torch.zeros(4))])
    Trainer(net, TrainConfig(epochs=2, lr=0.1, momentum=0.9, progress=False, test_at_end=False, device="cpu"),
            SimpleNamespace(train=loader, val=None, test=None, task="classify"), callbacks=[cb]).fit()
    assert torch.equal(net.weight.detach()[frozen], before[frozen])
    assert not torch.equal(net.weight.detach()[~frozen], before[~frozen])


def _cfg(**kw):
    base = dict(hidden=[16, 8], density=[0.3, 0.3, 0.5], batch_size=16, epochs=2, first_epochs=2, lr=0.1)
    return C.ContinualConfig(**{**base, **kw})


@pytest.mark.parametrize("multi_head", [False, True])
def test_arms_keep_equal_budgets_and_growing_arms_keep_old_weights(multi_head):
    x, y, xt, yt = _data()
    if multi_head:
        tasks = C.split_mnist(x, y, xt, yt, splits=((0, 1), (2, 3)))
    else:
        tasks = C.permuted_mnist(x, y, xt, yt, 3)
    cfg = _cfg()
    start = C.initial_sparse_net(tasks[0], cfg, 12, 4)
    layers = C.sparse_layers(start)
    start_masks = [parametrize.find(l, "weight", parametrize.Mask).mask.bool().clone() for l in layers]
    start_w = [l.weight.detach().clone() for l in layers]
    if multi_head:
        assert start_masks[-1][2:].sum() == 0 and start_masks[-1][:2].sum() > 0  # only task 1's head
    runs = {arm: C.learn_sequence(tasks, arm, cfg, start=start, return_model=True) for arm in C.ARMS}
    conns = {arm: r["connections"] for arm, r in runs.items()}
    assert len({tuple(c) for c in conns.values()}) == 1, conns
    base = [int(m.sum()) for m in start_masks]
    growth = [round(0.25 * b) for b in base]
    if multi_head:
        growth[-1] = base[-1]
    assert conns["pa"] == [sum(base) + t * sum(growth) for t in range(len(tasks))]
    for arm, r in runs.items():
        final = [l.weight.detach() for l in C.sparse_layers(r["model"])]
        kept = all(torch.equal(f[m], w[m]) for f, w, m in zip(final, start_w, start_masks))
        assert kept == (arm != "finetune"), arm          # frozen exactly, or trained freely
        assert all((m0 <= m1).all() for m0, m1 in zip(start_masks, r["masks"]))  # nothing removed
        acc = np.array(r["acc"])
        assert np.isnan(acc[0, 1]) and np.all(acc[np.tril_indices(len(tasks))] >= 0)
    assert len({r["acc"][0][0] for r in runs.values()}) == 1  # the same starting net for every arm


def test_pa_growth_attaches_to_high_degree_units_more_than_uniform():
    # one hub input unit; many draws: PA puts far more new connections on it than uniform does
    mask = torch.zeros(50, 20)
    mask[:, 0] = 1.0  # input 0 is a hub (degree 50); hub column is full, so count its row partners
    mask[:25, 0] = 0.0
    counts = {}
    for rule in ("product", "uniform"):
        g = torch.Generator().manual_seed(0)
        total = 0
        for _ in range(30):
            _, added = C.grow_layers([mask], [10], rule=rule, degree="layer", generator=g)
            total += int(added[0][:, 0].sum())
        counts[rule] = total
    assert counts["product"] > 3 * counts["uniform"], counts


def test_sequence_metrics_and_errors():
    m = C.sequence_metrics([[0.9, np.nan, np.nan], [0.8, 0.7, np.nan], [0.6, 0.75, 0.95]])
    assert m["avg_acc"] == pytest.approx((0.6 + 0.75 + 0.95) / 3)
    assert m["forgetting"] == pytest.approx(((0.9 - 0.6) + (0.7 - 0.75)) / 2)
    assert m["learning_acc"] == pytest.approx((0.9 + 0.7 + 0.95) / 3)
    x, y, xt, yt = _data()
    tasks = C.permuted_mnist(x, y, xt, yt, 2)
    with pytest.raises(WeightzipError, match="valid: finetune"):
        C.learn_sequence(tasks, "ewc", _cfg())
    with pytest.raises(WeightzipError, match="one per layer"):
        C.initial_sparse_net(tasks[0], _cfg(density=[0.5, 0.5]), 12, 4)
    with pytest.raises(ValueError):
        C.ContinualConfig(density=[0.0, 1.0, 1.0])
