"""Plan builder: walk a loaded model into a flat op list and pack it for :mod:`.kernels`.

``build_plan(model, formats, sample_shape)`` traces the model with ``torch.fx``, propagates
the shape of one sample, and walks the graph, which must be a chain (every node consumes the
previous one; sequential models, nested ``Sequential`` included). Per node:

* ``Linear`` / ``Conv2d`` (zero padding, any stride / dilation / groups) -> ``FC`` / ``CONV`` /
  ``PQFC`` op from the weight's Format (:func:`.weights.weight_rep`); its bias, a directly
  following ``BatchNorm1d/2d`` (eval statistics, folded: ``alpha = s * g / sqrt(v + eps)``,
  ``beta = (b - mu) * g / sqrt(v + eps) + beta_bn``) and a following activation are fused
  into the op's epilogue;
* ``MaxPool2d`` / ``AvgPool2d`` (no ceil mode, no dilation) / ``AdaptiveAvgPool2d(1)`` -> ``POOL``;
* activations (ReLU, ReLU6, Hardtanh, LeakyReLU, Tanh, Sigmoid, ELU, GELU, SiLU) and
  standalone BatchNorm -> ``EW``; the file's activation quantizers -> ``ACTQ``;
* ``Flatten`` (from dim 1), ``Dropout``, ``Identity`` -> nothing (the sample-major layout
  ``C*H*W`` is already torch's flatten order).

Anything else becomes a *torch segment*: that module runs in PyTorch with its decoded dense
weights, between native segments, and :attr:`Plan.fallbacks` records which layer and why.
A graph that is not a chain (residual adds, several inputs) is not compiled at all
(:attr:`Plan.whole_model_reason`).
"""
from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ...errors import WeightzipFormatError
from . import kernels as K
from .pack import CSC_MAX_NNZ, OpInfo, Packer as _Packer, epilogue_cols, new_op as _new_op, pack_csc as _pack_csc, \
    pack_weight as _pack_weight, pq_lut
from .weights import WeightRep, rep_from_dense, weight_rep  # noqa: F401  (re-exported)

CHUNK = 64  # samples per native chunk (weights-stationary tile over the batch)

_ACTS = {nn.ReLU: K.A_RELU, nn.Tanh: K.A_TANH, nn.Sigmoid: K.A_SIGMOID, nn.SiLU: K.A_SILU}


def _act_of(mod: nn.Module) -> tuple[int, tuple[float, float]] | None:
    t = type(mod)
    if t in _ACTS:
        return _ACTS[t], (0.0, 0.0)
    if t is nn.ReLU6:
        return K.A_HARDTANH, (0.0, 6.0)
    if t is nn.Hardtanh:
        return K.A_HARDTANH, (float(mod.min_val), float(mod.max_val))
    if t is nn.LeakyReLU:
        return K.A_LEAKY, (float(mod.negative_slope), 0.0)
    if t is nn.ELU:
        return K.A_ELU, (float(mod.alpha), 0.0)
    if t is nn.GELU and mod.approximate == "none":
        return K.A_GELU, (0.0, 0.0)
    return None


_FN_ACTS = {torch.relu: K.A_RELU, torch.nn.functional.relu: K.A_RELU, torch.tanh: K.A_TANH,
            torch.sigmoid: K.A_SIGMOID}


