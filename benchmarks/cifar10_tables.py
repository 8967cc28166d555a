"""The theses' CIFAR-10 rows on this CPU (issue 23): ResNet-20 at a stated budget.

    python benchmarks/cifar10_tables.py                  # every row not done yet (resumes), then the page
    python benchmarks/cifar10_tables.py --rows pq_kmeans loss_aware
    python benchmarks/cifar10_tables.py --timing         # batch-1 latency of the files (a quiet machine)
    python benchmarks/cifar10_tables.py --render-only    # the page from the committed row JSONs
    python benchmarks/cifar10_tables.py --smoke          # checks the pipeline (3 steps/epoch, 1000 test images)

Every row starts from the SAME trained ResNet-20 baseline (``bash benchmarks/cifar10_cpu.sh
resnet20``: ``runs/cifar10/resnet20/base.pt``, its 45k / 5k train / validation split), runs one
recipe with ``weightzip.compress``, writes the ``.wz`` to ``benchmarks/results/cifar10/`` and
re-measures the accuracy FROM THE FILE on the full 10,000-image test split. A row records its
budget (epochs, wall seconds, the load average before and after), the file bytes and ratio
(``weightzip.analysis.size``) and the published row it stands beside.

Rows (one training job at a time; each is cached in ``benchmarks/results/cifar10/rows/<row>.json``
and skipped when present; inside a row, finished designs / methods are kept in
``rows/<row>.partial.json`` and the pruning prefix checkpoints its stages, so an interrupted run
resumes where it stopped):

* ``baseline`` - the checkpoint's test accuracy (item 1).
* ``pq_kmeans`` (item 3, seed 002) - the shared prefix of ``recipes/prune-pq.yaml`` /
  ``recipes/prune-kmeans-matched.yaml`` (threshold-scan pruning, retraining with fixed masks) run
  once, then PQ (one 3x3 kernel per sub-vector, k = 128) and scalar k-means (7-bit codes) from the
  same pruned model, each with its codebook fine-tuning; clustering time PQ vs k-means with the
  same faiss engine and iteration count (``pq_vs_kmeans.clustering_times``).
* ``structured`` (item 4, seed 001) - ``structured_qat`` designs over (weight / activation bits,
  block compression): weight memory, activation memory and total (``weightzip.analysis.memory``),
  the non-dominated designs on (total memory, test error) and ``cifar10-structured-front.png``.
* ``loss_aware`` (item 5, seed 003) - LAB, LAT (exact) and LAQ 3-bit linear, fine-tuned from the
  baseline with Adam (the papers train from scratch for 200 epochs: a CPU budget cut).

``--timing`` (run alone: it pauses nothing itself; use a quiet machine) times batch 1 of every
row's file with ``weightzip.jobs.bench.bench``: dense torch, onnxruntime fp32 / int8 and the
compiled runtime, interleaved in one process, 1 thread, with the share of MACs run natively.

The budget of every row is far below the published one (epochs are given per row); the page says
so beside each published figure. [reconstructed] choices, not the theses': fine-tuning from a
trained baseline instead of training from scratch; 4x4 blocks for ResNet-20's 16-64 channels
(16x16 blocks leave a 16x16 layer one block); cross-entropy for the loss-aware rows (the baseline's
loss; the LAB paper uses the squared hinge from scratch).
"""
from __future__ import annotations

import argparse
import copy
import logging
import sys
import time
from pathlib import Path
from typing import Any

import torch

import _common as C
import pq_vs_kmeans as PQK
import weightzip as wz
from weightzip.analysis.pareto import non_dominated, plot_front
from weightzip.analysis.size import size_report
from weightzip.core.recipe import Recipe
from weightzip.jobs import runs
from weightzip.training.checkpoint import machine_info
from weightzip.training.evaluate import evaluate

ROOT = C.ROOT
OUT = C.RESULTS / "cifar10"
BASE = ROOT / "runs" / "cifar10" / "resnet20" / "base.pt"
MODEL, DATA = "resnet20", "cifar10"
ROWS = ("baseline", "pq_kmeans", "structured", "loss_aware")

