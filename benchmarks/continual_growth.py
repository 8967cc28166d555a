"""Does preferential attachment help a sparse net learn a task sequence? (Hou & Kwok, arXiv 1805.01891)

A LeNet-300-100 MLP learns task 1, is pruned to 8% / 9% / 26% of its connections per layer
(about 92% sparse), and then learns the remaining tasks, growing the same number of new
connections per task in every arm (EQUAL parameter counts after every task; see
:mod:`weightzip.training.continual`):

    finetune     plain fine-tuning of the sparse net: new connections placed uniformly, nothing frozen
    random       new connections placed uniformly at random; old connections frozen
    pa-product   new connection i -> j drawn with probability ~ (d_i + 1)(d_j + 1); old ones frozen
    pa-sum       ... ~ d_i + d_j + 1; old ones frozen

on two sequences: permuted MNIST (5 tasks, task 1 = the original pixels, one shared 10-way
head) and split MNIST (5 tasks of 2 digits, multi-head: each task is scored on its own two
output units, the task identity is given at test time).

Budget (stated in the results): 1 epoch per task (plus 1 dense epoch on task 1 before pruning),
SGD lr 0.05 momentum 0.9 batch 64; permuted MNIST trains every task on the same first 10,000
training images (permuted), split MNIST on the images of its two digits among the first 30,000;
tests on the 10,000 test images (permuted / of the task's digits); 3 seeds. A few minutes on one
CPU core. Outputs in ``--out``: ``continual_growth.json`` / ``.md`` and ``continual_growth.png``
(average accuracy over the tasks seen so far, and accuracy on task 1, after each task).

    python benchmarks/continual_growth.py
    python benchmarks/continual_growth.py --seeds 0 --benchmarks permuted
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import _common as C
from weightzip.analysis.powerlaw import fit_degrees, network_degrees
from weightzip.training.continual import ContinualConfig, compare_arms, mnist_tensors, permuted_mnist, split_mnist
from weightzip.training.checkpoint import machine_info

ROOT = C.ROOT
ARMS = ("finetune", "random", "pa-product", "pa-sum")
LABELS = {"finetune": "fine-tuning (nothing frozen)", "random": "random growth + freezing",
          "pa-product": "PA growth (product) + freezing", "pa-sum": "PA growth (sum) + freezing"}


def tasks_for(name: str, data, args):
    xtr, ytr, xte, yte = data
    if name == "permuted":
        n = args.per_task
        return permuted_mnist(xtr[:n], ytr[:n], xte, yte, args.tasks, seed=1000 + args.perm_seed)
    return split_mnist(xtr, ytr, xte, yte, multi_head=True)


def degree_summary(masks) -> dict[str, Any]:
    """Tail statistics of the final connectivity: whole network and the first layer's in-degrees."""
    layers = [(f"fc{k + 1}", "linear", m.float(), 1) for k, m in enumerate(masks)]
    g = network_degrees(layers)
    out = {}
    for key, deg in (("network", g["network"]), ("fc1_in", g["layers"][0].in_degree)):
        s = fit_degrees(deg, truncated=False)
        fit = s.get("fit") or {}
        out[key] = {"max": s["max"], "std": s["std"], "alpha": fit.get("alpha"), "xmin": fit.get("xmin"),
                    "verdict": s["verdict"]}
    return out


def run(name: str, data, seed: int, args) -> dict[str, Any]:
    cfg = ContinualConfig(seed=seed, epochs=args.epochs, first_epochs=args.epochs, lr=args.lr,
                          batch_size=args.batch_size, growth=args.growth)
    tasks = tasks_for(name, data, args)
    print(f"== {name}, seed {seed}: {len(tasks)} tasks", flush=True)
    res = compare_arms(tasks, cfg, arms=("finetune", "random", "pa"), rules=["product", "sum"],
                       log=C.say)
    out = {}
    for label, r in res["runs"].items():
        out[label] = {k: r[k] for k in ("acc", "avg_acc", "forgetting", "learning_acc", "connections",
                                        "per_layer_connections", "seconds")}
        out[label]["degrees"] = degree_summary(r["masks"])
        print(f"   {label:11s} avg acc {100 * r['avg_acc']:.2f}  forgetting {100 * r['forgetting']:.2f}  "
              f"learning {100 * r['learning_acc']:.2f}  ({r['seconds']:.0f}s)", flush=True)
    return {"start_acc": res["start_acc"], "arms": out, "tasks": [t.name for t in tasks],
            "train_sizes": [len(t.y_train) for t in tasks], "test_sizes": [len(t.y_test) for t in tasks],
            "config": cfg.model_dump()}


