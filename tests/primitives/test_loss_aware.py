"""Loss-aware projections against slow, obviously-correct references (brute force)."""
import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from weightzip.primitives import loss_aware as la


weights = st.lists(st.floats(-1.0, 1.0, allow_nan=False, width=32), min_size=1, max_size=8)
curv = st.lists(st.floats(0.0625, 10.0, allow_nan=False, width=32), min_size=8, max_size=8)


def _wd(w, d):
    w = torch.tensor(w, dtype=torch.float64)
    d = torch.tensor(d[: len(w)], dtype=torch.float64)
    return w, d


def objective(w, d, w_hat):
    """The proximal objective sum_i d_i (w_hat_i - w_i)^2."""
    return float((d * (w_hat - w) ** 2).sum())


def brute_ternary(w, d):
    """min over every threshold t in {0} U {|w_i|} of (*) with support {|w| > t}, alpha optimal."""
    best = objective(w, d, torch.zeros_like(w))
    for t in [0.0] + w.abs().tolist():
        s = (w.abs() > t).to(w.dtype)
        if s.sum() == 0:
            continue
        alpha = (d * s * w.abs()).sum() / (d * s).sum()
        best = min(best, objective(w, d, alpha * torch.sign(w) * s))
    return best


def brute_binary(w, d):
    """min over every code b in {-1, +1}^n of (*) with alpha >= 0 optimal given b."""
    best = float("inf")
    for code in itertools.product((-1.0, 1.0), repeat=len(w)):
        b = torch.tensor(code, dtype=w.dtype)
        alpha = max(0.0, float((d * b * w).sum() / d.sum()))
        best = min(best, objective(w, d, alpha * b))
    return best


# ---------------------------------------------------------------------------------------------
# ternary


@settings(max_examples=200, deadline=None)
@given(weights, curv)
def test_exact_lat_equals_brute_force_over_thresholds(w, d):
    w, d = _wd(w, d)
    p = la.lat_exact_project(w, d)
    assert objective(w, d, p.w_hat) <= brute_ternary(w, d) + 1e-9
    # the result is a valid ternary projection: alpha sign(w) [|w| > alpha / 2]
    alpha = float(p.alpha[0])
    assert torch.equal(p.b, torch.sign(w) * (w.abs() > alpha / 2))
    assert torch.allclose(p.w_hat, alpha * p.b)


@settings(max_examples=100, deadline=None)
@given(weights, curv)
def test_approx_lat_is_a_valid_projection_no_better_than_exact(w, d):
    w, d = _wd(w, d)
    exact = objective(w, d, la.lat_exact_project(w, d).w_hat)
    p = la.lat_approx_project(w, d)
    assert objective(w, d, p.w_hat) >= exact - 1e-9
    assert set(p.b.unique().tolist()) <= {-1.0, 0.0, 1.0}


def test_approx_lat_reaches_the_exact_optimum_on_typical_weights():
    torch.manual_seed(0)
    w, d = torch.randn(2000, dtype=torch.float64) * 0.1, torch.rand(2000, dtype=torch.float64) + 0.1
    prev = la.lat_exact_project(w, d).w_hat
    a = objective(w, d, la.lat_approx_project(w, d, prev=prev).w_hat)
    assert a == pytest.approx(objective(w, d, prev), rel=1e-6)
    cold = objective(w, d, la.lat_approx_project(w, d).w_hat)
    assert cold <= 1.01 * objective(w, d, prev)


@settings(max_examples=100, deadline=None)
@given(weights, curv)
def test_lat2_exact_equals_brute_force_per_side(w, d):
    w, d = _wd(w, d)
    p = la.lat2_exact_project(w, d)
    pos, neg = w.clamp_min(0), (-w).clamp_min(0)
    # the two sides are separable: the optimum is the sum of the one-sided optima
    best = brute_ternary(pos, d) + brute_ternary(neg, d)
    assert objective(w, d, p.w_hat) <= best + 1e-9
    a_pos, a_neg = p.alpha[0].tolist()
    assert set(p.w_hat.tolist()) <= {a_pos, 0.0, -a_neg}
    approx = la.lat2_approx_project(w, d)
    assert objective(w, d, approx.w_hat) >= objective(w, d, p.w_hat) - 1e-9


