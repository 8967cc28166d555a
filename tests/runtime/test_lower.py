"""The graph lowering of the compiled runtime (runtime/compiled/lower.py): every op against the
decoded-dense torch forward (rtol 1e-5) on odd shapes, batch 1 and N, broadcast gates, several
readers of one value; whole models (zoo ResNet-20, Hugging Face ResNet / MobileNetV2 / BERT /
GPT-2 blocks) run natively and equal torch."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from weightzip.runtime.compiled import kernels as K
from weightzip.runtime.compiled.lower import Unsupported, _block, gather_runs, lower_graph
from weightzip.runtime.compiled.module import _GraphNative, compile_model

SETTINGS = settings(max_examples=3, deadline=None, suppress_health_check=list(HealthCheck))


def _run(model, x, formats=None):
    """Lower ``model`` for x's sample shape, run the program on x, compare with torch."""
    model.eval()
    prog = lower_graph(model, formats, tuple(x.shape[1:]), x.dtype)
    got = _GraphNative(prog).run(x, 1)
    with torch.no_grad():
        want = model(x)
    for g, w in zip(_leaves(got), _leaves(want)):
        assert g.shape == w.shape
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)
    return prog


def _leaves(y):
    if isinstance(y, torch.Tensor):
        return [y]
    if isinstance(y, dict):
        return [t for v in y.values() for t in _leaves(v)]
    return [t for v in y for t in _leaves(v)]


def _kinds(prog):
    return [int(k) for k in prog.ops[:, K.C_KIND]]


