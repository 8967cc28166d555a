"""Method C (METHODS.md, seed 002): product-quantization weight sharing vs scalar k-means.

    python benchmarks/pq_vs_kmeans.py                              # LeNet-5 and LeNet-300-100 (MNIST)
    python benchmarks/pq_vs_kmeans.py --only lenet300_100
    python benchmarks/pq_vs_kmeans.py --cifar --budget tiny        # + ResNet-20, VGG-16 on CIFAR-10, CPU budget
    python benchmarks/pq_vs_kmeans.py --cifar-only --budget full --device cuda   # full size, on a GPU

For each network: the trained baseline (``weightzip.jobs.runs.ensure_baseline``), the shared prefix of
``recipes/prune-pq.yaml`` and ``recipes/prune-kmeans-matched.yaml`` (threshold-scan pruning ->
retraining) run ONCE, then two branches from the same pruned model: ``pq_share`` (+ codebook
fine-tuning) and ``kmeans_share`` (8-bit codes, + centroid fine-tuning). Each branch is written
to ``benchmarks/results/<case>-{pq,kmeans}.wz`` and evaluated FROM THE FILE. Measured:

* test accuracy: baseline, after pruning, after PQ and after k-means (from the files);
* file ratio, payload ratio (``weightzip.analysis.size`` only);
* clustering wall time of PQ vs scalar k-means on the same pruned weights with the SAME engine
  (faiss) and the SAME iteration count (``weightzip.primitives.pq.cluster_time``; per layer,
  median of repeats, summed);
* inference latency of the PQ file: dense fp32 PyTorch (decoded) vs the lookup-table runtime
  (``mode="lut"``) and ``mode="auto"``, batch 1 and 64, median of repeats, 1 thread; per layer
  too, with the cost-model bound ``rows*cols / (k*cols + lookups)``;
* a synthetic layer-level timing of large FC shapes (AlexNet / VGG-16 classifier sizes) with
  random codes, where the dense product is memory-bound (timing only, labelled as such).

Budgets (CIFAR only; MNIST always runs at full size): ``tiny`` = width multiplier 0.25, a
baseline of 2 epochs on the first 10,000 training images (cached under ``runs/pq_vs_kmeans``),
every retraining / fine-tuning stage cut to 1 epoch of at most 40 steps and evaluation on 2,000
images: it checks the pipeline end to end on these 2 shared CPU cores, its accuracies are NOT
the thesis's. ``full`` = width 1.0, the cached full baseline and the recipes' epochs (use
``--device cuda``). Results: ``pq_vs_kmeans.json`` (entries of cases not run this time are kept)
and ``pq_vs_kmeans.md`` generated from it; nothing is typed in except the thesis's claims.
"""
from __future__ import annotations

import argparse
import copy
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

import _common as C
import weightzip as wz
from weightzip.core import parametrize
from weightzip.jobs import runs
from weightzip.analysis.size import size_report
from weightzip.primitives.pq import cluster_time
from weightzip.core.recipe import Recipe
from weightzip.training.checkpoint import machine_info
from weightzip.training.evaluate import evaluate
from weightzip.jobs.bench import median_latency

ROOT = C.ROOT
RESULTS = C.RESULTS
PQ_RECIPE = "recipes/prune-pq.yaml"
KM_RECIPE = "recipes/prune-kmeans-matched.yaml"

# The thesis's claims (seed 002, METHODS.md C): the only numbers typed in.
CLAIMS = {"ratio_range": (23.0, 59.0), "max_acc_drop_pt": 0.1, "cluster_speedup": 2.0,
          "inference_speedup_range": (1.52, 3.3)}
AIMS = {"lenet5_ratio": 60.0, "fc_batch1_speedup": 3.0}
CASES = {"lenet5": "mnist", "lenet300_100": "mnist", "resnet20": "cifar10", "vgg16_cifar": "cifar10"}
FC_HEAVY = {"lenet300_100"}
BUDGETS = {
    "tiny": {"width": 0.25, "baseline_epochs": 2, "subset": 10000, "eval_subset": 2000, "stage_epochs": 1,
             "max_steps_per_epoch": 40, "scan_batches": 2},
    "full": {"width": None, "baseline_epochs": None, "subset": None, "eval_subset": None, "stage_epochs": None,
             "max_steps_per_epoch": None, "scan_batches": None},
}
SYNTHETIC_FC = [(4096, 1000), (4096, 4096), (9216, 4096)]  # (in, out): VGG-16 / AlexNet classifier layers

