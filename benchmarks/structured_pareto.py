"""Method B reproduction: structured sparsity + low-bit weights/activations, Pareto designs.

    python benchmarks/structured_pareto.py                                  # MLP on MNIST (CPU, ~15 min)
    python benchmarks/structured_pareto.py --task cifar10 --device cuda     # vgg_small on CIFAR-10 (GPU)
    python benchmarks/structured_pareto.py --task cifar10 --epochs 1 --max-steps 20 --subset 2000  # CPU smoke

Runs the design-space study of ``recipes/space-structured.yaml`` (MNIST) or
``recipes/structured-qat-vgg-space.yaml`` (CIFAR-10) with :func:`weightzip.jobs.explore.explore`
(Optuna, SQLite under ``runs/structured-pareto/<task>/``: rerunning the command RESUMES the
study, ``--budget`` seconds at a time), then stands the results beside the thesis's claims
(METHODS.md B):

* 2-bit weights + 2-bit activations + 4x structured = 50x weight-memory reduction;
* structured alone 2x; quantization alone 16x;
* deep-sparse beats shallow-dense; about 11 Pareto designs.

Every figure comes from the trials of this run: weight / activation memory from the memory
model (:mod:`weightzip.analysis.memory`; BN folded, bias/BN fp32, block-mask bits counted),
accuracies measured on the test set, and again FROM EACH PARETO DESIGN'S ``.wz`` FILE.
Output: ``benchmarks/results/structured-pareto-<task>/`` with ``results.json``, ``README.md``,
the plots, the Pareto report and the ``.wz`` of every Pareto design. Overrides (``--epochs``,
``--max-steps``, ``--subset``, ``--width``) change the study (they are part of its
fingerprint) and are recorded.
"""
from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import torch
import yaml

import _common as C

ROOT = C.ROOT
sys.path.insert(0, str(ROOT / "src"))

from weightzip.jobs.explore import ExploreSpace, explore, load_space  # noqa: E402
from weightzip.training.checkpoint import machine_info  # noqa: E402

SPACES = {"mnist": ROOT / "recipes" / "space-structured.yaml",
          "cifar10": ROOT / "recipes" / "structured-qat-vgg-space.yaml"}
# The thesis's claims (METHODS.md B): reductions of weight memory, number of Pareto designs.
THESIS = {"2W2A4x": 50.0, "structure_alone": 2.0, "quantization_alone": 16.0, "pareto_designs": 11}