# Published figures (shared/METHODS.md) - the only numbers typed in.
PUBLISHED = {
    "resnet20_fp_acc": 91.25,  # He et al. 2016, ResNet-20 on CIFAR-10 (8.75% error)
    "pq_ratio_range": (23.0, 59.0), "pq_speedup_range": (1.52, 3.3), "pq_cluster_speedup": 2.0,
    "structured_weight_reduction": 50.0, "structured_alone": 2.0, "quant_alone": 16.0,
    "lab_cifar_err": {"full precision": 11.90, "BinaryConnect": 9.86, "BWN": 10.51, "LAB": 10.50},
}
# (w_bits, a_bits, compression, epochs or None = --epochs): the thesis's point (2 / 2 / 4x) first,
# then what separates it, then the thesis's point again at a longer budget
STRUCTURED_DESIGNS = [(2, 2, 4, None), (2, 2, 1, None), (4, 4, 4, None), (32, 32, 4, None), (2, 2, 4, 6)]
LOSS_AWARE = {"lab": {"mode": "lab"}, "lat_e": {"mode": "lat", "exact": True},
              "laq3": {"mode": "laq", "bits": 3, "levels": "linear"}}
LABELS = {"lab": "LAB (binary)", "lat_e": "LAT exact (ternary)", "laq3": "LAQ 3-bit linear"}

log = logging.getLogger("cifar10_tables")


# ---------------------------------------------------------------------------------------------
# Shared pieces


def acc(metrics: dict) -> float:
    return 100.0 * metrics["accuracy"]


def settings(args: argparse.Namespace) -> dict[str, Any]:
    """The budget: epochs per training stage and the smoke cuts."""
    smoke = args.smoke
    return {"retrain_epochs": args.epochs, "finetune_epochs": args.finetune_epochs,
            "max_steps_per_epoch": 3 if smoke else None, "eval_subset": 1000 if smoke else None,
            "scan_batches": 1 if smoke else 5}


def source(args: argparse.Namespace):
    """(baseline model, its run info, loaders on the baseline's own split)."""
    if not BASE.is_file():
        raise SystemExit(f"no baseline at {BASE}: run `bash benchmarks/cifar10_cpu.sh resnet20` first")
    model, info = runs.load_model(BASE, "cpu")
    rec = runs.recipe_for(MODEL, DATA)
    opts = C.data_options(info, rec, ("val_size", "split_seed", "eval_batch_size", "augment"))
    b = settings(args)
    if b["eval_subset"]:
        opts["eval_subset"] = b["eval_subset"]
    loaders = runs.make_loaders(DATA, int(rec["train"].get("batch_size", 128)), **opts)
    return model, info, loaders


def train_block(epochs: int, b: dict, **kw: Any) -> dict[str, Any]:
    t = {"epochs": epochs, **kw}
    if b["max_steps_per_epoch"]:
        t["max_steps_per_epoch"] = b["max_steps_per_epoch"]
    return t


def file_row(model, path: Path, recipe: Recipe, loaders, base_acc: float, extra_metrics: dict | None = None) -> dict:
    """Save, reload FROM THE FILE, evaluate on the test split; bytes and ratios of the file."""
    mem = evaluate(model, loaders.test, device="cpu")
    _, reloaded = C.save_and_reload(model.cpu(), path, recipe=recipe,
                                    metrics={"compressed_test": mem, "data": DATA, **(extra_metrics or {})})
    f = evaluate(reloaded, loaders.test, device="cpu")
    size = size_report(path)
    return {"file": str(path.relative_to(ROOT)), "test_acc_in_memory": acc(mem), "test_acc_from_file": acc(f),
            "acc_drop_pt": base_acc - acc(f), "file_bytes": size.file_bytes, "baseline_bytes": size.baseline_bytes,
            "file_ratio": size.file_ratio, "payload_ratio": size.payload_ratio}


def budget_note(t0: float, load0: float | None) -> dict[str, Any]:
    return {"wall_s": time.perf_counter() - t0, "load_before": load0, "load_after": C.load_average(),
            "date": C.now(), "machine": machine_info("cpu"), "torch_threads": torch.get_num_threads()}


def out_path(args, name: str) -> Path:
    folder = (ROOT / "runs" / "cifar10" / "tables-smoke") if args.smoke else OUT
    return folder / name


# ---------------------------------------------------------------------------------------------
# Rows


