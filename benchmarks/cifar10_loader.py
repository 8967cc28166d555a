"""Is the CIFAR-10 data pipeline the bottleneck of CPU training? (issue 23, item 1)

Measures, in one process and interleaved (``--rounds`` rounds of each):

* **loader**: images/s of ``get_loaders("cifar10", batch_size=128, augment=True).train`` alone
  (random crop from a 4-pixel zero padding + horizontal flip + normalization, collated batches,
  the same loader ``weightzip train MODEL --data cifar10`` uses), iterating ``--batches`` batches;
* **step**: images/s of the training step alone for each ``--models`` zoo model (forward +
  cross-entropy + backward + SGD step, batch 128, on batches prefetched from the loader, so no
  data work is in it).

The loader must be several times faster than the fastest step for the data not to be the
bottleneck (the pipeline runs in the training process between steps, so its time adds to
the step's: overhead = step rate / loader rate).

    python benchmarks/cifar10_loader.py                   # resnet20, writes results/cifar10/loader.md

Run it with the background CIFAR job paused (``kill -STOP`` / ``-CONT`` its pid), never beside
another timing benchmark.

Threads: torch's default (every core). The page records the 1-minute load at the start.
"""
from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

import _common as C
from weightzip.data import get_loaders
from weightzip.models import create_model


def loader_rate(loader, n: int) -> float:
    """Images per second of ``n`` batches drawn from ``loader`` (a fresh iterator)."""
    it = iter(loader)
    next(it)                                   # first batch: iterator start-up, not counted
    t0 = time.perf_counter()
    seen = 0
    for _ in range(n):
        x, _y = next(it)
        seen += x.shape[0]
    return seen / (time.perf_counter() - t0)


def step_rate(model: torch.nn.Module, batches: list, opt: torch.optim.Optimizer) -> float:
    """Images per second of forward + loss + backward + SGD step over prefetched ``batches``."""
    model.train()
    loss_fn = torch.nn.CrossEntropyLoss()
    x, y = batches[0]
    loss_fn(model(x), y).backward()            # warm-up step, not counted
    opt.zero_grad(set_to_none=True)
    t0 = time.perf_counter()
    seen = 0
    for x, y in batches[1:]:
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        seen += x.shape[0]
    return seen / (time.perf_counter() - t0)


def main(argv=None) -> None:
    ap = C.parser(__doc__)
    ap.add_argument("--models", nargs="+", default=["resnet20"])
    ap.add_argument("--batches", type=int, default=40, help="batches per loader measurement")
    ap.add_argument("--steps", type=int, default=10, help="training steps per step measurement")
    ap.add_argument("--rounds", type=int, default=3)
    C.add_arg(ap, "out", type=str, default=str(C.RESULTS / "cifar10"))
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()[0]
    torch.manual_seed(0)
    ld = get_loaders("cifar10", batch_size=128, augment=True)
    it = iter(ld.train)
    batches = [next(it) for _ in range(args.steps + 1)]
    models = {}
    for name in args.models:
        m = create_model(name)
        models[name] = (m, torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9))
    rates: dict[str, list[float]] = {"loader": []} | {n: [] for n in args.models}
    for r in range(args.rounds):
        rates["loader"].append(loader_rate(ld.train, args.batches))
        for name, (m, opt) in models.items():
            rates[name].append(step_rate(m, batches, opt))
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.0f} img/s" for k, v in rates.items()), flush=True)
    best = {k: max(v) for k, v in rates.items()}
    res = {"threads": torch.get_num_threads(), "load_1min": load, "machine": f"{platform.machine()}, {os.cpu_count()} cores",
           "batches": args.batches, "steps": args.steps, "rounds": args.rounds, "rates": rates, "best": best}
    C.write_json(out / "loader.json", res, indent=1)
    lines = ["# CIFAR-10: loader images/s against the training step (issue 23, item 1)", "",
             "Produced by `python benchmarks/cifar10_loader.py` (the background CIFAR job paused while it ran).",
             "Batch 128, crop + flip augmentation, "
             f"{res['threads']} torch threads, {res['machine']}, 1-minute load {load:.2f} at the start; "
             f"best of {args.rounds} interleaved rounds ({args.batches} loader batches, {args.steps} steps per round).", "",
             "| what | images/s | loader time per step image |", "|---|---|---|",
             f"| loader alone (augment + normalize + collate) | {best['loader']:.0f} | - |"]
    for name in args.models:
        lines.append(f"| {name} training step (fwd + bwd + SGD) | {best[name]:.0f} | "
                     f"{100 * best[name] / best['loader']:.1f}% of the step's time |")
    lines += ["", "The loader runs in the training process between steps: the last column is the time the data "
              "pipeline adds to a step (step rate / loader rate). Under a few percent, data is not the bottleneck."]
    C.write_text(out / "loader.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
