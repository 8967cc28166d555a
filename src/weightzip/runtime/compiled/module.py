"""``CompiledModel``: an ``nn.Module`` that runs a :class:`.plan.Plan` (one native call per
native segment; a sequential model that compiles completely is ONE call per forward).

Inputs that the native path does not take (autograd, non-CPU, other dtypes) run the decoded
dense reference model, which is then built on demand from the kept formats. Threads: the
batch is split into chunks of ``<= CHUNK`` samples (at least one per thread) and ONE parallel
region runs the whole program per chunk (``numba.prange``), so there is no per-layer
synchronisation; batch 1 runs on the calling thread (a parallel region costs more than the
whole forward of a small model).
"""
from __future__ import annotations

import contextlib

import numba
import numpy as np
import torch
from torch import nn

from . import kernels as K
from .lower import GraphProgram
from .plan import CHUNK, Plan, Program, TorchSegment, build_plan

_BLAS_LIBS: list | None = None


def _blas_libs() -> list:
    """threadpoolctl controllers of the BLAS libraries loaded (the OpenBLAS behind numba's
    ``np.dot`` is scipy's, loaded here first), found once."""
    global _BLAS_LIBS
    if _BLAS_LIBS is None:
        try:
            import scipy.linalg.cython_blas  # noqa: F401  (numba's np.dot calls into it)
            from threadpoolctl import ThreadpoolController

            _BLAS_LIBS = [lib for lib in ThreadpoolController().lib_controllers if lib.user_api == "blas"]
        except Exception:  # no threadpoolctl / scipy: BLAS keeps its own thread count
            _BLAS_LIBS = []
    return _BLAS_LIBS


class _BlasThreads:
    """``with _BlasThreads(n):`` the BLAS GEMMs of graph programs (decode + GEMM FCs over many
    rows) use ``n`` threads, restored afterwards. OpenBLAS otherwise starts one thread
    per core for every GEMM: on a loaded 2-core machine that made HF MobileNetV2 at batch 1
    run 50-160 ms instead of 18 (the second thread waits for a busy core), and a
    ``threads=1`` row would not be single-threaded."""

    def __init__(self, n: int):
        self.n = max(1, int(n))
        self.old: list[tuple] = []

    def __enter__(self):
        for lib in _blas_libs():
            old = lib.num_threads
            if old != self.n:
                lib.set_num_threads(self.n)
                self.old.append((lib, old))
        return self

    def __exit__(self, *exc):
        for lib, old in self.old:
            lib.set_num_threads(old)
        self.old = []


_NO_LIMIT = contextlib.nullcontext()