def row_baseline(args) -> dict:
    t0, l0 = time.perf_counter(), C.load_average()
    model, info, loaders = source(args)
    test = evaluate(model, loaders.test, device="cpu")
    ck = C.read_json(BASE.with_suffix(".json"), {})
    return {"row": "baseline", "test_acc": acc(test), "epochs": ck.get("epochs_done"),
            "train_wall_s": ck.get("total_time_s"), "val_acc": 100 * ((ck.get("final") or {}).get("val_accuracy") or 0),
            "published_acc": PUBLISHED["resnet20_fp_acc"], **budget_note(t0, l0)}


def row_pq_kmeans(args) -> dict:
    t0, l0 = time.perf_counter(), C.load_average()
    b = settings(args)
    cut = {"stage_epochs": None, "max_steps_per_epoch": b["max_steps_per_epoch"], "scan_batches": b["scan_batches"]}
    prefix, pq_rec, km_rec = PQK.split_recipes(cut)
    for st in prefix.stages:
        if isinstance(getattr(st, "train", None), dict):
            st.train = {**st.train, "epochs": b["retrain_epochs"]}
    for r in (pq_rec, km_rec):
        for st in r.stages:
            if isinstance(getattr(st, "finetune", None), dict):
                st.finetune = {**st.finetune, "epochs": b["finetune_epochs"]}
    model, _, loaders = source(args)
    base = acc(evaluate(model, loaders.test, device="cpu"))
    say = lambda m: log.info("%s", m)  # noqa: E731
    work = ROOT / "runs" / "cifar10" / ("tables-smoke" if args.smoke else "tables") / "pq_kmeans"
    res = wz.compress(model, prefix, loaders=loaders, workdir=work / "prefix", resume=True, log=say)
    pruned_acc = acc(evaluate(model, loaders.test, device="cpu"))
    pruned = copy.deepcopy(model).cpu()
    branches = {}
    for tag, r, rname in (("pq", pq_rec, "prune-pq"), ("kmeans", km_rec, "prune-kmeans-matched")):
        m = copy.deepcopy(model)
        t1 = time.perf_counter()
        rr = wz.compress(m, r, loaders=loaders, log=say)
        secs = time.perf_counter() - t1
        full = Recipe.from_dict({**r.to_dict(), "name": f"{rname}-resnet20-cifar10-cpu", "model": MODEL, "data": DATA,
                                 "stages": [s.model_dump(mode="json") for s in prefix.stages + r.stages]})
        branches[tag] = {**file_row(m, out_path(args, f"resnet20-{tag}.wz"), full, loaders, base),
                         "stage_seconds": secs, "stage": PQK.drop_bulk(rr.stages[-1].metrics)}
        log.info("pq_kmeans %s: %.2f%% from the file, %.1fx", tag, branches[tag]["test_acc_from_file"],
                 branches[tag]["file_ratio"])
    pq_stage = next(s for s in pq_rec.stages if s.method == "pq_share")
    clustering = PQK.clustering_times(pruned, branches["pq"]["stage"]["layers"], pq_stage.niter,
                                      1 if args.smoke else 3)
    return {"row": "pq_kmeans", "baseline_test_acc": base, "pruned_test_acc": pruned_acc,
            "prefix": [PQK.drop_bulk(s.__dict__) for s in res.stages], "branches": branches,
            "clustering": {k: v for k, v in clustering.items() if k != "layers"},
            "budget": {"retrain_epochs": b["retrain_epochs"], "finetune_epochs": b["finetune_epochs"]},
            "published": {"ratio_range": PUBLISHED["pq_ratio_range"], "cluster_speedup": PUBLISHED["pq_cluster_speedup"],
                          "speedup_range": PUBLISHED["pq_speedup_range"]},
            **budget_note(t0, l0)}