class Residual(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.a = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(c)
        self.b = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        h = F.relu(self.bn(self.a(x)))
        return F.relu(self.b(h) + x) + h   # x and h are read twice


class SqueezeExcite(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 1)
        self.fc1 = nn.Conv2d(c, max(1, c // 2), 1)
        self.fc2 = nn.Conv2d(max(1, c // 2), c, 1)

    def forward(self, x):
        h = F.hardswish(self.conv(x))
        g = F.hardsigmoid(self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(h, 1)))))
        return h * g                      # (C, 1, 1) gate broadcast over (C, H, W)


class PadShortcut(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c

    def forward(self, x):
        y = x[:, :, ::2, ::2]
        return torch.cat([F.pad(y, (0, 0, 0, 0, 1, 2)), F.gelu(y, approximate="tanh")], 1).flatten(1)


class Attention(nn.Module):
    def __init__(self, d, hq, hk, causal, mask):
        super().__init__()
        self.q = nn.Linear(d, d)
        self.k = nn.Linear(d, d // hq * hk)
        self.v = nn.Linear(d, d // hq * hk)
        self.ln = nn.LayerNorm(d)
        self.hq, self.hk, self.causal, self.use_mask = hq, hk, causal, mask

    def forward(self, x):
        n, t, d = x.shape
        dh = d // self.hq
        q = self.q(x).view(n, t, self.hq, dh).transpose(1, 2)
        k = self.k(x).view(n, t, self.hk, dh).transpose(1, 2)
        v = self.v(x).view(n, t, self.hk, dh).transpose(1, 2)
        mask = None
        if self.use_mask:
            mask = torch.ones(t, t, dtype=torch.bool).tril()
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=self.causal and mask is None,
                                           enable_gqa=self.hk != self.hq)   # grouped KV heads
        h = self.ln(a.transpose(1, 2).reshape(n, t, d) + x)
        return torch.softmax(h, -1) * h.mean(-1, keepdim=True) - torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6)


@SETTINGS
@given(c=st.integers(1, 5), h=st.integers(3, 9), n=st.sampled_from([1, 3]))
def test_residual_adds_and_several_readers(c, h, n):
    torch.manual_seed(c * 100 + h)
    m = Residual(c)
    with torch.no_grad():
        m.bn.running_mean.uniform_(-0.5, 0.5)
        m.bn.running_var.uniform_(0.5, 2.0)
    prog = _run(m, torch.randn(n, c, h, h + 1))
    kinds = _kinds(prog)
    assert kinds.count(K.K_CONV) == 2 and K.K_EW not in kinds   # BN and ReLUs folded into epilogues
    # ``b(h) + x`` (+ its ReLU) is conv b's epilogue; ``... + h`` reads an activation, not a conv
    assert kinds.count(K.K_BIN) == 1
    fused = [i.fused for i in prog.info if i.layer == "b"][0]
    assert [f.split("_")[0] for f in fused] == ["add", "relu"]


class ResBlock(nn.Module):
    """A basic residual block whose shortcut is the input itself, a 1 x 1 conv + BN traced AFTER
    the main path (torchvision's / HF's downsample), or a strided slice + channel pad (the zoo's
    PadShortcut), in either operand order, and any activation after the add."""

    def __init__(self, cin, cout, stride, shortcut, act, swap):
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        self.shortcut, self.act, self.swap, self.stride, self.extra = shortcut, act, swap, stride, cout - cin
        for bn in (self.bn1, self.bn2, self.down[1]):
            with torch.no_grad():
                bn.running_mean.uniform_(-0.5, 0.5)
                bn.running_var.uniform_(0.5, 2.0)

    def forward(self, x):
        y = self.bn2(self.c2(F.relu(self.bn1(self.c1(x)))))
        if self.shortcut == "identity":
            s = x
        elif self.shortcut == "conv":
            s = self.down(x)
        else:
            e = self.extra
            s = F.pad(x[:, :, ::self.stride, ::self.stride], (0, 0, 0, 0, e // 2, e - e // 2))
        z = s + y if self.swap else y + s
        return {"relu": F.relu, "relu6": F.relu6, "none": lambda v: v, "gelu": F.gelu}[self.act](z)


@SETTINGS
@given(c=st.integers(1, 4), h=st.integers(2, 9), n=st.sampled_from([1, 3]),
       shortcut=st.sampled_from(["identity", "conv", "pad"]), act=st.sampled_from(["relu", "relu6", "none", "gelu"]),
       swap=st.booleans())
def test_residual_add_fuses_into_the_conv_epilogue(c, h, n, shortcut, act, swap):
    """``act(bn(conv(h)) + shortcut)`` is ONE conv op (``kernels._epi_add``), whichever shortcut
    (a late one is moved in front of the conv) and operand order, equal to torch."""
    torch.manual_seed(c * 31 + h)
    cout, stride = (c, 1) if shortcut == "identity" else (c + 2, 2)
    m = ResBlock(c, cout, stride, shortcut, act, swap)
    prog = _run(m, torch.randn(n, c, h, h + 1))
    assert K.K_BIN not in _kinds(prog)
    into = [i for i in prog.info if any(f.startswith("add") for f in i.fused)]
    assert len(into) == 1
    # the first operand's conv takes the add where it can: c2 (the shortcut conv, traced after
    # it, then runs first), or, for ``shortcut + y`` with a shortcut conv, that conv itself (c2
    # already ran)
    assert into[0].layer == ("down.0" if shortcut == "conv" and swap else "c2")
    assert (act in ("relu", "relu6", "gelu")) == (len(into[0].fused) == 3)   # BN, add, activation
    if into[0].layer == "c2" and shortcut == "conv":   # moved in front of the conv that reads it
        layers = [i.layer for i in prog.info]
        assert layers.index("down.0") < layers.index("c2")


class DepthwiseResidual(nn.Module):
    def __init__(self, c, stride):
        super().__init__()
        self.dw = nn.Conv2d(c, c, 3, stride, 1, groups=c, bias=False)
        self.bn = nn.BatchNorm2d(c)
        self.stride = stride
        with torch.no_grad():
            self.bn.running_var.uniform_(0.5, 2.0)

    def forward(self, x):
        return F.relu6(self.bn(self.dw(x)) + x[:, :, ::self.stride, ::self.stride])


@pytest.mark.parametrize("c,stride", [(1, 1), (5, 1), (3, 2)])
def test_residual_add_fuses_into_a_depthwise_conv(c, stride):
    torch.manual_seed(c)
    prog = _run(DepthwiseResidual(c, stride), torch.randn(2, c, 7, 6))
    assert K.K_BIN not in _kinds(prog)
    assert int(prog.ops[[i.layer for i in prog.info].index("dw"), K.C_SCR]) == 2   # the depthwise kernel


class SmallPlaneDepthwise(nn.Module):
    def __init__(self, c, k, stride, pad, dil, act, residual):
        super().__init__()
        self.dw = nn.Conv2d(c, c, k, stride, pad, dilation=dil, groups=c, bias=act != "relu6")
        self.bn = nn.BatchNorm2d(c)
        self.act, self.residual = act, residual
        with torch.no_grad():
            self.bn.running_mean.uniform_(-0.5, 0.5)
            self.bn.running_var.uniform_(0.5, 2.0)

    def forward(self, x):
        h = self.bn(self.dw(x))
        if self.residual:
            h = h + x
        return {"relu6": F.relu6, "gelu": F.gelu, "none": lambda v: v, "relu": F.relu}[self.act](h)


@pytest.mark.parametrize("c,hw,k,stride,pad,dil,act,residual", [
    (16, 7, 3, 1, 1, 1, "relu6", False),      # MobileNets' 7 x 7 stage
    (20, 14, 3, 2, 1, 1, "relu6", False),     # stride 2 down to 7 x 7
    (17, 8, 3, 1, 0, 1, "gelu", False),       # no padding, an odd channel count
    (24, 7, 3, 1, 2, 2, "none", False),       # dilated
    (16, 8, 5, 1, 2, 1, "relu", False),       # 5 x 5 taps
    (21, 14, 3, 1, 1, 1, "relu6", False),     # 14 x 14 = 196 outputs (the limit), 21 = 16 + a scalar tail
    (16, 15, 3, 1, 1, 1, "relu6", False),     # 225 outputs: the per-channel phase-plane path
    (16, 7, 3, 1, 1, 1, "relu6", True),       # a fused residual: the per-channel path
    (8, 7, 3, 1, 1, 1, "relu6", False),       # too few channels for the vectors
    (83, 13, 3, 2, 1, 1, "relu", False),      # 5 vector blocks + 3 scalar channels, odd plane, stride 2
])
def test_small_plane_depthwise_convs_channels_last_or_per_channel(c, hw, k, stride, pad, dil, act, residual):
    torch.manual_seed(c + hw + k)
    prog = _run(SmallPlaneDepthwise(c, k, stride, pad, dil, act, residual), torch.randn(3, c, hw, hw))
    op = prog.ops[[i.layer for i in prog.info].index("dw")]
    assert int(op[K.C_SCR]) == 2
    cl = K.dw_channels_last(c, int(op[K.C_HO]), int(op[K.C_WO]))
    assert cl == (c >= K.DW_CL_MIN_C and int(op[K.C_HO] * op[K.C_WO]) <= K.DW_CL_MAX_OUT)
    assert cl == (int(op[K.C_HO]) <= 14 and c >= 16)
    x1 = torch.randn(1, c, hw, hw)    # batch 1 as well
    _run(SmallPlaneDepthwise(c, k, stride, pad, dil, act, residual), x1)


class NotFusable(nn.Module):
    def __init__(self, c, case):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)
        self.case = case

    def forward(self, x):
        y = self.conv(x)
        if self.case == "two readers":
            return F.relu(y + x) * y
        if self.case == "own output":      # the other operand is the conv's output itself
            return F.relu(y + y)
        return F.relu(y + x[:, :1])       # a broadcast operand: the epilogue adds whole planes only


@pytest.mark.parametrize("case", ["broadcast", "two readers", "own output"])
def test_residual_add_stays_an_op_where_it_cannot_fuse(case):
    torch.manual_seed(0)
    prog = _run(NotFusable(3, case), torch.randn(2, 3, 6, 5))
    assert K.K_BIN in _kinds(prog)


@SETTINGS
@given(c=st.integers(1, 6), h=st.integers(1, 7), n=st.sampled_from([1, 2]))
def test_squeeze_excite_gate_broadcast(c, h, n):
    torch.manual_seed(c + 7 * h)
    prog = _run(SqueezeExcite(c), torch.randn(n, c, h, h))
    assert K.K_BIN in _kinds(prog) and K.K_REDUCE in _kinds(prog)


@SETTINGS
@given(c=st.integers(1, 4), h=st.integers(2, 9), n=st.sampled_from([1, 4]))
def test_slice_pad_concat_as_index_maps(c, h, n):
    prog = _run(PadShortcut(c), torch.randn(n, c, h, h + 2))
    assert set(_kinds(prog)) <= {K.K_GATHER, K.K_PAD, K.K_EW}   # data movement only, no arithmetic op


class BigPlane(nn.Module):
    """Large planes (64 x 67 and up) and TF-style asymmetric pads."""

    def __init__(self, c):
        super().__init__()
        self.a = nn.Conv2d(3, c, 3, stride=2)
        self.b = nn.Conv2d(c, c + 1, 1)
        self.bn = nn.BatchNorm2d(c + 1)

    def forward(self, x):
        h = F.relu6(self.a(F.pad(x, (0, 1, 0, 1))))
        return self.bn(self.b(F.pad(h, (1, 2, 0, 3), value=0.5)))


def test_depthwise_convs_any_stride_and_dilation():
    torch.manual_seed(3)
    for stride, dil, pad, k in ((1, 1, 1, 3), (2, 1, 1, 3), (1, 2, 2, 3), (2, 1, 2, 5)):
        m = nn.Sequential(nn.Conv2d(6, 6, k, stride=stride, padding=pad, dilation=dil, groups=6), nn.ReLU6(),
                          nn.Conv2d(6, 4, 1))
        prog = _run(m, torch.randn(2, 6, 13, 11))
        assert [o[K.C_SCR] for o in prog.ops if o[K.C_KIND] == K.K_CONV][0] == 2


@pytest.mark.parametrize("h", [3, 4, 6, 7, 8, 9, 12])
def test_dense_and_depthwise_convs_at_every_tile_remainder(h):
    """Dense 1x1 convs over h x h planes run ``n = h^2`` outputs per row (9 ... 144: every mix of
    the 64-, 32- and 16-lane tiles of ``kernels._tiles4`` and a partial last tile); 9 output
    channels = two 4-row blocks + one single row; the depthwise 3x3 runs ``kernels._tiles`` over
    ``h (h + 2)`` outputs per channel."""
    torch.manual_seed(h)
    m = nn.Sequential(nn.Conv2d(5, 9, 1), nn.ReLU(), nn.Conv2d(9, 9, 3, padding=1, groups=9),
                      nn.Conv2d(9, 3, 1))
    prog = _run(m, torch.randn(2, 5, h, h))
    assert [o[K.C_SCR] for o in prog.ops if o[K.C_KIND] == K.K_CONV] == [0, 2, 0]


@pytest.mark.parametrize("groups,pad,stride", [(1, 0, 1), (2, 0, 1), (3, 0, 1), (1, 1, 1), (2, 0, 2), (1, 1, 2)])
@pytest.mark.parametrize("n", [1, 3])
def test_pointwise_convs_direct_or_through_phase_planes(groups, pad, stride, n):
    """A 1 x 1 conv at stride 1 without padding reads its input planes in place (``kernels._conv``
    ``direct``), per group; with padding or a stride it goes through the phase planes. Both equal
    torch, and the conv after it reads the right values (its input slot is not disturbed)."""
    torch.manual_seed(groups * 10 + pad + stride)
    m = nn.Sequential(nn.Conv2d(6, 6, 1, stride, pad, groups=groups), nn.ReLU(), nn.Conv2d(6, 4, 1, groups=2))
    _run(m, torch.randn(n, 6, 5, 7))


class PointwiseBlock(nn.Module):
    """expand 1 x 1 (+ BN, ReLU6) -> project 1 x 1 (+ BN), optionally added to the input: the
    MobileNets' 7 x 7 stage without its depthwise conv."""

    def __init__(self, c, hidden, residual):
        super().__init__()
        self.expand = nn.Conv2d(c, hidden, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(hidden)
        self.project = nn.Conv2d(hidden, c, 1)
        self.bn2 = nn.BatchNorm2d(c)
        self.residual = residual
        for bn in (self.bn1, self.bn2):
            with torch.no_grad():
                bn.running_mean.uniform_(-0.3, 0.3)
                bn.running_var.uniform_(0.5, 2.0)

    def forward(self, x):
        y = self.bn2(self.project(F.relu6(self.bn1(self.expand(x)))))
        return y + x if self.residual else y


@pytest.mark.parametrize("c,hidden,hw,residual,rl", [
    (64, 128, 7, False, [True, True]),     # 49 positions: 12 tiles of 4 + one
    (160, 70, 7, True, [False, True]),     # 160 rows = 64 + 64 + 32 padded; 70 rows: weights-stationary; a residual
    (65, 224, 5, False, [True, False]),    # 25 positions; 65 input channels: a 64-channel block + 1; 224 rows in 256
    (64, 64, 14, False, [False, False]),   # 196 positions fill 196 of 208 lanes: weights-stationary
    (64, 176, 3, True, [True, True]),      # 9 positions: two tiles of 4 + one; 176 rows in 192
])
@pytest.mark.parametrize("n", [1, 3])
def test_pointwise_convs_on_small_planes_rows_as_lanes(c, hidden, hw, residual, rl, n):
    """A dense 1 x 1 conv over a plane whose positions fill under 90% of the 16-lane tiles runs
    with the output channels as the lanes (``kernels._conv1x1_rl``, its weights in 64-row panels)
    where the panels leave at most 1/6 of the rows idle; it equals torch, with BN, ReLU6 and a
    fused residual, batch 1 and N."""
    torch.manual_seed(c + hidden + hw)
    prog = _run(PointwiseBlock(c, hidden, residual), torch.randn(n, c, hw, hw))
    convs = [o for o in prog.ops if o[K.C_KIND] == K.K_CONV]
    assert [bool(o[K.C_RL]) for o in convs] == rl == [K.rl_conv1x1(hw * hw, hidden), K.rl_conv1x1(hw * hw, c)]
    if residual:
        assert K.K_BIN not in _kinds(prog)   # the add is the project conv's epilogue


def test_rows_as_lanes_panels_and_rule():
    """``rl_panels`` is a permutation of the row-major weights (64-row panels, column-major within a
    panel, zero rows padding the last); ``rl_conv1x1`` picks small planes and well-filled panels."""
    w = np.arange(100 * 3, dtype=np.int32).reshape(100, 3)
    p = K.rl_panels(w.ravel(), 100, 3)
    assert p.shape == (128 * 3,)
    for r in range(128):
        for j in range(3):
            assert p[((r // 64) * 3 + j) * 64 + r % 64] == (w[r, j] if r < 100 else 0)
    assert K.rl_conv1x1(49, 1280) and K.rl_conv1x1(49, 160) and K.rl_conv1x1(25, 64)
    assert not K.rl_conv1x1(196, 576) and not K.rl_conv1x1(64, 1280) and not K.rl_conv1x1(49, 32)
    assert not K.rl_conv1x1(49, 100)   # 100 rows in 128: over 1/6 idle


@pytest.mark.parametrize("t", [K.GEMM_MIN_ROWS - 1, K.GEMM_MIN_ROWS + 5])
def test_fc_over_a_sequence_tiles_or_decode_and_blas(t):
    """An FC over a (T, D) sequence runs the register tiles below ``GEMM_MIN_ROWS`` rows and
    decode + BLAS from there (``C_SCR == 1``); both equal torch."""
    torch.manual_seed(t)
    m = nn.Sequential(nn.Linear(24, 40), nn.GELU(), nn.Linear(40, 7))
    prog = _run(m, torch.randn(1, t, 24))
    fcs = [o for o in prog.ops if o[K.C_KIND] == K.K_FC]
    assert len(fcs) == 2 and all(o[K.C_SCR] == int(t >= K.GEMM_MIN_ROWS) for o in fcs)
    assert all(o[K.C_REP] == t for o in fcs)


class HeadPermute(nn.Module):
    """(T, H*d) -> (H, T, d) -> back, as attention's head split and merge; plus a cat with a pad."""

    def __init__(self, heads):
        super().__init__()
        self.heads = heads

    def forward(self, x):
        n, t, D = x.shape
        h = x.view(n, t, self.heads, D // self.heads).permute(0, 2, 1, 3).contiguous() * 2.0
        y = h.permute(0, 2, 1, 3).reshape(n, t, D)
        return torch.cat([y, F.pad(y[:, :, :3], (0, 1), value=0.5)], dim=2)


@pytest.mark.parametrize("d", [1, 3, 16])
def test_index_maps_as_runs_or_per_value(d):
    """Long runs (head width 16) are stored and copied as runs, short ones (1, 3) as the per-value
    map; both equal torch, fill values and concatenation pieces included."""
    torch.manual_seed(d)
    prog = _run(HeadPermute(4), torch.randn(2, 5, 4 * d))
    gathers = [o for o in prog.ops if o[K.C_KIND] == K.K_GATHER]
    assert gathers
    if d == 16:
        assert any(o[K.C_NNZ] > 0 for o in gathers)
    if d == 1:
        assert all(o[K.C_NNZ] == 0 for o in gathers)


def test_gather_runs_split_at_every_break():
    idx = np.array([4, 5, 6, -1, -1, 0, 1, 3, -1, 9])
    runs = gather_runs(idx)
    assert runs.tolist() == [[0, 4, 3], [3, -1, 2], [5, 0, 2], [7, 3, 1], [8, -1, 1], [9, 9, 1]]
    back = np.concatenate([np.arange(i0, i0 + ln) if i0 >= 0 else np.full(ln, -1) for _, i0, ln in runs])
    assert (back == idx).all() and gather_runs(np.zeros(0, np.int32)).shape == (0, 3)


@SETTINGS
@given(c=st.integers(1, 4), h=st.integers(64, 70), n=st.sampled_from([1, 2]))
def test_large_planes_and_asymmetric_pads(c, h, n):
    torch.manual_seed(c + h)
    m = BigPlane(c)
    with torch.no_grad():
        m.bn.running_mean.uniform_(-0.5, 0.5)
        m.bn.running_var.uniform_(0.5, 2.0)
    prog = _run(m, torch.randn(n, 3, h, h + 3))
    convs = [o for o in prog.ops if o[K.C_KIND] == K.K_CONV]
    assert all(o[K.C_SCR] == 0 for o in convs)   # weights-stationary at every plane size
    # the zero pad is the first conv's own (asymmetric) padding; the 0.5 pad stays an op
    assert _kinds(prog).count(K.K_PAD) == 1 and (convs[0][K.C_PH], convs[0][K.C_PW]) == (0, 0)
    assert any("pad" in name for name in prog.info[0].fused)


class TFDepthwise(nn.Module):
    """MobileNet-style TF "same" padding: an explicit (often asymmetric) zero pad before each conv
    (HF MobileNetV2 pads by zero amounts before its 1 x 1 convs too)."""

    def __init__(self, c, stride):
        super().__init__()
        self.dw = nn.Conv2d(c, c, 3, stride=stride, groups=c)
        self.pw = nn.Conv2d(c, c + 2, 1)
        self.full = nn.Conv2d(c + 2, 3, 3, stride=stride)   # small plane: the weights-stationary kernel
        self.stride = stride

    def forward(self, x):
        p = (0, 1, 0, 1) if self.stride == 2 else (1, 1, 1, 1)
        h = self.pw(F.pad(F.relu6(self.dw(F.pad(x, p))), (0, 0, 0, 0)))
        return self.full(F.pad(h, (1, 0, 0, 2)))


@pytest.mark.parametrize("stride, hw", [(1, (7, 9)), (2, (8, 8)), (2, (9, 6))])
def test_zero_pads_fold_into_depthwise_convs(stride, hw):
    torch.manual_seed(stride)
    prog = _run(TFDepthwise(5, stride), torch.randn(2, 5, *hw))
    assert K.K_PAD not in _kinds(prog)
    dw, pw, full = (o for o in prog.ops if o[K.C_KIND] == K.K_CONV)
    assert dw[K.C_SCR] == 2 and (dw[K.C_PH], dw[K.C_PW]) == ((1, 1) if stride == 1 else (0, 0))
    assert full[K.C_SCR] == 0 and (full[K.C_PH], full[K.C_PW]) == (0, 1)


@SETTINGS
@given(t=st.integers(1, 9), heads=st.sampled_from([(1, 1), (2, 2), (4, 2), (4, 1)]), causal=st.booleans(),
       mask=st.booleans(), n=st.sampled_from([1, 2]))
def test_attention_block(t, heads, causal, mask, n):
    hq, hk = heads
    torch.manual_seed(t)
    prog = _run(Attention(8, hq, hk, causal, mask), torch.randn(n, t, 8))
    assert K.K_ATTN in _kinds(prog) and K.K_NORM in _kinds(prog)


def test_embedding_rows_from_codebook_codes_and_token_range(tmp_path):
    import weightzip as wz

    class Tok(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(37, 6)
            self.pos = nn.Embedding(16, 6)
            self.out = nn.Linear(6, 5)

        def forward(self, ids):
            p = torch.arange(ids.shape[1]).unsqueeze(0)
            return self.out(F.silu(self.emb(ids) + self.pos(p)))

    torch.manual_seed(0)
    model = Tok().eval()
    ids = torch.randint(0, 37, (3, 7))
    _run(model, ids)   # float32 rows
    recipe = wz.Recipe.from_dict({"name": "k", "stages": [
        {"method": "kmeans_share", "bits": 4, "select": {"types": ["Linear", "Embedding"]}}]})
    wz.compress(model, recipe, log=lambda s: None)
    wz.save(model, tmp_path / "tok.wz", example_inputs=(ids,))
    dense = wz.load(tmp_path / "tok.wz")
    cm = wz.load(tmp_path / "tok.wz", mode="compiled")
    with torch.no_grad():
        torch.testing.assert_close(cm(ids), dense(ids), rtol=1e-5, atol=1e-6)
    plan = next(iter(cm.plans.values()))
    prog = plan.segments[0]
    assert plan.native_only and prog.vocab == 37
    assert any(i.op == "embedding" and "codebook" in i.rep for i in plan.info())
    with pytest.raises(IndexError, match="token ids"):
        cm(torch.full((1, 7), 99))


def test_block_broadcast_rule():
    assert _block((4, 1, 1), (4, 3, 5)) == (15, 4)
    assert _block((5,), (4, 3, 5)) == (1, 5)
    assert _block((3, 1), (2, 3, 5)) == (5, 3)
    assert _block((), (2, 3)) == (6, 1)
    assert _block((4, 1, 5), (4, 3, 5)) == (None, 0)   # not one block: materialized by an index map


def test_node_without_kernel_runs_in_torch_between_native_ops():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(5, 5)
            self.b = nn.Linear(5, 3)

        def forward(self, x):
            h = self.a(x)
            return self.b(torch.cumsum(h, 1) + h)   # cumsum has no kernel

    torch.manual_seed(0)
    for n in (1, 3, 70):   # 70: more than one chunk
        prog = _run(M(), torch.randn(n, 5))
        assert [f[0] for f in prog.fallbacks] == ["cumsum"] and len(prog.torch_steps) == 1
        assert _kinds(prog).count(K.K_FC) == 2


def test_node_without_kernel_or_torch_step_is_named():
    class M(nn.Module):
        def forward(self, x):
            return torch.argmax(x, 1)   # an integer result: no float slot for it

    with pytest.raises(Unsupported, match="argmax"):
        lower_graph(M(), None, (4,))


def test_slots_reuse_memory_by_lifetime():
    layers = [nn.Linear(32, 32) for _ in range(12)]
    model = nn.Sequential(*[m for lin in layers for m in (lin, nn.GELU(approximate="tanh"))])

    class Skip(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = model

        def forward(self, x):
            return self.body(x) + x

    prog = _run(Skip(), torch.randn(2, 32))
    assert prog.values_end <= 4 * 32   # 12 layers, at most three values live at once


def _formats_of(model, bits=4, prune=0.0):
    """Pruned + k-means codebook formats of every conv / linear weight (the file's parts)."""
    import weightzip as wz

    stages = ([{"method": "prune_magnitude", "sparsity": prune, "select": {"types": ["Conv2d", "Linear"]}}]
              if prune else []) + [{"method": "kmeans_share", "bits": bits, "select": {"types": ["Conv2d", "Linear"]}}]
    wz.compress(model, wz.Recipe.from_dict({"name": "t", "stages": stages}), log=lambda s: None)
    return model


def _zoo_resnet20(seed: int) -> nn.Module:
    """The zoo ResNet-20 (random weights) with non-trivial BatchNorm statistics."""
    from weightzip.core.registry import create_model

    torch.manual_seed(seed)
    model = create_model("resnet20").eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 2.0)
    return model


def _dense_and_compiled(model: nn.Module, path, example_inputs=None):
    """``model`` saved to ``path``, loaded back dense and compiled (a fallback warning fails)."""
    import weightzip as wz

    wz.save(model, path, example_inputs=example_inputs)
    dense = wz.load(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)   # no fallback warning: all native
        cm = wz.load(path, mode="compiled")
    return dense, cm


def test_zoo_resnet20_pruned_codebook_from_file(tmp_path):
    model = _zoo_resnet20(seed=0)
    _formats_of(model, 4, 0.8)
    x = torch.randn(3, 3, 32, 32)
    dense, cm = _dense_and_compiled(model, tmp_path / "r20.wz")
    plan = cm.plans[(3, 32, 32)]
    assert plan.native_only
    info = plan.info()
    assert {i.op for i in info} >= {"conv", "index-map", "reduce", "fc"}
    assert all("csr codebook" in i.rep for i in info if i.op == "conv")   # runs from the codes
    # all nine residual adds (+ ReLU) are conv epilogues, the two PadShortcuts' included
    assert "add" not in {i.op for i in info}
    assert sum(any(f.startswith("add") for f in i.fused) for i in info) == 9
    with torch.no_grad():
        torch.testing.assert_close(cm(x), dense(x), rtol=1e-5, atol=1e-4)
        torch.testing.assert_close(cm(x[:1]), dense(x[:1]), rtol=1e-5, atol=1e-4)


def test_activation_quantizers_of_a_residual_net_lower_to_actq(tmp_path):
    """structured_qat's k-bit layer inputs (forward pre-hooks) on a residual net: one ACTQ op per
    quantized layer input, no hook arithmetic in the program, equal to the hooked dense model."""
    from weightzip.core.parametrize import install_activation_quant

    model = _zoo_resnet20(seed=1)
    _formats_of(model, 2, 0.5)
    names = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))][1:]
    install_activation_quant(model, [{"module": n, "bits": 2, "clip": 1.5} for n in names])
    dense, cm = _dense_and_compiled(model, tmp_path / "r20aq.wz")
    plan = cm.plans[(3, 32, 32)]
    assert plan.native_only
    prog = plan.segments[0]
    assert _kinds(prog).count(K.K_ACTQ) == len(names)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(cm(x), dense(x), rtol=1e-5, atol=1e-4)
    # lowering leaves the model's own hooks in place: its torch forward still quantizes
    with torch.no_grad():
        before = dense(x)
    lower_graph(dense, None, (3, 32, 32), torch.float32, dense.wz_runtime["activation_quant"])
    assert len(dense._wz_act_handles) == len(names)
    with torch.no_grad():
        torch.testing.assert_close(dense(x), before, rtol=0, atol=0)


transformers = pytest.importorskip("transformers")


def _hf(name):
    tf = transformers
    if name == "resnet":
        return tf.ResNetForImageClassification(tf.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 2],
                                                               num_labels=3)), torch.randn(2, 3, 32, 32)
    if name == "mobilenet_v2":
        return tf.MobileNetV2ForImageClassification(tf.MobileNetV2Config(image_size=32, depth_multiplier=0.35,
                                                                         num_labels=3)), torch.randn(2, 3, 32, 32)
    ids = torch.randint(0, 50, (2, 11))
    if name == "bert":
        return tf.BertModel(tf.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
                                          intermediate_size=24, max_position_embeddings=32)), ids
    if name == "gpt2":
        return tf.GPT2LMHeadModel(tf.GPT2Config(vocab_size=50, n_embd=16, n_layer=2, n_head=4, n_positions=32)), ids
    raise KeyError(name)


@pytest.mark.parametrize("name", ["resnet", "mobilenet_v2", "bert", "gpt2"])
def test_hugging_face_models_run_natively_from_their_file(name, tmp_path):
    import weightzip as wz

    torch.manual_seed(0)
    model, x = _hf(name)
    model.eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 2.0)
    wz.compress(model, wz.Recipe.from_dict({"name": "k", "stages": [
        {"method": "kmeans_share", "bits": 4, "select": {"types": ["Linear", "Conv2d", "Conv1D", "Embedding"]}}]}),
        log=lambda s: None)
    path = tmp_path / f"{name}.wz"
    wz.save(model, path, example_inputs=(x,))
    dense = wz.load(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        cm = wz.load(path, mode="compiled")
    plan = next(iter(cm.plans.values()))
    assert plan.native_only, plan.whole_model_reason
    assert cm.resident_bytes()["torch_fallback"] == 0
    with torch.no_grad():
        for xb in (x, x[:1]):
            for g, w in zip(_leaves(cm(xb)), _leaves(dense(xb))):
                torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5 * max(1.0, float(w.abs().max())))
    if name in ("bert", "gpt2"):
        assert any(i.op == "embedding" and "codebook" in i.rep for i in plan.info())
        assert any(i.op == "attention" for i in plan.info())
    assert math.isfinite(sum(i.macs for i in plan.info()))


def test_shift_dims_rows_of_16_then_8_never_more_outputs_than_the_phase_planes():
    """``K.shift_dims``: rows of Wo rounded up to 16 where that computes no more outputs per row
    than the phase planes' ``Wq``, else rows of 8, else not at all; any stride, no dilation."""
    def sd(H, Wo, k, s, p):
        Ho = (H + 2 * p - k) // s + 1
        return K.shift_dims(H, H, Ho, Wo, k, k, s, s, 1, 1, p, p)
    assert sd(32, 32, 3, 1, 1) == (32, 34, 34 * 32)
    assert sd(8, 8, 3, 1, 1) == (8, 10, 80)                 # 16 > Wq = 10: rows of 8
    assert sd(5, 5, 3, 1, 1) == (0, 0, 0)                   # 8 > 7
    assert sd(12, 12, 5, 1, 2) == (16, 16, 16 * 16)         # 16 <= 12 + 4
    assert sd(9, 9, 5, 1, 2) == (0, 0, 0)                   # 16 > 13 and 16 > 13
    assert sd(16, 8, 3, 2, 1) == (8, 9, 80)                 # stride 2: Wq = 9, rows r < 8 + 1
    assert sd(32, 16, 3, 2, 1) == (16, 17, 17 * 16)
    assert K.shift_dims(32, 32, 32, 32, 3, 3, 1, 1, 2, 2, 2, 2) == (0, 0, 0)   # dilation
    assert K.shift_dims(32, 32, 32, 32, 1, 1, 1, 1, 1, 1, 0, 0) == (0, 0, 0)   # 1 x 1


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("hw, k, pad", [((8, 8), 3, 1), ((16, 13), 3, 1), ((7, 21), 3, (1, 2)), ((9, 9), 5, 2),
                                        ((12, 32), (3, 2), (1, 0)), ((6, 17), 2, 0), ((5, 5), 3, 1),
                                        # rows as wide as the input (one contiguous copy per shift):
                                        ((6, 32), 3, 0), ((16, 16), 5, 2), ((10, 16), 3, (0, 1))])
def test_convs_in_the_aligned_shifted_layout_equal_torch(tmp_path, hw, k, pad, stride):
    """Convs of every row width (rows of 16, of 8, none; as wide as the input or not), padding,
    kernel shape and stride 1 / 2, with dense weights (lowered directly) and pruned codebook
    weights (CSR, from the file), batch 1 and 3; a 2-group conv runs its groups over the same
    copies."""
    torch.manual_seed(hw[0] * 100 + hw[1] + stride)
    m = nn.Sequential(nn.Conv2d(6, 8, k, stride=stride, padding=pad), nn.ReLU(),
                      nn.Conv2d(8, 4, 3, padding=1, groups=2))
    x = torch.randn(3, 6, *hw)
    _run(m, x)
    _run(m, x[:1])
    _formats_of(m, 4, 0.7)
    dense, cm = _dense_and_compiled(m, tmp_path / "c.wz", example_inputs=(x[:2],))
    with torch.no_grad():
        for b in (1, 3):
            torch.testing.assert_close(cm(x[:b]), dense(x[:b]), rtol=1e-5, atol=1e-5)


class ExpandDepthwise(nn.Module):
    """MobileNetV2's inverted-residual head: 1 x 1 expand conv + BN + act, then the 3 x 3
    depthwise conv + BN + ReLU6 (``also`` returns the expanded tensor too: a second reader)."""

    def __init__(self, cin, cexp, stride, act="relu6", also=False):
        super().__init__()
        self.expand = nn.Conv2d(cin, cexp, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cexp)
        self.dw = nn.Conv2d(cexp, cexp, 3, stride, 1, groups=cexp, bias=False)
        self.bn2 = nn.BatchNorm2d(cexp)
        self.act, self.also = act, also
        with torch.no_grad():
            for bn in (self.bn1, self.bn2):
                bn.running_mean.uniform_(-0.5, 0.5)
                bn.running_var.uniform_(0.5, 2.0)

    def forward(self, x):
        e = {"relu6": F.relu6, "gelu": F.gelu, "none": lambda v: v}[self.act](self.bn1(self.expand(x)))
        y = F.relu6(self.bn2(self.dw(e)))
        return (y, e) if self.also else y


def _fused(prog) -> list[int]:
    return [int(v) for v in prog.ops[:, K.C_FUSE]]


@pytest.mark.parametrize("cin,cexp,hw,stride,act", [
    (16, 96, 56, 2, "relu6"),    # MobileNetV2 layer.1-like: 56 x 56, blocks of 20 channels
    (8, 86, 29, 1, "relu6"),     # odd plane (841 outputs: the tiles' copy path), blocks 76 + 10 rows
    (8, 30, 30, 2, "gelu"),      # an activation applied in a pass of its own, stride 2 (15 x 15 out)
    (5, 12, 30, 1, "none"),      # no activation: only BN's affine in the depthwise copy
])
def test_expand_conv_and_its_depthwise_conv_run_as_one_op(cin, cexp, hw, stride, act):
    """A 1 x 1 conv whose only reader is a per-channel depthwise conv on a plane of 28 x 28 or
    more runs with it as one op (kernels._conv_expand_dw, blocks of fuse_block channels) and
    equals torch; at batch 1 and 3."""
    torch.manual_seed(cexp + hw)
    model = ExpandDepthwise(cin, cexp, stride, act)
    for n in (1, 3):
        prog = _run(model, torch.randn(n, cin, hw, hw))
        assert _fused(prog)[:2] == [1, 2]
        assert any("depthwise" in f for f in prog.info[0].fused)
    L = hw * hw
    assert K.fuse_block(cexp, L) % 4 == 0 and 4 <= K.fuse_block(cexp, L) * L <= max(K.FUSE_FLOATS, 4 * L)


@pytest.mark.parametrize("also,hw", [(True, 28), (False, 14)])
def test_expand_conv_not_fused_with_a_second_reader_or_on_a_small_plane(also, hw):
    torch.manual_seed(hw)
    prog = _run(ExpandDepthwise(8, 24, 1, also=also), torch.randn(2, 8, hw, hw))
    assert 1 not in _fused(prog)


def test_fused_expand_depthwise_from_a_codebook_file(tmp_path):
    """4-bit k-means codes (a uint8 codebook, the file's representation) through the fused op:
    the compiled model equals the decoded dense one, batch 1 and 2."""
    torch.manual_seed(0)
    model = _formats_of(ExpandDepthwise(16, 40, 2).eval(), 4)
    x = torch.randn(2, 16, 32, 32)
    dense, cm = _dense_and_compiled(model, tmp_path / "ed.wz", example_inputs=(x,))
    prog = cm.plans[(16, 32, 32)].segments[0]
    assert _fused(prog)[:2] == [1, 2] and int(prog.ops[0, K.C_VFMT]) == K.V_TABLE
    with torch.no_grad():
        for b in (1, 2):
            torch.testing.assert_close(cm(x[:b]), dense(x[:b]), rtol=1e-5, atol=1e-5)
        cm.threads = 2   # chunks in parallel, each with its own work buffer (and fused-op scratch)
        x5 = torch.cat([x, x.flip(0), x[:1]])
        torch.testing.assert_close(cm(x5), dense(x5), rtol=1e-5, atol=1e-5)


def test_fused_expand_run_alone_writes_its_own_output():
    """The first op of a fused pair run without the second (a program sliced between them, as a
    profiler does) is the plain 1 x 1 conv: its output slot holds act(bn(conv(x)))."""
    torch.manual_seed(3)
    model = ExpandDepthwise(8, 20, 1).eval()
    x = torch.randn(1, 8, 28, 28)
    prog = _run(model, x)
    assert _fused(prog)[:2] == [1, 2]
    nat = _GraphNative(prog)
    work, chunk, scr = nat.work(1, 1)
    xn = np.ascontiguousarray(x.reshape(1, -1).numpy())
    out = np.empty((1, prog.nout), np.float32)
    K.run_graph_chunk(prog.ops[:1], nat.B, nat.F, xn, out, work[0], chunk, nat.io, scr)
    ys = int(prog.ops[0, K.C_YS]) * chunk
    got = torch.from_numpy(work[0][ys:ys + 20 * 28 * 28].copy()).view(1, 20, 28, 28)
    with torch.no_grad():
        want = F.relu6(model.bn1(model.expand(x)))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
