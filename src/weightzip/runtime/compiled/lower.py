"""Lowering of a whole aten-level graph (residuals, gates, concatenations, transformer blocks)
into one native program of :mod:`.kernels` (``run_graph_chunk``).

The chain walk of :mod:`.plan` covers sequential models; everything else comes here. The
graph is the model itself where it is an aten-level ``GraphModule`` (a model loaded from its
recorded graph), otherwise :func:`torch.export.export` of the model (batch dimension dynamic).

**Values.** The graph is interpreted twice, with batches of 2 and 3 samples, recording every
node's shape. A node that depends on the input's DATA is *dynamic*: it gets a storage of
``numel / batch`` floats per sample (views, reshapes, dropout in eval, ``getitem`` of a norm's
result share their input's storage: every value is kept contiguous, so a reshape never moves
data). Every other tensor is a *constant*, folded here once (position ids, embeddings of
them, attention masks built from shapes); a constant whose leading dimension follows the batch
is the same for every sample (checked) and is kept as one sample.

**Ops** (dynamic nodes; the per-sample shape is the node's shape without its batch dimension):

* ``conv2d`` / ``convolution`` -> ``CONV``; ``linear`` / ``addmm`` (weight ``(in, out)``: GPT-2's
  Conv1D) -> ``FC`` over the rows of the value (``rows = numel / in``: a ``(T, D)`` sample is
  ``T`` rows); both from the weight's Format (:func:`.weights.weight_rep`). A following
  batch norm (``_native_batch_norm_legit_no_training``), then an activation, whose input has no
  other reader, are folded into the epilogue (``alpha = g / sqrt(v + eps)``,
  ``beta = (b - mu) alpha + beta_bn``);
* ``add / sub / mul / div`` (tensor or scalar) -> ``BIN``: ``y = x OP x2[(j // inner) % n2]``
  where the second operand broadcasts as one contiguous block of dimensions (a per-channel SE
  gate ``(C, 1, 1)``, a bias ``(D,)``, a row statistic ``(T, 1)``, a scalar); any other
  broadcast is materialized first by an index map. An activation after it is fused;
* data movement (``transpose``, ``permute``, ``select``, ``slice``, ``expand``, ``pad`` /
  ``constant_pad_nd``, ``repeat``, ``flip``, ``cat``...) -> ``GATHER`` with an int32 index map
  per output element, found by applying the op itself to ``arange`` (exact in float64) and
  checked to act per sample; a gather of a gather is composed into one;
* activations (ReLU, ReLU6 / hardtanh / clamp, leaky ReLU, ELU, GELU exact and tanh, SiLU,
  sigmoid, tanh, hardswish, hardsigmoid) and ``neg / exp / sqrt / rsqrt / reciprocal /
  pow(x, 2)`` -> the epilogue of the producer or an ``EW`` op;
* ``layer_norm`` -> ``NORM``; ``_softmax`` (last dimension) -> ``SOFTMAX``; ``mean / sum /
  amax`` over trailing dimensions and ``adaptive_avg_pool2d(x, 1)`` -> ``REDUCE``;
  ``max_pool2d`` / ``avg_pool2d`` -> ``POOL``;
* ``scaled_dot_product_attention`` -> ``ATTN`` (per sample and head; grouped KV heads; a
  constant mask, boolean or additive; causal);
* ``embedding`` of the model's integer input -> ``EMB`` (rows gathered from codebook codes, or
  float32 rows).

Storages get offsets by lifetime (first fit, an op's output never overlaps its inputs), so
the work buffer holds the live values only. A node without a kernel makes the whole graph run
in torch, with the node and the reason in :attr:`.plan.Plan.fallbacks`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from torch import fx, nn

from . import kernels as K
from .pack import OpInfo, Packer, epilogue_cols, new_op, pack_weight, pq_lut
from .weights import rep_from_dense, weight_rep

MAX_WORK_FLOATS = 1 << 23


class Unsupported(Exception):
    """A node the native graph program cannot run (the message says why)."""


# ---- the graph ----------------------------------------------------------------------------

def aten_graph(model: nn.Module, sample_shape: tuple[int, ...], dtype: torch.dtype) -> tuple[fx.GraphModule, Any]:
    """(aten-level GraphModule, output spec or None). A recorded graph is used as it is."""
    if isinstance(model, fx.GraphModule) and any(
            n.op == "call_function" and isinstance(n.target, torch._ops.OpOverload) for n in model.graph.nodes):
        return model, None
    from torch.export import Dim

    x = _example(sample_shape, dtype, 2)
    try:
        with torch.no_grad():
            ep = torch.export.export(model, (x,), dynamic_shapes=({0: Dim.AUTO},), strict=False)
            ep = ep.run_decompositions({})
    except Exception as e:
        raise Unsupported(f"torch.export cannot record the model ({type(e).__name__}: "
                          f"{str(e).splitlines()[0][:160] if str(e) else ''})") from None
    return ep.module(), ep.call_spec.out_spec


def _example(sample_shape, dtype, batch: int) -> torch.Tensor:
    """Zeros (token id 0 exists in every vocabulary)."""
    return torch.zeros((batch, *sample_shape), dtype=dtype)


class _Recorder(fx.Interpreter):
    """Runs the graph recording each node's result: shapes of dynamic tensors, values of the
    rest (constants, ints)."""

    def __init__(self, gm, dynamic: set):
        super().__init__(gm, garbage_collect_values=True)
        self.dynamic = dynamic
        self.shapes: dict[fx.Node, Any] = {}
        self.values: dict[fx.Node, Any] = {}

    def run_node(self, n):
        out = super().run_node(n)
        if n in self.dynamic:
            self.shapes[n] = _shape_tree(out)
        else:
            self.values[n] = out
        return out


def _shape_tree(v):
    if isinstance(v, torch.Tensor):
        return (tuple(v.shape), v.dtype)
    if isinstance(v, (tuple, list)):
        return [_shape_tree(u) for u in v]
    return None


def _data_dependent(gm: fx.GraphModule, inp: fx.Node) -> set:
    dyn = {inp}
    for n in gm.graph.nodes:
        if n.op != "call_function" or n in dyn:
            continue
        if str(n.target).startswith(("aten.sym_size", "aten.sym_numel", "aten.sym_stride")):
            continue
        if any(a in dyn for a in n.all_input_nodes):
            dyn.add(n)
    return dyn


# ---- lowering -----------------------------------------------------------------------------

@dataclass
class _Rec:
    """One op before packing: reads storages ``ins``, writes storage ``out``."""
    kind: int
    out: int
    ins: list[int]
    nin: int
    nout: int
    build: Callable[["_Rec", np.ndarray, Packer], int]
    label: str
    op: str
    rep: int = 1
    act: tuple | None = None
    bn: tuple | None = None        # (alpha, beta) folded after the accumulation
    scr_row: int = 0               # scratch floats per row of the chunk (rows padded to 16)
    scr_fixed: int = 0
    macs: int = 0
    rep_name: str = ""
    note: str = ""
    fused: list[str] = field(default_factory=list)
    params: dict = field(default_factory=dict)


@dataclass(repr=False)
class GraphProgram:
    """A packed graph program: ``ops`` (n_ops, OPW) int64, ``B`` uint8, ``F`` float32; value
    slots at ``offset * chunk`` in the work buffer (offsets in floats per sample)."""
    ops: np.ndarray
    B: np.ndarray
    F: np.ndarray
    io: np.ndarray                 # int64 (in offset, in floats, out offset, out floats)
    values_end: int                # floats per sample of every slot together
    scratch: list[tuple[int, int, int]]   # (per row, rows per sample, fixed) of each op
    in_shape: tuple[int, ...]
    in_dtype: torch.dtype
    outputs: list[tuple[int, tuple[int, ...]]]   # (offset in the output row, per-sample shape)
    structure: Callable[[list[torch.Tensor]], Any]
    info: list                     # OpInfo
    vocab: int | None = None       # the embedding's rows, where the input is token ids
    torch_steps: list = field(default_factory=list)   # (op index, TorchStep): nodes run in torch
    fallbacks: list = field(default_factory=list)     # (node, why) of those

    @property
    def nin(self) -> int:
        return int(self.io[1])

    @property
    def nout(self) -> int:
        return int(self.io[3])

    def chunk_for(self, limit: int) -> int:
        per = self.values_end + max((r * p for p, r, _ in self.scratch), default=0)
        return max(1, min(limit, MAX_WORK_FLOATS // max(1, per)))

    def work_layout(self, chunk: int) -> tuple[int, int]:
        """(scratch offset, total floats) of one chunk's work buffer."""
        scr_off = -(-self.values_end * chunk // 16) * 16
        need = 16
        for per_row, rows, fixed in self.scratch:
            need = max(need, per_row * (-(-chunk * rows // 16) * 16) + fixed)
        return scr_off, scr_off + need + 16

    @property
    def nbytes(self) -> int:
        return int(self.ops.nbytes + self.B.nbytes + self.F.nbytes)

    def __repr__(self) -> str:
        return f"GraphProgram({len(self.ops)} ops, {self.in_shape} -> {[s for _, s in self.outputs]}, {self.nbytes} bytes)"


@dataclass
class TorchStep:
    """A node without a kernel, run in torch between native ops on the chunk's slots: inputs
    at ``in_offsets`` (floats per sample x chunk) of per-sample ``in_shapes``, result written
    at ``out_offset``."""
    call: Callable
    in_offsets: list[int]
    in_shapes: list[tuple[int, ...]]
    in_dtypes: list
    out_offset: int
    out_shape: tuple[int, ...]
    layer: str
    why: str

    def run(self, work: np.ndarray, chunk: int, n: int) -> None:
        ts = []
        for off, shape, dt in zip(self.in_offsets, self.in_shapes, self.in_dtypes):
            size = int(np.prod(shape))
            t = torch.from_numpy(work[off * chunk:off * chunk + n * size]).view((n, *shape))
            ts.append(t if dt in (None, torch.float32) else t.to(dt))
        with torch.no_grad():
            y = self.call(ts)
        size = int(np.prod(self.out_shape))
        if tuple(y.shape) != (n, *self.out_shape) or y.dtype != torch.float32:
            raise RuntimeError(f"{self.layer}: the torch step gave {tuple(y.shape)} {y.dtype}, expected "
                               f"{(n, *self.out_shape)} float32")
        work[self.out_offset * chunk:self.out_offset * chunk + n * size] = y.reshape(-1).numpy()


_ALIAS = {"aten.view.default", "aten._unsafe_view.default", "aten.reshape.default", "aten.flatten.using_ints",
          "aten.unsqueeze.default", "aten.squeeze.dim", "aten.squeeze.dims", "aten.squeeze.default",
          "aten.clone.default", "aten.contiguous.default", "aten.alias.default", "aten.detach.default",
          "aten.lift_fresh_copy.default", "aten.dropout.default", "aten.feature_dropout.default",
          "aten.view_as.default", "aten.reshape_as.default"}
_MOVE = {"aten.transpose.int", "aten.permute.default", "aten.select.int", "aten.slice.Tensor", "aten.expand.default",
         "aten.pad.default", "aten.constant_pad_nd.default", "aten.repeat.default", "aten.flip.default",
         "aten.narrow.default", "aten.t.default", "aten.swapaxes.default", "aten.movedim.int",
         "aten.pixel_shuffle.default", "aten.pixel_unshuffle.default", "aten.channel_shuffle.default",
         "aten.unfold.default", "aten.index_select.default", "aten.expand_as.default", "aten.roll.default",
         "aten.repeat_interleave.self_int"}
_SPLIT = {"aten.split.Tensor", "aten.split_with_sizes.default", "aten.chunk.default", "aten.unbind.int",
          "aten.tensor_split.sections", "aten.unsafe_split.Tensor"}
_UNARY = {"aten.relu.default": (K.A_RELU, (0.0, 0.0)), "aten.sigmoid.default": (K.A_SIGMOID, (0.0, 0.0)),
          "aten.tanh.default": (K.A_TANH, (0.0, 0.0)), "aten.silu.default": (K.A_SILU, (0.0, 0.0)),
          "aten.hardswish.default": (K.A_HARDSWISH, (0.0, 0.0)),
          "aten.hardsigmoid.default": (K.A_HARDSIGMOID, (0.0, 0.0)),
          "aten.neg.default": (K.A_NEG, (0.0, 0.0)), "aten.exp.default": (K.A_EXP, (0.0, 0.0)),
          "aten.rsqrt.default": (K.A_RSQRT, (0.0, 0.0)), "aten.sqrt.default": (K.A_SQRT, (0.0, 0.0)),
          "aten.reciprocal.default": (K.A_RECIP, (0.0, 0.0))}
_BIN = {"add": K.B_ADD, "sub": K.B_SUB, "mul": K.B_MUL, "div": K.B_DIV}
_RBIN = {K.B_SUB: K.B_RSUB, K.B_DIV: K.B_RDIV, K.B_ADD: K.B_ADD, K.B_MUL: K.B_MUL}


def _act_of(name: str, n: fx.Node, arg) -> tuple[int, tuple[float, float]] | None:
    if name in _UNARY:
        return _UNARY[name]
    if name == "aten.gelu.default":
        approx = n.kwargs.get("approximate", n.args[1] if len(n.args) > 1 else "none")
        return (K.A_GELU if approx == "none" else K.A_GELU_TANH), (0.0, 0.0)
    if name in ("aten.hardtanh.default", "aten.clamp.default"):
        lo = arg(1, -1.0 if name.startswith("aten.hardtanh") else None)
        hi = arg(2, 1.0 if name.startswith("aten.hardtanh") else None)
        lo = -math.inf if lo is None else float(lo)
        hi = math.inf if hi is None else float(hi)
        if lo == 0.0 and hi == math.inf:
            return K.A_RELU, (0.0, 0.0)
        return K.A_HARDTANH, (lo, hi)
    if name == "aten.relu6.default":
        return K.A_HARDTANH, (0.0, 6.0)
    if name == "aten.leaky_relu.default":
        return K.A_LEAKY, (float(arg(1, 0.01)), 0.0)
    if name == "aten.elu.default":
        if float(arg(2, 1.0)) != 1.0 or float(arg(3, 1.0)) != 1.0:
            return None
        return K.A_ELU, (float(arg(1, 1.0)), 0.0)
    if name == "aten.pow.Tensor_Scalar" and arg(1, None) == 2:
        return K.A_SQUARE, (0.0, 0.0)
    if name == "aten.pow.Tensor_Scalar" and isinstance(arg(1, None), (int, float)) and float(arg(1)).is_integer() \
            and 1 <= abs(arg(1)) <= 8:
        return K.A_POWI, (float(arg(1)), 0.0)
    return None


class Lowering:
    """Walks an aten GraphModule (see the module docstring) into a :class:`GraphProgram`."""

    def __init__(self, gm: fx.GraphModule, formats: dict | None, sample_shape: tuple[int, ...],
                 dtype: torch.dtype, out_spec=None):
        self.gm = gm
        self.formats = formats or {}
        self.sample_shape = tuple(sample_shape)
        self.dtype = dtype
        self.out_spec = out_spec
        self.recs: list[_Rec] = []
        self.sid: dict[fx.Node, int] = {}          # dynamic node -> storage
        self.size: list[int] = []                  # storage -> floats per sample
        self.shape: dict[fx.Node, tuple] = {}      # dynamic node -> per-sample shape (None: batch merged)
        self.producer: dict[int, int] = {}         # storage -> index of the record writing it
        self.nodes_of: dict[int, list[fx.Node]] = {}
        self.vocab: int | None = None
        self.fallbacks: list[tuple[str, str]] = []

    # -- analysis -------------------------------------------------------------------------
    def _analyse(self) -> None:
        g = self.gm.graph
        ph = [n for n in g.nodes if n.op == "placeholder"]
        optional = {n for n in ph if n.args and not n.users} | {
            n for n in ph if n.args and all(u.op == "call_function" and getattr(u.target, "__name__", "") == "_assert_is_none"
                                            for u in n.users)}
        data = [n for n in ph if n not in optional]
        if len(data) != 1:
            raise Unsupported(f"the graph has {len(data)} tensor inputs (the compiled graph takes one)")
        self.inp = data[0]
        self.optional = optional
        self.dyn = _data_dependent(self.gm, self.inp)
        runs = []
        for batch in (2, 3):
            rec = _Recorder(self.gm, self.dyn)
            args = [(_example(self.sample_shape, self.dtype, batch) if n is self.inp else None) for n in ph]
            try:
                with torch.no_grad():
                    rec.run(*args)
            except Exception as e:
                raise Unsupported(f"the graph does not run on a batch of {batch} "
                                  f"({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''})") from None
            runs.append(rec)
        self.run2, self.run3 = runs

    def _dyn_shape(self, n: fx.Node) -> tuple[tuple, int]:
        """(per-sample shape or None where the batch is merged into a dimension, floats per sample)."""
        s2, s3 = self.run2.shapes.get(n), self.run3.shapes.get(n)
        if not (isinstance(s2, tuple) and isinstance(s3, tuple)):
            raise Unsupported(f"node {n.name!r} ({n.target}) does not give one tensor")
        (a, dt), (b, _) = s2, s3
        na, nb = int(np.prod(a)), int(np.prod(b))
        if na * 3 != nb * 2:
            raise Unsupported(f"node {n.name!r} ({n.target}): its size does not follow the batch")
        if len(a) == len(b) and a[0] == 2 and b[0] == 3 and a[1:] == b[1:]:
            return tuple(a[1:]), na // 2
        return None, na // 2

    def const(self, n) -> torch.Tensor | None:
        """The folded value of a non-dynamic tensor argument, as one sample where it follows the
        batch (None: not a tensor)."""
        if not isinstance(n, fx.Node):
            return None
        v2, v3 = self.run2.values.get(n), self.run3.values.get(n)
        if n.op == "get_attr" and v2 is None:
            v2 = v3 = _fetch(self.gm, n.target)
        if not isinstance(v2, torch.Tensor):
            return None
        v2, v3 = v2.detach(), v3.detach()
        if tuple(v2.shape) == tuple(v3.shape):
            return v2
        if v2.dim() == v3.dim() and v2.shape[0] == 2 and v3.shape[0] == 3 and v2.shape[1:] == v3.shape[1:]:
            if not torch.equal(v2[0], v2[1]):
                raise Unsupported(f"constant {n.name!r} differs between samples")
            return v2[:1]   # keeps the batch dimension (size 1): broadcasts like the original
        raise Unsupported(f"constant {n.name!r} changes shape with the batch")

    # -- storages ---------------------------------------------------------------------------
    def _new(self, n: fx.Node) -> int:
        """A new storage for ``n``'s result (element 0 of a norm's tuple)."""
        shape, numel = self._first_shape(n)
        s = len(self.size)
        self.size.append(numel)
        self.sid[n] = s
        self.shape[n] = shape
        self.nodes_of[s] = [n]
        return s

    def _alias(self, n: fx.Node, src: fx.Node) -> None:
        shape, numel = self._dyn_shape(n)
        s = self.sid[src]
        if numel != self.size[s]:
            raise Unsupported(f"node {n.name!r} ({n.target}) changes the number of elements")
        self.sid[n] = s
        self.shape[n] = shape
        self.nodes_of[s].append(n)

    def _sole_reader(self, src: fx.Node, n: fx.Node) -> bool:
        """``n`` is the only reader of ``src``'s storage (so an epilogue may be fused)."""
        s = self.sid[src]
        readers = 0
        for m in self.nodes_of[s]:
            for u in m.users:
                if self.sid.get(u) != s:
                    readers += 1
        return readers == 1 and src in n.all_input_nodes

    def _add(self, rec: _Rec, n: fx.Node) -> _Rec:
        self.producer[rec.out] = len(self.recs)
        self.recs.append(rec)
        return rec

    # -- per op -----------------------------------------------------------------------------
    def lower(self) -> GraphProgram:
        self._analyse()
        self.sid[self.inp] = 0
        in_shape, in_numel = self._dyn_shape(self.inp)
        self.size.append(in_numel)
        self.shape[self.inp] = in_shape
        self.nodes_of[0] = [self.inp]
        out_node = next(n for n in self.gm.graph.nodes if n.op == "output")
        for n in self.gm.graph.nodes:
            if n not in self.dyn or n is self.inp or n.op != "call_function":
                continue
            if self._is_output_wrapper(n):
                continue
            try:
                self._lower_node(n)
            except Unsupported as e:
                why = f"{n.target}: {e}"
                try:   # runs in torch between native ops, reading / writing the same slots
                    self._torch_node(n, str(e))
                except Unsupported as e2:
                    raise Unsupported(f"node {n.name!r} ({why}; not in torch either: {e2})") from None
                self.fallbacks.append((n.name, why))
        return self._finish(out_node)

    def _torch_node(self, n: fx.Node, why: str) -> None:
        """A node without a kernel as a torch step of the program (``K_TORCH`` marker): its
        dynamic inputs are read from their slots as ``(n, *shape)`` tensors, the other
        arguments are the folded constants."""
        s2 = self.run2.shapes.get(n)
        if not (isinstance(s2, tuple) and s2[1] == torch.float32):
            raise Unsupported("its result is not one float32 tensor")
        ins = [a for a in n.all_input_nodes if a in self.sid]
        for a in ins:
            if self.shape.get(a) is None:
                raise Unsupported(f"input {a.name!r} has the batch merged into a dimension")
        out = self._new(n)
        if self.shape[n] is None:
            raise Unsupported("the batch is not the leading dimension of its result")
        consts = {a: self._arg_value(a) for a in n.all_input_nodes if a not in self.sid}
        storages = [self.sid[a] for a in ins]
        shapes = [self.shape[a] for a in ins]
        dtypes = [self._dyn_dtype(a) for a in ins]

        def call(tensors, node=n, ins=ins, consts=consts):
            env = dict(zip(ins, tensors))
            env.update(consts)
            args = fx.node.map_arg(node.args, lambda a: env[a])
            kwargs = fx.node.map_arg(node.kwargs, lambda a: env[a])
            return node.target(*args, **kwargs)

        rec = _Rec(K.K_TORCH, out, storages or [0], 0, self.size[out], lambda r, op, pk: 0, n.name,
                   "torch (no kernel)", note=why,
                   params={"call": call, "shapes": shapes, "dtypes": dtypes, "out_shape": self.shape[n],
                           "storages": storages})
        self._add(rec, n)

    def _is_output_wrapper(self, n: fx.Node) -> bool:
        from ...graph.modules import GraphOutput

        return n.target is GraphOutput

    def _lower_node(self, n: fx.Node) -> None:
        name = str(n.target)
        args = n.args

        def arg(i, default=None, key=None):
            if len(args) > i:
                return args[i]
            return n.kwargs.get(key, default) if key else default

        if name.startswith(("aten._assert", "aten.sym_constrain")) and not n.users:
            return   # a check of the recorded metadata: nothing to compute
        if n.target is __import__("operator").getitem:
            src, i = args
            if self._norm_tuple(src) and i == 0:
                self._alias(n, src)
                return
            if str(src.target) in _SPLIT:
                return self._move(n, str(src.target), source=src, pick=int(i))
            raise Unsupported("getitem of a multi-output op other than a norm's result")
        if name in _ALIAS or (name in ("aten._to_copy.default", "aten.to.dtype") and
                              self._dyn_dtype(n) == torch.float32 and self._dyn_dtype(args[0]) == torch.float32):
            if name == "aten.dropout.default" and arg(2, False, "train"):
                raise Unsupported("dropout in training mode")
            self._alias(n, args[0])
            return
        if name in ("aten.expand.default", "aten.slice.Tensor") and self._same_shape(n, args[0]):
            self._alias(n, args[0])
            return
        if n.target is act_quant_value:
            return self._act_quant(n)
        if name in ("aten.conv2d.default", "aten.convolution.default"):
            return self._conv(n, name, arg)
        if name in ("aten.linear.default", "aten.addmm.default", "aten.mm.default", "aten.matmul.default"):
            return self._linear(n, name, arg)
        if name in ("aten._native_batch_norm_legit_no_training.default", "aten.batch_norm.default",
                    "aten._native_batch_norm_legit.no_stats", "aten.native_batch_norm.default"):
            return self._batch_norm(n, name, arg)
        act = _act_of(name, n, arg)
        if act is not None:
            return self._activation(n, act)
        op = name.split(".")[1] if name.startswith("aten.") else ""
        if op in _BIN and name.endswith((".Tensor", ".Scalar")):
            if op == "add" or op == "sub":
                if float(n.kwargs.get("alpha", 1)) != 1.0:
                    raise Unsupported("add / sub with alpha != 1")
            if n.kwargs.get("rounding_mode") is not None:
                raise Unsupported("division with a rounding mode")
            return self._binary(n, _BIN[op], args[0], args[1])
        if name in _MOVE:
            return self._move(n, name)
        if name in _SPLIT:
            return   # lowered at each getitem of its result
        if name == "aten.cat.default":
            return self._cat(n, args[0], arg(1, 0, "dim"))
        if name in ("aten.layer_norm.default", "aten.native_layer_norm.default"):
            return self._layer_norm(n, arg)
        if name in ("aten._softmax.default", "aten.softmax.int"):
            return self._softmax(n, arg(1, -1, "dim"))
        if name in ("aten.mean.dim", "aten.sum.dim_IntList", "aten.amax.default"):
            mode = {"mean": K.R_MEAN, "sum": K.R_SUM, "amax": K.R_MAX}[name.split(".")[1]]
            if n.kwargs.get("dtype") is not None:
                raise Unsupported("reduction with a dtype")
            return self._reduce(n, mode, arg(1, None, "dim"))
        if name in ("aten.adaptive_avg_pool2d.default", "aten._adaptive_avg_pool2d.default"):
            if tuple(int(v) for v in args[1]) != (1, 1):
                raise Unsupported(f"adaptive average pooling to {tuple(args[1])} (only global pooling to 1 x 1)")
            return self._reduce(n, K.R_MEAN, [-2, -1])
        if name in ("aten.max_pool2d.default", "aten.avg_pool2d.default", "aten.max_pool2d_with_indices.default"):
            return self._pool(n, name, arg)
        if name == "aten.scaled_dot_product_attention.default":
            return self._attention(n, arg)
        if name == "aten.embedding.default":
            return self._embedding(n, arg)
        raise Unsupported("no compiled kernel")

    def _dyn_dtype(self, n) -> torch.dtype | None:
        s = self.run2.shapes.get(n)
        return s[1] if isinstance(s, tuple) else None

    def _same_shape(self, a: fx.Node, b: fx.Node) -> bool:
        return self.run2.shapes.get(a) == self.run2.shapes.get(b) and self.run3.shapes.get(a) == self.run3.shapes.get(b)

    def _norm_tuple(self, src: fx.Node) -> bool:
        return str(src.target) in ("aten._native_batch_norm_legit_no_training.default", "aten.native_layer_norm.default",
                                   "aten._native_batch_norm_legit.no_stats", "aten.native_batch_norm.default") \
            and src in self.sid

    def _first_shape(self, n: fx.Node) -> tuple:
        """Per-sample shape of a node whose result may be a tuple (a norm): of element 0."""
        s2 = self.run2.shapes[n]
        if isinstance(s2, list):
            shape = s2[0][0]
            if shape[0] != 2:
                raise Unsupported("the batch is not the leading dimension")
            return tuple(shape[1:]), int(np.prod(shape)) // 2
        return self._dyn_shape(n)

    def _weight(self, wnode: fx.Node, where: str, transpose: bool = False):
        if not isinstance(wnode, fx.Node) or wnode.op != "get_attr":
            raise Unsupported("the weight is not a parameter of the model")
        w = _fetch(self.gm, wnode.target).detach().float()
        parts = _parts(self.formats, str(wnode.target))
        if transpose:
            w = w.t().contiguous()
            parts = _transpose_parts(parts)
        return weight_rep(parts, w.numpy(), where), w

    def _conv(self, n, name, arg):
        x, wnode = n.args[0], n.args[1]
        bnode = arg(2, None, "bias")
        if name == "aten.conv2d.default":
            stride, pad, dil, groups = arg(3, 1, "stride"), arg(4, 0, "padding"), arg(5, 1, "dilation"), arg(6, 1, "groups")
        else:
            stride, pad, dil = arg(3, 1), arg(4, 0), arg(5, 1)
            if arg(6, False) or any(int(v) for v in (arg(7, [0, 0]) or [0, 0])):
                raise Unsupported("transposed convolution")
            groups = arg(8, 1)
        if isinstance(pad, str):
            raise Unsupported(f"padding={pad!r}")
        shape = self.shape.get(x)
        if shape is None or len(shape) != 3:
            raise Unsupported("the input is not (N, C, H, W)")
        rep, w = self._weight(wnode, str(wnode.target))
        if w.dim() != 4:
            raise Unsupported("not a 2-D convolution")
        out = self._new(n)
        oshape = self.shape[n]
        C, H, W = shape
        kh, kw = w.shape[2:]
        bias = self.const(bnode) if bnode is not None else None
        sh, sw = _pair(stride)
        ph, pw = _pair(pad)
        dh, dw = _pair(dil)
        cin_g = C // int(groups)
        # a dense-weight conv of any plane size runs weights-stationary (kernels._conv); decode +
        # one BLAS GEMM per sample (the former path from 1024 positions) was slower at every size
        # measured, 1 thread, AVX-512 and AVX2 alike: 16->16 3x3 on 32x32 12 vs 45 GMAC/s,
        # 64->64 3x3 on 112x112 24 vs 53, 256->256 3x3 on 28x28 41 vs 40, 1x1 32->192 on
        # 112x112 37 vs 35
        depthwise = (int(groups) == C == w.shape[0] and rep.layout == K.L_DENSE and rep.vfmt != K.V_PQ)
        s_x = self.sid[x]
        folded = None
        # a zero pad right before (TF-style "same" padding, often asymmetric) becomes the
        # conv's own padding: every graph conv kernel reads zeros outside the input (phase
        # planes: kernels.phase_dims), top / left from C_PH / C_PW, bottom /
        # right up to what Ho, Wo need
        pad = self._fusable(x, n)
        if pad is not None and pad.kind == K.K_PAD and self.producer[s_x] == len(self.recs) - 1 \
                and pad.params.get("fill") == 0.0 and min(pad.params["pads"]) >= 0 \
                and pad.params["pads"][4:] == [0, 0]:
            folded = pad
            C, H, W = pad.params["in_shape"]
            ph, pw = ph + pad.params["pads"][2], pw + pad.params["pads"][0]
            s_x = pad.ins[0]
            self.recs.pop()
            del self.producer[self.sid[x]]
        planes, rows_w = K.phase_floats(H, W, oshape[1], oshape[2], kh, kw, sh, sw, dh, dw, ph, pw)
        fixed = cin_g * planes + 32   # the group's phase planes (kernels._conv)
        if depthwise:
            fixed = max(fixed, planes + rows_w + C * kh * kw + 48)   # Yw + 16: K._tiles' last tile
            if K.dw_channels_last(C, oshape[1], oshape[2]):   # K._conv_dw_cl (the residual-fused ones do not)
                fixed = max(fixed, K.dw_cl_floats(C, H, W, oshape[1], oshape[2], kh, kw, sh, sw, dh, dw, ph, pw))
        # a dense 1 x 1 conv on a small plane: output channels as the lanes (K._conv1x1_rl)
        rl = (kh == kw == 1 and sh == sw == 1 and ph == pw == 0 and int(groups) == 1 and not depthwise
              and rep.layout == K.L_DENSE and rep.vfmt in (K.V_TABLE, K.V_Q8, K.V_F32)
              and (oshape[1], oshape[2]) == (H, W) and K.rl_conv1x1(H * W, w.shape[0]))
        if rl:
            fixed = max(fixed, K.rl_floats(H * W, w.shape[0]))

        def build(r: _Rec, op, pk):
            op[K.C_CIN], op[K.C_H], op[K.C_W] = C, H, W
            op[K.C_COUT] = w.shape[0]
            op[K.C_KH], op[K.C_KW], op[K.C_SH], op[K.C_SW] = kh, kw, sh, sw
            op[K.C_PH], op[K.C_PW], op[K.C_DH], op[K.C_DW] = ph, pw, dh, dw
            op[K.C_GROUPS] = int(groups)
            op[K.C_HO], op[K.C_WO] = oshape[1], oshape[2]
            op[K.C_SCR] = 2 if depthwise else 0   # K._conv_dw / the weights-stationary K._conv
            op[K.C_RL] = int(rl)
            b = pack_weight(op, rep, pk, True, panels=rl)
            return b + epilogue_cols(op, pk, rep.rows, rep.rowscale, bias, r.bn, r.act)

        rec = _Rec(K.K_CONV, out, [s_x], self.size[s_x], self.size[out], build,
                   str(wnode.target).removesuffix(".weight"), "conv", scr_fixed=fixed,
                   macs=rep.nonzero_macs() * oshape[1] * oshape[2], rep_name=rep.name, note=rep.note,
                   params={"rows": rep.rows})
        if folded is not None:
            rec.fused.append(folded.label)
        self._add(rec, n)

    def _linear(self, n, name, arg):
        if name == "aten.linear.default":
            x, wnode, bnode, transpose = n.args[0], n.args[1], arg(2, None, "bias"), False
        elif name == "aten.addmm.default":
            bnode, x, wnode = n.args[0], n.args[1], n.args[2]
            transpose = True
            if float(n.kwargs.get("beta", 1)) != 1.0 or float(n.kwargs.get("alpha", 1)) != 1.0:
                raise Unsupported("addmm with alpha / beta")
        else:
            x, wnode, bnode, transpose = n.args[0], n.args[1], None, True
        if x not in self.sid or (isinstance(wnode, fx.Node) and wnode in self.dyn):
            raise Unsupported("a product of two activations (only weights are compiled)")
        rep, w = self._weight(wnode, str(wnode.target), transpose)
        if w.dim() != 2:
            raise Unsupported("the weight is not a matrix")
        s_in = self.sid[x]
        if self.size[s_in] % rep.cols:
            raise Unsupported(f"input of {self.size[s_in]} floats per sample is not rows of {rep.cols}")
        rows = self.size[s_in] // rep.cols
        out = self._new(n)
        bias = self.const(bnode) if bnode is not None else None
        if bias is not None:
            bias = bias.reshape(-1)
            if bias.numel() != rep.rows:
                raise Unsupported("the bias does not match the rows")
        lut = pq_lut(rep, False)
        if lut:
            kq = rep.pq["codebooks"].shape[1]
            fixed = max(K.lut_len(kq) + rep.rows + 16, 16 * kq + 16)
            per_row = rep.cols + rep.rows + 1
        else:
            fixed, per_row = 16, rep.cols + rep.rows + 1
        gemm = not lut and rep.layout == K.L_DENSE and rep.vfmt != K.V_PQ and rows >= K.GEMM_MIN_ROWS
        if gemm:
            fixed = max(fixed, rep.rows * rep.cols + 16)

        def build(r: _Rec, op, pk):
            op[K.C_SCR] = 1 if gemm else 0   # K._fc: decode + BLAS over the rows
            if lut:
                op[K.C_KIND] = K.K_PQFC
            b = pack_weight(op, rep, pk, False)
            return b + epilogue_cols(op, pk, rep.rows, rep.rowscale, bias, r.bn, r.act)

        self._add(_Rec(K.K_FC, out, [s_in], rep.cols, rep.rows, build, str(wnode.target).removesuffix(".weight"),
                       "pq-lut" if lut else "fc", rep=rows, scr_row=per_row, scr_fixed=fixed,
                       macs=rep.nonzero_macs() * rows, rep_name=rep.name, note=rep.note,
                       params={"rows": rep.rows}), n)

    def _batch_norm(self, n, name, arg):
        x = n.args[0]
        if name == "aten.batch_norm.default":
            w, b, rm, rv = (self.const(a) for a in n.args[1:5])
            training, eps = n.args[5], n.args[7]
        elif name == "aten.native_batch_norm.default":
            w, b, rm, rv = (self.const(a) for a in n.args[1:5])
            training, eps = n.args[5], n.args[7]
        else:
            w, b, rm, rv = (self.const(a) for a in n.args[1:5])
            training, eps = False, n.args[6]
        if training or rm is None or rv is None:
            raise Unsupported("batch norm without running statistics (training mode)")
        C = rm.numel()
        inv = (w.double() if w is not None else torch.ones(C, dtype=torch.float64)) / torch.sqrt(rv.double() + float(eps))
        beta = (b.double() if b is not None else torch.zeros(C, dtype=torch.float64)) - rm.double() * inv
        prod = self._fusable(x, n)
        if prod is not None and prod.kind in (K.K_CONV, K.K_FC) and prod.bn is None and prod.act is None \
                and prod.params.get("rows") == C and prod.rep == 1:
            prod.bn = (inv.numpy(), beta.numpy())
            prod.fused.append(n.name)
            self.sid[n] = prod.out
            self.shape[n] = self._first_shape(n)[0]
            self.nodes_of[prod.out].append(n)
            return
        s_in = self.sid[x]
        out = self._new(n)
        shape = self.shape[n]
        if shape is None or shape[0] != C:
            raise Unsupported("the channels are not dimension 1")
        a_, b_ = inv.numpy(), beta.numpy()

        def build(r: _Rec, op, pk):
            op[K.C_CIN] = C
            return epilogue_cols(op, pk, C, None, None, (a_, b_), r.act)

        self._add(_Rec(K.K_EW, out, [s_in], self.size[s_in], self.size[out], build, n.name, "batchnorm"), n)

    def _fusable(self, x: fx.Node, n: fx.Node) -> _Rec | None:
        s = self.sid.get(x)
        if s is None or s not in self.producer or not self._sole_reader(x, n):
            return None
        return self.recs[self.producer[s]]

    def _activation(self, n, act):
        x = n.args[0]
        if x not in self.sid:
            raise Unsupported("the input is not an activation")
        prod = self._fusable(x, n)
        if prod is not None and prod.act is None and prod.kind in (K.K_CONV, K.K_FC, K.K_BIN, K.K_EW, K.K_NORM):
            prod.act = act
            prod.fused.append(n.name)
            self._alias(n, x)
            return
        s_in = self.sid[x]
        out = self._new(n)

        def build(r: _Rec, op, pk):
            op[K.C_CIN] = 1
            return epilogue_cols(op, pk, 1, None, None, None, r.act)

        rec = _Rec(K.K_EW, out, [s_in], self.size[s_in], self.size[out], build, n.name, "activation")
        rec.act = act
        self._add(rec, n)

    def _act_quant(self, n):
        """A layer input's k-bit quantizer (:func:`act_quant_value`) -> ``ACTQ``."""
        x, bits, clip = n.args
        if x not in self.sid:
            raise Unsupported("the input is not an activation")
        s_in = self.sid[x]
        out = self._new(n)

        def build(r: _Rec, op, pk):
            op[K.C_K] = 2 ** int(bits) - 1
            op[K.C_TAB] = pk.f(np.asarray([float(clip)], np.float32))
            return 0

        self._add(_Rec(K.K_ACTQ, out, [s_in], self.size[s_in], self.size[out], build, n.name,
                       f"act-quant {int(bits)} bit", params={"bits": int(bits), "clip": float(clip)}), n)

    # broadcasting ---------------------------------------------------------------------------
    def _full2(self, v) -> tuple[tuple[int, ...], bool]:
        """(shape at batch 2, dynamic?) of an operand; scalars are ()."""
        if isinstance(v, fx.Node) and v in self.sid:
            s = self.run2.shapes[v]
            return tuple(s[0]) if isinstance(s, tuple) else tuple(s[0][0]), True
        c = self.const(v) if isinstance(v, fx.Node) else torch.as_tensor(v)
        if c is None:
            raise Unsupported("an operand is neither a tensor nor a number")
        return tuple(c.shape), False

    def _binary(self, n, mode, a, b):
        out_full = tuple(self.run2.shapes[n][0])
        a_dyn = isinstance(a, fx.Node) and a in self.sid
        b_dyn = isinstance(b, fx.Node) and b in self.sid
        if not a_dyn or (b_dyn and self._full2(a)[0] != out_full and self._full2(b)[0] == out_full):
            a, b = b, a
            mode = _RBIN[mode]
            a_dyn, b_dyn = b_dyn, a_dyn
        if self._full2(a)[0] != out_full:
            a = self._materialize(a, out_full, n)
        if mode == K.B_ADD and b_dyn and self._residual_into_conv(n, a, b, out_full):
            return
        s_a = self.sid[a]
        out = self._new(n)
        oshape = out_full[1:]
        if b_dyn:
            b_full = self._full2(b)[0]
            if len(b_full) != len(out_full) or b_full[0] != out_full[0]:
                b = self._materialize(b, out_full, n)
                b_full = out_full
            inner, n2 = _block(b_full[1:], oshape)
            if inner is None:
                b = self._materialize(b, out_full, n)
                inner, n2 = 1, int(np.prod(oshape))
            s_b = self.sid[b]
            ins, stride = [s_a, s_b], self.size[s_b]
            cval = None
        else:
            c = (self.const(b) if isinstance(b, fx.Node) else torch.tensor(float(b))).float()
            cs = (1,) * (len(out_full) - c.dim()) + tuple(c.shape)
            if len(cs) > len(out_full) or cs[0] != 1:
                raise Unsupported("a constant operand with its own batch dimension")
            inner, n2 = _block(cs[1:], oshape)
            cval = c.reshape(-1)
            if inner is None:
                cval = torch.broadcast_to(c.reshape(cs), (1, *oshape)).reshape(-1)
                inner, n2 = 1, int(np.prod(oshape))
            ins, stride = [s_a], 0
        nout = self.size[out]

        def build(r: _Rec, op, pk):
            op[K.C_LAYOUT] = mode
            op[K.C_K], op[K.C_M], op[K.C_D] = inner, n2, stride
            if cval is not None:
                op[K.C_TAB] = pk.f(cval.numpy())
            return epilogue_cols(op, pk, 0, None, None, None, r.act)

        self._add(_Rec(K.K_BIN, out, ins, nout, nout, build, n.name,
                       {K.B_ADD: "add", K.B_MUL: "mul"}.get(mode, "arith")), n)

    def _residual_into_conv(self, n, a, b, out_full) -> bool:
        """``a + b`` where one operand is a conv's output read by this add alone (its BN folded, no
        activation yet) and the other, of the same shape, exists before that conv runs: the add
        becomes the conv's epilogue (``kernels._epi_add``; the conv's second input is the other
        operand) and a following activation fuses as usual. ResNets' ``relu(bn2(conv2(h)) +
        shortcut)``: one pass over the output plane instead of two. Returns False where it does
        not apply (the add is then lowered as a BIN op)."""
        if self._full2(b)[0] != out_full:
            return False
        for x, other in ((a, b), (b, a)):
            prod = self._fusable(x, n)
            if prod is None or prod.kind != K.K_CONV or prod.act is not None or len(prod.ins) != 1 \
                    or prod.rep != 1 or other not in self.sid:
                continue
            s_o = self.sid[other]
            ci = self.producer[prod.out]
            if s_o == prod.out:
                continue
            # the residual must be computed before the conv runs. A shortcut traced after the
            # conv (torchvision's / HF's downsample conv, the zoo's PadShortcut slice + pad) moves
            # in front of it, where its own inputs already exist
            if self.producer.get(s_o, -1) >= ci:
                late = self._late_chain(s_o, ci)
                if late is None:
                    continue
                order = list(range(ci)) + late + [i for i in range(ci, len(self.recs)) if i not in late]
                pos = {old: new for new, old in enumerate(order)}
                self.recs = [self.recs[i] for i in order]
                self.producer = {st: pos[i] for st, i in self.producer.items()}
            prod.ins.append(s_o)
            prod.fused.append(n.name)
            self._alias(n, x)
            return True
        return False

    def _late_chain(self, s: int, ci: int, limit: int = 4) -> list[int] | None:
        """Indices (ascending) of the ops from ``ci`` on that storage ``s`` depends on, where that
        is at most ``limit`` native ops none of which depends on op ``ci`` itself; else None."""
        found: set[int] = set()
        stack = [s]
        while stack:
            i = self.producer.get(stack.pop(), -1)
            if i < ci or i in found:
                continue
            if i == ci or self.recs[i].kind == K.K_TORCH or len(found) == limit:
                return None
            found.add(i)
            stack.extend(self.recs[i].ins)
        return sorted(found)

    def _materialize(self, v, out_full, n) -> fx.Node:
        """A dynamic operand broadcast to ``out_full`` by an index map (a new pseudo value)."""
        if not (isinstance(v, fx.Node) and v in self.sid):
            raise Unsupported("broadcast of a constant first operand")
        full = tuple(self.run2.shapes[v][0])
        if len(full) != len(out_full) or full[0] != out_full[0]:
            raise Unsupported("an operand broadcast over the batch")
        per = int(np.prod(full[1:]))
        idx = torch.arange(per, dtype=torch.float64).reshape(full[1:])
        m = torch.broadcast_to(idx, out_full[1:]).reshape(-1).to(torch.int64)
        key = _PseudoNode(f"{v.name}_broadcast_{n.name}")
        s = len(self.size)
        self.size.append(int(np.prod(out_full[1:])))
        self.sid[key] = s
        self.nodes_of[s] = []
        self._gather_rec(key, s, self.sid[v], m.numpy(), 0.0, False, f"{n.name} (broadcast)")
        return key

    def _gather_rec(self, n, out, s_in, idx, fill, skip, label):
        """An index-map op from storage ``s_in`` (None: from ``params["const"]``, one sample
        stored in F, the same for every sample)."""
        idx32 = np.asarray(idx, np.int64)
        nin = self.size[s_in] if s_in is not None else 0
        if s_in is not None and idx32.size and idx32.max(initial=-1) >= nin:
            raise Unsupported("index map out of range")
        idx32 = idx32.astype(np.int32)
        nout = self.size[out]
        rec = _Rec(K.K_GATHER, out, [s_in] if s_in is not None else [], nin, nout, _gather_build, label,
                   "copy" if skip else "index-map", params={"idx": idx32, "skip": skip, "fill": fill})
        self.producer[out] = len(self.recs)
        self.recs.append(rec)
        return rec

    def _move(self, n, name, source=None, pick=None):
        """Data movement as an index map: the op applied to ``arange`` (``source``, ``pick``:
        element ``pick`` of a splitting op's result)."""
        op_node = source if source is not None else n
        x = op_node.args[0]
        if x not in self.sid:
            raise Unsupported("moves a constant")
        for a in list(op_node.args[1:]) + list(op_node.kwargs.values()):
            if isinstance(a, fx.Node) and a in self.sid:
                raise Unsupported("an index that depends on the input")
        full = tuple(self.run2.shapes[x][0])
        if full[0] != 2:
            raise Unsupported("the batch is not the leading dimension")
        per = self.size[self.sid[x]]
        idx = torch.arange(2 * per, dtype=torch.float64).reshape(full) + 1.0
        args = [idx] + [self._arg_value(a) for a in op_node.args[1:]]
        kwargs = {k: self._arg_value(v) for k, v in op_node.kwargs.items()}
        fill = 0.0
        if name in ("aten.constant_pad_nd.default", "aten.pad.default"):
            mode = args[2] if len(args) > 2 else kwargs.get("mode", "constant")
            if mode != "constant":
                raise Unsupported(f"padding mode {mode!r}")
            if name == "aten.pad.default":
                fill = float((args[3] if len(args) > 3 else kwargs.get("value")) or 0.0)
                if len(args) > 3:
                    args[3] = 0.0
                kwargs.pop("value", None)
            else:
                fill = float(args[2] if len(args) > 2 else kwargs.get("value", 0.0))
                if len(args) > 2:
                    args[2] = 0.0
                kwargs.pop("value", None)
        if name in ("aten.constant_pad_nd.default", "aten.pad.default") and self.shape.get(x) is not None \
                and len(full) <= 4 and len(full) >= 2 \
                and len(args[1]) <= 2 * (len(full) - 1) and len(args[1]) % 2 == 0:
            return self._pad(n, x, [int(v) for v in args[1]], fill)
        out_t = op_node.target(*args, **kwargs)
        if pick is not None:
            out_t = out_t[pick]
        if tuple(out_t.shape) != tuple(self.run2.shapes[n][0]):
            raise Unsupported("the index map does not reproduce the shape")
        rows = out_t.reshape(2, -1)
        m0 = rows[0] - 1.0
        m1 = rows[1] - 1.0
        ok = ((m0 < 0) & (m1 < 0)) | ((m0 >= 0) & (m0 < per) & (m1 == m0 + per))
        if not bool(ok.all()):
            raise Unsupported("mixes samples of the batch")
        idx_map = m0.to(torch.int64).numpy()
        s_in = self.sid[x]
        prod = self._fusable(x, op_node) if source is None else None
        out = self._new(n)
        if prod is not None and prod.kind == K.K_GATHER and not prod.params.get("skip") and "const" not in prod.params:
            inner = prod.params["idx"].astype(np.int64)
            composed = np.where(idx_map >= 0, inner[np.clip(idx_map, 0, None)], -1)
            inner_fill = prod.params.get("fill", 0.0)
            inner_fills, outer_fills = bool((inner < 0).any()), bool((idx_map < 0).any())
            if not (inner_fills and outer_fills and inner_fill != fill):   # else two fill values: two ops
                fill = inner_fill if inner_fills else fill
                prod.params["idx"] = composed.astype(np.int32)
                prod.nout = self.size[out]
                prod.out = out
                prod.params["fill"] = fill
                prod.fused.append(n.name)
                self.producer[out] = self.producer.pop(s_in)
                return
        self._gather_rec(n, out, s_in, idx_map, fill, False, n.name)

    def _pad(self, n, x, pads, fill):
        """Constant padding of the last (up to three) dimensions: a ``PAD`` op (no index map)."""
        shape = (1,) * (3 - len(self.shape[x])) + tuple(self.shape[x])
        pads = pads + [0] * (6 - len(pads))       # (w0, w1, h0, h1, c0, c1)
        out_shape = (shape[0] + pads[4] + pads[5], shape[1] + pads[2] + pads[3], shape[2] + pads[0] + pads[1])
        s_in = self.sid[x]
        out = self._new(n)
        if int(np.prod(out_shape)) != self.size[out]:
            raise Unsupported("padding does not give the recorded shape")

        def build(r: _Rec, op, pk):
            op[K.C_CIN], op[K.C_H], op[K.C_W] = shape
            op[K.C_COUT], op[K.C_HO], op[K.C_WO] = out_shape
            op[K.C_KH], op[K.C_PH], op[K.C_PW] = pads[4], pads[2], pads[0]
            op[K.C_TAB] = pk.f(np.asarray([fill], np.float32))
            return 0

        self._add(_Rec(K.K_PAD, out, [s_in], self.size[s_in], self.size[out], build, n.name, "pad",
                       params={"fill": float(fill), "pads": list(pads), "in_shape": shape}), n)

    def _arg_value(self, a):
        if isinstance(a, fx.Node):
            v = self.run2.values.get(a)
            if v is None and a.op == "get_attr":
                v = _fetch(self.gm, a.target)
            if v is None:
                raise Unsupported(f"argument {a.name!r} is not known before the input")
            return v
        if isinstance(a, (list, tuple)):
            return type(a)(self._arg_value(v) for v in a)
        return a

    def _cat(self, n, tensors, dim):
        """One copy op per input into its places of the output (a constant input - a class
        token expanded over the batch - is copied from the program's floats)."""
        out_full = tuple(self.run2.shapes[n][0])
        if out_full[0] != 2 or int(dim) % len(out_full) == 0:
            raise Unsupported("concatenation over the batch")
        srcs = []
        for t in tensors:
            if isinstance(t, fx.Node) and t in self.sid:
                f = tuple(self.run2.shapes[t][0])
                if f[0] != 2:
                    raise Unsupported("the batch is not the leading dimension")
                srcs.append((t, f, None))
            else:
                c = self.const(t).float()
                c = c.reshape((1,) * (len(out_full) - c.dim()) + tuple(c.shape))
                f = (2,) + tuple(c.shape[1:])
                srcs.append((t, f, torch.broadcast_to(c, (1,) + f[1:]).reshape(-1)))
        out = self._new(n)
        base = 0
        marks = []
        for t, f, _ in srcs:
            per = int(np.prod(f[1:]))
            marks.append(torch.arange(2 * per, dtype=torch.float64).reshape(f) + base + 1.0)
            base += 2 * per + 1
        full = torch.cat(marks, int(dim)).reshape(2, -1)
        base = 0
        for t, f, c in srcs:
            per = int(np.prod(f[1:]))
            m0 = full[0] - 1.0 - base
            hit = (m0 >= 0) & (m0 < per)
            idx = torch.where(hit, m0, torch.full_like(m0, -1.0)).to(torch.int64).numpy()
            label = f"{n.name} <- {getattr(t, 'name', 'constant')}"
            if c is None:
                self._gather_rec(n, out, self.sid[t], idx, 0.0, True, label)
            else:
                rec = self._gather_rec(n, out, None, idx, 0.0, True, label)
                rec.params["const"] = c.numpy()
            base += 2 * per + 1
        self.producer[out] = len(self.recs) - 1

    def _layer_norm(self, n, arg):
        x = n.args[0]
        shape = tuple(int(v) for v in n.args[1])
        D = int(np.prod(shape))
        g, b = self.const(arg(2, None, "weight")), self.const(arg(3, None, "bias"))
        eps = float(arg(4, 1e-5, "eps"))
        s_in = self.sid[x]
        if self.size[s_in] % D:
            raise Unsupported("normalized shape does not divide the sample")
        rows = self.size[s_in] // D
        out = self._new(n)

        def build(r: _Rec, op, pk):
            op[K.C_COLS] = D
            op[K.C_LAYOUT] = K.NORM_LAYER
            op[K.C_TAB] = pk.f(np.asarray([eps], np.float32))
            if g is not None:
                op[K.C_ALPHA] = pk.f(g.reshape(-1).float().numpy())
            if b is not None:
                op[K.C_BETA] = pk.f(b.reshape(-1).float().numpy())
            if r.act is not None:
                op[K.C_ACT] = r.act[0]
                op[K.C_ACTP] = pk.f(np.asarray(r.act[1], np.float32))
            return 4 * D * 2

        self._add(_Rec(K.K_NORM, out, [s_in], D, D, build, n.name, "layernorm", rep=rows), n)

    def _last_dims(self, x, dims) -> int:
        full = tuple(self.run2.shapes[x][0])
        nd = len(full)
        if dims is None:
            raise Unsupported("reduction over every dimension")
        ds = sorted(int(d) % nd for d in (dims if isinstance(dims, (list, tuple)) else [dims]))
        if ds != list(range(nd - len(ds), nd)) or 0 in ds:
            raise Unsupported("reduction over dimensions that are not the trailing ones")
        return int(np.prod(full[nd - len(ds):]))

    def _softmax(self, n, dim):
        x = n.args[0]
        D = self._last_dims(x, [dim])
        s_in = self.sid[x]
        out = self._new(n)
        self._add(_Rec(K.K_SOFTMAX, out, [s_in], D, D, _cols_build(D), n.name, "softmax",
                       rep=self.size[s_in] // D), n)

    def _reduce(self, n, mode, dims):
        x = n.args[0]
        D = self._last_dims(x, dims)
        s_in = self.sid[x]
        out = self._new(n)

        def build(r: _Rec, op, pk):
            op[K.C_COLS] = D
            op[K.C_LAYOUT] = mode
            return 0

        self._add(_Rec(K.K_REDUCE, out, [s_in], D, 1, build, n.name, "reduce", rep=self.size[s_in] // D), n)

    def _pool(self, n, name, arg):
        x = n.args[0]
        shape = self.shape.get(x)
        if shape is None or len(shape) != 3:
            raise Unsupported("the input is not (N, C, H, W)")
        k = _pair(n.args[1])
        st = _pair(arg(2, None, "stride") or k)
        pd = _pair(arg(3, 0, "padding"))
        if name.startswith("aten.max_pool2d"):
            if _pair(arg(4, 1, "dilation")) != (1, 1) or arg(5, False, "ceil_mode"):
                raise Unsupported("dilated or ceil-mode max pooling")
            kind = K.P_MAX
        else:
            if arg(4, False, "ceil_mode") or not arg(5, True, "count_include_pad") or arg(6, None, "divisor_override"):
                raise Unsupported("ceil mode / count_include_pad=False / divisor_override")
            kind = K.P_AVG
        s_in = self.sid[x]
        out = self._new(n)
        o = self.shape[n]

        def build(r: _Rec, op, pk):
            op[K.C_LAYOUT] = kind
            op[K.C_CIN], op[K.C_H], op[K.C_W] = shape
            op[K.C_KH], op[K.C_KW], op[K.C_SH], op[K.C_SW], op[K.C_PH], op[K.C_PW] = *k, *st, *pd
            op[K.C_HO], op[K.C_WO] = o[1], o[2]
            return 0

        self._add(_Rec(K.K_POOL, out, [s_in], self.size[s_in], self.size[out], build, n.name,
                       "maxpool" if kind == K.P_MAX else "avgpool"), n)

    def _attention(self, n, arg):
        q, k, v = n.args[:3]
        mask = arg(3, None, "attn_mask")
        if float(arg(4, 0.0, "dropout_p")) != 0.0:
            raise Unsupported("attention dropout")
        causal = bool(arg(5, False, "is_causal"))
        for t in (q, k, v):
            if t not in self.sid or self.shape.get(t) is None or len(self.shape[t]) != 3:
                raise Unsupported("q, k, v are not (N, heads, T, d)")
        Hq, Tq, dh = self.shape[q]
        Hk, Tk, _ = self.shape[k]
        dv = self.shape[v][2]
        if Hq % Hk or self.shape[v][:2] != (Hk, Tk):
            raise Unsupported("heads of q and k / v do not group")
        scale = arg(6, None, "scale")
        scale = 1.0 / math.sqrt(dh) if scale is None else float(scale)
        madd = None
        hm = 1
        if mask is not None:
            if isinstance(mask, fx.Node) and mask in self.sid:
                raise Unsupported("a mask that depends on the input")
            c = self.const(mask)
            if c.dtype == torch.bool:
                c = torch.zeros(c.shape).masked_fill(~c, -math.inf)
            c = c.float()
            c = c.reshape((1,) * (4 - c.dim()) + tuple(c.shape))
            if c.shape[0] != 1:
                raise Unsupported("a mask per sample")
            hm = Hq if c.shape[1] == Hq else 1
            madd = torch.broadcast_to(c, (1, hm, Tq, Tk)).reshape(-1)
            if bool((madd == 0).all()):
                madd = None
        out = self._new(n)
        s_q, s_k, s_v = self.sid[q], self.sid[k], self.sid[v]

        def build(r: _Rec, op, pk):
            op[K.C_H], op[K.C_W], op[K.C_KH], op[K.C_KW], op[K.C_SH], op[K.C_COUT] = Hq, Tq, Tk, dh, dv, Hk
            op[K.C_CIN] = hm
            op[K.C_TAB] = pk.f(np.asarray([scale], np.float32))
            op[K.C_LAYOUT] = 1 if causal else 0
            if madd is not None:
                op[K.C_BETA] = pk.f(madd.numpy())
            return 0 if madd is None else 4 * madd.numel()

        self._add(_Rec(K.K_ATTN, out, [s_q, s_k, s_v], self.size[s_q], self.size[out], build, n.name, "attention",
                       scr_fixed=16, macs=Hq * Tq * Tk * (dh + dv)), n)   # K._attn allocates its own

    def _embedding(self, n, arg):
        wnode, ids = n.args[0], n.args[1]
        if self.sid.get(ids) != 0:
            raise Unsupported("embedding of something else than the model's token input")
        if wnode in self.dyn:
            raise Unsupported("the table depends on the input")
        rep, w = self._weight(wnode, str(wnode.target))
        V, D = w.shape
        self.vocab = V if self.vocab is None else min(self.vocab, V)
        s_in = self.sid[ids]
        out = self._new(n)
        T = self.size[s_in]
        table = rep.vfmt == K.V_TABLE and rep.layout == K.L_DENSE

        def build(r: _Rec, op, pk):
            op[K.C_ROWS], op[K.C_COLS] = V, D
            if table:
                op[K.C_VFMT] = K.V_TABLE
                op[K.C_VAL] = pk.b(rep.val.astype(np.uint8))
                op[K.C_TAB] = pk.f(rep.tab)
                op[K.C_NTAB] = len(rep.tab)
                return int(rep.val.size) + 4 * len(rep.tab)
            op[K.C_VFMT] = K.V_F32
            op[K.C_VAL] = pk.f(w.numpy())
            return 4 * w.numel()

        rec = _Rec(K.K_EMB, out, [s_in], T, self.size[out], build, str(wnode.target).removesuffix(".weight"),
                   "embedding", rep=T, rep_name=("dense codebook%d" % len(rep.tab)) if table else "fp32",
                   note="" if table else (rep.note or "rows stored as float32"))
        self._add(rec, n)

    # -- outputs, slots, packing -------------------------------------------------------------
    def _finish(self, out_node: fx.Node) -> GraphProgram:
        from ...graph.modules import GraphOutput

        leaves: list[fx.Node] = []

        def walk(a):
            if isinstance(a, fx.Node):
                if a.op == "call_function" and a.target is GraphOutput:
                    d = a.args[0]
                    keys = list(d.keys())
                    subs = [walk(d[k_]) for k_ in keys]
                    return lambda ts: GraphOutput({k_: s(ts) for k_, s in zip(keys, subs)})
                if a not in self.sid:
                    raise Unsupported(f"output {a.name!r} does not depend on the input")
                i = len(leaves)
                leaves.append(a)
                return lambda ts: ts[i]
            if isinstance(a, (tuple, list)):
                subs = [walk(b) for b in a]
                typ = type(a)
                return lambda ts: typ(s(ts) for s in subs)
            if isinstance(a, dict):
                keys = list(a.keys())
                subs = [walk(a[k_]) for k_ in keys]
                return lambda ts: {k_: s(ts) for k_, s in zip(keys, subs)}
            if a is None:
                return lambda ts: None
            raise Unsupported(f"output of type {type(a).__name__}")

        structure = walk(out_node.args[0])
        if self.out_spec is not None:
            inner = structure
            spec = self.out_spec
            from torch.utils import _pytree

            def structure(ts, inner=inner, spec=spec):
                flat = inner(ts)
                return _pytree.tree_unflatten(list(flat) if isinstance(flat, (list, tuple)) else [flat], spec)
        outputs = []
        if len(leaves) == 1:
            out_sid = self.sid[leaves[0]]
            outputs.append((0, self._out_shape(leaves[0])))
        else:   # every output copied into one row (offsets per output)
            out_sid = len(self.size)
            self.size.append(sum(self.size[self.sid[v]] for v in leaves))
            off = 0
            for v in leaves:
                s = self.sid[v]
                idx = np.full(self.size[out_sid], -1, np.int64)
                idx[off:off + self.size[s]] = np.arange(self.size[s])
                self._gather_rec(v, out_sid, s, idx, 0.0, True, f"output {v.name}")
                outputs.append((off, self._out_shape(v)))
                off += self.size[s]
            self.producer[out_sid] = len(self.recs) - 1
        offsets, end = self._slots(out_sid)
        pk = Packer()
        ops, info = [], []
        scratch = []
        for r in self.recs:
            op = new_op(r.kind, r.nin, r.nout)
            _place_op(op, r, offsets)
            op[K.C_REP] = r.rep
            wbytes = r.build(r, op, pk)
            ops.append(op)
            scratch.append((r.scr_row, r.rep, r.scr_fixed))
            info.append(OpInfo(r.label, r.op, r.rep_name, r.note, int(r.macs), int(wbytes), list(r.fused)))
        fused = _fuse_expand_dw(self.recs, ops, scratch, info, out_sid)
        if fused:
            # a fused pair reads the 1 x 1 conv's input until the depthwise conv's last block is
            # written: that input stays live through both ops (its slot must not hold the
            # depthwise output, as lifetimes by op would allow)
            offsets, end = self._slots(out_sid, {self.recs[i].ins[0]: i + 1 for i in fused})
            for r, op in zip(self.recs, ops):
                _place_op(op, r, offsets)
        B, F = pk.arrays()
        ops_arr = np.stack(ops) if ops else np.zeros((0, K.OPW), np.int64)
        steps = []   # (index of the torch op, its step) in program order
        for i, r in enumerate(self.recs):
            if r.kind == K.K_TORCH:
                steps.append((i, TorchStep(r.params["call"], [offsets[t] for t in r.params["storages"]],
                                           r.params["shapes"], r.params["dtypes"], offsets[r.out],
                                           r.params["out_shape"], r.label, r.note)))
        io = np.asarray([offsets[0], self.size[0], offsets[out_sid], self.size[out_sid]], np.int64)
        return GraphProgram(ops_arr, B, F, io, end, scratch, self.sample_shape, self.dtype, outputs, structure,
                            info, self.vocab, steps, list(self.fallbacks))

    def _out_shape(self, v: fx.Node) -> tuple[int, ...]:
        full = self.run2.shapes[v]
        full = tuple(full[0]) if isinstance(full, tuple) else tuple(full[0][0])
        if full[0] != 2:
            raise Unsupported(f"output {v.name!r}: the batch is not its leading dimension")
        return full[1:]

    def _slots(self, out_sid: int, keep: dict[int, int] | None = None) -> tuple[dict[int, int], int]:
        """Offsets (floats per sample, multiples of 16) by lifetime, first fit; ``keep``: values
        live at least until the op of that index (the input of a fused pair)."""
        last = {0: -1}
        for i, r in enumerate(self.recs):
            for s in r.ins:
                last[s] = max(last.get(s, -1), i)
            last[r.out] = max(last.get(r.out, -1), i)
        for s, i in (keep or {}).items():
            last[s] = max(last.get(s, -1), i)
        last[out_sid] = len(self.recs)
        live: list[tuple[int, int, int]] = []   # (offset, size, storage)
        offsets: dict[int, int] = {}
        end = 0

        def place(s):
            nonlocal end
            size = -(-self.size[s] // 16) * 16
            pos = 0
            for o, sz, _ in sorted(live):
                if o - pos >= size:
                    break
                pos = max(pos, o + sz)
            offsets[s] = pos
            live.append((pos, size, s))
            end = max(end, pos + size)

        place(0)
        for i, r in enumerate(self.recs):
            if r.out not in offsets:
                place(r.out)
            live[:] = [t for t in live if last.get(t[2], -1) > i]
        return offsets, end


def _place_op(op: np.ndarray, r: _Rec, offsets: dict[int, int]) -> None:
    """The op's value slots: its inputs' and its output's offsets (floats per sample)."""
    op[K.C_XS] = offsets[r.ins[0]] if r.ins else -1
    op[K.C_YS] = offsets[r.out]
    op[K.C_X2S] = offsets[r.ins[1]] if len(r.ins) > 1 else -1
    op[K.C_X3S] = offsets[r.ins[2]] if len(r.ins) > 2 else -1


def _fuse_expand_dw(recs: list, ops: list, scratch: list, info: list, out_sid: int) -> list[int]:
    """Mark each dense 1 x 1 conv (stride 1, no padding, one group, no residual) whose only reader
    is the per-channel depthwise conv right after it (planes of 28 x 28 and up) to run with it as
    one op (``C_FUSE`` 1 / 2, :func:`.kernels._conv_expand_dw`): the expanded tensor then lives
    a block of channels at a time in L2. Returns the indices of the fused 1 x 1 convs."""
    fused: list[int] = []
    readers: dict[int, int] = {}
    for r in recs:
        for sid in r.ins:
            readers[sid] = readers.get(sid, 0) + 1
    for i in range(len(ops) - 1):
        a, b = ops[i], ops[i + 1]
        if not (a[K.C_KIND] == b[K.C_KIND] == K.K_CONV and a[K.C_FUSE] == 0 and b[K.C_FUSE] == 0):
            continue
        L = int(a[K.C_HO] * a[K.C_WO])
        expand = (a[K.C_SCR] == 0 and a[K.C_RL] == 0 and a[K.C_KH] == a[K.C_KW] == 1
                  and a[K.C_SH] == a[K.C_SW] == 1 and a[K.C_PH] == a[K.C_PW] == 0 and a[K.C_GROUPS] == 1
                  and (a[K.C_HO], a[K.C_WO]) == (a[K.C_H], a[K.C_W]) and a[K.C_LAYOUT] == K.L_DENSE
                  and a[K.C_VFMT] in (K.V_TABLE, K.V_Q8, K.V_F32) and a[K.C_X2S] < 0 and a[K.C_REP] == 1)
        dw = (b[K.C_SCR] == 2 and b[K.C_X2S] < 0 and b[K.C_REP] == 1 and int(b[K.C_H] * b[K.C_W]) >= K.FUSE_MIN_PLANE
              and not K.dw_channels_last(int(b[K.C_CIN]), int(b[K.C_HO]), int(b[K.C_WO])))
        if not (expand and dw and recs[i + 1].ins == [recs[i].out] and readers.get(recs[i].out) == 1
                and recs[i].out != out_sid):
            continue
        a[K.C_FUSE], b[K.C_FUSE] = 1, 2
        rows = int(a[K.C_COUT])
        scratch[i] = (0, 1, K.expand_dw_floats(rows, L, recs[i + 1].scr_fixed))
        info[i].fused.append(f"{recs[i + 1].label} (depthwise, {K.fuse_block(rows, L)} channels a block)")
        fused.append(i)
    return fused


class _PseudoNode:
    """A value made by the lowering itself (a materialized broadcast)."""

    def __init__(self, name: str):
        self.name = name


def gather_runs(idx: np.ndarray) -> np.ndarray:
    """The index map ``idx`` (nout,) as runs ``(q0, i0, length)`` (int32, (R, 3)): outputs
    ``q0 .. q0 + length - 1`` read ``i0 ..`` consecutively, or are all fill / skipped (``i0 = -1``)."""
    idx = np.asarray(idx, np.int64)
    if not idx.size:
        return np.zeros((0, 3), np.int32)
    neg = idx < 0
    new = np.ones(idx.size, bool)
    new[1:] = (neg[1:] != neg[:-1]) | (~neg[1:] & (idx[1:] != idx[:-1] + 1))
    q0 = np.flatnonzero(new)
    length = np.diff(np.append(q0, idx.size))
    return np.stack([q0, np.where(neg[q0], -1, idx[q0]), length], 1).astype(np.int32)


# an index map whose runs average at least this many values is stored and run as runs (a copy
# loop per run: BERT's head permutes, runs of 64, took 0.54 ns a value as one gather per value)
GATHER_MIN_RUN = 8


def _gather_build(r: _Rec, op, pk) -> int:
    """Columns of a GATHER op: the index map as runs (``C_COL``, ``C_NNZ`` runs:
    :func:`gather_runs`) when they are long, else the int32 map (``C_PTR``); fill value, mode
    (1: copy, leave ``idx < 0`` as is), a constant source (one sample in F) where there is one."""
    idx = r.params["idx"]
    runs = gather_runs(idx)
    if len(runs) * GATHER_MIN_RUN <= idx.size:
        op[K.C_COL] = pk.b(runs.reshape(-1))
        op[K.C_NNZ] = len(runs)
        nbytes = runs.nbytes
    else:
        op[K.C_PTR] = pk.b(idx)
        nbytes = idx.nbytes
    op[K.C_TAB] = pk.f(np.asarray([r.params["fill"]], np.float32))
    op[K.C_LAYOUT] = 1 if r.params["skip"] else 0
    if "const" in r.params:
        op[K.C_VAL] = pk.f(r.params["const"])
        return nbytes + 4 * r.params["const"].size
    return nbytes


def _cols_build(D):
    def build(r: _Rec, op, pk):
        op[K.C_COLS] = D
        return 0
    return build


def _block(b_shape: tuple, o_shape: tuple) -> tuple[int | None, int]:
    """(inner, n2) where ``b`` (right-aligned to ``o``) is one contiguous block of ``o``'s
    dimensions and ones elsewhere: ``b[j_out] = b_flat[(j // inner) % n2]``; (None, 0) otherwise."""
    b = (1,) * (len(o_shape) - len(b_shape)) + tuple(b_shape)
    if len(b) != len(o_shape):
        return None, 0
    nz = [i for i, d in enumerate(b) if d != 1]
    if not nz:
        return int(np.prod(o_shape)) or 1, 1
    lo, hi = nz[0], nz[-1] + 1
    if any(b[i] != o_shape[i] for i in range(lo, hi)):
        return None, 0
    return int(np.prod(o_shape[hi:])), int(np.prod(o_shape[lo:hi]))


def _pair(v) -> tuple[int, int]:
    if isinstance(v, (list, tuple)):
        return (int(v[0]), int(v[1] if len(v) > 1 else v[0]))
    return int(v), int(v)


def _fetch(gm: nn.Module, target: str) -> torch.Tensor:
    mod = gm
    *path, leaf = str(target).split(".")
    for p in path:
        mod = getattr(mod, p)
    return getattr(mod, leaf)


def _parts(formats: dict, name: str):
    fmt = formats.get(name)
    if fmt is None:
        return None
    if isinstance(fmt, dict):
        return fmt
    from ...codec import decode_parts

    return decode_parts(fmt)


def _transpose_parts(parts):
    """The codec parts of ``W.T`` for a 2-D codebook weight stored densely (GPT-2's Conv1D);
    any other form is rebuilt from the dense transpose by the caller (None)."""
    if parts is None or parts.get("kind") != "codebook" or parts.get("positions") is not None:
        return None
    rows, cols = parts["matrix_shape"]
    codes = np.asarray(parts["codes"]).reshape(rows, cols).T.copy()
    return {**parts, "codes": codes.reshape(-1), "shape": [cols, rows], "matrix_shape": (cols, rows)}


def act_quant_value(x: torch.Tensor, bits: int, clip: float) -> torch.Tensor:
    """A layer input's activation quantizer as one graph node (``kernels._actq``, the arithmetic of
    ``weightzip.core.parametrize.install_activation_quant``'s hook at inference):
    ``round(clip(x, 0, c) / c * L) / L * c`` with ``L = 2^bits - 1``."""
    levels = 2 ** int(bits) - 1
    return torch.round(torch.clamp(x, 0.0, clip) / clip * levels) / levels * clip


_QUANTIZED_INPUT = ("aten.conv2d.default", "aten.convolution.default", "aten.linear.default")


def _with_act_quant(gm: fx.GraphModule, act_quant: list[dict]) -> fx.GraphModule:
    """Insert an :func:`act_quant_value` node before the first argument of every conv / linear
    node recorded inside a module of ``act_quant`` (``{"module", "bits", "clip"}`` items; the
    module path from torch.export's ``nn_module_stack``)."""
    want = {str(i["module"]): i for i in act_quant}
    seen = set()
    for n in list(gm.graph.nodes):
        if n.op != "call_function" or str(n.target) not in _QUANTIZED_INPUT:
            continue
        stack = list((n.meta.get("nn_module_stack") or {}).values())
        path = str(stack[-1][0]) if stack else ""
        item = want.get(path)
        if item is None:
            continue
        x = n.args[0]
        with gm.graph.inserting_before(n):
            q = gm.graph.call_function(act_quant_value, (x, int(item["bits"]), float(item.get("clip", 1.0))))
        n.replace_input_with(x, q)
        seen.add(path)
    missing = sorted(set(want) - seen)
    if missing:
        raise Unsupported(f"activation quantizer on {missing[0]!r}: not a conv / linear layer of the recorded graph")
    gm.recompile()
    return gm


def lower_graph(model: nn.Module, formats: dict | None, sample_shape: tuple[int, ...],
                dtype: torch.dtype = torch.float32, act_quant: list[dict] | None = None) -> GraphProgram:
    """Lower ``model`` for inputs of one-sample shape ``sample_shape`` (raises :class:`Unsupported`).
    ``act_quant``: the file's activation quantizers (layer inputs); the model's own hooks for them
    are left out of the recording and each becomes one ``ACTQ`` op."""
    if act_quant:
        from ...core.parametrize import install_activation_quant

        for h in getattr(model, "_wz_act_handles", []):
            h.remove()
        try:
            gm, spec = aten_graph(model, sample_shape, dtype)
        finally:
            install_activation_quant(model, act_quant)
        gm = _with_act_quant(gm, act_quant)
    else:
        gm, spec = aten_graph(model, sample_shape, dtype)
    tied = (getattr(model, "wz_manifest", None) or {}).get("tied") or {}
    if formats and isinstance(tied, dict):   # a tied weight's format is stored under one name
        formats = {**formats, **{a: formats[c] for a, c in tied.items() if c in formats and a not in formats}}
    return Lowering(gm, formats, sample_shape, dtype, spec).lower()