def test_lat2_released_negative_side_differs_only_on_the_negative_side():
    torch.manual_seed(3)
    worse = 0
    for _ in range(50):
        w, d = torch.randn(40, dtype=torch.float64), torch.rand(40, dtype=torch.float64) * 5 + 0.01
        good = la.lat2_exact_project(w, d)
        bad = la.lat2_exact_project(w, d, negative_side="released")
        assert good.alpha[0, 0] == bad.alpha[0, 0]
        assert objective(w, d, bad.w_hat) >= objective(w, d, good.w_hat) - 1e-12
        worse += objective(w, d, bad.w_hat) > objective(w, d, good.w_hat) + 1e-12
    assert worse > 0  # the released code's bug is visible on random inputs


# ---------------------------------------------------------------------------------------------
# binary


@settings(max_examples=100, deadline=None)
@given(weights, curv)
def test_lab_closed_form_equals_brute_force_over_binary_codes(w, d):
    w, d = _wd(w, d)
    p = la.lab_project(w, d)
    assert objective(w, d, p.w_hat) <= brute_binary(w, d) + 1e-9
    # alpha is the minimiser of the quadratic in alpha for b = sign(w)
    b = torch.where(w >= 0, 1.0, -1.0).to(w.dtype)
    assert torch.equal(p.b, b)
    alpha = float(p.alpha[0])
    for da in (-1e-3, 1e-3):
        assert objective(w, d, alpha * b) <= objective(w, d, (alpha + da) * b)


def test_lab_sign_of_zero_is_plus_one():
    p = la.lab_project(torch.tensor([0.0, -0.5, 0.5]))
    assert p.b.tolist() == [1.0, -1.0, 1.0]


@settings(max_examples=50, deadline=None)
@given(weights)
def test_lab_with_unit_curvature_is_bwn(w):
    w = torch.tensor(w)
    a, b = la.lab_project(w, torch.ones_like(w)), la.bwn_project(w)
    assert torch.allclose(a.w_hat, b.w_hat) and torch.allclose(a.alpha, b.alpha)
    assert torch.allclose(b.alpha, w.abs().mean().reshape(1))


def test_lab_worked_example():
    p = la.lab_project(torch.tensor([0.9, -0.2, 0.05, -0.7]), torch.tensor([1.0, 1.0, 4.0, 1.0]))
    assert p.alpha.item() == pytest.approx(2.0 / 7.0)


def test_baselines_follow_their_formulas():
    w = torch.tensor([0.8, -0.1, 0.05, -0.6, 0.0, 0.3])
    assert la.binaryconnect(w).w_hat.tolist() == [1.0, -1.0, 1.0, -1.0, 1.0, 1.0]
    t = la.twn_project(w)
    delta = 0.7 * w.abs().mean()  # 0.2158
    keep = w.abs() > delta
    assert torch.equal(t.b, torch.sign(w) * keep)
    assert t.alpha.item() == pytest.approx(w.abs()[keep].mean().item())


# ---------------------------------------------------------------------------------------------
# m-bit