def derived_space(task: str, args) -> tuple[ExploreSpace, Path]:
    """The task's space with the command-line overrides, written under the work dir."""
    space = load_space(args.space or SPACES[task])
    d = space.model_dump(mode="json")
    train = dict(d["method"].get("train", {}))
    if args.epochs is not None:
        train["epochs"] = args.epochs
    if args.max_steps is not None:
        train["max_steps_per_epoch"] = args.max_steps
    d["method"]["train"] = train
    if args.subset is not None:
        d["data_args"] = {**d["data_args"], "subset": args.subset, "eval_subset": max(1000, args.subset // 5)}
    if args.width is not None:
        for topo in d["topologies"].values():
            topo["model_args"] = {**topo["model_args"],
                                  "width": args.width * topo["model_args"].get("width", 1.0)}
    overridden = any(v is not None for v in (args.epochs, args.max_steps, args.subset, args.width))
    if overridden:
        d["name"] = d["name"] + "-" + "-".join(f"{k}{v}" for k, v in (("e", args.epochs), ("s", args.max_steps),
                                                                       ("n", args.subset), ("w", args.width))
                                               if v is not None)
    work = Path(args.workdir or ROOT / "runs" / "structured-pareto" / d["name"])
    work.mkdir(parents=True, exist_ok=True)
    path = work / "space.yaml"
    C.write_text(path, yaml.safe_dump(d, sort_keys=False))
    return ExploreSpace(**d), path


def find(trials, topology, w, a=None, c=1):
    """The trial of a design (``a=None``: any activation bits, the lowest-error one)."""
    hits = [t for t in trials if t["topology"] == topology and t["w_bits"] == w and t["compression"] == c
            and (a is None or t["a_bits"] == a)]
    return min(hits, key=lambda t: t["error"]) if hits else None


def weights_only_reduction(t) -> float:
    """fp32 weights / (kept weights x bits + block-mask bits): bias and BN left out."""
    fp32_weights = t["fp32_weight_memory_bits"] - t["float_param_bits"]
    return fp32_weights / (t["kept_weight_bits"] + t["block_mask_bits"])


def claims(trials, sparse_topologies, dense_topologies) -> dict:
    """Measured counterparts of the thesis's claims, per sparse topology."""
    out = {}
    for topo in sparse_topologies:
        rows = {}
        ref = find(trials, topo, 32, None, 1)
        for key, (w, a, c) in {"2W2A4x": (2, 2, 4), "structure_alone_c2": (32, None, 2),
                               "structure_alone_c4": (32, None, 4), "quantization_alone": (2, None, 1),
                               "fp32_dense": (32, None, 1)}.items():
            t = find(trials, topo, w, a, c)
            if t is None:
                rows[key] = None
                continue
            rows[key] = {"design": t["design"], "weight_memory_bits": t["weight_memory_bits"],
                         "weight_memory_reduction": t["weight_memory_reduction"],
                         "weights_only_reduction": weights_only_reduction(t),
                         "activation_memory_bits": t["activation_memory_bits"],
                         "total_memory_bits": t["total_memory_bits"],
                         "test_accuracy": t["test_accuracy"],
                         "test_accuracy_change_vs_fp32": (t["test_accuracy"] - ref["test_accuracy"]) if ref else None}
        out[topo] = rows
    # deep/wide-sparse vs shallow-dense at no more weight memory and the same precisions
    versus = []
    for dense in dense_topologies:
        for s in [t for t in trials if t["topology"] == dense]:
            for topo in sparse_topologies:
                cands = [t for t in trials if t["topology"] == topo and t["w_bits"] == s["w_bits"]
                         and t["a_bits"] == s["a_bits"] and t["weight_memory_bits"] <= s["weight_memory_bits"]]
                if not cands:
                    continue
                best = min(cands, key=lambda t: t["error"])          # chosen on val, compared on test
                versus.append({"dense": s["design"], "dense_test_error": s["test_error"],
                               "dense_weight_memory_bits": s["weight_memory_bits"],
                               "sparse": best["design"], "sparse_test_error": best["test_error"],
                               "sparse_weight_memory_bits": best["weight_memory_bits"],
                               "sparse_wins": best["test_error"] < s["test_error"]})
    return {"reductions": out, "sparse_vs_dense": versus}


def kib(bits):
    return f"{bits / 8192:.2f}" if bits is not None else "-"


def markdown(res: dict) -> str:
    L = [f"# Method B: structured sparsity + low-bit weights and activations ({res['task']})", "",
         f"Space `{res['space_file']}` ({res['n_designs']} designs; {res['n_trained']} trained in this study), "
         f"study `{res['study']}`. Budget: {res['budget']}; training + measuring all designs took "
         f"{res['design_seconds_total'] / 60:.1f} min. Machine: {res['machine'].get('platform', '?')}, "
         f"{res['machine'].get('cpu_count', '?')} CPU cores, "
         f"torch threads {res['threads']}, device {res['device']}. Generated {res['date']} by "
         "`benchmarks/structured_pareto.py`; every number below comes from `results.json`.", "",
         "Memory figures are the memory model of `weightzip.analysis.memory` (KiB = 8192 bits): weight memory = "
         "kept weights x bits + block-mask bits + fp32 bias/BN (BN folded to scale+shift); activation memory = "
         "every layer input at its bits (data at 8 bits, logits at 32). They are NOT file sizes (the `.wz` "
         "sizes are listed separately).", "",
         "## Beside the thesis", "",
         "| claim (thesis) | topology | design | weight-memory reduction (all) | weights only | test acc | vs fp32 dense |",
         "|---|---|---|---|---|---|---|"]
    names = {"2W2A4x": f"2W/2A/4x = {THESIS['2W2A4x']:.0f}x", "structure_alone_c2": "structure alone 2x (c=2)",
             "structure_alone_c4": "structure alone (c=4)", "quantization_alone": f"quantization alone {THESIS['quantization_alone']:.0f}x (2-bit)",
             "fp32_dense": "fp32 dense reference"}
    for topo, rows in res["claims"]["reductions"].items():
        for key, r in rows.items():
            if r is None:
                L.append(f"| {names[key]} | {topo} | (not trained) | | | | |")
                continue
            drop = r["test_accuracy_change_vs_fp32"]
            L.append(f"| {names[key]} | {topo} | {r['design']} | {r['weight_memory_reduction']:.1f}x | "
                     f"{r['weights_only_reduction']:.1f}x | {r['test_accuracy']:.4f} | "
                     f"{'-' if drop is None else f'{100 * drop:+.2f} pt'} |")
    v = res["claims"]["sparse_vs_dense"]
    wins = sum(x["sparse_wins"] for x in v)
    L += ["", "Reading (generated from the rows above):", ""]
    for topo, rows in res["claims"]["reductions"].items():
        r = rows.get("2W2A4x")
        if r:
            met = "meets" if r["weight_memory_reduction"] >= THESIS["2W2A4x"] else "misses"
            L.append(f"- {topo}: 2W/2A/4x gives {r['weight_memory_reduction']:.1f}x weight memory counting "
                     f"everything ({met} the 50x target) and {r['weights_only_reduction']:.1f}x for the weight "
                     f"matrices alone, at test accuracy {r['test_accuracy']:.4f} "
                     f"({100 * (r['test_accuracy_change_vs_fp32'] or 0):+.2f} pt vs fp32 dense of the same topology).")
        q, c2 = rows.get("quantization_alone"), rows.get("structure_alone_c2")
        if q and c2:
            L.append(f"- {topo}: structure alone (c=2) {c2['weight_memory_reduction']:.1f}x, quantization alone "
                     f"(2-bit) {q['weight_memory_reduction']:.1f}x (thesis: 2x and 16x; below 16x because the "
                     "last layer keeps 8 bits and bias/BN stay fp32).")
    dense_pareto = sum(d["topology"] in res.get("dense_topologies", []) for d in res["pareto"])
    L.append(f"- sparse topologies beat the shallow-dense one in {wins} of {len(v)} same-precision comparisons at "
             f"no more weight memory; {len(res['pareto']) - dense_pareto} of the {len(res['pareto'])} Pareto "
             "designs are sparse topologies.")
    L += ["", "`all` counts bias/BN and the 8-bit last layer; `weights only` is fp32 weights / (kept weights x bits + "
          "block-mask bits).", "",
          f"### Sparse topologies vs the shallow-dense one (same precisions, no more weight memory): "
          f"sparse better in {wins} of {len(v)}", "",
          "| dense design | test err | W KiB | sparse design with <= W (best val) | test err | W KiB |", "|---|---|---|---|---|---|"]
    for x in v:
        L.append(f"| {x['dense']} | {x['dense_test_error']:.4f} | {kib(x['dense_weight_memory_bits'])} | "
                 f"{x['sparse']} | {x['sparse_test_error']:.4f} | {kib(x['sparse_weight_memory_bits'])} |")
    L += ["", f"## Pareto designs: val error vs total memory ({len(res['pareto'])}; thesis: about "
          f"{THESIS['pareto_designs']})", "",
          "| design | val err | test acc | test acc from .wz | W KiB | A KiB | peak A KiB | total KiB | W reduction | .wz bytes |",
          "|---|---|---|---|---|---|---|---|---|---|"]
    for d in res["pareto"]:
        wz = d.get("wz_test_accuracy")
        L.append(f"| {d['design']} | {d['error']:.4f} | {d['test_accuracy']:.4f} | {'-' if wz is None else f'{wz:.4f}'} | "
                 f"{kib(d['weight_memory_bits'])} | {kib(d['activation_memory_bits'])} | "
                 f"{kib(d['peak_activation_memory_bits'])} | {kib(d['total_memory_bits'])} | "
                 f"{d['weight_memory_reduction']:.1f}x | {d.get('file_bytes', '-')} |")
    L += ["", f"Pareto designs on val error vs weight memory only: {len(res['pareto_weight'])} "
          f"({', '.join(d['design'] for d in res['pareto_weight'])}).", "",
          f"Every Pareto design's `.wz` evaluates to its reported test accuracy: {res['wz_match']}.", "",
          "![front](front.png)", "", "![front weight](front_weight.png)", "", "![memory](memory_breakdown.png)", "",
          "## All designs", "", "| design | val err | test acc | W KiB | A KiB | total KiB | W reduction | s |",
          "|---|---|---|---|---|---|---|---|"]
    for d in sorted(res["trials"], key=lambda t: (t["topology"], -t["w_bits"], -t["a_bits"], t["compression"])):
        L.append(f"| {d['design']} | {d['error']:.4f} | {d['test_accuracy']:.4f} | {kib(d['weight_memory_bits'])} | "
                 f"{kib(d['activation_memory_bits'])} | {kib(d['total_memory_bits'])} | "
                 f"{d['weight_memory_reduction']:.1f}x | {d['seconds']:.0f} |")
    if res.get("notes"):
        L += ["", "## Notes", ""] + [f"- {n}" for n in res["notes"]]
    return "\n".join(L) + "\n"


def main(argv=None) -> dict:
    ap = C.parser(__doc__)
    ap.add_argument("--task", choices=sorted(SPACES), default="mnist")
    ap.add_argument("--space", help="space YAML (default: the task's)")
    ap.add_argument("--budget", type=float, default=None,
                    help="seconds of exploration this run (no new design starts after it); rerun to resume")
    C.add_args(ap, "device", "threads")
    ap.add_argument("--storage", help="database URL (default: SQLite in the work dir)")
    ap.add_argument("--epochs", type=int, help="override train.epochs of every design")
    ap.add_argument("--max-steps", type=int, help="override train.max_steps_per_epoch")
    ap.add_argument("--subset", type=int, help="training examples (smoke runs)")
    ap.add_argument("--width", type=float, help="width multiplier of every topology (vgg_small)")
    ap.add_argument("--workdir", help="study + all .wz (default runs/structured-pareto/<space name>)")
    C.add_arg(ap, "out", type=None, default=None,
              help="results folder (default benchmarks/results/structured-pareto-<task>)")
    C.add_arg(ap, "data_dir", help="dataset root (default $WEIGHTZIP_DATA)")
    args = ap.parse_args(argv)
    C.setup(args, threads=args.device == "cpu")
    space, space_path = derived_space(args.task, args)
    work = space_path.parent
    out = Path(args.out or C.RESULTS / f"structured-pareto-{args.task}")
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    r = explore(space.model, space_path, storage=args.storage, out_dir=work, device=args.device,
                timeout=args.budget, data_root=args.data_dir, log=lambda m: print(m, flush=True))
    seconds = time.perf_counter() - t0
    sparse = [t for t, v in space.topologies.items() if v.compression != [1]]
    dense = [t for t, v in space.topologies.items() if v.compression == [1]]
    notes = []
    # copy the report files and the .wz of the Pareto designs
    for name in ("front.png", "front_weight.png", "memory_breakdown.png", "pareto.md"):
        if (work / name).exists():
            shutil.copy2(work / name, out / name)
    if (work / "explore.json").exists():   # paths inside the repository made relative to it
        C.write_json(out / "explore.json", C.repo_relative(C.read_json(work / "explore.json")))
    designs = out / "designs"
    if designs.exists():
        shutil.rmtree(designs)
    designs.mkdir()
    keep = {d["design"]: d for d in r.pareto + r.pareto_weight}
    for d in keep.values():
        if d.get("wz_path") and Path(d["wz_path"]).exists():
            shutil.copy2(d["wz_path"], designs / Path(d["wz_path"]).name)
            d["wz_file"] = f"designs/{Path(d['wz_path']).name}"
    for d in r.trials:                                   # paths relative to the repository
        if d.get("wz_path") and Path(d["wz_path"]).is_relative_to(ROOT):
            d["wz_path"] = str(Path(d["wz_path"]).relative_to(ROOT))
    wz_match = all(d.get("wz_test_accuracy") == d["test_accuracy"] for d in keep.values())
    epochs = space.method.get("train", {}).get("epochs")
    notes.append(f"every design is trained from scratch for {epochs} epoch(s) at this budget; longer training "
                 "(--epochs) was not run here, so the low-bit designs are compared under-trained")
    if len(r.trials) < space.n_designs():
        notes.append(f"only {len(r.trials)} of {space.n_designs()} designs finished within the budget; "
                     "rerun the same command to resume the study")
    res = {
        "task": args.task, "space_file": str(space_path.relative_to(ROOT) if space_path.is_relative_to(ROOT) else space_path),
        "space": space.model_dump(mode="json"), "study": r.study_name, "n_designs": space.n_designs(),
        "n_trained": len(r.trials), "budget": (f"{args.budget:.0f} s this run" if args.budget else "whole space") +
        f", {space.method.get('train', {}).get('epochs')} epoch(s) per design", "seconds_this_run": seconds,
        "design_seconds_total": sum(t["seconds"] for t in r.trials),
        "device": args.device, "threads": torch.get_num_threads(), "machine": machine_info(args.device),
        "date": C.now(), "thesis": THESIS,
        "claims": claims(r.trials, sparse, dense), "pareto": r.pareto, "pareto_weight": r.pareto_weight,
        "wz_match": wz_match, "trials": r.trials, "notes": notes, "dense_topologies": dense,
        "overrides": {k: getattr(args, k) for k in ("epochs", "max_steps", "subset", "width")},
    }
    C.write_results(out / "results.json", res, out / "README.md", markdown(res))
    print(f"wrote {out}/README.md: {len(r.trials)} designs, {len(r.pareto)} on the front, "
          f".wz accuracies match: {wz_match} ({seconds:.0f}s)")
    return res


if __name__ == "__main__":
    main()
