"""The compiled runtime equals the decoded-dense forward (rtol 1e-5) on random layers / shapes.

Tolerance: ``|y - y_dense| <= 1e-5 * |y_dense| + 1e-5 * (|W| |x|)`` elementwise - float32 sums
in another order differ by a few ulps of the sum of |terms|, so outputs near zero (where the
terms cancel) are compared against the size of the terms, not of the result.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from torch import nn

import weightzip as wz
from weightzip.codec import decode, encode
from weightzip.errors import WeightzipFormatError
from weightzip.runtime.compiled import compile_model
from weightzip.runtime.compiled.module import CompiledModel

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
SETTINGS = settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))


def _weight(kind: str, shape, density: float, rng: np.random.Generator) -> tuple[torch.Tensor, object]:
    """A weight of ``kind`` with the given density of non-zeros, and its Format (decoded exactly)."""
    rows = shape[0]
    cols = int(np.prod(shape[1:]))
    mask = rng.random((rows, cols)) < density
    if kind == "codebook":
        tab = rng.standard_normal(int(rng.integers(1, 12))).astype(np.float32)
        tab[tab == 0] = 0.5
        w = tab[rng.integers(0, len(tab), (rows, cols))] * mask
        fmt = encode(torch.from_numpy(w.reshape(shape)), {"kind": "codebook"}, options={"kinds": ["codebook"]})
    elif kind == "uniform":
        scale = float(rng.uniform(0.05, 0.5))
        q = rng.integers(-3, 4, (rows, cols)) * mask
        w = (q.astype(np.float32) * np.float32(scale))
        fmt = encode(torch.from_numpy(w.reshape(shape)), {"kind": "uniform", "scale": scale, "bits": 3})
    elif kind == "pq":
        d = int(rng.integers(1, 5))
        M = -(-cols // d)
        k = int(rng.integers(1, 9))
        cbs = rng.standard_normal((1, k, d)).astype(np.float32)
        codes = rng.integers(0, k, (rows, M))
        hint = {"kind": "pq", "codes": torch.from_numpy(codes), "codebooks": torch.from_numpy(cbs)}
        w = cbs[0][codes].reshape(rows, M * d)[:, :cols]
        fmt = encode(torch.from_numpy(np.ascontiguousarray(w).reshape(shape)), hint, options={"kinds": ["pq"]})
    else:
        w = rng.standard_normal((rows, cols)).astype(np.float32) * mask
        fmt = encode(torch.from_numpy(w.reshape(shape)))
    t = decode(fmt)
    return t, fmt


def _install(model: nn.Module, layers: dict[str, tuple[str, float]], rng) -> dict:
    formats = {}
    for name, (kind, density) in layers.items():
        mod = model.get_submodule(name)
        w, fmt = _weight(kind, tuple(mod.weight.shape), density, rng)
        with torch.no_grad():
            mod.weight.copy_(w)
        formats[f"{name}.weight"] = fmt
    return formats


def _check(model: nn.Module, cm: nn.Module, x: torch.Tensor) -> None:
    with torch.inference_mode():
        ref = model(x)
        y = cm(x)
        # bound of the summation error: the same network on |W|, |x| (no bias sign cancellation)
    assert y.shape == ref.shape
    err = (y - ref).abs()
    scale = _abs_forward(model, x)
    tol = 1e-5 * ref.abs() + 1e-5 * scale + 1e-6
    assert bool((err <= tol).all()), f"max err {float(err.max())}, max ref {float(ref.abs().max())}"


def _abs_forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    import copy

    m = copy.deepcopy(model)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, (nn.Linear, nn.Conv2d)):
                mod.weight.abs_()
                if mod.bias is not None:
                    mod.bias.abs_()
            if isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d)):
                mod.bias.abs_()
                mod.weight.abs_()
                mod.running_mean.zero_()
        with torch.inference_mode():
            return m(x.abs()).abs() + 1.0


KINDS = st.sampled_from(["codebook", "uniform", "pq", "dense"])
DENS = st.sampled_from([0.0, 0.02, 0.3, 0.6, 1.0])


@SETTINGS
@given(k1=KINDS, k2=KINDS, d1=DENS, d2=DENS, a=st.integers(1, 40), b=st.integers(1, 33), c=st.integers(1, 9),
       bn=st.booleans(), act=st.sampled_from(["relu", "tanh", "relu6", "none"]), batch=st.sampled_from([1, 2, 5, 17]),
       seed=st.integers(0, 2**16))
# regression: a dense codebook whose code 0 is a non-zero centroid (was read as a zero entry)
@example(k1="codebook", k2="codebook", d1=1.0, d2=0.02, a=35, b=1, c=2, bn=False, act="relu", batch=1, seed=5353)
def test_mlp_equals_dense(k1, k2, d1, d2, a, b, c, bn, act, batch, seed):
    rng = np.random.default_rng(seed)
    acts = {"relu": nn.ReLU(), "tanh": nn.Tanh(), "relu6": nn.ReLU6(), "none": nn.Identity()}
    layers = [nn.Linear(a, b)] + ([nn.BatchNorm1d(b)] if bn else []) + [acts[act], nn.Dropout(0.1), nn.Linear(b, c)]
    model = nn.Sequential(nn.Flatten(), *layers).eval()
    if bn:
        bnm = model[2]
        bnm.running_mean.uniform_(-1, 1)
        bnm.running_var.uniform_(0.5, 2)
        bnm.weight.data.uniform_(0.5, 1.5)
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    formats = _install(model, {names[0]: (k1, d1), names[1]: (k2, d2)}, rng)
    cm = compile_model(model, formats, (a,))
    plan = cm.plans[(a,)]
    assert plan.native_only and len(plan.segments) == 1
    _check(model, cm, torch.from_numpy(rng.standard_normal((batch, a)).astype(np.float32)))


@SETTINGS
@given(ncode=st.integers(2, 256), cols=st.integers(1, 700), dens=st.sampled_from([0.01, 0.3, 1.0]),
       batch=st.sampled_from([1, 3, 16, 70]), seed=st.integers(0, 2**16))
@example(ncode=256, cols=700, dens=0.3, batch=1, seed=0)    # 8 code bits: blocks of 256 columns
@example(ncode=129, cols=513, dens=1.0, batch=70, seed=1)   # block edges, every tile path of the batch kernel
@example(ncode=256, cols=700, dens=1.0, batch=1, seed=2)    # dense codebook rows: 256-entry register look-ups
@example(ncode=40, cols=97, dens=1.0, batch=1, seed=3)      # 64-entry table, a scalar tail
@example(ncode=100, cols=64, dens=1.0, batch=1, seed=4)     # 128-entry table
def test_packed_csr_blocks(ncode, cols, dens, batch, seed):
    """Packed CSR (16-bit col|code, columns in blocks of 2^(16 - code bits)) and its SELL-4 form
    (one block: slices of four rows, padded) equal dense, also where a row spans several column
    blocks (many codebook entries, wide layers) and where the row count is not a multiple of 4;
    at density 1 the dense codebook rows (register look-ups of every table size) too."""
    rng = np.random.default_rng(seed)
    tab = rng.standard_normal(ncode).astype(np.float32)
    tab[tab == 0] = 0.5
    rows = int(rng.integers(1, 20))
    w = tab[rng.integers(0, ncode, (rows, cols))] * (rng.random((rows, cols)) < dens)
    fmt = encode(torch.from_numpy(w), {"kind": "codebook"}, options={"kinds": ["codebook"]})
    model = nn.Sequential(nn.Linear(cols, rows)).eval()
    with torch.no_grad():
        model[0].weight.copy_(decode(fmt))
    cm = compile_model(model, {"0.weight": fmt}, (cols,))
    op = cm._single.ops[0]
    from weightzip.runtime.compiled import kernels as K
    if op[K.C_COLW] == 1:   # packed: its block count follows the code bits
        b = int(op[K.C_PKB])
        assert op[K.C_NBLK] == max(1, -(-cols // (1 << b)))
    if op[K.C_COLW] == 3:   # SELL-4: one column block, slices of four rows
        assert cols <= 1 << int(op[K.C_PKB]) and op[K.C_NBLK] == -(-rows // 4)
    _check(model, cm, torch.from_numpy(rng.standard_normal((batch, cols)).astype(np.float32)))


@SETTINGS
@given(k=st.integers(1, 300), d=st.integers(1, 9), cols=st.integers(1, 90), rows=st.integers(1, 70),
       shared=st.booleans(), batch=st.sampled_from([1, 2, 17]), seed=st.integers(0, 2**16))
@example(k=128, d=8, cols=784, rows=300, shared=True, batch=1, seed=0)    # the LeNet-300-100 PQ layer
@example(k=256, d=3, cols=31, rows=33, shared=False, batch=1, seed=1)     # 8-bit codes, the largest table
@example(k=257, d=2, cols=9, rows=17, shared=True, batch=1, seed=2)       # 16-bit codes: scalar look-ups
def test_pq_lut_equals_dense(k, d, cols, rows, shared, batch, seed):
    """PQ look-up layers (8- and 16-bit codes, one or per-sub-space codebooks, a last partial
    sub-space) equal the decoded-dense forward: the batch-1 path looks up 16 rows per step."""
    rng = np.random.default_rng(seed)
    rows += (k if shared else 2 * k) + 8   # rows enough for PQ to be smaller than dense (what encode keeps)
    d = min(d, cols)
    M = -(-cols // d)
    cbs = rng.standard_normal((1 if shared else M, k, d)).astype(np.float32)
    codes = rng.integers(0, k, (rows, M))
    codes[0, 0] = k - 1
    w = cbs[0 if shared else np.arange(M)[None, :], codes].reshape(rows, M * d)[:, :cols]
    hint = {"kind": "pq", "codes": torch.from_numpy(codes), "codebooks": torch.from_numpy(cbs)}
    fmt = encode(torch.from_numpy(np.ascontiguousarray(w)), hint, options={"kinds": ["pq"]})
    assume(fmt.kind == "pq")        # a few unique values can make the codebook kind smaller
    model = nn.Sequential(nn.Linear(cols, rows), nn.ReLU(), nn.Linear(rows, 3)).eval()
    with torch.no_grad():
        model[0].weight.copy_(decode(fmt))
    cm = compile_model(model, {"0.weight": fmt}, (cols,))
    from weightzip.runtime.compiled import kernels as K
    op = cm._single.ops[0]
    assert op[K.C_KIND] == (K.K_FC if K.pq_direct(rows, k, d) else K.K_PQFC) and op[K.C_K] == k
    _check(model, cm, torch.from_numpy(rng.standard_normal((batch, cols)).astype(np.float32)))


@SETTINGS
@given(rows=st.integers(1, 16), cols=st.integers(100, 600), wide=st.booleans(), shared=st.booleans(),
       batch=st.sampled_from([1, 3, 17]), seed=st.integers(0, 2**16))
def test_pq_few_rows_run_from_centroids(rows, cols, wide, shared, batch, seed):
    """A PQ layer with fewer rows than pay for k x cols table MACs (the classifier of LeNet-5:
    10 rows) is an FC op computed from the centroids, at batch 1 and N; 8- and 16-bit codes."""
    from weightzip.runtime.compiled import kernels as K

    rng = np.random.default_rng(seed)
    k, d = (300 if wide else 128), 8
    M = -(-cols // d)
    cbs = rng.standard_normal((1 if shared else M, k, d)).astype(np.float32)
    codes = rng.integers(0, k, (rows, M))
    w = cbs[0 if shared else np.arange(M)[None, :], codes].reshape(rows, M * d)[:, :cols]
    hint = {"kind": "pq", "codes": torch.from_numpy(codes), "codebooks": torch.from_numpy(cbs)}
    fmt = encode(torch.from_numpy(np.ascontiguousarray(w)), hint, options={"kinds": ["pq"]})
    assume(fmt.kind == "pq")
    model = nn.Sequential(nn.Linear(cols, rows)).eval()
    with torch.no_grad():
        model[0].weight.copy_(decode(fmt))
    cm = compile_model(model, {"0.weight": fmt}, (cols,))
    assert K.pq_direct(rows, k, d) and cm._single.ops[0][K.C_KIND] == K.K_FC
    _check(model, cm, torch.from_numpy(rng.standard_normal((batch, cols)).astype(np.float32)))


@SETTINGS
@given(kind=KINDS, dens=DENS, cin=st.integers(1, 4), mult=st.integers(1, 3), k=st.integers(1, 4),
       stride=st.integers(1, 3), pad=st.integers(0, 2), dil=st.integers(1, 2), hw=st.integers(5, 11),
       grouped=st.sampled_from(["none", "groups", "depthwise"]), pool=st.sampled_from(["max", "avg", "gap", "none"]),
       bn=st.booleans(), batch=st.sampled_from([1, 3]), seed=st.integers(0, 2**16))
@example(kind="codebook", dens=0.3, cin=1, mult=2, k=1, stride=1, pad=0, dil=1, hw=5, grouped="groups", pool="max",
         bn=False, batch=1, seed=10815)  # regression: code 0 of a dense codebook is not a zero weight
def test_conv_equals_dense(kind, dens, cin, mult, k, stride, pad, dil, hw, grouped, pool, bn, batch, seed):
    rng = np.random.default_rng(seed)
    groups = {"none": 1, "groups": cin, "depthwise": cin}[grouped]
    cout = cin * mult if grouped != "none" else mult + 1
    if hw + 2 * pad < dil * (k - 1) + 1:
        pad = dil * (k - 1)
    conv = nn.Conv2d(cin, cout, k, stride=stride, padding=pad, dilation=dil, groups=groups)
    ho = (hw + 2 * pad - dil * (k - 1) - 1) // stride + 1
    mods: list[nn.Module] = [conv] + ([nn.BatchNorm2d(cout)] if bn else []) + [nn.ReLU()]
    if pool == "max" and ho >= 2:
        mods.append(nn.MaxPool2d(2))
        ho //= 2
    elif pool == "avg" and ho >= 2:
        mods.append(nn.AvgPool2d(2, stride=1, padding=1))
        ho = ho + 1
    elif pool == "gap":
        mods.append(nn.AdaptiveAvgPool2d(1))
        ho = 1
    mods += [nn.Flatten(), nn.Linear(cout * ho * ho, 3)]
    model = nn.Sequential(*mods).eval()
    if bn:
        model[1].running_mean.uniform_(-1, 1)
        model[1].running_var.uniform_(0.5, 2)
    formats = _install(model, {"0": (kind, dens), str(len(mods) - 1): ("codebook", 0.5)}, rng)
    cm = compile_model(model, formats, (cin, hw, hw))
    assert cm.plans[(cin, hw, hw)].native_only
    _check(model, cm, torch.from_numpy(rng.standard_normal((batch, cin, hw, hw)).astype(np.float32)))


def test_threads_and_batch_chunks_match():
    rng = np.random.default_rng(0)
    model = nn.Sequential(nn.Linear(30, 20), nn.ReLU(), nn.Linear(20, 5)).eval()
    formats = _install(model, {"0": ("codebook", 0.2), "2": ("uniform", 0.5)}, rng)
    x = torch.from_numpy(rng.standard_normal((150, 30)).astype(np.float32))
    for threads in (1, 2):
        cm = compile_model(model, formats, (30,), threads=threads)
        _check(model, cm, x)          # 150 = 2 chunks of 64 + 22 (1 thread) / 2 x 64 + 22 (2 threads)


def test_unsupported_layer_falls_back_to_dense_and_says_why():
    rng = np.random.default_rng(1)
    # Softplus has a kernel neither in the chain walk nor in the graph lowering
    model = nn.Sequential(nn.Linear(12, 8), nn.Softplus(), nn.ReLU(), nn.Linear(8, 4)).eval()
    formats = _install(model, {"0": ("codebook", 0.5), "3": ("codebook", 0.5)}, rng)
    cm = compile_model(model, formats, (12,))
    plan = cm.plans[(12,)]
    # lowered as a graph: the softplus node runs in torch between the native ops, named
    assert plan.fallbacks == [("softplus", "aten.softplus.default: no compiled kernel")]
    assert len(plan.segments) == 1 and len(plan.segments[0].torch_steps) == 1
    _check(model, cm, torch.from_numpy(rng.standard_normal((3, 12)).astype(np.float32)))


def test_residual_model_is_lowered_as_a_graph():
    class Res(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(6, 6)

        def forward(self, x):
            return x + self.a(x)

    model = Res().eval()
    cm = compile_model(model, {}, (6,))
    assert cm.plans[(6,)].native_only
    _check(model, cm, torch.randn(2, 6))


def test_graph_without_a_kernel_runs_in_torch_and_names_the_node():
    class Res(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(6, 6)

        def forward(self, x):
            return torch.nn.functional.softplus(x) + self.a(x)

    model = Res().eval()
    cm = compile_model(model, {}, (6,))
    plan = cm.plans[(6,)]
    assert plan.whole_model_reason is None and not plan.native_only   # native ops around one torch step
    assert [why for _, why in plan.fallbacks] == ["aten.softplus.default: no compiled kernel"]
    assert [i.op for i in plan.info()].count("torch (no kernel)") == 1
    _check(model, cm, torch.randn(2, 6))


def test_masked_pq_runs_as_decoded_fp32_with_a_note():
    from weightzip.runtime.compiled.weights import weight_rep

    w = np.arange(12, dtype=np.float32).reshape(3, 4)
    parts = {"kind": "pq", "shape": (3, 4), "matrix_shape": (3, 4), "mask": np.ones((3, 4), bool),
             "codes": np.zeros((3, 2), np.int64), "codebooks": np.zeros((1, 1, 2), np.float32)}
    rep = weight_rep(parts, w, "fc")
    assert "mask" in rep.note and np.array_equal(rep.dense(), w)


def test_file_tensor_that_does_not_fit_the_graph_is_a_clear_error():
    rng = np.random.default_rng(2)
    model = nn.Sequential(nn.Linear(5, 4)).eval()
    _, fmt = _weight("codebook", (4, 6), 0.5, rng)   # a 4x6 tensor for a 4x5 layer
    with pytest.raises(WeightzipFormatError, match="shape"):
        compile_model(model, {"0.weight": fmt}, (5,))


@pytest.mark.parametrize("name", ["lenet300_100-deep-compression", "lenet5-deep-compression", "lenet5-pq",
                                  "mnist-small-lat_e"])
def test_committed_files_compiled_equal_dense(name):
    path = RESULTS / f"{name}.wz"
    dense = wz.load(path)
    cm = wz.load(path, mode="compiled")
    assert isinstance(cm, CompiledModel) and cm.plans and all(p.native_only for p in cm.plans.values())
    res = cm.resident_bytes()
    assert 0 < res["total"] < sum(p.numel() * 4 for p in dense.parameters()) / 2
    shape = next(iter(cm.plans))
    _check(dense, cm, torch.randn(4, *shape))
    assert isinstance(wz.load(path, mode="auto"), CompiledModel)   # auto: compiled when it all compiles
    assert cm._model[0] is None                                     # dense weights dropped from memory...
    x = torch.randn(2, *shape)
    with torch.no_grad():                                           # ...and re-read from the file on demand
        torch.testing.assert_close(cm.reference(x), dense(x))


def test_grad_inputs_use_the_reference():
    rng = np.random.default_rng(3)
    model = nn.Sequential(nn.Linear(4, 3)).eval()
    formats = _install(model, {"0": ("codebook", 1.0)}, rng)
    cm = compile_model(model, formats, (4,))
    xg = torch.randn(2, 4, requires_grad=True)
    cm(xg).sum().backward()
    assert xg.grad is not None


@pytest.mark.parametrize("background", [0.0, -0.4242])
def test_background_skipping_batch1_path(background):
    """Batch 1 with mostly-background inputs takes the CSC kernel: W x = x0 rowsum(W) + W (x - x0)."""
    rng = np.random.default_rng(4)
    model = nn.Sequential(nn.Linear(50, 20), nn.ReLU(), nn.Linear(20, 7)).eval()
    formats = _install(model, {"0": ("codebook", 0.2), "2": ("uniform", 0.3)}, rng)
    cm = compile_model(model, formats, (50,))
    from weightzip.runtime.compiled import kernels as K

    assert cm.plans[(50,)].segments[0].ops[0, K.C_CPTR] >= 0   # the CSC copy is there
    x = np.full((1, 50), background, np.float32)
    x[0, rng.choice(50, 6, replace=False)] = rng.standard_normal(6)
    _check(model, cm, torch.from_numpy(x))