def row_structured(args) -> dict:
    t0, l0 = time.perf_counter(), C.load_average()
    b = settings(args)
    _, _, loaders = source(args)
    designs = []
    base = None
    part = out_path(args, "rows") / "structured.partial.json"     # designs done (an interrupted row resumes)
    done = {d["design"]: d for d in (C.read_json(part, {}) or {}).get("designs", [])}
    if args.extend:   # the finished row's designs are kept
        done.update({d["design"]: d for d in (C.read_json(part.with_name("structured.json"), {}) or {}).get("designs", [])})
    for w_bits, a_bits, c, epochs in STRUCTURED_DESIGNS[: args.designs]:
        epochs = epochs or b["retrain_epochs"]
        t1 = time.perf_counter()
        model, _, _ = source(args)
        if base is None:
            base = acc(evaluate(model, loaders.test, device="cpu"))
        label = f"w{w_bits}a{a_bits}c{c}" + (f"-{epochs}ep" if epochs != b["retrain_epochs"] else "")
        if label in done:
            designs.append(done[label])
            continue
        stage = {"method": "structured_qat", "block": 4, "compression": c, "selection": "norm", "w_bits": w_bits,
                 "a_bits": a_bits, "weight_quantizer": "dorefa", "first_last_bits": [8, 8],
                 "activation": "pact", "a_clip": 3.0,
                 "sparsify_first": False, "sparsify_last": False,
                 "train": train_block(epochs, b, lr=0.001, optimizer="adam", schedule="cosine")}
        recipe = Recipe.from_dict({"name": f"structured-qat-resnet20-{label}", "model": MODEL, "data": DATA,
                                   "description": f"ResNet-20 W{w_bits}/A{a_bits}, {c}x block (4x4) sparsity, "
                                                  "first/last 8-bit, fine-tuned from the baseline",
                                   "stages": [stage]})
        res = wz.compress(model, recipe, loaders=loaders, log=lambda m: log.info("%s", m))
        met = res.stages[-1].metrics
        memory = met.get("memory") or {}
        row = file_row(model, out_path(args, f"resnet20-structured-{label}.wz"), recipe, loaders, base)
        designs.append({"design": label, "w_bits": w_bits, "a_bits": a_bits, "compression": c, "epochs": epochs, **row,
                        "test_error": 100 - row["test_acc_from_file"],
                        **{k: memory.get(k) for k in ("weight_memory_bits", "fp32_weight_memory_bits",
                                                      "weight_memory_reduction", "activation_memory_bits",
                                                      "peak_activation_memory_bits", "total_memory_bits")},
                        "seconds": time.perf_counter() - t1})
        log.info("structured %s: %.2f%% from the file, W %.1fx", label, row["test_acc_from_file"],
                 memory.get("weight_memory_reduction") or float("nan"))
        C.write_json(part, {"designs": designs})
    front = non_dominated(designs, ["total_memory_bits", "test_error"])
    png = out_path(args, "cifar10-structured-front.png")
    try:
        plot_front(designs, "total_memory_bits", "test_error", png, front=front, label="design",
                   xscale=8 * 1024, xlabel="total memory (weights + activations), KiB", ylabel="test error %",
                   title="ResNet-20 CIFAR-10: structured sparsity + low-bit W/A (CPU budget)")
    except Exception as e:  # the plot is optional (matplotlib)
        log.warning("no plot: %s", e)
        png = None
    return {"row": "structured", "baseline_test_acc": base, "designs": designs,
            "front": [d["design"] for d in front], "plot": str(png.relative_to(ROOT)) if png else None,
            "budget": {"epochs": b["retrain_epochs"], "block": 4},
            "published": {"weight_reduction": PUBLISHED["structured_weight_reduction"],
                          "structured_alone": PUBLISHED["structured_alone"], "quant_alone": PUBLISHED["quant_alone"]},
            **budget_note(t0, l0)}


def row_loss_aware(args) -> dict:
    t0, l0 = time.perf_counter(), C.load_average()
    b = settings(args)
    _, _, loaders = source(args)
    out, base = {}, None
    part = out_path(args, "rows") / "loss_aware.partial.json"     # methods done (an interrupted row resumes)
    done = C.read_json(part, {}) or {}
    for key, cfg in LOSS_AWARE.items():
        t1 = time.perf_counter()
        model, _, _ = source(args)
        if base is None:
            base = acc(evaluate(model, loaders.test, device="cpu"))
        if key in done:
            out[key] = done[key]
            continue
        stage = {"method": "loss_aware", **cfg,
                 "train": train_block(b["retrain_epochs"], b, lr=0.0005, optimizer="adam", schedule="cosine")}
        recipe = Recipe.from_dict({"name": f"loss-aware-{key}-resnet20", "model": MODEL, "data": DATA,
                                   "description": f"ResNet-20 {LABELS[key]}, every conv/FC, fine-tuned from the baseline",
                                   "stages": [stage]})
        wz.compress(model, recipe, loaders=loaders, log=lambda m: log.info("%s", m))
        row = file_row(model, out_path(args, f"resnet20-{key}.wz"), recipe, loaders, base)
        out[key] = {**row, "label": LABELS[key], "test_error": 100 - row["test_acc_from_file"],
                    "seconds": time.perf_counter() - t1}
        log.info("loss_aware %s: %.2f%% from the file, %.1fx", key, row["test_acc_from_file"], row["file_ratio"])
        C.write_json(part, out)
    return {"row": "loss_aware", "baseline_test_acc": base, "methods": out,
            "budget": {"epochs": b["retrain_epochs"], "optimizer": "adam", "lr": 0.0005},
            "published": {"lab_paper_vgg_cifar_err": PUBLISHED["lab_cifar_err"]}, **budget_note(t0, l0)}


