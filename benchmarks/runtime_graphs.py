"""Compiled runtime on whole graphs (issue 22): residual CNNs, a mobile CNN, a transformer
encoder, each run from its .wz file, against torch eager and onnxruntime on the same CPU.

Rows (all runtimes INTERLEAVED in one process, 1 thread, median of repeats; the load average
and the CPU's vector width are recorded):

* zoo ``resnet20`` (CIFAR-10 shape), pruned 80% by magnitude + 4-bit k-means, batch 1 and 16;
* Hugging Face MobileNetV2 (``MobileNetV2Config()``: 1.0 x 224), 4-bit k-means (dense), batch 1;
* a BERT encoder (4 layers, hidden 256, 4 heads, intermediate 1024), 4-bit k-means of every
  Linear and Embedding, sequence 128, batch 1.

Weights are random-init (speed does not depend on their values; the pruning mask is by
magnitude). Each model is compressed without data, saved, and loaded twice from the file:
``mode="dense"`` (decoded weights: torch eager and the ONNX export) and ``mode="compiled"``.
The files under 2 MB are kept in ``benchmarks/results/graphs/`` (``weightzip bench FILE`` needs
no Python model class: the graph is in the file).

    PYTHONPATH=src python benchmarks/runtime_graphs.py [--quick]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# one thread for every runtime, the BLAS that numba's np.dot calls (compiled GEMM paths) included
for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import torch  # noqa: E402
from torch import nn  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RES = ROOT / "benchmarks" / "results"
# the benchmarked .wz files of at most this size are kept here (the graph is in the file:
# `weightzip bench benchmarks/results/graphs/hf-mobilenet_v2-kmeans4.wz` runs it again)
FILES = RES / "graphs"
KEEP_MAX_BYTES = 2_000_000
# issue 22 targets: (row, batch) -> (runtime compared, minimum speed-up of weightzip compiled)
TARGETS = {("resnet20-prune80-kmeans4", 1): [("onnxruntime fp32", 1.5), ("onnxruntime int8", 1.0)],
           ("resnet20-prune80-kmeans4", 16): [("onnxruntime fp32", 1.2)],
           ("hf-mobilenet_v2-kmeans4", 1): [("onnxruntime fp32", 1.0)],
           ("bert-4x256-kmeans4-seq128", 1): [("onnxruntime fp32", 1.0)]}


def vector_width() -> str:
    """The host's widest vector extension; with ``NUMBA_CPU_NAME`` set (e.g. ``haswell``) the
    kernels are compiled for that CPU instead (AVX2 code on an AVX-512 host)."""
    forced = os.environ.get("NUMBA_CPU_NAME")
    try:
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return "unknown"
    host = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "SSE"
    if forced:
        return f"host {host}; weightzip kernels compiled for NUMBA_CPU_NAME={forced} (onnxruntime and torch use the host's)"
    return host


def _stats_bn(model: nn.Module) -> None:
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) * 0.4 - 0.2)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)


def build(name: str):
    import transformers as tf

    import weightzip as wz
    from weightzip.core.registry import create_model

    torch.manual_seed(0)
    if name == "resnet20-prune80-kmeans4":
        model, x = create_model("resnet20").eval(), torch.randn(1, 3, 32, 32)
        stages = [{"method": "prune_magnitude", "sparsity": 0.8, "select": {"types": ["Conv2d", "Linear"]}},
                  {"method": "kmeans_share", "bits": 4, "select": {"types": ["Conv2d", "Linear"]}}]
        batches = (1, 16)
    elif name == "hf-mobilenet_v2-kmeans4":
        model, x = tf.MobileNetV2ForImageClassification(tf.MobileNetV2Config()).eval(), torch.randn(1, 3, 224, 224)
        stages = [{"method": "kmeans_share", "bits": 4, "select": {"types": ["Conv2d", "Linear"]}}]
        batches = (1,)
    else:
        cfg = tf.BertConfig(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024)
        model, x = tf.BertModel(cfg).eval(), torch.randint(0, cfg.vocab_size, (1, 128))
        stages = [{"method": "kmeans_share", "bits": 4, "select": {"types": ["Linear", "Embedding"]}}]
        batches = (1,)
    _stats_bn(model)
    wz.compress(model, wz.Recipe.from_dict({"name": name, "stages": stages}), log=lambda s: None)
    return model, x, batches


class _First(nn.Module):
    """The first output tensor (ONNX export and timing of a model returning a ModelOutput)."""

    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, x):
        y = self.m(x)
        if isinstance(y, torch.Tensor):
            return y
        return y[0] if not hasattr(y, "values") else next(iter(y.values()))


def bench(name: str, repeat: int, number: int) -> dict:
    import weightzip as wz
    from weightzip.analysis.speed import _onnx_sessions, interleaved_medians, load_average

    torch.set_num_threads(1)
    model, x1, batches = build(name)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"{name}.wz"
        wz.save(model, path, example_inputs=(x1.repeat(2, *([1] * (x1.dim() - 1))),))
        file_bytes = path.stat().st_size
        if file_bytes <= KEEP_MAX_BYTES:   # kept for `weightzip bench` / `inspect` (the graph is in the file)
            FILES.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, FILES / f"{name}.wz.tmp")
            os.replace(FILES / f"{name}.wz.tmp", FILES / f"{name}.wz")
        dense = _First(wz.load(path)).eval()
        t0 = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            cm = wz.load(path, mode="compiled")
        cm.threads = 1
        build_s = time.perf_counter() - t0
    fallback = [str(w.message) for w in caught if "compiled runtime" in str(w.message)]
    cmf = _First(cm)
    plan = next(iter(cm.plans.values()))
    info = plan.info()
    macs = sum(i.macs for i in info)
    native_macs = macs if plan.native_only else 0
    dense_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    sess = _onnx_sessions(_First(model).eval(), x1, 1)
    rows = []
    la0 = load_average()
    for b in batches:
        x = x1.repeat(b, *([1] * (x1.dim() - 1)))
        xn = x.numpy()
        with torch.no_grad():
            ref = dense(x)
            diff = float((cmf(x) - ref).abs().max())
        calls = {"torch eager": lambda: dense(x), "weightzip compiled": lambda: cmf(x)}
        for k, s in sess.items():
            if not isinstance(s, str):
                calls[k] = (lambda s=s: s.run(None, {"input": xn}))
        with torch.no_grad():
            for fn in calls.values():
                fn()
            med = interleaved_medians(calls, repeat, number)
        rows.append({"batch": b, "us": {k: v * 1e6 for k, v in med.items()}, "max_abs_diff": diff})
    profile = _profile(cm, x1)
    return {"name": name, "file_bytes": file_bytes, "profile": profile, "dense_param_bytes": dense_bytes,
            "resident_bytes": cm.resident_bytes(), "macs_per_sample": macs, "native_macs": native_macs,
            "ops": len(info), "plan_build_s": build_s, "fallback_warning": fallback,
            "sessions": {k: (v if isinstance(v, str) else "ok") for k, v in sess.items()},
            "load_average": [la0, load_average()], "rows": rows}


def _profile(cm, x1) -> dict:
    """Batch 1, op by op (:func:`weightzip.runtime.compiled.module.profile_graph`): milliseconds
    per op kind and the slowest ops with their MAC rate."""
    from weightzip.runtime.compiled.module import _GraphNative, profile_graph

    nat = next((s for segs in cm._natives.values() for s in segs if isinstance(s, _GraphNative)), None)
    if nat is None:
        return {}
    prof = profile_graph(nat, x1, 5)
    info = nat.prog.info
    kinds: dict[str, float] = {}
    for _, op, t in prof:
        kinds[op] = kinds.get(op, 0.0) + t * 1e3
    top = sorted(zip(prof, info), key=lambda a: -a[0][2])[:6]
    return {"total_ms": sum(t for *_, t in prof) * 1e3, "by_kind_ms": kinds,
            "top": [{"layer": i.layer, "op": op, "rep": i.rep, "ms": t * 1e3, "macs": i.macs,
                     "gmac_s": i.macs / t / 1e9 if t > 0 else None} for (layer, op, t), i in top]}


def render(results: list[dict], when: str, vw: str) -> str:
    out = ["# Compiled runtime on whole graphs (issue 22)", "",
           f"Written by `PYTHONPATH=src python benchmarks/runtime_graphs.py` ({when}). CPU: {os.cpu_count()} cores, "
           f"vector width {vw}; 1 thread; every runtime timed INTERLEAVED in one process (median of repeats); "
           "times in microseconds per call; weights random-init, compressed without data, run from the .wz file "
           "(`load(mode=\"compiled\")`); torch eager and onnxruntime run the decoded dense model.", "",
           "| model | batch | load avg | torch eager | ort fp32 | ort int8 | weightzip compiled | vs ort fp32 | "
           "vs ort int8 | target | met | MACs native | resident vs dense | max abs diff |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        for row in r["rows"]:
            us = row["us"]
            c = us.get("weightzip compiled")
            f32, i8 = us.get("onnxruntime fp32"), us.get("onnxruntime int8")
            sp32 = f32 / c if f32 and c else None
            sp8 = i8 / c if i8 and c else None
            tg = TARGETS.get((r["name"], row["batch"]), [])
            met = []
            for what, need in tg:
                got = sp32 if what == "onnxruntime fp32" else sp8
                met.append(f"{'yes' if got and got >= need else 'no'} ({got / need:.2f} of {need}x {what.split()[-1]})"
                           if got else "-")
            la = r["load_average"][0][0]
            out.append(f"| {r['name']} | {row['batch']} | {la:.1f} | {us.get('torch eager', 0):.0f} | "
                       f"{_f(f32)} | {_f(i8)} | {_f(c)} | {_x(sp32)} | {_x(sp8)} | "
                       f"{'; '.join(f'{n}x {w.split()[-1]}' for w, n in tg) or '-'} | {'; '.join(met) or '-'} | "
                       f"{100 * r['native_macs'] / max(1, r['macs_per_sample']):.0f}% | "
                       f"{r['resident_bytes']['total'] / 1024:.0f} KiB / {r['dense_param_bytes'] / 1024:.0f} KiB | "
                       f"{row['max_abs_diff']:.1e} |")
    out += ["", "## Where the time goes (batch 1, one native call per op, median of 5)", "",
            "Why targets are missed, from these profiles (the rates are in the per-op lines below; "
            "the CPU is an AMD EPYC, family 25 model 17, whose AVX-512 runs on 256-bit FMA units: the "
            "register tiles reach 54-57 GMAC/s on a dense four-row block in isolation). The dense 4-bit "
            "models run from their codes: every call decodes each weight (four rows at a time, in "
            "registers) into the weights-stationary tiles, while onnxruntime runs pre-packed fp32 "
            "GEMMs (MLAS) with no decode. BERT: the FC ops are most of the time, at 38-47 GMAC/s (the "
            "inputs transposed in and the outputs out of the tiles' layout, the GELU epilogue); the "
            "attention and the head permutes (index maps: one scalar gather per value) most of the "
            "rest. MobileNetV2: the 1 x 1 convs on 7 x 7 / 14 x 14 planes stream each decoded weight "
            "over only 49-196 positions, and on small planes its depthwise convs pay more for the "
            "per-channel phase-plane fill and epilogue than for the nine taps. Since 2026-12-07 "
            "(interleaved A/B of the builds, whole model 12.37 -> 10.86 ms): 1 x 1 convs at stride 1 "
            "without padding read their input planes in place instead of copying them into zeroed "
            "phase planes (every 1 x 1 op 10-33% faster), and a stride-2 phase fill takes both "
            "column phases in one loop of constant stride, which vectorizes (the 96 x 112 x 112 "
            "stride-2 depthwise conv 598 -> 358 us; the same change in the shifted copies of the "
            "3 x 3 stem conv made it ~5% slower and was not kept); depthwise convs with <= 196 outputs "
            "per channel (14 x 14) run channels-last (`kernels._conv_dw_cl`: the input transposed, "
            "16 channels accumulated in a register over the taps, transposed back): op by op the "
            "7 x 7 stage's convs 164 -> 57 us, the 14 x 14 stages' 113 -> 78 and 169 -> 129 us; at "
            "28 x 28 it measured slower (138 -> 174 us) and those stay per channel. Since "
            "2026-12-07 (third session; op by op, interleaved with the build before): the 1 x 1 convs "
            "on 7 x 7 planes run with the output channels as the vector lanes "
            "(`kernels._conv1x1_rl`: the codes stored in 64-row panels, a 4-position x 64-row "
            "register tile, the result transposed back; the 16-position tiles filled 49 of 64 lanes "
            "and split most loads over two cache lines): 320 -> 1280 626 -> ~450 us, 960 -> 320 "
            "463 -> ~330, 160 -> 960 ~240 -> ~177, 960 -> 160 ~245 -> ~205 (160 rows padded to "
            "192); the channels-last depthwise convs read a zero-padded copy of the input with the "
            "nine 3 x 3 weight vectors held in registers over all positions, and apply alpha, beta "
            "and the ReLU6 clamp in registers (`simd.vclamp`): 14 x 14 convs 102-173 -> 55-110 us, "
            "7 x 7 ones 63-83 -> 42-58 us; the per-channel depthwise convs clamp in their one copy "
            "of the valid columns (one pass over the plane less); the dense four-row tiles store "
            "straight into the output rows where those are contiguous and a whole number of 16-lane "
            "tiles (112 x 112, 56 x 56, 28 x 28 planes) instead of staging them for a copy: the "
            "16 -> 96 1 x 1 conv on 112 x 112 692 -> 556 us, the 56 x 56 expand convs 312 -> 250 and "
            "276 -> 223 us (ops total 0.93x). Tried and not kept: (a) the "
            "per-channel depthwise convs at stride 1 on unpadded rows (one contiguous copy per "
            "plane, the wrapped edge taps subtracted again): 28 x 28 planes 12% faster, 56 x 56 and "
            "112 x 112 ones 5-10% slower (the edge fix-up costs ~0.3 us per 56 x 56 channel); (b) "
            "channels-last at 28 x 28 with the new kernel: still slower (the two transposes and the "
            "padded copy); (c) the 1 x 1 conv epilogue run after every block of rows while they are "
            "in L2 instead of after the whole plane: no change (the 88 us epilogue pass of the 16 -> "
            "96 conv on 112 x 112 is bound by L2 bandwidth either way); (d) the 3 x 3 stride-2 "
            "depthwise convs without phase planes (each input row copied once; taps from the even / "
            "odd lanes of three vector loads per tap row): 2x faster in isolation on 144 x 56 x 56, "
            "but in the model 361 -> 359 us on 96 x 112 x 112 and 161 -> 155 on 144 x 56 x 56: "
            "they read 4.8 / 1.8 MB that the expand conv before them has just written, and are "
            "bound by that traffic (fusing each expand 1 x 1 conv with the depthwise conv after "
            "it, so the expanded planes never leave the cache, is the step that would remove it). "
            "Since 2026-12-08 that fusion exists: a dense 1 x 1 conv whose only reader is a "
            "per-channel depthwise conv (planes of 28 x 28 and up) runs with it as one op "
            "(`kernels._conv_expand_dw`): per block of expanded channels (<= 256 KiB: 4 channels "
            "of 112 x 112, 20 of 56 x 56, 80 of 28 x 28) the four-row tiles write the block, and "
            "the depthwise conv's phase-plane copy applies the 1 x 1 conv's BN + ReLU6 as it reads "
            "it (no epilogue pass); the pair's input slot stays live through both ops. Op by op, "
            "each pair against the same two ops unfused: `fused_pairs.md` (`python "
            "benchmarks/fused_pairs.py`; 0.87-0.93x per pair when committed, the 16 -> 96 conv on "
            "112 x 112 + its stride-2 depthwise conv 807 -> 702 us); whole model 0.93-0.99x the "
            "build before in three interleaved A/B runs (a harness outside the repository). Tried and "
            "not kept the same day: splitting the positions of 1 x 1 convs whose input exceeds "
            "256 KiB (the project convs, 144 x 56 x 56 = 1.8 MB) into blocks, every four-row "
            "block over one block of positions, the weights decoded once. With 128 KiB blocks "
            "(in L2): no change. With blocks whose columns fit L1 (32 positions of 144 channels, "
            "192 of 32): op by op in isolation, cache-hot, the project convs went from 34-36 to "
            "41-48 GMAC/s (32 -> 16 on 112 x 112 190 -> 143 us, 144 -> 24 on 56 x 56 314 -> "
            "263), but run in sequence in the model (their input just written by the depthwise "
            "conv) they were slower (144 -> 24 299 -> 387 us, the 28 x 28 ones 75-100 -> 88-123: "
            "32-wide tiles keep 8 accumulators where 64-wide ones keep 16) and the whole model "
            "0.99-1.01x. What is left on MobileNetV2, "
            "against onnxruntime's per-node profile: the depthwise convs on 28 x 28 - 112 x 112 "
            "planes (before the fusion ~1.4 ms against ~0.67), the 112 x 112 1 x 1 convs and the "
            "3 x 3 stem conv (389 against 309 us), and the project 1 x 1 convs (34-36 GMAC/s "
            "where the other 1 x 1 convs run at 43-50); onnxruntime keeps activations in a "
            "blocked NCHWc layout "
            "throughout, so its depthwise convs need no transposes or phase planes. The pruned ResNet-20 "
            "runs sparse (CSR codes) with 5x fewer MACs than dense, but each non-zero needs its own "
            "vector load: ~15-19 GMAC/s of non-zero MACs, where dense four-row blocks do four MACs "
            "per load. Its convs now read kw shifted copies of each padded plane in rows of 16 (or "
            "8) floats (`kernels.shift_dims`), so those loads are aligned (in the phase planes a "
            "tap's column shift split most 64-byte loads over two cache lines) and the 8 x 8 planes "
            "compute 64 outputs per channel instead of 80 / 72; where rows are as wide as the input "
            "each copy is filled by one contiguous copy (row by row it ran scalar, ~5 us a conv): "
            "convs 577 -> 466 us op by op (2026-12-07). The residual add + ReLU is now the "
            "epilogue of the conv it reads (`kernels._epi_add`; the PadShortcut slice + pad is moved "
            "in front of that conv): 9 ops of ~2 us gone, 501 -> 483 us in ops, op by op "
            "(2026-12-07, interleaved with the build before). The batch-1 target is met by a margin "
            "(2-3%) hardly above the run-to-run noise of this shared 2-core machine (+-3%). What is "
            "left: the 8 x 8 convs of layer3 (~27 us each; their odd kernel rows are still 32 bytes "
            "off: a second row copy to align them doubled the fill and the copies' footprint, 30 -> "
            "39 us, not kept).", "",
            "Tried for BERT and not kept (2026-12-07, measured op by op in isolation and in the whole "
            "model): (1) the epilogue fused into the tiles' store (alpha, beta, act applied to each "
            "row's accumulators in L1 instead of a pass over the output): no measurable change in "
            "any of the three models (interleaved A/B within +-3%); (2) an FC over a column-major "
            "copy of the codes (a decoded 64-output x 256-column panel, 4 x 64 register tiles over "
            "row-major x and y, no transposes): 49 GMAC/s per op in isolation against 44 for the "
            "transposing path, but 0.85x onnxruntime in the whole model against 0.90x (the panel "
            "decode costs 46 us per 1024 x 256 op, and in sequence the op's y columns, 4 KiB "
            "apart, miss L1). Kept: transposes whose rows are a multiple of 4 KiB apart take 8-row "
            "blocks (16 such rows evict each other from one L1 set): the 1024-wide FC inputs "
            "went from 149 to ~50 us, BERT 0.86x -> 0.90x. Since 2026-12-07 (later): whole 16 x 16 "
            "blocks are transposed in registers (`simd.vtranspose16`, four shuffle stages): 0.10-0.26 "
            "ns per element against 0.38-0.50, and 0.96x the whole-model time of BERT and MobileNetV2 "
            "in an interleaved A/B of the builds (op by op, cache-hot, the FCs moved only -1%). "
            "BERT op by op against onnxruntime's own per-node profile (2026-12-08, both on the "
            "same file, 20 runs; onnxruntime's profiler adds ~10 us a node): the FCs are at par "
            "(the 1024 -> 256 output FCs 680 against 683-690 us; 256 -> 1024 with GELU 760 against "
            "630 for the GEMM + 85 for its Gelu node; the 256 -> 256 FCs 167 against 158-160), "
            "the attention 256 us a layer against ~200-250 for its MatMul / Softmax / Transpose "
            "nodes, layer norms 16 us (its SkipLayerNormalization nodes ~165 us under the "
            "profiler). The whole-model gap (0.92x) is therefore spread thin: no single op is "
            "behind by more than ~6%. Our GELU runs at 0.70 ns an element (vectorized; its one "
            "division and the exp polynomial, ~35 AVX-512 instructions per 16 values on 256-bit "
            "FMA units) against torch's 0.52.", ""]
    for r in results:
        p = r.get("profile") or {}
        if not p:
            continue
        kinds = ", ".join(f"{k} {v:.2f}" for k, v in sorted(p["by_kind_ms"].items(), key=lambda a: -a[1]))
        out.append(f"* `{r['name']}`: {p['total_ms']:.2f} ms in ops ({kinds} ms); slowest: " + "; ".join(
            f"{t['layer']} ({t['op']}, {t['rep'] or '-'}) {t['ms']:.2f} ms"
            + (f" at {t['gmac_s']:.1f} GMAC/s" if t["macs"] else "") for t in p["top"]))
    out += ["", "## Files", ""]
    for r in results:
        out.append(f"* `{r['name']}`: file {r['file_bytes']:,} bytes, {r['ops']} ops, "
                   f"{r['macs_per_sample'] / 1e6:.1f} M non-zero MACs per sample, plan built in {r['plan_build_s']:.1f} s; "
                   f"fallbacks: {r['fallback_warning'] or 'none'}; onnxruntime sessions: {r['sessions']}")
    return "\n".join(out) + "\n"


def _f(v):
    return f"{v:.0f}" if v else "-"


def _x(v):
    return f"{v:.2f}x" if v else "-"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats (smoke run)")
    ap.add_argument("--only", nargs="*", default=None, help="row names to run")
    ap.add_argument("--out", default=None, help="default: results/runtime_graphs.md, or runtime_graphs-<cpu>.md "
                    "under NUMBA_CPU_NAME")
    ap.add_argument("--render-only", action="store_true", help="re-render the page from its JSON (no timing)")
    args = ap.parse_args(argv)
    cpu = os.environ.get("NUMBA_CPU_NAME")
    out = Path(args.out or RES / (f"runtime_graphs-{cpu}.md" if cpu else "runtime_graphs.md"))
    if args.render_only:
        saved = json.loads(out.with_suffix(".json").read_text())
        tmp = out.with_suffix(".tmp")
        tmp.write_text(render(saved["results"], saved["when"], saved["vector_width"]))
        os.replace(tmp, out)
        return 0
    names = args.only or list(dict.fromkeys(k for k, _ in TARGETS))
    repeat, number = (3, 3) if args.quick else (7, 10)
    results = []
    for name in names:
        print(f"== {name}", flush=True)
        results.append(bench(name, repeat, number))
        print(json.dumps(results[-1]["rows"]), flush=True)
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    text = render(results, when, vector_width())
    tmp = out.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, out)
    jtmp = out.with_suffix(".json.tmp")
    jtmp.write_text(json.dumps({"when": when, "vector_width": vector_width(), "results": results}, indent=1,
                               default=str))
    os.replace(jtmp, out.with_suffix(".json"))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