log = logging.getLogger("pq_vs_kmeans")


# ---------------------------------------------------------------------------------------------
# Helpers


def acc(metrics: dict) -> float:
    return 100.0 * metrics["accuracy"]


def budget_recipe(recipe: Recipe, b: dict) -> Recipe:
    """The recipe with the budget's cuts applied to its training stages and threshold scan."""
    r = recipe.model_copy(deep=True)
    for st in r.stages:
        for field in ("train", "finetune"):
            tc = getattr(st, field, None)
            if isinstance(tc, dict):
                tc = dict(tc)
                if b["stage_epochs"]:
                    tc["epochs"] = min(int(tc.get("epochs", 1)), b["stage_epochs"])
                if b["max_steps_per_epoch"]:
                    tc["max_steps_per_epoch"] = b["max_steps_per_epoch"]
                setattr(st, field, tc)
        sens = getattr(st, "sensitivity", None)
        if sens is not None and b["scan_batches"]:
            sens.max_eval_batches = b["scan_batches"]
    return r


def split_recipes(case_budget: dict) -> tuple[Recipe, Recipe, Recipe]:
    """(shared prefix, PQ stage(s), k-means stage(s)) of the two recipes; their prefixes must agree."""
    pq = budget_recipe(Recipe.from_yaml(ROOT / PQ_RECIPE), case_budget)
    km = budget_recipe(Recipe.from_yaml(ROOT / KM_RECIPE), case_budget)
    n = 0
    while n < min(len(pq.stages), len(km.stages)) and pq.stages[n].method == km.stages[n].method:
        n += 1
    dump = lambda r: [s.model_dump(mode="json") for s in r.stages[:n]]  # noqa: E731
    if n == 0 or dump(pq) != dump(km):
        raise SystemExit(f"{PQ_RECIPE} and {KM_RECIPE} must share their pruning/retraining stages")
    part = lambda r, a, b: r.model_copy(update={"stages": r.stages[a:b]})  # noqa: E731
    return part(pq, 0, n), part(pq, n, None), part(km, n, None)


def drop_bulk(x):
    """Stage metrics without per-epoch histories and threshold scans (kept short in the JSON)."""
    return C.without_keys(x, ("train_history", "sensitivity"))


# ---------------------------------------------------------------------------------------------
# Measurements


def clustering_times(pruned: nn.Module, pq_layers: dict, niter: int, repeats: int) -> dict:
    """Per layer and summed: PQ vs scalar k-means wall time, same faiss engine, iterations and k
    (the layer's requested k for both)."""
    from weightzip.methods.prune import current_mask

    mods = dict(pruned.named_modules())
    rows, tot_pq, tot_sc = [], 0.0, 0.0
    for name, st in pq_layers.items():
        mname, _, t = name.rpartition(".")
        mod = mods[mname]
        w = getattr(mod, t).detach().cpu()
        mask = current_mask(mod, t)
        r = cluster_time(w, d=st["d"], k=st["k"], niter=niter, mask=None if mask is None else mask.cpu(),
                         shared=st["codebooks"] == 1, pad=True, repeats=repeats)
        rows.append({"layer": name, **r})
        tot_pq += r["pq_seconds"]
        tot_sc += r["scalar_seconds"]
    return {"layers": rows, "pq_seconds": tot_pq, "scalar_seconds": tot_sc,
            "speedup": tot_sc / tot_pq if tot_pq else float("nan"), "k": sorted({r["k"] for r in rows}),
            "niter": niter, "engine": "faiss"}