@dataclass(repr=False)
class Program:
    """A packed native segment: ``ops`` (n_ops, OPW) int64, ``B`` uint8, ``F`` float32."""
    ops: np.ndarray
    B: np.ndarray
    F: np.ndarray
    in_shape: tuple[int, ...]   # one sample
    out_shape: tuple[int, ...]
    act_max: int                # largest activation (floats per sample)
    scratch_per_sample: int
    scratch_fixed: int
    info: list[OpInfo]

    @property
    def nin(self) -> int:
        return int(np.prod(self.in_shape))

    @property
    def nout(self) -> int:
        return int(np.prod(self.out_shape))

    def work_layout(self, chunk: int) -> tuple[int, int, int]:
        """(half, scratch offset, total floats) of one chunk's work buffer."""
        half = self.act_max * chunk
        half = (half + 15) // 16 * 16
        lanes = -(-chunk // 16) * 16   # batch kernels pad the samples to whole 16-lane registers
        return half, 2 * half, 2 * half + self.scratch_per_sample * lanes + self.scratch_fixed + 16

    @property
    def nbytes(self) -> int:
        return int(self.ops.nbytes + self.B.nbytes + self.F.nbytes)

    def __repr__(self) -> str:
        return (f"Program({len(self.ops)} ops, {self.in_shape} -> {self.out_shape}, "
                f"{self.nbytes} bytes)")


@dataclass
class TorchSegment:
    module: nn.Module
    layer: str
    reason: str


@dataclass
class Plan:
    segments: list            # Program | TorchSegment
    sample_shape: tuple[int, ...]
    fallbacks: list[tuple[str, str]]   # (layer, reason)
    whole_model_reason: str | None = None

    @property
    def native_only(self) -> bool:
        return self.whole_model_reason is None and not self.fallbacks

    def native_mac_share(self) -> float:
        """Share of the model's multiply-adds run natively: native ops' non-zero MACs over those
        plus the torch segments' (a torch Linear / Conv2d counts its weight's elements per
        output position of one sample; the whole model in torch is 0)."""
        if self.whole_model_reason is not None:
            return 0.0
        native = sum(i.macs for s in self.segments if not isinstance(s, TorchSegment) for i in s.info)
        torch_macs = 0
        for s in self.segments:
            if isinstance(s, TorchSegment):
                for m in s.module.modules():
                    if isinstance(m, (nn.Linear, nn.Conv2d)):
                        torch_macs += m.weight.numel()
        total = native + torch_macs
        return 1.0 if total == 0 else native / total

    def info(self) -> list[OpInfo]:
        out = []
        for s in self.segments:
            if not isinstance(s, TorchSegment):
                out.extend(s.info)
            else:
                out.append(OpInfo(s.layer, "torch (decoded dense)", note=s.reason))
        return out


def _epilogue(op, pk: _Packer, rows: int, rowscale, bias, bn: nn.Module | None, act) -> int:
    """alpha/beta/act columns of a chain op, ``bn`` a BatchNorm module in eval mode (folded)."""
    folded = None
    if bn is not None:
        g = bn.weight.detach().double().numpy() if bn.weight is not None else np.ones(rows)
        beta_bn = bn.bias.detach().double().numpy() if bn.bias is not None else np.zeros(rows)
        inv = g / np.sqrt(bn.running_var.detach().double().numpy() + bn.eps)
        folded = (inv, beta_bn - bn.running_mean.detach().double().numpy() * inv)
    return epilogue_cols(op, pk, rows, rowscale, bias, folded, act)


def _pair(v) -> tuple[int, int]:
    return tuple(int(x) for x in (v if isinstance(v, (tuple, list)) else (v, v)))


def _bn_ok(m: nn.Module) -> bool:
    return (isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) and m.track_running_stats
            and m.running_mean is not None and not m.training)


class _Unsupported(Exception):
    pass


def _conv_check(m: nn.Conv2d) -> None:
    if m.padding_mode != "zeros":
        raise _Unsupported(f"padding_mode={m.padding_mode!r} (the compiled conv supports zero padding)")
    if isinstance(m.padding, str) and m.padding != "valid":
        raise _Unsupported(f"padding={m.padding!r} (give explicit padding)")


