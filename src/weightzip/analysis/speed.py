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


def interleaved_medians(calls: dict[str, Any], repeat: int, number: int) -> dict[str, float]:
    """Seconds per call of each ``calls[name]()``: ``repeat`` rounds, each timing ``number`` calls
    of every runtime in turn (interleaved, so a load change hits all alike); the median round."""
    times: dict[str, list[float]] = {k: [] for k in calls}
    for _ in range(repeat):
        for name, fn in calls.items():
            t0 = time.perf_counter()
            for _ in range(number):
                fn()
            times[name].append((time.perf_counter() - t0) / number)
    return {k: statistics.median(v) for k, v in times.items()}


def _example(model: nn.Module, shape: tuple[int, ...], b: int) -> torch.Tensor:
    if len(shape) == 1:  # language model: token windows (seq, batch)
        vocab = ((getattr(model, "wz_config", None) or {}).get("kwargs") or {}).get("vocab_size", 10000)
        return torch.randint(0, vocab, (shape[0], b))
    g = torch.Generator().manual_seed(b)
    return torch.randn(b, *shape, generator=g)


def _first(y):
    return y[0] if isinstance(y, tuple) else y


def _onnx_sessions(dense: nn.Module, x: torch.Tensor, threads: int) -> dict[str, Any]:
    """``{"onnxruntime fp32": session, "onnxruntime int8": session}`` or ``{name: error}``."""
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

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(dense, (x,), str(fp), dynamo=False, input_names=["input"],
                                  output_names=["output"], dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
            out["onnxruntime fp32"] = ort.InferenceSession(str(fp), so, providers=["CPUExecutionProvider"])
        except Exception as e:  # export can fail for exotic models
            return {"onnxruntime fp32": f"export failed ({type(e).__name__}: {e})"}
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
    return cm, macs, wbytes, fb, cm.resident_bytes()


@torch.inference_mode()
def compare(path: str | Path, *, batch_sizes=(1, 64), repeat: int = 7, number: int = 50, modes=MODES,
            threads: int = 1, baselines: bool = True, log: Callable[[str], None] | None = None,
            input_shape: Callable[[nn.Module], tuple[int, ...]] | None = None,
            examples: torch.Tensor | None = None) -> dict[str, Any]:
    """Time every runtime on ``path`` (see the module docstring); returns plain data.
    ``input_shape(model)`` gives one example's shape where the model config does not
    (e.g. a language model's token window). ``examples`` (N, *shape): real inputs (e.g. test
    images) to take each batch from instead of standard-normal ones."""
    from ..runtime import load
    from ..runtime.compiled.module import sample_shape_of

    threads = int(threads or 1)
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        dense = load(path, mode="dense")
        shape = sample_shape_of(dense, getattr(dense, "wz_manifest", None))
        if shape is None:
            shape = tuple(input_shape(dense)) if input_shape is not None else (35,)
        dense_types = {type(m).__name__ for m in dense.modules()}
        cands: dict[str, Any] = {"torch eager dense": dense}
        notes: dict[str, str] = {}
        x1 = _example(dense, shape, 1)
        if baselines:
            for k, v in _onnx_sessions(dense, x1, threads).items():
                (notes.__setitem__(k, v) if isinstance(v, str) else cands.__setitem__(k, v))
            ao = _torch_ao_int8(dense)
            (notes.__setitem__("torch.ao int8", ao) if isinstance(ao, str) else cands.__setitem__("torch.ao int8", ao))
        compiled_stats = None
        for mode in modes:
            if mode == "compiled":
                cm, macs, wbytes, fb, resident = _plan_stats(path, shape, threads)
                cands["weightzip compiled"] = cm
                compiled_stats = {"nonzero_macs_per_sample": macs, "weight_bytes": wbytes, "fallbacks": fb,
                                  "resident_bytes": resident}
                continue
            m = load(path, mode=mode)
            swapped = sorted({type(mod).__name__ for mod in m.modules()} - dense_types)
            if not swapped:
                notes[f"weightzip {mode}"] = "swaps no layer (= torch eager dense)"
                continue
            cands[f"weightzip {mode}"] = m
        dense_bytes = sum(p.numel() * p.element_size() for p in dense.parameters())
        peak = peak_mac_rate(threads)
        bw = memory_bandwidth(compiled_stats["weight_bytes"] if compiled_stats else 64 << 20)
        rows = []
        for b in batch_sizes:
            if examples is not None:
                reps = -(-b // examples.shape[0])
                x = examples.repeat((reps,) + (1,) * (examples.dim() - 1))[:b].contiguous()
            else:
                x = _example(dense, shape, b)
            xn = x.numpy()
            calls: dict[str, Callable[[], Any]] = {}
            for name, c in cands.items():
                if hasattr(c, "run"):  # onnxruntime session
                    calls[name] = (lambda s=c: s.run(None, {"input": xn}))
                else:
                    calls[name] = (lambda m=c: m(x))
            y_ref = _first(dense(x))
            diffs = {}
            for name, fn in calls.items():
                y = _first(fn())
                y = torch.from_numpy(np.asarray(y[0] if isinstance(y, list) else y)) if not torch.is_tensor(y) else y
                diffs[name] = float((y.float() - y_ref).abs().max())
                for _ in range(max(2, number // 4)):
                    fn()
            med = interleaved_medians(calls, repeat, number)
            t_torch = med["torch eager dense"]
            t_ort = med.get("onnxruntime fp32")
            limit = None
            if compiled_stats and compiled_stats["nonzero_macs_per_sample"] is not None:
                t_mac = compiled_stats["nonzero_macs_per_sample"] * b / peak
                t_mem = compiled_stats["weight_bytes"] / bw
                limit = {"t_mac_us": t_mac * 1e6, "t_mem_us": t_mem * 1e6, "limit_us": max(t_mac, t_mem) * 1e6}
            for name, t in med.items():
                rows.append({"batch": b, "mode": name, "ms": t * 1e3, "us": t * 1e6,
                             "speedup": t_torch / t, "vs_onnxruntime": (t_ort / t) if t_ort else None,
                             "max_abs_diff": diffs[name],
                             "over_limit": (t * 1e6 / limit["limit_us"]) if limit and name == "weightzip compiled" else None})
            if log:
                log(f"batch {b}: " + ", ".join(f"{k} {v * 1e6:.1f} us" for k, v in med.items()))
            if limit:
                rows[-len(med)].setdefault("limit", limit)
        return {
            "path": str(path), "threads": threads, "input_shape": list(shape), "rows": rows,
            "inputs": "given examples" if examples is not None else "standard normal",
            "load_average": list(load_average()), "peak_mac_per_s": peak, "memory_bandwidth_B_per_s": bw,
            "dense_param_bytes": dense_bytes, "file_bytes": Path(path).stat().st_size,
            "compiled": compiled_stats, "notes": notes,
            "limits": {str(r["batch"]): r["limit"] for r in rows if "limit" in r},
        }
    finally:
        torch.set_num_threads(old_threads)


def bench_text(out: dict[str, Any]) -> str:
    """Plain-text table of :func:`compare`'s result."""
    la = out.get("load_average") or [float("nan")] * 3
    lines = [f"{out['path']}: {out['threads']} thread(s), input {out['input_shape']} "
             f"({out.get('inputs', 'standard normal')}), load average "
             f"{la[0]:.2f} {la[1]:.2f} {la[2]:.2f}; median of repeats, interleaved"]
    hdr = f"{'batch':>5}  {'runtime':<22} {'us / call':>11} {'vs torch':>9} {'vs ort fp32':>11} {'max |diff|':>10}"
    lines.append(hdr)
    for r in out["rows"]:
        vo = f"{r['vs_onnxruntime']:.2f}x" if r.get("vs_onnxruntime") else "-"
        lines.append(f"{r['batch']:>5}  {r['mode']:<22} {r['us']:>11.1f} {r['speedup']:>8.2f}x {vo:>11} "
                     f"{r['max_abs_diff']:>10.1e}")
        if "limit" in r:
            pass
    cs = out.get("compiled")
    if cs:
        lines.append(f"compiled: {cs['nonzero_macs_per_sample']:,} non-zero MACs per sample, "
                     f"{cs['weight_bytes']:,} B of compressed weights; resident "
                     f"{(cs['resident_bytes'] or {}).get('total', 0):,} B vs dense fp32 {out['dense_param_bytes']:,} B")
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

    try:
        cm = load(path, mode="compiled")
    except Exception as e:  # a user model without its module, ...
        return f"compiled runtime: not available ({type(e).__name__}: {e})"
    plans = getattr(cm, "plans", None)
    if not plans:
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
    res = cm.resident_bytes()
    lines.append(f"  resident: {res['total']:,} B ({res['native']:,} native, {res['torch_fallback']:,} torch fallback)")
    return "\n".join(lines)