def layer_timings(path: Path, shape: tuple, repeat: int, number: int) -> list[dict]:
    """Batch-1 latency of each PQ layer alone: dense ``nn.Linear``/``nn.Conv2d`` vs its LUT layer."""
    from weightzip.codec import container
    from weightzip.codec import decode_parts
    from weightzip.runtime.lut import lut_from_parts

    dense = wz.load(path, mode="dense")
    _, formats = container.read(path)
    inputs: dict[str, torch.Tensor] = {}
    hooks = [m.register_forward_pre_hook(lambda mod, a, n=n: inputs.__setitem__(n, a[0].detach().clone()))
             for n, m in dense.named_modules() if type(m) in (nn.Linear, nn.Conv2d)]
    with torch.inference_mode():
        dense(torch.randn(1, *shape))
    for h in hooks:
        h.remove()
    out = []
    for name, mod in dense.named_modules():
        fmt = formats.get(f"{name}.weight")
        if type(mod) not in (nn.Linear, nn.Conv2d) or fmt is None or fmt.kind != "pq":
            continue
        lut, why = lut_from_parts(mod, decode_parts(fmt))
        row = {"layer": name, "type": type(mod).__name__}
        if lut is None:
            out.append({**row, "lut": None, "why": why})
            continue
        x = inputs[name]
        with torch.inference_mode():
            positions = 1 if x.dim() == 2 else int(np.prod(mod(x).shape[2:]))
            err = float((lut(x) - mod(x)).abs().max())
            td = median_latency(lambda: mod(x), repeat, number)
            tl = median_latency(lambda: lut(x), repeat, number)
        bound = lut.rows * lut.cols / (lut.k * lut.cols + lut.nnz)
        out.append({**row, "rows": lut.rows, "cols": lut.cols, "d": lut.d, "M": lut.M, "k": lut.k,
                    "lookups": lut.nnz, "positions": positions, "dense_us": td * 1e6, "lut_us": tl * 1e6,
                    "speedup": td / tl, "bound": bound, "max_abs_diff": err})
    return out