def test_laq_levels_are_the_documented_sets():
    assert la.laq_levels(2, "linear").tolist() == [-1.0, 0.0, 1.0]
    assert la.laq_levels(2, "log").tolist() == [-1.0, 0.0, 1.0]
    lin3 = la.laq_levels(3, "linear")
    assert torch.allclose(lin3, torch.tensor([-1, -2 / 3, -1 / 3, 0, 1 / 3, 2 / 3, 1]))
    assert la.laq_levels(3, "log").tolist() == [-1.0, -0.5, -0.25, 0.0, 0.25, 0.5, 1.0]
    assert la.laq_levels(4, "log").tolist() == [-1.0, -0.5, -0.25, -0.125, -0.0625, -0.03125, -0.015625, 0.0,
                                                0.015625, 0.03125, 0.0625, 0.125, 0.25, 0.5, 1.0]
    for m in range(2, 7):
        for lv in ("linear", "log"):
            assert la.laq_levels(m, lv).numel() == 2 ** m - 1


@pytest.mark.parametrize("bits", [2, 3, 4])
@pytest.mark.parametrize("levels", ["linear", "log"])
def test_laq_quantize_is_the_nearest_level(bits, levels):
    x = torch.linspace(-1.7, 1.7, 20001)
    L = la.laq_levels(bits, levels)
    q = la.laq_quantize(x, bits, levels)
    assert set(q.unique().tolist()) <= set(L.tolist())
    dist_q = (q - x.clamp(-1, 1)).abs()
    dist_best = (x.clamp(-1, 1)[:, None] - L[None]).abs().min(1).values
    assert torch.all(dist_q <= dist_best + 1e-6)


@pytest.mark.parametrize("bits,levels", [(2, "linear"), (3, "linear"), (3, "log"), (4, "log")])
def test_laq_project_takes_at_most_2m_minus_1_values(bits, levels):
    torch.manual_seed(0)
    w, d = torch.randn(64, 32) * 0.2, torch.rand(64, 32) + 0.1
    p = la.laq_project(w, d, bits=bits, levels=levels)
    assert p.w_hat.unique().numel() <= 2 ** bits - 1
    assert set(p.b.unique().tolist()) <= set(la.laq_levels(bits, levels).tolist())
    # with the exact (least-squares) scale every alternation step lowers (*): alpha is optimal
    # for b, and b = P(w / alpha) is the entrywise nearest level for alpha. (The released-code
    # scale sum(d|b||w|)/sum(d|b|) is not the least-squares one for |b| < 1: no such guarantee.)
    objs = [objective(w, d, la.laq_project(w, d, bits=bits, levels=levels, scale_form="exact",
                                           max_iter=n).w_hat) for n in (1, 2, 5, 10)]
    assert all(b <= a + 1e-5 for a, b in zip(objs, objs[1:])), objs


def test_laq_scale_forms():
    torch.manual_seed(1)
    w, d = torch.randn(500, dtype=torch.float64), torch.rand(500, dtype=torch.float64) + 0.1
    # identical for codes in {0, +-1}
    a = la.laq_project(w, d, bits=2, scale_form="code")
    b = la.laq_project(w, d, bits=2, scale_form="exact")
    assert torch.allclose(a.w_hat, b.w_hat)
    # the exact form is the weighted least-squares scale of its final codes (up to tolerance)
    e = la.laq_project(w, d, bits=3, scale_form="exact", max_iter=100, tol=1e-12)
    lsq = (d * e.b * w).sum() / (d * e.b * e.b).sum()
    assert e.alpha.item() == pytest.approx(lsq.item(), rel=1e-6)


def test_laq_rejects_one_bit():
    with pytest.raises(ValueError, match="lab"):
        la.laq_project(torch.randn(4), bits=1)


def test_uniform_step_reproduces_w_hat_bit_exactly():
    torch.manual_seed(2)
    w, d = torch.rand(16, 40) * 2 - 1, torch.rand(16, 40)
    for kw in [dict(mode="lab"), dict(mode="lat", exact=True), dict(mode="twn"), dict(mode="bc"),
               dict(mode="laq", bits=3, levels="linear"), dict(mode="laq", bits=4, levels="log")]:
        p = la.project(w, d, blocks=4, **kw)
        s = la.uniform_step(p.alpha, kw["mode"], kw.get("bits"), kw.get("levels", "linear"))
        q = torch.round(p.w_hat.reshape(4, -1) / s[:, None])
        assert torch.equal((q * s[:, None]).reshape(w.shape), p.w_hat), kw


