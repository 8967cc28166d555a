"""Gaussian-mixture prior of soft weight-sharing against slow, obvious references."""
import math

import pytest
import torch

from weightzip.primitives import mixture

torch.set_num_threads(1)


def slow_log_density(w, means, log_vars, log_pi):
    """Per weight, per component, in plain Python floats: log sum_j pi_j N(w | mu_j, s2_j)."""
    out = 0.0
    for x in w.reshape(-1).tolist():
        p = 0.0
        for mu, lv, lp in zip(means.tolist(), log_vars.tolist(), log_pi.tolist()):
            s2 = math.exp(lv)
            p += math.exp(lp) * math.exp(-0.5 * (x - mu) ** 2 / s2) / math.sqrt(2 * math.pi * s2)
        out += math.log(p)
    return out


def params(k=5, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    means = torch.cat([torch.zeros(1), torch.randn(k - 1, generator=g) * 0.3]).to(dtype)
    log_vars = (torch.rand(k, generator=g) * 2 - 5).to(dtype)
    log_pi = mixture.mixing_log_proportions(torch.randn(k - 1, generator=g).to(dtype), 0.9)
    return means, log_vars, log_pi


def test_mixing_proportions_sum_to_one_with_fixed_zero_weight():
    lp = mixture.mixing_log_proportions(torch.tensor([0.3, -1.0, 2.0]), 0.95)
    assert torch.exp(lp).sum().item() == pytest.approx(1.0, abs=1e-6)
    assert torch.exp(lp[0]).item() == pytest.approx(0.95)
    with pytest.raises(ValueError):
        mixture.mixing_log_proportions(torch.zeros(2), 1.0)


def test_log_density_matches_slow_reference():
    means, log_vars, log_pi = params()
    w = torch.randn(37, dtype=torch.float64) * 0.2
    ref = slow_log_density(w, means, log_vars, log_pi)
    assert mixture.log_mixture_density(w, means, log_vars, log_pi, chunk=8).item() == pytest.approx(ref, rel=1e-10)
    assert -mixture.mixture_nll(w, means, log_vars, log_pi, chunk=8).item() == pytest.approx(ref, rel=1e-10)


def test_fast_backward_matches_autograd_of_the_reference():
    means, log_vars, log_pi_free = params()
    lg = torch.randn(4, dtype=torch.float64, requires_grad=True)
    w = (torch.randn(50, dtype=torch.float64) * 0.2).requires_grad_()
    m, lv = means.clone().requires_grad_(), log_vars.clone().requires_grad_()
    a, b = torch.full((5,), 3.0, dtype=torch.float64), torch.full((5,), 0.1, dtype=torch.float64)
    grads = []
    for f in (mixture.complexity, mixture.fast_complexity):
        for t in (w, m, lv, lg):
            t.grad = None
        c = f([w[:20].reshape(4, 5), w[20:]], m, lv, mixture.mixing_log_proportions(lg, 0.9), a, b)
        c.backward()
        grads.append((c.item(), [t.grad.clone() for t in (w, m, lv, lg)]))
    (c1, g1), (c2, g2) = grads
    assert c1 == pytest.approx(c2, rel=1e-12)
    for x, y in zip(g1, g2):
        assert torch.allclose(x, y, rtol=1e-9, atol=1e-12)
    # the gamma hyper-prior term alone, by hand
    lam = torch.exp(-lv.detach())
    assert mixture.gamma_precision_nll(lv.detach(), a, b).item() == pytest.approx(
        float(-((a - 1) * torch.log(lam) - b * lam).sum()))


def test_assignment_is_argmax_responsibility_and_merge():
    means, log_vars, log_pi = params(seed=1)
    w = torch.randn(200, dtype=torch.float64) * 0.3
    comp = mixture.assign_components(w, means, log_vars, log_pi, chunk=16)
    r = mixture.responsibilities(w, means, log_vars, log_pi)
    assert torch.equal(comp, r.argmax(1))
    assert torch.allclose(r.sum(1), torch.ones(200, dtype=torch.float64))
    mu = torch.tensor([0.0, 0.5, 0.52, -0.3, 0.01, 0.9])
    lp = torch.log(torch.tensor([0.5, 0.1, 0.3, 0.05, 0.03, 0.02]))
    group, merged = mixture.merge_components(mu, lp, tol=0.05)
    assert group[0] == 0 and group[4] == 0                  # within tol of 0 -> pruned
    assert group[1] == group[2] and group[3] != group[1]
    assert merged[0] == 0
    assert merged[group[1]].item() == pytest.approx((0.5 * 0.1 + 0.52 * 0.3) / 0.4, rel=1e-6)
    assert merged.numel() == 4                              # 0, -0.3, ~0.515, 0.9


def test_init_means_symmetric_and_without_zero():
    m = mixture.init_means([torch.tensor([-2.0, 1.0])], 4)
    assert m[0] == 0 and m.numel() == 5
    assert torch.allclose(m[1:], torch.tensor([-2.0, -1.0, 1.0, 2.0]))
    assert (mixture.init_means([torch.ones(3)], 3)[1:] != 0).all()