def _pool_check(m: nn.Module, shape) -> tuple:
    if isinstance(m, nn.AdaptiveAvgPool2d):
        osz = _pair(m.output_size if m.output_size is not None else 1)
        if osz != (1, 1):
            raise _Unsupported(f"AdaptiveAvgPool2d to {osz} (only global pooling to (1, 1) is compiled)")
        return K.P_AVG, shape[1], shape[2], shape[1], shape[2], 0, 0
    if getattr(m, "ceil_mode", False):
        raise _Unsupported("ceil_mode=True")
    if isinstance(m, nn.MaxPool2d):
        if _pair(m.dilation) != (1, 1) or m.return_indices:
            raise _Unsupported("dilated / index-returning max pooling")
        kind = K.P_MAX
    else:
        if not m.count_include_pad or m.divisor_override is not None:
            raise _Unsupported("AvgPool2d with count_include_pad=False or divisor_override")
        kind = K.P_AVG
    kh, kw = _pair(m.kernel_size)
    sh, sw = _pair(m.stride if m.stride is not None else m.kernel_size)
    ph, pw = _pair(m.padding)
    return kind, kh, kw, sh, sw, ph, pw


def _fmt_parts(formats: dict, name: str, tensor: str = "weight"):
    """``decode_parts`` of the Format of ``{name}.{tensor}`` (a value that is already a parts
    dict, as ``decode_parts`` returns, is used as it is); None when the file has none."""
    fmt = (formats or {}).get(f"{name}.{tensor}")
    if fmt is None:
        return None
    if isinstance(fmt, dict):
        return fmt
    from ...codec import decode_parts

    return decode_parts(fmt)


def _node_shape(node) -> tuple[int, ...] | None:
    tm = node.meta.get("tensor_meta")
    if tm is None or not hasattr(tm, "shape"):
        return None
    return tuple(int(s) for s in tm.shape[1:])


def build_plan(model: nn.Module, formats: dict[str, Any] | None, sample_shape: tuple[int, ...],
               act_quant: list[dict] | None = None, dtype: torch.dtype = torch.float32) -> Plan:
    """The plan for inputs of one-sample shape ``sample_shape``: the chain walk below for
    sequential models; any other graph (residuals, gates, transformer blocks, token inputs)
    is lowered whole by :mod:`.lower`. Where neither runs every layer natively, the chain
    plan's torch segments (or the whole model in torch) say which layer and why."""
    chain = None
    if dtype == torch.float32:
        chain = _chain_plan(model, formats, sample_shape, act_quant)
        if chain.native_only:
            return chain
    from .lower import Unsupported, lower_graph

    try:
        prog = lower_graph(model, formats, tuple(int(s) for s in sample_shape), dtype, act_quant)
    except Unsupported as e:
        if chain is not None and chain.whole_model_reason is None:
            return chain   # some layers in torch between native segments
        reason = str(e) if chain is None else f"{chain.whole_model_reason}; as a graph: {e}"
        return Plan([TorchSegment(model, "<model>", reason)], tuple(sample_shape), [("<model>", reason)],
                    f"not compiled: {reason}")
    return Plan([prog], tuple(int(s) for s in sample_shape), list(prog.fallbacks))


