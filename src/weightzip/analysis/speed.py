"""Inference speed of a ``.wz`` against the dense runtimes a user would deploy, in one process.

:func:`compare` times, INTERLEAVED (round ``r`` runs every candidate once, so load drift hits
all alike) and at the same thread count:

* ``torch eager dense``: the decoded fp32 model in PyTorch;
* ``onnxruntime fp32``: the same dense model exported to ONNX (``torch.onnx.export``);
* ``onnxruntime int8``: that ONNX file after ``onnxruntime.quantization.quantize_dynamic``;
* ``torch.ao int8``: ``torch.ao.quantization.quantize_dynamic`` on the Linear layers;
* every weightzip runtime mode (``sparse``, ``lut``, ``auto``, ``compiled``) that changes the
  model (a mode that swaps no layer is the dense model and is left out).

The time of a candidate is the median over ``repeat`` rounds of the mean of ``number``
calls. Each row has the speed-up against torch eager and against onnxruntime fp32 and the
largest |difference| of its output from the torch dense output.

A runtime that cannot run the model (an export that fails, a quantized layer the model's
graph calls as a function, a compiled plan that raises) never stops the comparison: it gets a
row per batch with ``error`` (the reason) and ``ms`` / ``us`` / ``speedup`` None.

Limit estimate (per batch): ``t_mac = non-zero MACs * batch / peak MAC rate`` (peak: a
512x512 fp32 ``torch.mm`` at the same threads) and ``t_mem = compressed weight bytes / memory
bandwidth`` (bandwidth: reading a 64 MiB array once); ``limit = max(t_mac, t_mem)``. The
non-zero MACs are the compiled plan's (a PQ layer counts its decoded non-zeros).
"""
from __future__ import annotations

import io
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

MODES = ("sparse", "lut", "auto", "compiled")


def load_average() -> tuple[float, float, float]:
    try:
        return os.getloadavg()
    except OSError:  # pragma: no cover - platform without it
        return (float("nan"),) * 3


def peak_mac_rate(threads: int, n: int = 512) -> float:
    """MACs per second of an ``n x n x n`` fp32 ``torch.mm`` (median of 5)."""
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, b = torch.randn(n, n), torch.randn(n, n)
        torch.mm(a, b)
        ts = []
        for _ in range(5):
            t0 = time.perf_counter()
            torch.mm(a, b)
            ts.append(time.perf_counter() - t0)
        return n ** 3 / statistics.median(ts)
    finally:
        torch.set_num_threads(old)