def _ms(xs: list[float], scale: float = 100.0) -> str:
    a = np.asarray(xs, dtype=float) * scale
    return f"{a.mean():.2f} ± {a.std():.2f}" if a.size > 1 else f"{a.mean():.2f}"


def markdown(results: dict[str, Any], meta: dict[str, Any]) -> str:
    L = ["# Continual learning by preferential-attachment growth", "",
         "A LeNet-300-100 learns task 1, is pruned to 8% / 9% / 26% of its connections per layer (magnitude, "
         "then 1 epoch of fine-tuning), and learns each next task with the same number of new connections in "
         "every arm (25% of each layer's task-1 count per task; a new multi-head output gets as many as task 1's "
         "head had), so all arms have EQUAL parameter counts after every task. `random` and `pa-*` freeze the "
         "old connections (and the biases) by gradient masking and train only the new ones; `finetune` trains "
         "every connection. New connections start at 0. Method and settings: `weightzip.training.continual` "
         "(everything here is [reconstructed] from the idea of Hou & Kwok, arXiv 1805.01891).", "",
         f"Budget: {meta['epochs']} epoch(s) per task (and 1 dense epoch on task 1 before pruning), SGD lr "
         f"{meta['lr']} momentum 0.9 batch {meta['batch_size']}; permuted MNIST: {meta['tasks']} tasks on the "
         f"first {meta['per_task']:,} training images (task 1 unpermuted), single shared head; split MNIST: 5 "
         f"tasks of 2 digits from the first {meta['train_subset']:,} training images, multi-head (each task scored "
         f"on its own 2 output units, task identity given at test). Test: the 10,000 test images (permuted / of "
         f"the task's digits). Seeds: {', '.join(map(str, meta['seeds']))} (mean ± std). Machine: "
         f"{meta['machine'].get('processor')}, torch {meta['machine'].get('torch')}, "
         f"{meta['machine'].get('torch_threads')} thread(s); {meta['seconds'] / 60:.1f} min.", "",
         "Average accuracy: mean test accuracy over all tasks after the last one; forgetting: mean over tasks "
         "but the last of (best accuracy seen - final accuracy); learning accuracy: mean accuracy on each task "
         "right after learning it (Chaudhry et al. 2018). All in %. `finetune` and `random` draw the same "
         "uniform connections (same seed), so they differ only in the freezing.", ""]
    verdicts = []
    for name, per_seed in results.items():
        seeds = list(per_seed)
        first = per_seed[seeds[0]]
        L += [f"## {name} MNIST", "", f"Tasks: {', '.join(first['tasks'])}; training images per task: "
              f"{', '.join(map(str, first['train_sizes']))}.", ""]
        head = ["arm", "average accuracy", "forgetting", "learning accuracy", "connections (task 1 -> last)",
                "fc1 in-degree max", "whole-net degree verdict"]
        L += C.md_header(head)
        for arm in ARMS:
            rs = [per_seed[s]["arms"][arm] for s in seeds if arm in per_seed[s]["arms"]]
            if not rs:
                continue
            conns = rs[0]["connections"]
            verd = sorted({r["degrees"]["network"]["verdict"] for r in rs})
            L.append(f"| {LABELS[arm]} | {_ms([r['avg_acc'] for r in rs])} | {_ms([r['forgetting'] for r in rs])} | "
                     f"{_ms([r['learning_acc'] for r in rs])} | {conns[0]:,} -> {conns[-1]:,} | "
                     f"{_ms([r['degrees']['fc1_in']['max'] for r in rs], 1.0)} | {', '.join(verd)} |")
        L.append("")
        for pa in ("pa-product", "pa-sum"):
            d_rand = [per_seed[s]["arms"][pa]["avg_acc"] - per_seed[s]["arms"]["random"]["avg_acc"] for s in seeds]
            d_ft = [per_seed[s]["arms"][pa]["avg_acc"] - per_seed[s]["arms"]["finetune"]["avg_acc"] for s in seeds]
            wins_r = sum(d > 0 for d in d_rand)
            wins_f = sum(d > 0 for d in d_ft)
            L.append(f"- {pa} vs random growth: average accuracy {_ms(d_rand)} points "
                     f"(better in {wins_r} of {len(seeds)} seeds); vs fine-tuning: {_ms(d_ft)} points "
                     f"(better in {wins_f} of {len(seeds)} seeds).")
            verdicts.append((name, pa, wins_r, wins_f, len(seeds), float(np.mean(d_rand)), float(np.mean(d_ft))))
        L.append("")
    L += ["![accuracy per task: mean over the tasks seen so far, and on task 1](continual_growth.png)", "",
          "## Does preferential attachment help?", ""]
    for name, pa, wins_r, wins_f, n, mr, mf in verdicts:
        if wins_r == n and mr > 0:
            vs_r = "helps against random placement (every seed)"
        elif wins_r == 0 and mr < 0:
            vs_r = "is worse than random placement (every seed)"
        else:
            vs_r = "is not distinguishable from random placement (mixed across seeds)"
        if wins_f == n and mf > 0:
            vs_f = "beats plain fine-tuning at the same parameter count (every seed)"
        elif wins_f == 0 and mf < 0:
            vs_f = "loses to plain fine-tuning at the same parameter count (every seed)"
        else:
            vs_f = f"is mixed against plain fine-tuning (better in {wins_f} of {n} seeds)"
        L.append(f"- {name}: {pa} {vs_r}, and {vs_f}.")
    L += ["", "Caveats: one epoch per task on a subset, a single architecture and growth rate; freezing "
          "protects old connections but the new ones still change the shared hidden units (and, with one "
          "shared head, the outputs), so the growing arms forget too.", ""]
    return "\n".join(L)