def _chain_plan(model: nn.Module, formats: dict[str, Any] | None, sample_shape: tuple[int, ...],
                act_quant: list[dict] | None = None) -> Plan:
    """Trace ``model`` for inputs of one-sample shape ``sample_shape`` and pack its ops."""
    import torch.fx
    from torch.fx.passes.shape_prop import ShapeProp

    sample_shape = tuple(int(s) for s in sample_shape)
    try:
        gm = torch.fx.symbolic_trace(model)
        with torch.no_grad():
            ShapeProp(gm).propagate(torch.zeros(1, *sample_shape))
    except Exception as e:  # untraceable control flow, a wrong input shape...
        return Plan([TorchSegment(model, "<model>", f"cannot trace ({type(e).__name__}: {e})")], sample_shape,
                    [("<model>", f"cannot trace ({type(e).__name__}: {e})")],
                    f"torch.fx cannot trace the model ({type(e).__name__}: {e})")
    modules = dict(gm.named_modules())
    leaf_targets = [str(n.target) for n in gm.graph.nodes if n.op == "call_module"]
    aq = {}
    for item in act_quant or []:
        name = item["module"]
        if name not in leaf_targets:  # a container: its input is the input of its first leaf
            name = next((t for t in leaf_targets if t.startswith(name + ".")), name)
        aq[name] = item
    # optional inputs (a default, read only by checks that they are None, as a recorded Hugging
    # Face model's labels / return_dict) are not inputs of the computation
    optional = {n for n in gm.graph.nodes if n.op == "placeholder" and n.args
                and all(u.op == "call_function" and getattr(u.target, "__name__", "") == "_assert_is_none"
                        for u in n.users)}
    skip = optional | {u for n in optional for u in n.users}
    nodes = [n for n in gm.graph.nodes if n not in skip]
    chain_reason = None
    cur = None
    steps: list[tuple[str, Any]] = []   # ("node", node) in chain order
    for n in nodes:
        if n.op == "placeholder":
            if cur is not None:
                chain_reason = "the model has several inputs"
                break
            cur = n
            continue
        if n.op == "output":
            if n.args[0] is not cur:
                chain_reason = "the output is not the last layer's result"
            break
        if n.op == "get_attr":
            chain_reason = (f"node {n.name!r} reads a weight as a tensor (an aten-level graph recorded by "
                            "torch.export); the compiled path lowers fx graphs of layers")
            break
        if not n.args or n.args[0] is not cur or len(cur.users) != 1 \
                or any(isinstance(a, torch.fx.Node) for a in list(n.args[1:]) + list(n.kwargs.values())):
            chain_reason = f"node {n.name!r} is not a chain step (branches / residual connections)"
            break
        steps.append(n)
        cur = n
    if chain_reason is not None:
        return Plan([TorchSegment(model, "<model>", chain_reason)], sample_shape, [("<model>", chain_reason)],
                    f"not compiled: {chain_reason}; the compiled path covers chain (sequential) models")

    segments: list = []
    fallbacks: list[tuple[str, str]] = []
    pk = _Packer()
    ops: list[np.ndarray] = []
    info: list[OpInfo] = []
    seg_in: tuple[int, ...] = sample_shape
    shape: tuple[int, ...] = sample_shape
    act_max = int(np.prod(shape))
    scr_ps, scr_fx = 0, 0

    def close_segment(out_shape):
        nonlocal pk, ops, info, act_max, scr_ps, scr_fx, seg_in
        if ops:
            B, F = pk.arrays()
            segments.append(Program(np.stack(ops), B, F, seg_in, tuple(out_shape), act_max, scr_ps, scr_fx, info))
        pk, ops, info = _Packer(), [], []
        act_max, scr_ps, scr_fx = 1, 0, 0

    zeros_likely = True   # the model input (images are often mostly 0), or after ReLU / act-quant
    i = 0
    while i < len(steps):
        n = steps[i]
        out_shape = _node_shape(n)
        mod = modules.get(n.target) if n.op == "call_module" else None
        name = str(n.target) if n.op == "call_module" else n.name
        if out_shape is None:
            raise WeightzipFormatError(f"layer {name}: no tensor output (the compiled path needs tensor chains)")
        nin, nout = int(np.prod(shape)), int(np.prod(out_shape))
        act_max = max(act_max, nin, nout)
        consumed = 1
        n_ops_before = len(ops)
        try:
            if name in aq and mod is not None:
                item = aq[name]
                op = _new_op(K.K_ACTQ, nin, nin)
                op[K.C_K] = 2 ** int(item["bits"]) - 1
                op[K.C_TAB] = pk.f(np.asarray([float(item.get("clip", 1.0))], np.float32))
                ops.append(op)
                info.append(OpInfo(f"{name} (input)", f"act-quant {item['bits']} bit"))
                zeros_likely = True
            if isinstance(mod, (nn.Linear, nn.Conv2d)) and type(mod) in (nn.Linear, nn.Conv2d):
                if isinstance(mod, nn.Conv2d):
                    _conv_check(mod)
                if isinstance(mod, nn.Linear) and len(shape) != 1:
                    raise _Unsupported(f"Linear on a {len(shape) + 1}-D input (the compiled FC takes (N, features))")
                w = mod.weight.detach().float().numpy()
                parts = _fmt_parts(formats, name)
                rep = weight_rep(parts, w, name)
                conv = isinstance(mod, nn.Conv2d)
                if pq_lut(rep, conv):
                    op = _new_op(K.K_PQFC, nin, nout)
                    kq = rep.pq["codebooks"].shape[1]
                    scr_fx = max(scr_fx, K.lut_len(kq) + rep.rows + 16)   # batch 1: Tm, acc
                    scr_fx = max(scr_fx, 16 * kq + 16)              # batch: Tm (k, 16)
                    scr_ps = max(scr_ps, nin + rep.rows + 1)        # batch: xT (nin, n), acc (rows, n)
                else:
                    op = _new_op(K.K_CONV if conv else K.K_FC, nin, nout)
                    if not conv:
                        scr_ps = max(scr_ps, nin + nout + 1)   # batch: xT (nin, n), yT (nout, n)
                if conv:
                    C, H, W = shape
                    op[K.C_CIN], op[K.C_H], op[K.C_W] = C, H, W
                    op[K.C_COUT] = mod.out_channels
                    op[K.C_KH], op[K.C_KW] = _pair(mod.kernel_size)
                    op[K.C_SH], op[K.C_SW] = _pair(mod.stride)
                    pad = (0, 0) if isinstance(mod.padding, str) else _pair(mod.padding)
                    op[K.C_PH], op[K.C_PW] = pad
                    op[K.C_DH], op[K.C_DW] = _pair(mod.dilation)
                    op[K.C_GROUPS] = mod.groups
                    op[K.C_HO], op[K.C_WO] = out_shape[1], out_shape[2]
                    cin_g = C // mod.groups
                    planes, _ = K.phase_floats(H, W, out_shape[1], out_shape[2], *op[[K.C_KH, K.C_KW, K.C_SH, K.C_SW,
                                               K.C_DH, K.C_DW, K.C_PH, K.C_PW]].tolist())
                    scr_fx = max(scr_fx, cin_g * planes + 32)
                wbytes = _pack_weight(op, rep, pk, conv)
                if not conv and zeros_likely and op[K.C_KIND] == K.K_FC:
                    wbytes += _pack_csc(op, rep, pk)
                    scr_fx = max(scr_fx, nin + 16)
                fused = []
                bn = None
                act = None
                j = i + 1
                if j < len(steps) and steps[j].op == "call_module" and _bn_ok(modules.get(steps[j].target)) \
                        and str(steps[j].target) not in aq:
                    bn = modules[steps[j].target]
                    fused.append(str(steps[j].target))
                    j += 1
                while j < len(steps) and _noop(steps[j], modules):
                    j += 1
                if j < len(steps) and str(steps[j].target) not in aq:
                    a = _step_act(steps[j], modules)
                    if a is not None:
                        act = a
                        fused.append(str(steps[j].target) if steps[j].op == "call_module" else steps[j].name)
                        j += 1
                consumed = j - i
                if consumed > 1:
                    out_shape = _node_shape(steps[i + consumed - 1])
                    nout = int(np.prod(out_shape))
                wbytes += _epilogue(op, pk, rep.rows, rep.rowscale, mod.bias, bn, act)
                zeros_likely = act is not None and (act[0] == K.A_RELU or (act[0] == K.A_HARDTANH
                                                                           and act[1][0] == 0.0))
                ops.append(op)
                per_pos = (out_shape[1] * out_shape[2]) if conv else 1
                info.append(OpInfo(name, ("conv" if conv else ("pq-lut" if op[K.C_KIND] == K.K_PQFC else "fc")),
                                   rep.name, rep.note, rep.nonzero_macs() * per_pos, wbytes, fused))
            elif isinstance(mod, (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d)):
                kind, kh, kw, sh, sw, ph, pw = _pool_check(mod, shape)
                op = _new_op(K.K_POOL, nin, nout)
                op[K.C_LAYOUT] = kind
                op[K.C_CIN], op[K.C_H], op[K.C_W] = shape
                op[K.C_KH], op[K.C_KW], op[K.C_SH], op[K.C_SW], op[K.C_PH], op[K.C_PW] = kh, kw, sh, sw, ph, pw
                op[K.C_HO], op[K.C_WO] = out_shape[1], out_shape[2]
                ops.append(op)
                info.append(OpInfo(name, "maxpool" if kind == K.P_MAX else "avgpool"))
            elif _noop(n, modules):
                pass
            elif mod is not None and _bn_ok(mod) or _step_act(n, modules) is not None:
                op = _new_op(K.K_EW, nin, nout)
                C = shape[0] if len(shape) else 1
                op[K.C_CIN] = C
                if mod is not None and _bn_ok(mod):
                    _epilogue(op, pk, C, None, None, mod, None)
                    label = "batchnorm"
                    zeros_likely = False
                else:
                    a = _step_act(n, modules)
                    _epilogue(op, pk, C, None, None, None, a)
                    label = "activation"
                    zeros_likely = a[0] == K.A_RELU
                ops.append(op)
                info.append(OpInfo(name, label))
            else:
                raise _Unsupported(f"{type(mod).__name__ if mod is not None else n.target} has no compiled kernel")
        except _Unsupported as e:
            if mod is None:
                reason = f"{n.op} {n.target}: {e}"
                return Plan([TorchSegment(model, "<model>", reason)], sample_shape, [(name, reason)],
                            f"not compiled: {reason}")
            del ops[n_ops_before:]
            del info[n_ops_before:]
            close_segment(shape)
            segments.append(TorchSegment(mod, name, str(e)))
            fallbacks.append((name, str(e)))
            seg_in = tuple(out_shape)
            shape = tuple(out_shape)
            act_max = int(np.prod(shape))
            i += 1
            continue
        shape = tuple(out_shape)
        i += consumed
    close_segment(shape)
    return Plan(segments, sample_shape, fallbacks)