RUNNERS = {"baseline": row_baseline, "pq_kmeans": row_pq_kmeans, "structured": row_structured,
           "loss_aware": row_loss_aware}


def files_of(row: dict) -> list[str]:
    if row["row"] == "pq_kmeans":
        return [v["file"] for v in row["branches"].values()]
    if row["row"] == "structured":
        return [d["file"] for d in row["designs"]]
    if row["row"] == "loss_aware":
        return [v["file"] for v in row["methods"].values()]
    return []


def timing(args, rows: dict) -> dict:
    """Batch-1 latency of every file: torch dense, onnxruntime fp32 / int8, compiled (1 thread)."""
    from weightzip.jobs.bench import bench

    out = {}
    for row in rows.values():
        for f in files_of(row):
            log.info("timing %s", f)
            r = bench(ROOT / f, batch_sizes=(1,), repeat=args.repeat, number=args.number,
                      modes=("compiled",), threads=1, data=DATA)
            us = {x["mode"]: x.get("us") for x in r["rows"]}
            out[f] = {"us": us, "native_mac_share": (r.get("compiled") or {}).get("native_mac_share"),
                      "resident_bytes": (r.get("compiled") or {}).get("resident_bytes"),
                      "load_average": r["load_average"], "date": C.now()}
    return out


# ---------------------------------------------------------------------------------------------
# The page


TORCH = "torch eager dense"   # the mode names of weightzip.analysis.speed.compare


def _mode_us(t: dict, want: str) -> float | None:
    return (t.get("us") or {}).get(want)