class _Native:
    """A packed program plus its cached work buffers."""

    def __init__(self, prog: Program):
        self.prog = prog
        self.ops, self.B, self.F = prog.ops, prog.B, prog.F
        self.nin, self.nout = prog.nin, prog.nout
        self.out_full = tuple(prog.out_shape)
        self._work: dict[tuple[int, int], tuple] = {}

    def work(self, n: int, threads: int):
        key = (n, threads)
        w = self._work.get(key)
        if w is None:
            chunk = CHUNK if threads <= 1 else max(1, min(CHUNK, -(-n // threads)))
            nch = -(-n // chunk) if threads > 1 else 1
            half, scr, total = self.prog.work_layout(chunk)
            w = (np.zeros((nch, total), np.float32), half, scr, chunk)
            if len(self._work) > 8:
                self._work.clear()
            self._work[key] = w
        return w

    def run_numpy(self, x: np.ndarray, threads: int = 1, out_shape: tuple | None = None) -> np.ndarray:
        """``x`` (n, nin) float32 C-contiguous -> (n, nout) float32 (or ``(n, *out_shape)``)."""
        n = x.shape[0]
        out = np.empty((n, self.nout), np.float32)  # 2-D: one kernel signature for every model
        if n == 1 or threads <= 1:   # the batch-1 path: nothing but the native call
            work, half, scr, chunk = self.work(n, 1)
            K.run_serial(self.ops, self.B, self.F, x, out, work, half, scr, chunk)
        else:
            threads = min(threads, numba.config.NUMBA_NUM_THREADS)
            work, half, scr, chunk = self.work(n, threads)
            if numba.get_num_threads() != threads:
                numba.set_num_threads(threads)
            run = K.run_parallel if threads > 1 else K.run_serial
            run(self.ops, self.B, self.F, x, out, work, half, scr, chunk)
        return out if out_shape is None or len(out_shape) == 1 else out.reshape((n,) + tuple(out_shape))


class _GraphNative:
    """A packed graph program (:mod:`.lower`) plus its cached work buffers."""

    def __init__(self, prog: GraphProgram):
        self.prog = prog
        self.ops, self.B, self.F, self.io = prog.ops, prog.B, prog.F, prog.io
        self._work: dict[tuple[int, int], tuple] = {}
        kinds, scr = self.ops[:, K.C_KIND], self.ops[:, K.C_SCR]
        # ops that call BLAS (np.dot): decode + GEMM FCs over GEMM_MIN_ROWS rows or more
        self.uses_blas = bool(((kinds == K.K_FC) & (scr == 1)).any())

    def work(self, n: int, threads: int):
        key = (n, threads)
        w = self._work.get(key)
        if w is None:
            chunk = self.prog.chunk_for(CHUNK if threads <= 1 else max(1, min(CHUNK, -(-n // threads))))
            nch = -(-n // chunk) if threads > 1 else 1
            scr_off, total = self.prog.work_layout(chunk)
            w = (np.zeros((nch, total), np.float32), chunk, scr_off)
            if len(self._work) > 8:
                self._work.clear()
            self._work[key] = w
        return w

    def _run_with_torch(self, xn: np.ndarray, out: np.ndarray) -> None:
        """Chunk by chunk on this thread: the native ops between torch steps in one call each,
        every torch step on the chunk's slots (:class:`.lower.TorchStep`)."""
        prog = self.prog
        work, chunk, scr = self.work(xn.shape[0], 1)
        w = work[0]
        io_in, io_out, quiet = self.io.copy(), self.io.copy(), self.io.copy()
        io_in[3] = 0
        io_out[1] = 0
        quiet[1] = quiet[3] = 0
        for n0 in range(0, xn.shape[0], chunk):
            xc, oc = xn[n0:n0 + chunk], out[n0:n0 + chunk]
            prev = 0
            for i, step in prog.torch_steps:
                K.run_graph_chunk(self.ops[prev:i], self.B, self.F, xc, oc, w, chunk, io_in if prev == 0 else quiet, scr)
                step.run(w, chunk, xc.shape[0])
                prev = i + 1
            K.run_graph_chunk(self.ops[prev:], self.B, self.F, xc, oc, w, chunk, io_out, scr)

    def run(self, x: torch.Tensor, threads: int = 1):
        """``x`` (n, *sample) -> the model's output structure (tensors in it own their memory)."""
        prog = self.prog
        n = x.shape[0]
        if not prog.in_dtype.is_floating_point:
            if prog.vocab is not None and x.numel() and (int(x.min()) < 0 or int(x.max()) >= prog.vocab):
                raise IndexError(f"token ids must lie in [0, {prog.vocab}); got {int(x.min())}..{int(x.max())}")
            x = x.to(torch.float32)
        xn = x.reshape(n, prog.nin).numpy()
        if not xn.flags.c_contiguous:
            xn = np.ascontiguousarray(xn)
        out = np.empty((n, prog.nout), np.float32)
        if prog.torch_steps:
            with _BlasThreads(threads) if self.uses_blas else _NO_LIMIT:
                self._run_with_torch(xn, out)
        elif n == 1 or threads <= 1:
            work, chunk, scr = self.work(n, 1)
            with _BlasThreads(threads) if self.uses_blas else _NO_LIMIT:
                K.run_graph(self.ops, self.B, self.F, xn, out, work, chunk, self.io, scr)
        else:
            threads = min(threads, numba.config.NUMBA_NUM_THREADS)
            work, chunk, scr = self.work(n, threads)
            if numba.get_num_threads() != threads:
                numba.set_num_threads(threads)
            run = K.run_graph_parallel if work.shape[0] > 1 else K.run_graph
            # chunks in parallel: each chunk's GEMMs on its own thread
            with _BlasThreads(1 if work.shape[0] > 1 else threads) if self.uses_blas else _NO_LIMIT:
                run(self.ops, self.B, self.F, xn, out, work, chunk, self.io, scr)
        o = torch.from_numpy(out)
        if len(prog.outputs) == 1:
            leaves = [o.view((n,) + tuple(prog.outputs[0][1]))]
        else:
            leaves = [o[:, off:off + int(np.prod(shape))].reshape((n,) + tuple(shape)) for off, shape in prog.outputs]
        return prog.structure(leaves)


def profile_graph(nat: "_GraphNative", x: torch.Tensor, repeat: int = 5) -> list[tuple[str, str, float]]:
    """(layer, op, median seconds) per op of a graph program on ``x`` (batch 1 path: one chunk,
    the ops run one native call each, in program order, ``repeat`` times). A fused pair
    (``C_FUSE``: a 1 x 1 conv and its depthwise conv) is one call, timed on the first op; the
    second shows 0."""
    import time

    prog = nat.prog
    n = x.shape[0]
    xn = np.ascontiguousarray(x.to(torch.float32).reshape(n, prog.nin).numpy())
    out = np.empty((n, prog.nout), np.float32)
    work, chunk, scr = nat.work(n, 1)
    times = [[] for _ in range(len(prog.ops))]
    quiet = nat.io.copy()
    quiet[1] = quiet[3] = 0      # no input / output copies: the op alone on the n samples in place
    with _BlasThreads(1):
        for _ in range(repeat):
            K.run_graph_chunk(prog.ops[:0], nat.B, nat.F, xn, out, work[0], chunk, nat.io, scr)   # input in place
            for k in range(len(prog.ops)):
                fuse = prog.ops[k, K.C_FUSE]
                if fuse == 2:   # run (and timed) with the 1 x 1 conv before it
                    times[k].append(0.0)
                    continue
                t0 = time.perf_counter()
                K.run_graph_chunk(prog.ops[k:k + 1 + (fuse == 1)], nat.B, nat.F, xn, out, work[0], chunk, quiet, scr)
                times[k].append(time.perf_counter() - t0)
    return [(i.layer, i.op, float(np.median(t))) for i, t in zip(prog.info, times)]


class CompiledModel(nn.Module):
    """Runs a loaded model from its compressed representation (see :mod:`.plan`).

    ``reference`` builds the decoded dense module (used for inputs the native path does not
    take). ``threads`` (default: ``torch.get_num_threads()`` at each call) caps the numba
    threads. ``plans`` holds one plan per input sample shape, built on first use.
    """

    def __init__(self, model: nn.Module, formats: dict | None, sample_shape: tuple[int, ...] | None = None,
                 act_quant: list[dict] | None = None, threads: int | None = None, reload=None,
                 in_dtype: torch.dtype = torch.float32):
        super().__init__()
        self.in_dtype = in_dtype
        self._formats = formats
        self._reload = reload
        self._act_quant = act_quant
        self.threads = threads
        self.plans: dict[tuple[int, ...], Plan] = {}
        self._natives: dict[tuple[int, ...], list] = {}
        # keep the torch model only for fallback segments / reference; the compiled layers'
        # dense weights are dropped from memory once every plan is built natively
        self._model = [model]
        self._single: _Native | None = None
        self._single_shape: tuple[int, ...] | None = None
        if sample_shape is not None:
            self.plan_for(tuple(sample_shape))
            if reload is not None and self.plans[tuple(sample_shape)].native_only:
                # weights now live only in the packed arrays; the dense model and the formats
                # are re-read from the file if another input shape or the reference is needed
                self._model = [None]
                self._formats = None

    def _dense_model(self) -> nn.Module:
        if self._model[0] is None:
            model, formats = self._reload()
            self._model = [model]
            self._formats = formats
        return self._model[0]

    # -- plans -----------------------------------------------------------------------------
    def plan_for(self, sample_shape: tuple[int, ...]) -> Plan:
        plan = self.plans.get(sample_shape)
        if plan is None:
            model = self._dense_model()
            plan = build_plan(model, self._formats, sample_shape, self._act_quant, self.in_dtype)
            self.plans[sample_shape] = plan
            segs = [(_Native(s) if isinstance(s, Program) else _GraphNative(s) if isinstance(s, GraphProgram) else s)
                    for s in plan.segments]
            self._natives[sample_shape] = segs
            if len(segs) == 1 and isinstance(segs[0], _Native):
                self._single, self._single_shape = segs[0], sample_shape
        return plan

    @property
    def reference(self) -> nn.Module:
        """The decoded dense model (the reference mode)."""
        return self._dense_model()

    def resident_bytes(self) -> dict[str, int]:
        """Bytes held for inference: packed native programs, torch fallback parameters."""
        native = sum(s.prog.nbytes for segs in self._natives.values() for s in segs
                     if isinstance(s, (_Native, _GraphNative)))
        fb = {id(p): p for segs in self._natives.values() for s in segs if isinstance(s, TorchSegment)
              for p in list(s.module.parameters()) + list(s.module.buffers())}
        torch_b = sum(p.numel() * p.element_size() for p in fb.values())
        return {"native": int(native), "torch_fallback": int(torch_b), "total": int(native + torch_b)}

    # -- forward ---------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        if args or kwargs or self._whole_model_in_torch():  # masks, labels, ...: the torch model
            return self._dense_model()(x, *args, **kwargs)
        if x.dtype != self.in_dtype or not x.is_cpu or x.requires_grad:
            if x.requires_grad and not torch.is_grad_enabled():
                x = x.detach()   # no graph is recorded anyway: run natively
            else:
                return self._dense_model()(x)
        threads = self.threads or torch.get_num_threads()
        nat = self._single
        if nat is not None and x.shape[1:] == self._single_shape:
            # the batch-1 path costs ~15 us in all, so every torch call counts: no detach (no
            # grad here), the reshape in numpy, the output allocated by numpy and returned
            # without a copy
            n = x.shape[0]
            xn = x.numpy().reshape(n, nat.nin)
            if not xn.flags.c_contiguous:
                xn = np.ascontiguousarray(xn)
            return torch.from_numpy(nat.run_numpy(xn, threads, nat.out_full))
        sample = tuple(x.shape[1:])
        self.plan_for(sample)
        segs = self._natives[sample]
        if len(segs) == 1 and isinstance(segs[0], _GraphNative):
            return segs[0].run(x.detach(), threads)
        if self.plans[sample].whole_model_reason is not None:
            return self._dense_model()(x)
        h = x.detach()
        for seg in segs:
            if isinstance(seg, _Native):
                hn = h.reshape(h.shape[0], seg.nin).contiguous()
                h = torch.from_numpy(seg.run_numpy(hn.numpy(), threads)).view((h.shape[0],) + seg.prog.out_shape)
            else:
                h = seg.module(h)
        return h

    def _whole_model_in_torch(self) -> bool:
        """True where the only plan built runs the whole model in torch (its output may be any
        structure: a dict, a ModelOutput), so the native segment walk is skipped."""
        return len(self.plans) == 1 and next(iter(self.plans.values())).whole_model_reason is not None

    def extra_repr(self) -> str:
        lines = []
        for shape, plan in self.plans.items():
            lines.append(f"input {shape}: {len(plan.segments)} segment(s)" +
                         (f", fallbacks {plan.fallbacks}" if plan.fallbacks else ""))
        return "; ".join(lines)


def compile_model(model: nn.Module, formats: dict | None, sample_shape: tuple[int, ...] | None = None,
                  threads: int | None = None, reload=None, in_dtype: torch.dtype = torch.float32) -> CompiledModel:
    """Wrap a loaded (eval-mode) model in :class:`CompiledModel`; the plan for ``sample_shape``
    is built now (so fallbacks are known), other input shapes on first use. ``reload()`` ->
    ``(dense model, formats)`` lets the wrapper drop both while every layer runs natively."""
    act = (getattr(model, "wz_runtime", None) or {}).get("activation_quant")
    cm = CompiledModel(model.eval(), formats, sample_shape, act, threads, reload, in_dtype)
    for attr in ("wz_manifest", "wz_config", "wz_runtime"):
        if hasattr(model, attr):
            setattr(cm, attr, getattr(model, attr))
    return cm


def sample_shape_of(model: nn.Module, manifest: dict | None = None) -> tuple[int, ...] | None:
    """One input sample's shape from the zoo model's constructor arguments (None: unknown)."""
    import inspect as _inspect

    from ...core.registry import _MODELS

    cfg = (manifest or {}).get("model") or getattr(model, "wz_config", None) or {}
    name = cfg.get("name", "")
    kw = cfg.get("kwargs") or {}
    example = (((manifest or {}).get("graph") or {}).get("example_inputs") or [None])[0]
    if name not in _MODELS and isinstance(example, dict) and str(example.get("dtype", "")).startswith(("float", "bfloat", "int")):
        shape = example.get("shape")
        if isinstance(shape, list) and len(shape) >= 2 and all(isinstance(d, int) and d > 0 for d in shape):
            return tuple(shape[1:])  # a model saved with its graph: the recorded example input
    if name not in _MODELS or name.startswith("lstm"):
        return None
    params = _inspect.signature(_MODELS[name]).parameters
    if "image_size" not in params and "image_size" not in kw:
        return None
    c = kw["in_channels"] if "in_channels" in kw else (params["in_channels"].default if "in_channels" in params else 1)
    s = kw["image_size"] if "image_size" in kw else params["image_size"].default
    if s is _inspect.Parameter.empty or c is _inspect.Parameter.empty:
        return None
    return (int(c), int(s), int(s))


def compile_from_file(path, model: nn.Module, formats: dict, manifest: dict, required: bool,
                      threads: int | None = None, reload=None) -> CompiledModel | None:
    """``load(mode="compiled" | "auto")``: the compiled model, or None where ``auto`` should use
    the per-layer converters instead (the model does not compile completely). ``reload()`` ->
    (dense model, formats) re-reads the file (given by ``load``, so no import goes back to it)."""
    shape = sample_shape_of(model, manifest)
    model.eval()
    model.wz_manifest = manifest
    mode = "compiled" if required else "auto"

    if shape is None:
        from .lstm import compile_lstm_layers

        done, kept = compile_lstm_layers(model, formats)
        if done:
            # recurrent models: each LSTM layer becomes one native call over all steps; the
            # embedding / decoder stay torch (their own fast paths)
            model.wz_compiled = {"lstm_layers": done, "kept_in_torch": kept}
            return model
        why = _no_shape_reason(manifest)
        _warn_fallback(path, mode, f"the whole model runs decoded dense in torch: {why}")
        if not required:
            return None
        cm = compile_model(model, formats, None, threads, None)
        cm.wz_manifest = manifest
        cm.wz_compile_reason = why
        return cm
    cm = compile_model(model, formats, shape, threads, reload, input_dtype_of(manifest))
    cm.wz_manifest = manifest
    plan = cm.plans[shape]
    if not plan.native_only:
        if plan.whole_model_reason:
            what = f"the whole model runs decoded dense in torch: {plan.whole_model_reason}"
        else:
            what = "these layers run decoded dense in torch: " + "; ".join(f"{layer} ({why})" for layer, why in plan.fallbacks)
        _warn_fallback(path, mode, what + (" (mode 'auto' then picks per layer what runs fastest)" if not required else ""))
    if not required and not plan.native_only:
        return None
    return cm


def input_dtype_of(manifest: dict | None) -> torch.dtype:
    """The recorded example input's dtype (token ids: int64), float32 where none is recorded."""
    example = (((manifest or {}).get("graph") or {}).get("example_inputs") or [None])[0]
    dt = str(example.get("dtype", "")) if isinstance(example, dict) else ""
    return {"int64": torch.int64, "int32": torch.int32}.get(dt.removeprefix("torch."), torch.float32)


def _no_shape_reason(manifest: dict | None) -> str:
    example = (((manifest or {}).get("graph") or {}).get("example_inputs") or [None])[0]
    if isinstance(example, dict) and not str(example.get("dtype", "")).startswith(("float", "bfloat")):
        return (f"its input is {example.get('dtype')} (token ids); the compiled runtime takes float32 "
                f"inputs only (no native embedding kernel yet)")
    return ("no input shape is known (a zoo model without image_size, or a file saved without "
            "example_inputs=)")


def _warn_fallback(path, mode: str, what: str) -> None:
    """One warning per load that names what does not run natively and why (weightzip inspect
    shows the same per layer)."""
    import warnings

    warnings.warn(f"{path}: load(mode={mode!r}): not everything runs in the compiled runtime; {what}",
                  RuntimeWarning, stacklevel=4)