def memory_bandwidth(nbytes: int = 64 << 20) -> float:
    """Bytes per second of read passes over an ``nbytes`` float32 array (median of 5 rounds of
    ``max(1, 64 MiB / nbytes)`` passes of ``a.max()``: numpy's SIMD reduction, bound by the
    reads; ``a.sum()``'s pairwise summation ran ~3x below the read rate on this machine and made
    the estimate no bound). Called with the compressed weights' size, so weights
    that stay in cache between calls (LeNet: 60-140 KB, in L2) get the cache's read rate, not
    DRAM's: the limit estimate is then the one a repeated inference can approach."""
    nbytes = max(int(nbytes), 1 << 16)
    a = np.ones(nbytes // 4, np.float32)
    passes = max(1, (64 << 20) // nbytes)
    a.max()
    ts = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(passes):
            a.max()
        ts.append((time.perf_counter() - t0) / passes)
    return nbytes / statistics.median(ts)


def interleaved_medians(calls: dict[str, Any], repeat: int, number: int,
                        errors: dict[str, str] | None = None) -> dict[str, float]:
    """Seconds per call of each ``calls[name]()``: ``repeat`` rounds, each timing ``number`` calls
    of every runtime in turn (interleaved, so a load change hits all alike); the median round.

    With ``errors`` (a dict), a runtime whose call raises is dropped from the timing and its
    reason stored there (``errors[name] = "..."``) instead of the exception propagating."""
    times: dict[str, list[float]] = {k: [] for k in calls}
    live = dict(calls)
    for _ in range(repeat):
        for name, fn in list(live.items()):
            t0 = time.perf_counter()
            try:
                for _ in range(number):
                    fn()
            except Exception as e:
                if errors is None:
                    raise
                errors[name] = f"failed while timed ({_reason(e)})"
                del live[name]
                continue
            times[name].append((time.perf_counter() - t0) / number)
    return {k: statistics.median(times[k]) for k in live}


@dataclass(frozen=True)
class InputSpec:
    """One model input: per-sample ``shape`` (batch axis removed), ``dtype``, the axis the batch
    goes in (0: ``[B, ...]``; 1: time-major token windows ``[T, B]``) and, for integer inputs,
    the exclusive bound ``high`` of the random token ids (``[0, high)``)."""

    shape: tuple[int, ...]
    dtype: torch.dtype = torch.float32
    batch_axis: int = 0
    high: int | None = None

    def example(self, b: int) -> torch.Tensor:
        """A batch of ``b``: standard normal floats or uniform ids in ``[0, high)`` (seed ``b``)."""
        full = list(self.shape)
        full.insert(self.batch_axis, b)
        g = torch.Generator().manual_seed(b)
        if self.dtype.is_floating_point:
            return torch.randn(full, generator=g).to(self.dtype)
        if self.dtype == torch.bool:
            return torch.ones(full, dtype=torch.bool)
        return torch.randint(0, max(1, self.high or 2), full, generator=g, dtype=self.dtype)

    def describe(self) -> str:
        if self.dtype.is_floating_point:
            return "standard normal"
        return f"random {str(self.dtype).removeprefix('torch.')} ids in [0, {self.high})"


def _as_spec(model: nn.Module, shape: tuple[int, ...] | InputSpec) -> InputSpec:
    """A legacy shape: ``(T,)`` is a time-major LM window (ids below the config's vocabulary
    and 100), anything else one float sample."""
    if isinstance(shape, InputSpec):
        return shape
    shape = tuple(int(d) for d in shape)
    if len(shape) == 1:
        vocab = ((getattr(model, "wz_config", None) or {}).get("kwargs") or {}).get("vocab_size", 100)
        return InputSpec(shape, torch.int64, batch_axis=1, high=min(100, int(vocab)))
    return InputSpec(shape)


def _example(model: nn.Module, shape: tuple[int, ...] | InputSpec, b: int) -> torch.Tensor:
    return _as_spec(model, shape).example(b)


def _reason(e: BaseException) -> str:
    """One line: the exception's type and the first line of its message."""
    msg = str(e).strip().splitlines()
    return f"{type(e).__name__}: {msg[0] if msg else ''}".rstrip(": ")


def _onnx_sessions(dense: nn.Module, x: torch.Tensor, threads: int, batch_axis: int = 0) -> dict[str, Any]:
    """``{"onnxruntime fp32": session, "onnxruntime int8": session}`` or ``{name: error}``;
    the input's (and output's) ``batch_axis`` is exported as dynamic."""
    out: dict[str, Any] = {}
    try:
        import onnxruntime as ort
    except ImportError as e:
        return {"onnxruntime fp32": f"onnxruntime is not installed ({e}); pip install 'weightzip[bench]'"}
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    if threads > 1:
        # timed interleaved with other runtimes: a pool spinning after its call would take the
        # cores from the next runtime measured (2-thread rows on 2 cores: up to 8x skew seen)
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    with tempfile.TemporaryDirectory() as td:
        fp = Path(td) / "m.onnx"
        try:
            import warnings

            import contextlib
            import io
            import logging

            axes = {"input": {batch_axis: "batch"}, "output": {batch_axis: "batch"}}
            quiet = io.StringIO()   # the exporters print whole graphs on failure and progress on success
            with warnings.catch_warnings(), contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
                warnings.simplefilter("ignore")
                level = logging.getLogger("torch").level
                logging.getLogger("torch").setLevel(logging.ERROR)
                try:
                    torch.onnx.export(dense, (x,), str(fp), dynamo=False, input_names=["input"],
                                      output_names=["output"], dynamic_axes=axes)
                except Exception:
                    # the TorchScript exporter lacks some aten ops of an exported graph (a model
                    # rebuilt from a file's graph: _native_batch_norm_legit_no_training, ...);
                    # the torch.export-based exporter (onnxscript) decomposes them
                    torch.onnx.export(dense, (x,), str(fp), dynamo=True, input_names=["input"],
                                      output_names=["output"], dynamic_axes=axes)
                finally:
                    logging.getLogger("torch").setLevel(level)
            out["onnxruntime fp32"] = ort.InferenceSession(str(fp), so, providers=["CPUExecutionProvider"])
        except Exception as e:  # export can fail for exotic models
            first = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
            return {"onnxruntime fp32": f"export failed ({type(e).__name__}: {first})"}
        try:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            q = Path(td) / "m.int8.onnx"
            quantize_dynamic(str(fp), str(q), weight_type=QuantType.QInt8)
            out["onnxruntime int8"] = ort.InferenceSession(str(q), so, providers=["CPUExecutionProvider"])
        except Exception as e:
            out["onnxruntime int8"] = f"quantize_dynamic failed ({type(e).__name__}: {e})"
    return out


def _torch_ao_int8(dense: nn.Module):
    try:
        import copy

        from torch.ao.quantization import quantize_dynamic

        m = quantize_dynamic(copy.deepcopy(dense), {nn.Linear, nn.LSTM}, dtype=torch.qint8)
        return m
    except Exception as e:
        return f"torch.ao quantize_dynamic failed ({type(e).__name__}: {e})"


def _plan_stats(path, shape, threads):
    """(compiled model, non-zero MACs per sample, compressed weight bytes, fallbacks, resident)."""
    from ..runtime import load

    cm = load(path, mode="compiled")
    if hasattr(cm, "threads"):
        cm.threads = threads
    plan = cm.plan_for(tuple(shape)) if hasattr(cm, "plan_for") else None
    if plan is None:
        return cm, None, None, [("<model>", "no compiled plan for this input")], None
    info = plan.info()
    macs = sum(i.macs for i in info)
    wbytes = sum(i.weight_bytes for i in info)
    fb = list(plan.fallbacks)
    if plan.whole_model_reason:
        fb = [("<model>", plan.whole_model_reason)]
    cm.wz_native_mac_share = plan.native_mac_share()
    return cm, macs, wbytes, fb, cm.resident_bytes()


def _ratio(a: float | None, b: float | None) -> float | None:
    """``a / b``, or None where either is missing or ``b`` is not positive (a timer's 0)."""
    return a / b if a is not None and b is not None and b > 0 else None


@torch.inference_mode()
def compare(path: str | Path, *, batch_sizes=(1, 64), repeat: int = 7, number: int = 50, modes=MODES,
            threads: int = 1, baselines: bool = True, log: Callable[[str], None] | None = None,
            input_shape: Callable[[nn.Module], tuple[int, ...] | InputSpec] | None = None,
            examples: torch.Tensor | None = None) -> dict[str, Any]:
    """Time every runtime on ``path`` (see the module docstring); returns plain data.
    ``input_shape(model)`` gives one example's shape (or an :class:`InputSpec`: dtype, batch
    axis, token bound) where the model config does not (e.g. a language model's token window).
    ``examples`` (N, *shape): real inputs (e.g. test images) to take each batch from instead of
    random ones.

    Rows: ``{batch, mode, ms, us, speedup, vs_onnxruntime, max_abs_diff, over_limit}``; a
    runtime that could not be built or run has a row per batch with ``error`` (the reason) and
    None timings. Only the dense model failing to LOAD raises (nothing could run then).
    """
    from ..runtime import load
    from ..runtime.compiled.module import input_dtype_of, sample_shape_of

    threads = int(threads or 1)
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        dense = load(path, mode="dense")
        shape = sample_shape_of(dense, getattr(dense, "wz_manifest", None))
        in_dtype = input_dtype_of(getattr(dense, "wz_manifest", None))
        if shape is not None and not in_dtype.is_floating_point:   # recorded token ids
            rows = [p.shape[0] for n, p in dense.state_dict().items() if "embed" in n.lower() and p.dim() == 2]
            spec = InputSpec(tuple(shape), in_dtype, high=min([100] + rows))
        elif shape is not None:  # one float sample (an image, a feature vector)
            spec = InputSpec(tuple(shape))
        else:
            spec = _as_spec(dense, input_shape(dense) if input_shape is not None else (35,))
        shape = spec.shape
        dense_types = {type(m).__name__ for m in dense.modules()}
        cands: dict[str, Any] = {"torch eager dense": dense}
        failed: dict[str, str] = {}  # runtime -> why it could not be built (a row per batch)
        notes: dict[str, str] = {}
        order = ["torch eager dense"]
        x1 = examples[:1].contiguous() if examples is not None else spec.example(1)
        if baselines:
            try:
                built = _onnx_sessions(dense, x1, threads, spec.batch_axis if examples is None else 0)
            except Exception as e:
                built = {"onnxruntime fp32": f"export failed ({_reason(e)})"}
            built["torch.ao int8"] = _torch_ao_int8(dense)
            for k, v in built.items():
                order.append(k)
                (failed.__setitem__(k, v) if isinstance(v, str) else cands.__setitem__(k, v))
        compiled_stats = None
        for mode in modes:
            name = f"weightzip {mode}"
            order.append(name)
            try:
                if mode == "compiled":
                    cm, macs, wbytes, fb, resident = _plan_stats(path, shape, threads)
                    cands[name] = cm
                    compiled_stats = {"nonzero_macs_per_sample": macs, "weight_bytes": wbytes, "fallbacks": fb,
                                      "native_mac_share": getattr(cm, "wz_native_mac_share", None),
                                      "resident_bytes": resident}
                    continue
                m = load(path, mode=mode)
            except Exception as e:
                failed[name] = f"load(mode={mode!r}) failed ({_reason(e)})"
                continue
            swapped = sorted({type(mod).__name__ for mod in m.modules()} - dense_types)
            if not swapped:
                notes[name] = "swaps no layer (= torch eager dense)"
                order.remove(name)
                continue
            cands[name] = m
        dense_bytes = sum(p.numel() * p.element_size() for p in dense.parameters())
        peak = peak_mac_rate(threads)
        wbytes = (compiled_stats or {}).get("weight_bytes")
        bw = memory_bandwidth(wbytes if wbytes else 64 << 20)
        rows = []
        for b in batch_sizes:
            if examples is not None:
                reps = -(-b // examples.shape[0])
                x = examples.repeat((reps,) + (1,) * (examples.dim() - 1))[:b].contiguous()
            else:
                x = spec.example(b)
            xn = x.numpy()
            calls: dict[str, Callable[[], Any]] = {}
            for name, c in cands.items():
                if hasattr(c, "run"):  # onnxruntime session
                    calls[name] = (lambda s=c: s.run(None, {"input": xn}))
                else:
                    calls[name] = (lambda m=c: m(x))
            errors: dict[str, str] = {}
            y_ref = None
            diffs: dict[str, float | None] = {}
            for name, fn in list(calls.items()):  # the first call: does it run, and how close is it
                try:
                    y = _output_tensor(fn())
                except Exception as e:
                    errors[name] = f"cannot run the model ({_reason(e)})"
                    del calls[name]
                    continue
                if name == "torch eager dense":
                    y_ref = y
                try:
                    diffs[name] = float((y.float() - y_ref.float()).abs().max()) if y_ref is not None else None
                except Exception:  # shapes differ: no comparable output
                    diffs[name] = None
            med = interleaved_medians(calls, 1, max(2, number // 4), errors=errors)  # warm-up
            calls = {k: v for k, v in calls.items() if k in med}
            med = interleaved_medians(calls, repeat, number, errors=errors)
            t_torch = med.get("torch eager dense")
            t_ort = med.get("onnxruntime fp32")
            limit = None
            if compiled_stats and compiled_stats["nonzero_macs_per_sample"] is not None:
                t_mac = _ratio(compiled_stats["nonzero_macs_per_sample"] * b, peak) or 0.0
                t_mem = _ratio(compiled_stats["weight_bytes"] or 0, bw) or 0.0
                if max(t_mac, t_mem) > 0:  # a plan with nothing native (all fallback) has no limit
                    limit = {"t_mac_us": t_mac * 1e6, "t_mem_us": t_mem * 1e6, "limit_us": max(t_mac, t_mem) * 1e6}
            first = len(rows)
            for name in order:
                if name in med:
                    t = med[name]
                    rows.append({"batch": b, "mode": name, "ms": t * 1e3, "us": t * 1e6,
                                 "speedup": _ratio(t_torch, t), "vs_onnxruntime": _ratio(t_ort, t),
                                 "max_abs_diff": diffs.get(name),
                                 "over_limit": _ratio(t * 1e6, limit["limit_us"])
                                 if limit and name == "weightzip compiled" else None})
                else:
                    why = failed.get(name) or errors.get(name) or "not run"
                    rows.append({"batch": b, "mode": name, "ms": None, "us": None, "speedup": None,
                                 "vs_onnxruntime": None, "max_abs_diff": None, "over_limit": None, "error": why})
            if log:
                log(f"batch {b}: " + ", ".join(f"{k} {v * 1e6:.1f} us" for k, v in med.items())
                    + "".join(f"; {k}: {v}" for k, v in {**failed, **errors}.items()))
            if limit and len(rows) > first:
                rows[first].setdefault("limit", limit)
        return {
            "path": str(path), "threads": threads, "input_shape": list(shape),
            "input_dtype": str(spec.dtype).removeprefix("torch."), "rows": rows,
            "inputs": "given examples" if examples is not None else spec.describe(),
            "load_average": list(load_average()), "peak_mac_per_s": peak, "memory_bandwidth_B_per_s": bw,
            "dense_param_bytes": dense_bytes, "file_bytes": Path(path).stat().st_size,
            "compiled": compiled_stats, "notes": notes,
            "failed": sorted({r["mode"] for r in rows if r.get("error")}),
            "limits": {str(r["batch"]): r["limit"] for r in rows if "limit" in r},
        }
    finally:
        torch.set_num_threads(old_threads)


def _output_tensor(y: Any) -> torch.Tensor:
    """The first output of a runtime's call as a tensor (onnxruntime: a list of numpy arrays;
    torch: a tensor, a tuple, or an object / dict with ``logits``)."""
    if isinstance(y, list) and y and not torch.is_tensor(y[0]):
        return torch.from_numpy(np.asarray(y[0]))
    from ..training.evaluate import logits_of

    return logits_of(y)


def bench_text(out: dict[str, Any]) -> str:
    """Plain-text table of :func:`compare`'s result."""
    la = out.get("load_average") or [float("nan")] * 3
    lines = [f"{out['path']}: {out['threads']} thread(s), input {out['input_shape']} "
             f"({out.get('inputs', 'standard normal')}), load average "
             f"{la[0]:.2f} {la[1]:.2f} {la[2]:.2f}; median of repeats, interleaved"]
    hdr = f"{'batch':>5}  {'runtime':<22} {'us / call':>11} {'vs torch':>9} {'vs ort fp32':>11} {'max |diff|':>10}"
    lines.append(hdr)
    for r in out["rows"]:
        if r.get("error"):
            lines.append(f"{r['batch']:>5}  {r['mode']:<22} {'-':>11} {'-':>9} {'-':>11} {'-':>10}  "
                         f"not run: {r['error']}")
            continue
        vo = f"{r['vs_onnxruntime']:.2f}x" if r.get("vs_onnxruntime") else "-"
        sp = f"{r['speedup']:.2f}x" if r.get("speedup") else "-"
        diff = f"{r['max_abs_diff']:.1e}" if r.get("max_abs_diff") is not None else "-"
        lines.append(f"{r['batch']:>5}  {r['mode']:<22} {r['us']:>11.1f} {sp:>9} {vo:>11} {diff:>10}")
    cs = out.get("compiled")
    if cs:
        if cs["nonzero_macs_per_sample"] is not None:
            lines.append(f"compiled: {cs['nonzero_macs_per_sample']:,} non-zero MACs per sample, "
                         f"{cs['weight_bytes']:,} B of compressed weights; resident "
                         f"{(cs['resident_bytes'] or {}).get('total', 0):,} B vs dense fp32 "
                         f"{out['dense_param_bytes']:,} B")
        if cs.get("native_mac_share") is not None:
            lines.append(f"compiled: share of MACs run natively {100 * cs['native_mac_share']:.0f}%")
        for layer, why in cs["fallbacks"]:
            lines.append(f"  fallback to decoded dense: {layer}: {why}")
    lines.append(f"limit estimate: peak {out['peak_mac_per_s'] / 1e9:.1f} GMAC/s (fp32 torch.mm), memory "
                 f"{out['memory_bandwidth_B_per_s'] / 1e9:.1f} GB/s (read rate at the compressed weights' size)")
    for b, lim in (out.get("limits") or {}).items():
        comp = [r for r in out["rows"] if str(r["batch"]) == b and r["mode"] == "weightzip compiled"]
        extra = f"; compiled is {comp[0]['over_limit']:.1f}x the limit" if comp and comp[0].get("over_limit") else ""
        lines.append(f"  batch {b}: MACs {lim['t_mac_us']:.2f} us, bytes {lim['t_mem_us']:.2f} us -> "
                     f"limit {lim['limit_us']:.2f} us{extra}")
    for k, v in (out.get("notes") or {}).items():
        lines.append(f"  {k}: {v}")
    return "\n".join(lines)


def plan_text(path: str | Path) -> str:
    """What ``load(path, mode="compiled")`` runs per layer: op, representation, fused layers,
    non-zero MACs, resident bytes, and every layer that falls back to decoded dense (and why)."""
    from ..runtime import load

    import warnings

    try:
        with warnings.catch_warnings():  # the fallback warning says what the lines below say
            warnings.simplefilter("ignore", RuntimeWarning)
            cm = load(path, mode="compiled")
    except Exception as e:  # a user model without its module, ...
        return f"compiled runtime: not available ({type(e).__name__}: {e})"
    plans = getattr(cm, "plans", None)
    if not plans:
        why = getattr(cm, "wz_compile_reason", None)
        if why:
            return f"compiled runtime: the whole model runs decoded dense in torch: {why}"
        return "compiled runtime: no input shape known for this model (plans are built on the first call)"
    lines = []
    for shape, plan in plans.items():
        lines.append(f"compiled runtime (load mode 'compiled'), input {list(shape)}: "
                     f"{sum(1 for s in plan.segments if hasattr(s, 'ops'))} native call(s) per forward")
        if plan.whole_model_reason:
            lines.append(f"  whole model runs decoded dense: {plan.whole_model_reason}")
        for i in plan.info():
            fused = f" + {', '.join(i.fused)}" if i.fused else ""
            lines.append(f"  {i.layer:<24} {i.op:<22} {i.rep:<26} MACs {i.macs:>10,}  bytes {i.weight_bytes:>9,}"
                         f"{fused}" + (f"  [{i.note}]" if i.note else ""))
        for layer, why in plan.fallbacks:
            lines.append(f"  fallback to decoded dense: {layer}: {why}")
        lines.append(f"  share of MACs run natively: {100 * plan.native_mac_share():.0f}%")
    res = cm.resident_bytes()
    lines.append(f"  resident: {res['total']:,} B ({res['native']:,} native, {res['torch_fallback']:,} torch fallback)")
    return "\n".join(lines)