def markdown(rows: dict, timings: dict) -> str:
    L = ["# CIFAR-10 on this CPU: the theses' rows on ResNet-20 (issue 23)", "",
         "Generated by `python benchmarks/cifar10_tables.py` (timings: `--timing`). Every compressed row starts "
         "from the same ResNet-20 baseline (`bash benchmarks/cifar10_cpu.sh resnet20`), and its accuracy is "
         "re-measured FROM THE `.wz` on the full 10,000-image test split. Budgets are CPU budgets (2 shared "
         "cores), far below the theses' GPU schedules: each row gives its epochs, wall time and load. "
         "AlexNet / VGG-16 rows (items 2-3 on those nets) are not here: their baselines are not trained "
         "(7.6 / 13.5 min per epoch on this CPU).", ""]
    base = rows.get("baseline")
    if base:
        L += ["## 1. Baseline", "", *C.md_header(["model", "epochs", "train wall (s)", "val acc %", "test acc %",
                                                  "published (He et al. 2016)"]),
              C.md_row(["ResNet-20", base["epochs"], f"{base['train_wall_s']:.0f}" if base.get("train_wall_s") else "-",
                        f"{base['val_acc']:.2f}", f"{base['test_acc']:.2f}", f"{base['published_acc']:.2f} (164 epochs)"]),
              ""]
        if base["test_acc"] < 91.5:
            L += [f"The issue's aim (>= 91.5%) is NOT reached: {base['test_acc']:.2f}% after {base['epochs']} "
                  "epochs of a cosine schedule.", ""]
    pq = rows.get("pq_kmeans")
    if pq:
        b = pq["budget"]
        L += ["## 3. Pruning + product quantization vs k-means (seed 002)", "",
              f"Budget: threshold scan, {b['retrain_epochs']} retraining epoch(s) with fixed masks, then "
              f"{b['finetune_epochs']} codebook fine-tuning epoch(s) per branch; {pq['wall_s']:.0f} s in all "
              f"(load {C.fmt(pq['load_before'], '.1f')} -> {C.fmt(pq['load_after'], '.1f')}). Baseline "
              f"{pq['baseline_test_acc']:.2f}%, after pruning + retraining {pq['pruned_test_acc']:.2f}%.", "",
              *C.md_header(["branch", "file", "bytes", "file ratio", "test acc % (file)", "drop (pt)",
                            "published ratio"])]
        for tag, br in pq["branches"].items():
            L.append(C.md_row([tag, f"`{br['file']}`", f"{br['file_bytes']:,}", f"{br['file_ratio']:.1f}x",
                               f"{br['test_acc_from_file']:.2f}", f"{br['acc_drop_pt']:+.2f}",
                               "23-59x (no loss)" if tag == "pq" else "-"]))
        cl = pq["clustering"]
        L += ["", f"Clustering time, same faiss engine and {cl['niter']} iterations on the same pruned weights: "
                  f"PQ {cl['pq_seconds']:.2f} s vs scalar k-means {cl['scalar_seconds']:.2f} s = "
                  f"{cl['speedup']:.2f}x (thesis: >= {PUBLISHED['pq_cluster_speedup']:.0f}x).", ""]
        for tag, br in pq["branches"].items():
            t = timings.get(br["file"]) or {}
            us = {m: _mode_us(t, m) for m in (TORCH, "onnxruntime fp32", "weightzip compiled")}
            if all(us.values()):
                L.append(f"- {tag}: compiled runtime {us[TORCH] / us['weightzip compiled']:.2f}x dense torch, "
                         f"{us['onnxruntime fp32'] / us['weightzip compiled']:.2f}x onnxruntime fp32 at batch 1 "
                         f"(thesis: 1.52-3.3x; load {C.fmt((t.get('load_average') or [None])[0], '.1f')}; every "
                         "file's latency: the last section).")
        L.append("")
    st = rows.get("structured")
    if st:
        L += ["## 4. Structured sparsity + low-bit weights and activations (seed 001)", "",
              f"Budget: the epochs of `structured_qat` given per design, from the baseline "
              f"(Adam 1e-3, cosine; 4x4 blocks over (C_out, C_in), whole 3x3 kernels, chosen by norm; first conv "
              f"and classifier 8-bit and dense; activation clips learned by PACT from 3.0); {sum(d.get('seconds', 0) for d in st['designs']):.0f} s of training + evaluation for {len(st['designs'])} designs. Memory model: "
              "`weightzip.analysis.memory` (kept weights x bits + block mask + fp32 bias/BN; activations x bits).", "",
              *C.md_header(["design", "epochs", "test acc % (file)", "drop (pt)", "weight memory KiB", "weight reduction",
                            "activation memory KiB", "total KiB", "file bytes", "on the front"])]
        for d in st["designs"]:
            kib = lambda v: f"{v / 8192:.1f}" if v else "-"  # noqa: E731
            L.append(C.md_row([d["design"], d.get("epochs", st["budget"]["epochs"]), f"{d['test_acc_from_file']:.2f}",
                               f"{d['acc_drop_pt']:+.2f}",
                               kib(d.get("weight_memory_bits")), C.fmt(d.get("weight_memory_reduction"), ".1f") + "x",
                               kib(d.get("activation_memory_bits")), kib(d.get("total_memory_bits")),
                               f"{d['file_bytes']:,}", "yes" if d["design"] in st["front"] else ""]))
        L += ["", f"Thesis: 2-bit weights and activations with 4x structured compression = "
                  f"{PUBLISHED['structured_weight_reduction']:.0f}x weight memory (structured alone "
                  f"{PUBLISHED['structured_alone']:.0f}x, quantization alone {PUBLISHED['quant_alone']:.0f}x) on a "
                  "VGG-style net; ResNet-20 is 50x smaller, and its first conv and classifier (kept 8-bit) weigh "
                  "more in its total."]
        if st.get("plot"):
            L += ["", f"![front]({Path(st['plot']).name})"]
        L.append("")
    la = rows.get("loss_aware")
    if la:
        b = la["budget"]
        L += ["## 5. Loss-aware binarization / ternarization / m-bit (seed 003)", "",
              f"Budget: {b['epochs']} epoch(s) per method from the baseline (Adam {b['lr']}, cosine, cross-entropy); "
              f"{la['wall_s']:.0f} s in all. Every conv / FC weight quantized (first and last included), one scale "
              "per tensor, BN fp32.", "",
              *C.md_header(["method", "test error % (file)", "drop (pt)", "file bytes", "file ratio",
                            "LAB paper, VGG-style net, 200 epochs from scratch"])]
        pub = PUBLISHED["lab_cifar_err"]
        for key, r in la["methods"].items():
            ref = f"{pub['LAB']:.2f} (fp {pub['full precision']:.2f})" if key == "lab" else "-"
            L.append(C.md_row([r["label"], f"{r['test_error']:.2f}", f"{r['acc_drop_pt']:+.2f}", f"{r['file_bytes']:,}",
                               f"{r['file_ratio']:.1f}x", ref]))
        L.append("")
    if timings:
        L += ["## Batch-1 latency of every file", "",
              "`python benchmarks/cifar10_tables.py --timing` (`weightzip.jobs.bench.bench`: 1 thread, interleaved in "
              "one process, median of repeats, CIFAR-10 test images; no training job running). Dense torch and "
              "onnxruntime run the decoded dense model; the compiled runtime runs from the file's codes.", "",
              *C.md_header(["file", "torch dense us", "ort fp32 us", "ort int8 us", "compiled us", "vs torch",
                            "vs ort fp32", "native MACs", "load"])]
        for f, t in timings.items():
            us = [_mode_us(t, m) for m in (TORCH, "onnxruntime fp32", "onnxruntime int8", "weightzip compiled")]
            ratio = lambda a, b: f"{a / b:.2f}x" if a and b else "-"  # noqa: E731
            share = t.get("native_mac_share")
            L.append(C.md_row([f"`{Path(f).name}`", *[C.fmt(u, ".0f") for u in us], ratio(us[0], us[3]),
                               ratio(us[1], us[3]), f"{100 * share:.0f}%" if share is not None else "-",
                               C.fmt((t.get("load_average") or [None])[0], ".1f")]))
        L.append("")
    return "\n".join(L) + "\n"