# ---------------------------------------------------------------------------------------------
# blocks, sparsity, dispatch


@pytest.mark.parametrize("kw", [dict(mode="lab"), dict(mode="lat", exact=True), dict(mode="lat"),
                                dict(mode="lat2", exact=True), dict(mode="lat2"), dict(mode="bwn"),
                                dict(mode="twn"), dict(mode="laq", bits=3), dict(mode="laq", bits=3, levels="log")])
def test_per_block_scales_equal_projecting_each_block(kw):
    torch.manual_seed(0)
    H = 6
    w, d = torch.randn(4 * H, 5) * 0.3, torch.rand(4 * H, 5) + 0.05
    joint = la.project(w, d, blocks=4, **kw)
    assert joint.alpha.shape[0] == 4
    for g in range(4):
        sl = slice(g * H, (g + 1) * H)
        sep = la.project(w[sl], d[sl], **kw)
        assert torch.allclose(joint.w_hat[sl], sep.w_hat, atol=1e-6), g
        assert torch.allclose(joint.alpha[g], sep.alpha[0], atol=1e-6)
    assert joint.alpha.flatten().unique().numel() > 1  # the blocks really get their own scales


def test_blocks_must_divide_dim0():
    with pytest.raises(ValueError, match="blocks"):
        la.lab_project(torch.randn(6, 3), blocks=4)


@pytest.mark.parametrize("kw", [dict(mode="lab"), dict(mode="lat", exact=True), dict(mode="lat"),
                                dict(mode="lat2", exact=True), dict(mode="laq", bits=3)])
@pytest.mark.parametrize("keep", [0.1, 0.37, 0.8])
def test_sparsified_projection_keeps_exactly_the_budget(kw, keep):
    torch.manual_seed(0)
    w, d = torch.randn(8, 50) * 0.3, torch.rand(8, 50) + 0.05
    p = la.project(w, d, keep=keep, blocks=2, **kw)
    n = round(keep * 200)
    assert p.mask.reshape(2, -1).sum(1).tolist() == [n, n]
    assert torch.all(p.w_hat[p.mask == 0] == 0)
    assert torch.all((p.w_hat != 0).reshape(2, -1).sum(1) <= n)
    if kw["mode"] == "lab":
        assert int((p.w_hat != 0).sum()) == 2 * n
    # the support is the top d w^2 of each block
    score = (d * w * w).reshape(2, -1)
    m = p.mask.reshape(2, -1).bool()
    for g in range(2):
        assert score[g][m[g]].min() >= score[g][~m[g]].max()


def test_sparse_lab_scale_is_the_weighted_mean_on_the_support():
    torch.manual_seed(0)
    w, d = torch.randn(100), torch.rand(100) + 0.1
    p = la.sparse_project(w, d, keep=0.25, mode="lab")
    m = p.mask
    assert p.alpha.item() == pytest.approx(float((d * m * w.abs()).sum() / (d * m).sum()), rel=1e-6)


def test_zero_curvature_behaves_like_unit_curvature():
    w = torch.randn(30)
    assert torch.allclose(la.lab_project(w, torch.zeros(30)).w_hat, la.bwn_project(w).w_hat)


def test_inputs_are_not_modified_and_errors_name_the_fix():
    w, d = torch.randn(5), torch.rand(5)
    w0, d0 = w.clone(), d.clone()
    la.project(w, d, mode="laq", bits=3, keep=0.5)
    assert torch.equal(w, w0) and torch.equal(d, d0)
    with pytest.raises(ValueError, match="valid modes"):
        la.project(w, d, mode="foo")
    with pytest.raises(ValueError, match="shape"):
        la.lab_project(w, torch.rand(4))