def model_timings(path: Path, shape: tuple, batches: tuple, repeat: int, number: int) -> list[dict]:
    """Whole-model latency of the PQ file: dense fp32 (decoded) vs lut and auto runtimes."""
    rows = []
    dense = wz.load(path, mode="dense")
    for b in batches:
        x = torch.randn(b, *shape)
        n = number if b == 1 else max(3, number // 10)
        with torch.inference_mode():
            t_dense = median_latency(lambda: dense(x), repeat, n)
            rows.append({"batch": b, "mode": "dense fp32", "ms": t_dense * 1e3, "speedup": 1.0})
            for mode in ("lut", "auto"):
                m = wz.load(path, mode=mode)
                err = float((m(x) - dense(x)).abs().max())
                t = median_latency(lambda: m(x), repeat, n)
                swapped = sorted({type(q).__name__ for q in m.modules()} - {type(q).__name__ for q in dense.modules()})
                rows.append({"batch": b, "mode": mode, "ms": t * 1e3, "speedup": t_dense / t, "layers": swapped,
                             "max_abs_diff": err})
    return rows


def synthetic_fc(repeat: int, number: int) -> list[dict]:
    """Large FC layers with random PQ codes (d=16, k=256, one codebook): dense vs LUT at batch 1."""
    from weightzip.runtime.lut import LUTLinear

    out = []
    g = torch.Generator().manual_seed(0)
    for cin, cout in SYNTHETIC_FC:
        lin = nn.Linear(cin, cout)
        x = torch.relu(torch.randn(1, cin, generator=g))
        with torch.inference_mode():
            td = median_latency(lambda: lin(x), repeat, max(3, number // 10))
        for d, k, zero in ((16, 256, 0.0), (16, 256, 0.5), (8, 64, 0.0)):
            M = cin // d
            cbs = torch.randn(1, k, d, generator=g) * 0.01
            codes = torch.randint(1 if zero else 0, k, (cout, M), generator=g)
            if zero:
                cbs[:, 0] = 0
                codes[torch.rand(cout, M, generator=g) < zero] = 0
            lut = LUTLinear(codes, cbs, cin, lin.bias.detach())
            with torch.inference_mode():
                tl = median_latency(lambda: lut(x), repeat, max(3, number // 10))
            out.append({"in": cin, "out": cout, "d": d, "k": k, "zero_subvectors": zero, "dense_ms": td * 1e3,
                        "lut_ms": tl * 1e3, "speedup": td / tl,
                        "bound": cin * cout / (k * cin + lut.nnz)})
            del lut
    return out


# ---------------------------------------------------------------------------------------------
# One case


def run_case(name: str, args: argparse.Namespace) -> dict:
    data = CASES[name]
    budget = "full" if data == "mnist" else args.budget
    b = BUDGETS[budget]
    key = name if data == "mnist" else f"{name}-{budget}"
    prefix, pq_rec, km_rec = split_recipes(b)
    t0 = time.perf_counter()

    # 1. baseline
    root = None if budget == "full" else ROOT / "runs" / "pq_vs_kmeans"
    data_args = {"subset": b["subset"]} if b["subset"] else None
    base_path = runs.ensure_baseline(name, data, device=args.device, width=b["width"], epochs=b["baseline_epochs"],
                                     data_args=data_args, root=root)
    model, info = runs.load_model(base_path, args.device)
    rec = runs.recipe_for(name, data)
    opts = C.data_options(info, rec, ("val_size", "split_seed", "eval_batch_size", "augment"))
    if b["subset"]:
        opts["subset"] = b["subset"]
    if b["eval_subset"]:
        opts["eval_subset"] = b["eval_subset"]
    loaders = runs.make_loaders(data, int(rec["train"].get("batch_size", 128)), **{k: v for k, v in opts.items() if v is not None})
    base_test = evaluate(model, loaders.test, device=args.device)
    log.info("%s baseline: test accuracy %.2f%%", key, acc(base_test))

    # 2. shared prefix: threshold-scan pruning + retraining, run once
    workdir = ROOT / "runs" / "pq_vs_kmeans" / key
    say = lambda m: log.info("%s", m)  # noqa: E731
    res_prefix = wz.compress(model, prefix, loaders=loaders, device=args.device, workdir=workdir / "prefix",
                             seed=args.seed, log=say, resume=args.resume)
    pruned_test = evaluate(model, loaders.test, device=args.device)
    pruned = copy.deepcopy(model).cpu()

    # 3. the two branches from the same pruned model
    branches = {}
    for tag, r in (("pq", pq_rec), ("kmeans", km_rec)):
        m = copy.deepcopy(model)
        t1 = time.perf_counter()
        res = wz.compress(m, r, loaders=loaders, device=args.device, seed=args.seed, log=say)
        secs = time.perf_counter() - t1
        mem_test = evaluate(m, loaders.test, device=args.device)
        m.cpu()
        out = RESULTS / f"{key}-{tag}.wz"
        full = Recipe.from_dict({**r.to_dict(), "name": f"{'prune-pq' if tag == 'pq' else 'prune-kmeans-matched'}",
                                 "stages": [s.model_dump(mode="json") for s in prefix.stages + r.stages]})
        _, reloaded = C.save_and_reload(m, out, recipe=full,
                                        metrics={"baseline_test": base_test, "compressed_test": mem_test, "data": data})
        size = size_report(out)
        file_test = evaluate(reloaded, loaders.test, device="cpu")
        st = res.stages[-1].metrics
        branches[tag] = {
            "file": str(out.relative_to(ROOT)), "test_acc_in_memory": acc(mem_test), "test_acc_from_file": acc(file_test),
            "acc_drop_pt": acc(base_test) - acc(file_test), "file_bytes": size.file_bytes,
            "payload_bytes": size.payload_bytes, "baseline_bytes": size.baseline_bytes,
            "file_ratio": size.file_ratio, "payload_ratio": size.payload_ratio,
            "formats": {row["name"]: row["format"] for row in size.rows},
            "stage": drop_bulk(st), "stage_seconds": secs,
            "code_bits_per_weight": {n: (v.get("code_bits", 0) / max(1, v.get("numel", 1)) if tag == "pq"
                                         else v.get("bits")) for n, v in st.get("layers", {}).items()},
        }
        log.info("%s %s: %.2f%% from the file, %.1fx", key, tag, acc(file_test), size.file_ratio)

    # 4. clustering time: same engine (faiss), same iterations, same pruned weights
    pq_stage = next(s for s in pq_rec.stages if s.method == "pq_share")
    ctime = clustering_times(pruned, branches["pq"]["stage"]["layers"], pq_stage.niter, args.cluster_repeats)

    # 5. inference: the PQ file, dense vs lookup tables
    from weightzip.jobs.bench import input_shape_of

    shape = input_shape_of(wz.load(RESULTS / f"{key}-pq.wz"))
    torch.set_num_threads(1)
    timing = model_timings(RESULTS / f"{key}-pq.wz", shape, (1, 64), args.repeat, args.number)
    layers = layer_timings(RESULTS / f"{key}-pq.wz", shape, args.repeat, args.number)

    return {
        "case": key, "model": name, "data": data, "budget": budget, "budget_settings": b,
        "baseline_checkpoint": str(base_path), "baseline_test_acc": acc(base_test),
        "pruned_test_acc": acc(pruned_test), "prefix_stages": [drop_bulk(s.__dict__) for s in res_prefix.stages],
        "branches": branches, "clustering": ctime, "inference": timing, "layer_inference": layers,
        "recipes": {"pq": PQ_RECIPE, "kmeans": KM_RECIPE}, "seconds": time.perf_counter() - t0,
        "machine": machine_info(args.device), "torch_threads": torch.get_num_threads(),
        "date": C.now(),
    }


# ---------------------------------------------------------------------------------------------
# Markdown


def _fmt_range(r):
    return f"{r[0]:g}x-{r[1]:g}x"


def _prefix_settings(e: dict) -> tuple[float | None, int | None]:
    """(threshold-scan max_drop, retraining epochs) of the case's shared prefix (its recipe + budget)."""
    prefix, _, _ = split_recipes(BUDGETS[e["budget"]])
    max_drop = epochs = None
    for st in prefix.stages:
        if st.method == "prune_magnitude" and st.sensitivity is not None:
            max_drop = st.sensitivity.max_drop
        if st.method == "finetune":
            epochs = st.train.get("epochs")
    return max_drop, epochs


def claims_rows(results: dict) -> list[str]:
    """The thesis's claims beside what we measured, per case; 'met' and the reasons are computed
    from the JSON (the measured quantities they cite)."""
    L = ["| claim (thesis) | case | measured | met | why not (where not) |", "|---|---|---|---|---|"]
    lo, hi = CLAIMS["ratio_range"]
    for key, e in results.get("cases", {}).items():
        tiny = e["budget"] == "tiny"
        met = (lambda ok: ("yes" if ok else "NO") + (" (tiny budget: not a reproduction)" if tiny else ""))  # noqa: E731
        pq = e["branches"]["pq"]
        ok_acc = pq["acc_drop_pt"] <= CLAIMS["max_acc_drop_pt"] + 1e-9
        ok_ratio = pq["file_ratio"] >= lo
        why = []
        if not ok_ratio:
            why.append(f"file ratio {pq['file_ratio']:.1f}x < {lo:g}x")
        if not ok_acc:
            prune_loss = e["baseline_test_acc"] - e["pruned_test_acc"]
            pq_loss = e["pruned_test_acc"] - pq["test_acc_from_file"]
            md, ep = _prefix_settings(e)
            why.append(f"accuracy drop {pq['acc_drop_pt']:.2f} pt: {prune_loss:.2f} pt from pruning (threshold scan "
                       f"max_drop {md} pt per layer, then {ep or '?'} retraining epochs), {pq_loss:+.2f} pt from PQ + "
                       "fine-tuning" + (" (tiny CPU budget)" if e["budget"] == "tiny" else ""))
        L.append(f"| {_fmt_range(CLAIMS['ratio_range'])} smaller, no accuracy loss (<= {CLAIMS['max_acc_drop_pt']} pt) "
                 f"| {key} | {pq['file_ratio']:.1f}x, {pq['acc_drop_pt']:+.2f} pt | "
                 f"{met(ok_acc and ok_ratio)} | {'; '.join(why)} |")
        if e["model"] == "lenet5":
            ok = pq["file_ratio"] >= AIMS["lenet5_ratio"] and ok_acc
            need = pq["baseline_bytes"] / AIMS["lenet5_ratio"] / 1000
            L.append(f"| aim: >= {AIMS['lenet5_ratio']:g}x on LeNet-5 at no loss | {key} | {pq['file_ratio']:.1f}x | "
                     f"{'yes' if ok else 'NO'} | "
                     + ("" if ok else f"needs <= {need:.1f} KB, the file has {pq['file_bytes'] / 1000:.1f} KB: after "
                        "element-wise pruning most sub-vectors of the FC layer still hold a kept weight, and each "
                        "pays a code (the scalar k-means file of the same pruned model is "
                        f"{e['branches']['kmeans']['file_ratio']:.1f}x)") + " |")
        c = e["clustering"]
        ok = c["speedup"] >= CLAIMS["cluster_speedup"]
        pts = sum(r["scalar_points"] for r in c["layers"]) / max(1, sum(r["pq_points"] for r in c["layers"]))
        L.append(f"| PQ clustering >= {CLAIMS['cluster_speedup']:g}x faster than k-means (same engine and iterations) "
                 f"| {key} | {c['speedup']:.2f}x ({c['pq_seconds']:.2f} s vs {c['scalar_seconds']:.2f} s, faiss, "
                 f"{c['niter']} it, k={'/'.join(str(x) for x in c['k'])}) | {met(ok)} | "
                 + ("" if ok else f"k-means cost ~ points x k: scalar k-means clusters only {pts:.1f}x as many points "
                    "as PQ here, because at this sparsity a kept sub-vector holds few kept weights") + " |")
        b1 = [r for r in e["inference"] if r["batch"] == 1 and r["mode"] in ("lut", "auto")]
        best = max(b1, key=lambda r: r["speedup"]) if b1 else None
        if best:
            lo_s = CLAIMS["inference_speedup_range"][0]
            ok = best["speedup"] >= lo_s
            lay = [r for r in e["layer_inference"] if "bound" in r]
            why = "" if ok else ("per layer (bound rows*cols/(k*cols+lookups) / measured): " + ", ".join(
                f"{r['layer']} {r['bound']:.2f}x/{r['speedup']:.2f}x" for r in lay)
                + "; a table costs k*C_in' per position, so layers with few outputs (convs, classifiers) cannot "
                "gain, and at these sizes the dense weights sit in cache")
            L.append(f"| {_fmt_range(CLAIMS['inference_speedup_range'])} faster inference | {key} | "
                     f"{best['speedup']:.2f}x at batch 1 ({best['mode']}) | {met(ok)} | {why} |")
            if e["model"] in FC_HEAVY:
                ok = best["speedup"] >= AIMS["fc_batch1_speedup"]
                L.append(f"| aim: >= {AIMS['fc_batch1_speedup']:g}x batch 1 on FC-heavy models | {key} | "
                         f"{best['speedup']:.2f}x | {'yes' if ok else 'NO'} | "
                         + ("" if ok else "bounded by the table cost above; the large FC layers below (weights "
                            "streamed from memory when dense) do reach it") + " |")
    syn = results.get("synthetic_fc") or []
    if syn:
        best = max(syn, key=lambda r: r["speedup"])
        ok = best["speedup"] >= AIMS["fc_batch1_speedup"]
        L.append(f"| aim: >= {AIMS['fc_batch1_speedup']:g}x batch 1 on FC-heavy layers | synthetic large FC "
                 f"(random codes) | up to {best['speedup']:.2f}x ({best['in']} x {best['out']}, d={best['d']}, "
                 f"k={best['k']}) | {'yes' if ok else 'NO'} | timing only, no accuracy |")
    return L


def write_markdown(results: dict, path: Path) -> None:
    L = ["# Product quantization vs scalar k-means (METHODS.md C)", "",
         "Generated by `benchmarks/pq_vs_kmeans.py` from `pq_vs_kmeans.json`; do not edit by hand. Both "
         f"branches start from the SAME pruned and retrained model (the shared stages of `{PQ_RECIPE}` and "
         f"`{KM_RECIPE}`): PQ puts one b-bit code on each sub-vector of d weights, k-means one b-bit code "
         "on each kept weight (the same code width b; see the recipes for d and k). Ratios are "
         "measured on the `.wz` files (baseline bytes = 4 x every float of the state_dict, biases included); "
         "accuracies are measured on the models loaded FROM THE FILES. Timings: 1 thread, median of repeats, "
         "on a 2-core machine shared with other jobs (expect noise).", "",
         "## The thesis's claims beside ours", ""]
    L += claims_rows(results)
    L += ["", "## Accuracy and size", "",
          "| case | budget | baseline acc | pruned acc | PQ acc (file) | PQ ratio | k-means acc (file) | k-means ratio |",
          "|---|---|---|---|---|---|---|---|"]
    for key, e in results.get("cases", {}).items():
        pq, km = e["branches"]["pq"], e["branches"]["kmeans"]
        L.append(f"| {key} | {e['budget']} | {e['baseline_test_acc']:.2f}% | {e['pruned_test_acc']:.2f}% | "
                 f"{pq['test_acc_from_file']:.2f}% | **{pq['file_ratio']:.1f}x** ({pq['file_bytes'] / 1000:.1f} KB) | "
                 f"{km['test_acc_from_file']:.2f}% | {km['file_ratio']:.1f}x ({km['file_bytes'] / 1000:.1f} KB) |")
    L += ["", "## Clustering time (same engine: faiss; same iterations)", "",
          "| case | PQ | scalar k-means | speed-up | per layer (PQ s / k-means s) |", "|---|---|---|---|---|"]
    for key, e in results.get("cases", {}).items():
        c = e["clustering"]
        per = ", ".join(f"{r['layer']} {r['pq_seconds']:.3f}/{r['scalar_seconds']:.3f}" for r in c["layers"])
        L.append(f"| {key} | {c['pq_seconds']:.3f} s | {c['scalar_seconds']:.3f} s | **{c['speedup']:.2f}x** | {per} |")
    L += ["", "## Inference of the PQ file (whole model)", "",
          "| case | batch | mode | ms | speed-up vs dense fp32 | swapped layers |", "|---|---|---|---|---|---|"]
    for key, e in results.get("cases", {}).items():
        for r in e["inference"]:
            L.append(f"| {key} | {r['batch']} | {r['mode']} | {r['ms']:.4f} | {r['speedup']:.2f}x | "
                     f"{', '.join(r.get('layers', []))} |")
    L += ["", "## Inference per PQ layer (batch 1)", "",
          "Bound: `rows*cols / (k*cols + lookups)` (METHODS.md C, the MAC-count speed-up of a lookup table).", "",
          "| case | layer | shape (rows x cols) | d | k | lookups | dense us | LUT us | speed-up | bound |",
          "|---|---|---|---|---|---|---|---|---|---|"]
    for key, e in results.get("cases", {}).items():
        for r in e["layer_inference"]:
            if r.get("lut") is None and "why" in r:
                L.append(f"| {key} | {r['layer']} | | | | | | | dense ({r['why']}) | |")
                continue
            L.append(f"| {key} | {r['layer']} | {r['rows']} x {r['cols']} (x{r['positions']} positions) | {r['d']} | "
                     f"{r['k']} | {r['lookups']} | {r['dense_us']:.1f} | {r['lut_us']:.1f} | {r['speedup']:.2f}x | "
                     f"{r['bound']:.2f}x |")
    syn = results.get("synthetic_fc") or []
    if syn:
        L += ["", "## Large FC layers, synthetic (random codes; timing only, batch 1)", "",
              "Dense products of these sizes stream the weight matrix from memory; the lookup table reads "
              "codes (1 byte per d weights) and a small codebook.", "",
              "| in x out | d | k | zero sub-vectors | dense ms | LUT ms | speed-up | bound |", "|---|---|---|---|---|---|---|---|"]
        for r in syn:
            L.append(f"| {r['in']} x {r['out']} | {r['d']} | {r['k']} | {r['zero_subvectors']:.0%} | {r['dense_ms']:.3f} | "
                     f"{r['lut_ms']:.3f} | {r['speedup']:.2f}x | {r['bound']:.2f}x |")
    for key, e in results.get("cases", {}).items():
        pq, km = e["branches"]["pq"], e["branches"]["kmeans"]
        L += ["", f"## {key}", "",
              f"Baseline `{e['baseline_checkpoint']}`; budget `{e['budget']}` {json.dumps(e['budget_settings'])}; "
              f"files `{pq['file']}` and `{km['file']}`; {e['seconds'] / 60:.1f} min in all.", "",
              "Formats chosen by the codec (smallest exact): PQ file: "
              + ", ".join(f"{n} {f}" for n, f in pq["formats"].items() if n.endswith("weight"))
              + "; k-means file: " + ", ".join(f"{n} {f}" for n, f in km["formats"].items() if n.endswith("weight")) + "."]
    m = results.get("machine")
    if m:
        L += ["", f"Machine of the last run: {json.dumps(m)}."]
    C.write_text(path, C.repo_relative("\n".join(L) + "\n"))


# ---------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    ap = C.parser(__doc__)
    ap.add_argument("--only", nargs="*", choices=sorted(CASES), help="run only these models")
    ap.add_argument("--cifar", action="store_true", help="also run ResNet-20 and VGG-16 on CIFAR-10")
    ap.add_argument("--cifar-only", action="store_true", help="run only the CIFAR-10 models")
    ap.add_argument("--budget", choices=sorted(BUDGETS), default="tiny", help="CIFAR-10 budget (see the docstring)")
    C.add_args(ap, "device", "seed")
    ap.add_argument("--repeat", type=int, default=7, help="timed repeats (median)")
    ap.add_argument("--number", type=int, default=200, help="calls per timed repeat at batch 1")
    ap.add_argument("--cluster-repeats", type=int, default=3)
    ap.add_argument("--no-synthetic", action="store_true", help="skip the synthetic large-FC timing")
    ap.add_argument("--timing-only", action="store_true",
                    help="only re-measure the inference timings of the cases already in the JSON (from their .wz)")
    ap.add_argument("--resume", action="store_true",
                    help="reuse the pruning/retraining stage checkpoints in runs/pq_vs_kmeans/<case>/prefix")
    ap.add_argument("--render-only", action="store_true",
                    help="re-write the JSON and page from the committed JSON (no training, no timing)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    torch.set_num_threads(1)
    try:
        import faiss

        faiss.omp_set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass
    names = [n for n in CASES if CASES[n] == "mnist"] if not args.cifar_only else []
    if args.cifar or args.cifar_only:
        names += [n for n in CASES if CASES[n] == "cifar10"]
    if args.only:
        names = [n for n in names if n in args.only] or list(args.only)
    RESULTS.mkdir(parents=True, exist_ok=True)
    jpath = RESULTS / "pq_vs_kmeans.json"
    results = C.read_json(jpath)
    results.setdefault("cases", {})
    if args.render_only:
        results = C.repo_relative(results)
        C.write_json(jpath, results)
        write_markdown(results, RESULTS / "pq_vs_kmeans.md")
        log.info("wrote %s and %s (rendered from the JSON)", jpath, RESULTS / "pq_vs_kmeans.md")
        return 0
    if args.timing_only:
        from weightzip.jobs.bench import input_shape_of

        for key, e in results["cases"].items():
            path = ROOT / e["branches"]["pq"]["file"]
            shape = input_shape_of(wz.load(path))
            e["inference"] = model_timings(path, shape, (1, 64), args.repeat, args.number)
            e["layer_inference"] = layer_timings(path, shape, args.repeat, args.number)
            e["timing_date"] = C.now()
            log.info("%s: timings re-measured", key)
        names = []
    for name in names:
        entry = run_case(name, args)
        results["cases"][entry["case"]] = entry
        results["machine"] = entry["machine"]
        C.write_json(jpath, C.repo_relative(results))
        write_markdown(results, RESULTS / "pq_vs_kmeans.md")
    if not args.no_synthetic:
        results["synthetic_fc"] = synthetic_fc(args.repeat, args.number)
        C.write_json(jpath, C.repo_relative(results))
    write_markdown(results, RESULTS / "pq_vs_kmeans.md")
    log.info("wrote %s and %s", jpath, RESULTS / "pq_vs_kmeans.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