# ---------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", nargs="*", choices=ROWS, default=list(ROWS))
    ap.add_argument("--epochs", type=int, default=2, help="epochs of every retraining / QAT stage")
    ap.add_argument("--finetune-epochs", type=int, default=1, help="codebook fine-tuning epochs (item 3)")
    ap.add_argument("--designs", type=int, default=len(STRUCTURED_DESIGNS), help="structured designs to train")
    ap.add_argument("--force", action="store_true", help="redo the rows given even when cached")
    ap.add_argument("--extend", action="store_true",
                    help="re-run the rows given, keeping their finished designs / methods (adds new ones)")
    ap.add_argument("--timing", action="store_true", help="time the rows' files (batch 1) and re-render")
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--number", type=int, default=100)
    ap.add_argument("--render-only", action="store_true")
    ap.add_argument("--smoke", action="store_true", help="3 steps per epoch, 1000 test images, under runs/")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    torch.manual_seed(0)
    folder = out_path(args, "rows")
    folder.mkdir(parents=True, exist_ok=True)
    tpath = out_path(args, "timing.json")
    if not args.render_only and not args.timing:
        for name in args.rows:
            path = folder / f"{name}.json"
            if path.is_file() and not (args.force or args.extend):
                log.info("row %s: cached (%s)", name, path.relative_to(ROOT))
                continue
            log.info("row %s ...", name)
            C.write_json(path, RUNNERS[name](args))
            (folder / f"{name}.partial.json").unlink(missing_ok=True)
    rows = {n: C.read_json(folder / f"{n}.json") for n in ROWS if (folder / f"{n}.json").is_file()}
    timings = C.read_json(tpath, {}) or {}
    if args.timing:
        timings.update(timing(args, rows))
        C.write_json(tpath, timings)
    page = (ROOT / "runs" / "cifar10" / "tables-smoke" / "cifar10.md") if args.smoke else C.RESULTS / "cifar10.md"
    C.write_text(page, markdown(rows, timings))
    print(f"wrote {page.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