def plot(results: dict[str, Any], path: Path) -> None:
    plt = C.pyplot()
    fig, axes = plt.subplots(2, len(results), figsize=(5.2 * len(results), 7.0), squeeze=False)
    for col, (name, per_seed) in enumerate(results.items()):
        for k, arm in enumerate(ARMS):
            accs = [np.asarray(per_seed[s]["arms"][arm]["acc"], dtype=float) for s in per_seed]
            T = accs[0].shape[0]
            seen = np.array([[np.nanmean(a[t, :t + 1]) for t in range(T)] for a in accs]) * 100  # (seeds, T)
            first = np.array([a[:, 0] for a in accs]) * 100                                     # (seeds, T)
            x = np.arange(1, T + 1)
            for row, y in ((0, seen), (1, first)):
                ax = axes[row, col]
                ax.errorbar(x, y.mean(0), yerr=y.std(0) if len(accs) > 1 else None, marker="o", ms=3,
                            capsize=2, color=f"C{k}", label=LABELS[arm])
        axes[0, col].set_title(f"{name} MNIST: mean accuracy over tasks seen", fontsize=9)
        axes[1, col].set_title(f"{name} MNIST: accuracy on task 1", fontsize=9)
        for row in range(2):
            axes[row, col].set_xlabel("tasks learned")
            axes[row, col].set_xticks(range(1, len(next(iter(per_seed.values()))["tasks"]) + 1))
            axes[row, col].set_ylabel("test accuracy (%)")
            axes[row, col].grid(alpha=0.3)
        axes[0, col].legend(fontsize=7)
    C.save_figure(fig, path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    ap = C.parser(__doc__)
    ap.add_argument("--benchmarks", nargs="*", default=["permuted", "split"], choices=["permuted", "split"])
    ap.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    ap.add_argument("--tasks", type=int, default=5, help="permuted MNIST tasks")
    ap.add_argument("--per-task", type=int, default=10000, help="permuted MNIST training images per task")
    ap.add_argument("--train-subset", type=int, default=30000, help="training images split MNIST draws from")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--growth", type=float, default=0.25)
    ap.add_argument("--perm-seed", type=int, default=0)
    C.add_args(ap, "data_dir", "out", "threads")
    args = ap.parse_args(argv)
    C.setup(args, "out")
    t0 = time.perf_counter()
    data = mnist_tensors(args.data_dir, train_subset=max(args.train_subset, args.per_task))
    results: dict[str, Any] = {}
    for name in args.benchmarks:
        results[name] = {str(s): run(name, data, s, args) for s in args.seeds}
    meta = {"seeds": args.seeds, "tasks": args.tasks, "per_task": args.per_task, "train_subset": args.train_subset,
            "epochs": args.epochs, "lr": args.lr, "batch_size": args.batch_size, "growth": args.growth,
            "machine": machine_info("cpu"), "seconds": time.perf_counter() - t0}
    C.write_results(args.out / "continual_growth.json", {"meta": meta, "results": results},
                    args.out / "continual_growth.md", markdown(results, meta))
    plot(results, args.out / "continual_growth.png")
    print(f"wrote {args.out / 'continual_growth.md'} ({meta['seconds'] / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