def _noop(n, modules) -> bool:
    if n.op == "call_module":
        m = modules.get(n.target)
        if isinstance(m, (nn.Dropout, nn.Identity)) and not (isinstance(m, nn.Dropout) and m.training):
            return True
        if isinstance(m, nn.Flatten):
            return m.start_dim == 1 and m.end_dim == -1
        return False
    if n.op == "call_function" and n.target is torch.flatten:
        return (n.args[1:2] == (1,) or n.kwargs.get("start_dim") == 1) and len(n.args) <= 2
    if n.op == "call_method" and n.target == "flatten":
        return (n.args[1:2] == (1,) or n.kwargs.get("start_dim") == 1) and len(n.args) <= 2
    if n.op == "call_function" and n.target in (operator.getitem,):
        return False
    return False


def _step_act(n, modules):
    if n.op == "call_module":
        m = modules.get(n.target)
        return _act_of(m) if m is not None else None
    if n.op == "call_function" and n.target in _FN_ACTS and len(n.args) == 1 and not n.kwargs:
        return _FN_ACTS[n.target], (0.0, 0.0)
    if n.op == "call_method" and n.target in ("relu", "tanh", "sigmoid") and len(n.args) == 1:
        return {"relu": K.A_RELU, "tanh": K.A_TANH, "sigmoid": K.A_SIGMOID}[n.target], (0.0, 0.0)
    return None
