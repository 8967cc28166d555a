"""Train the uncompressed baselines and time every zoo model; write JSON + Markdown results.

    python benchmarks/baselines.py                          # MNIST / Fashion-MNIST baselines + timing
    python benchmarks/baselines.py --only lenet5-mnist      # one baseline (repeatable)
    python benchmarks/baselines.py --only timing            # only the seconds-per-epoch table
    python benchmarks/baselines.py --only resnet20-cifar10 --device cuda            # full recipe
    python benchmarks/baselines.py --only vgg_small-cifar10 --epochs 5 --width 0.25  # CPU budget

Checkpoints are cached under ``runs/baselines/<model>-<data>.pt`` (see
:func:`weightzip.jobs.runs.ensure_baseline`): a finished one is reused, an interrupted one is resumed
(rerun the same command), one trained with other settings is retrained. Results go to
``benchmarks/results/baselines.json`` (entries of earlier runs not selected now are kept) and
``benchmarks/results/baselines.md``, which is generated from the JSON only.

Training recipes: :data:`weightzip.jobs.runs.RECIPES` (printed into the results). Timing: a few
training steps of every zoo model at its default size, on real batches of its dataset with
its recipe's batch size and optimizer, after warm-up steps; seconds per epoch are
EXTRAPOLATED as ``s/step x steps/epoch`` (validation excluded).
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from statistics import median

import torch

import _common as C
from weightzip.core.registry import list_models
from weightzip.jobs.runs import (
    BASELINES_DIR,
    build_model,
    default_data_for,
    ensure_baseline,
    make_loaders,
    recipe_for,
)
from weightzip.training.trainer import Callback, Trainer
from weightzip.training.config import TrainConfig, resolve_device
from weightzip.training.checkpoint import load_checkpoint, machine_info

RESULTS = C.RESULTS

# name -> (model, data, target test accuracy or None, trained by default)
BASELINES: dict[str, tuple[str, str, float | None, bool]] = {
    "lenet300_100-mnist": ("lenet300_100", "mnist", 0.982, True),
    "lenet5-mnist": ("lenet5", "mnist", 0.991, True),
    "mlp-fashion_mnist": ("mlp", "fashion_mnist", None, True),
    "lenet5-fashion_mnist": ("lenet5", "fashion_mnist", None, True),
    # CIFAR-10: far beyond 2 CPU cores at full size; run with --device cuda, or a budget
    "resnet20-cifar10": ("resnet20", "cifar10", None, False),
    "vgg_small-cifar10": ("vgg_small", "cifar10", None, False),
    "vgg16_cifar-cifar10": ("vgg16_cifar", "cifar10", None, False),
    "alexnet_cifar-cifar10": ("alexnet_cifar", "cifar10", None, False),
}

log = logging.getLogger("baselines")


# ---------------------------------------------------------------------------------------------
def run_baseline(name: str, args: argparse.Namespace) -> dict:
    model, data, target, _ = BASELINES[name]
    t0 = time.perf_counter()
    path = ensure_baseline(model, data, epochs=args.epochs, device=args.device, width=args.width,
                           root=args.runs, progress=args.progress)
    ck = load_checkpoint(path)
    rec_path = path.with_suffix(".json")
    record = C.read_json(rec_path)
    last = ck["metrics"][-1]
    test = ck["test"] or {}
    params = sum(t.numel() for k, t in ck["model"].items() if t.is_floating_point())
    entry = {
        "name": name if args.width is None else f"{name}-w{args.width:g}",
        "model": model,
        "data": data,
        "model_config": ck["model_config"],
        "epochs": ck["epoch"],
        "train_config": ck["train_config"],
        "data_args": (ck.get("meta") or {}).get("data_args", {}),
        "test_accuracy": test.get("accuracy"),
        "test_loss": test.get("loss"),
        "test_perplexity": test.get("perplexity"),
        "val_accuracy": last.get("val_accuracy"),
        "val_loss": last.get("val_loss"),
        "target_accuracy": target,
        "meets_target": None if target is None or test.get("accuracy") is None else test["accuracy"] >= target,
        "state_dict_floats": params,
        "train_time_s": record.get("total_time_s", ck.get("elapsed_s")),
        "s_per_epoch_measured": median(ck["epoch_times"]) if ck.get("epoch_times") else None,
        "machine": record.get("machine", machine_info(resolve_device(args.device))),
        "checkpoint": str(path),
        "this_invocation_s": time.perf_counter() - t0,
        "date": C.now(),
    }
    log.info("%s: test %s", entry["name"], test)
    return entry


# ---------------------------------------------------------------------------------------------
class _StepClock(Callback):
    def __init__(self) -> None:
        self.stamps: list[float] = []

    def on_after_step(self, trainer, step):
        if trainer.device.type == "cuda":
            torch.cuda.synchronize(trainer.device)
        self.stamps.append(time.perf_counter())


def time_model(model: str, args: argparse.Namespace, loader_cache: dict) -> dict:
    """Seconds per training step of ``model`` (default size) on its dataset, and per epoch."""
    data = default_data_for(model)
    rec = recipe_for(model, data)
    cfg = TrainConfig(**{**rec["train"], "device": args.device, "progress": False, "test_at_end": False,
                         "max_steps_per_epoch": args.warmup_steps + args.timing_steps + 1, "epochs": 1})
    key = (data, cfg.batch_size)
    if key not in loader_cache:
        opts = {k: v for k, v in rec["data"].items() if k != "eval_batch_size"}
        loader_cache[key] = make_loaders(data, cfg.batch_size, **opts)
    loaders = loader_cache[key]
    torch.manual_seed(0)
    net = build_model(model, loaders.task, loaders.info, rec["model"])
    clock = _StepClock()
    only_train = argparse.Namespace(train=loaders.train, val=None, test=None, task=loaders.task)
    Trainer(net, cfg, only_train, callbacks=[clock]).fit()
    # step i takes stamps[i] - stamps[i-1]; the first `warmup_steps` steps are not timed
    steps = [b - a for a, b in zip(clock.stamps, clock.stamps[1:])][args.warmup_steps:]
    s_step = median(steps)
    per_epoch = len(loaders.train)
    entry = {
        "model": model,
        "data": data,
        "params": sum(p.numel() for p in net.parameters()),
        "batch_size": cfg.batch_size,
        "bptt": cfg.bptt if loaders.task == "lm" else None,
        "optimizer": cfg.optimizer,
        "timed_steps": len(steps),
        "warmup_steps": args.warmup_steps,
        "s_per_step": s_step,
        "steps_per_epoch": per_epoch,
        "s_per_epoch_extrapolated": s_step * per_epoch,
        "device": str(resolve_device(args.device)),
        "threads": torch.get_num_threads(),
        # other processes on the machine slow the steps down: say how busy it was
        "load_avg_1min": C.load_average(),
        "date": C.now(),
    }
    log.info("%s on %s: %.3f s/step x %d steps = %.0f s/epoch (extrapolated)", model, data, s_step,
             per_epoch, s_step * per_epoch)
    return entry


# ---------------------------------------------------------------------------------------------


def _seconds(s: float) -> str:
    return f"{s:.1f}" if s < 100 else f"{s:.0f}"


def _recipe(tc: dict) -> str:
    parts = [f"{tc['optimizer']} lr {tc['lr']:g}"]
    if tc["optimizer"] == "sgd" and tc.get("momentum"):
        parts.append(f"momentum {tc['momentum']:g}" + (" nesterov" if tc.get("nesterov") else ""))
    if tc.get("weight_decay"):
        parts.append(f"wd {tc['weight_decay']:g}")
    parts.append(tc["schedule"] + (f" {tc['milestones']}" if tc["schedule"] == "multistep" else ""))
    parts.append(f"batch {tc['batch_size']}")
    if tc.get("grad_clip"):
        parts.append(f"clip {tc['grad_clip']:g}")
    return ", ".join(parts)


def write_markdown(results: dict, path: Path) -> None:
    lines = ["# Baselines", "",
             "Generated by `python benchmarks/baselines.py` from `baselines.json`; do not edit by hand.",
             "Uncompressed models trained with the recipes of `weightzip.jobs.runs.RECIPES`; accuracy on the",
             "full test split, validation on the held-out part of the training set (`val_size`).",
             "Times are wall-clock on the machine named below, which may be shared with other jobs.", ""]
    base = results.get("baselines", {})
    if base:
        lines += C.md_header(["baseline", "epochs", "recipe", "test acc", "target", "met", "val acc",
                              "s/epoch (measured)", "train time", "device, threads"])
        for name, e in sorted(base.items()):
            m = e.get("machine", {})
            lines.append(
                f"| {name} | {e['epochs']} | {_recipe(e['train_config'])} | {C.fmt(e['test_accuracy'])} "
                f"| {C.fmt(e['target_accuracy'], '.3f')} | {C.fmt(e['meets_target'])} | {C.fmt(e['val_accuracy'])} "
                f"| {C.fmt(e['s_per_epoch_measured'], '.1f')} | {C.fmt(e['train_time_s'], '.0f')} s "
                f"| {m.get('device', '-')}, {m.get('torch_threads', '-')} |")
        lines.append("")
    timing = results.get("timing", {})
    if timing:
        any_e = next(iter(timing.values()))
        lines += ["## Seconds per training epoch, every zoo model at default size", "",
                  f"EXTRAPOLATED, not measured over a whole epoch: the median time of {any_e['timed_steps']} "
                  f"training steps (after {any_e['warmup_steps']} warm-up step(s)) on real batches of the dataset "
                  "with the recipe's batch size and optimizer, times the number of steps in one epoch; "
                  "validation excluded. The load average is the machine's 1-minute load when the model was "
                  "timed: on a shared machine, a load above the number of CPUs inflates the times.", "",
                  *C.md_header(["model", "data", "params", "batch", "s/step", "steps/epoch",
                                "s/epoch (extrapolated)", "device, threads", "load avg"])]
        for name, e in sorted(timing.items()):
            batch = f"{e['batch_size']}" + (f" x bptt {e['bptt']}" if e.get("bptt") else "")
            lines.append(f"| {name} | {e['data']} | {e['params']:,} | {batch} | {e['s_per_step']:.3f} "
                         f"| {e['steps_per_epoch']} | {_seconds(e['s_per_epoch_extrapolated'])} "
                         f"| {e['device']}, {e['threads']} | {C.fmt(e.get('load_avg_1min'), '.1f')} |")
        lines.append("")
    m = results.get("machine", {})
    if m:
        lines += [f"Machine of the last run: {m.get('platform')}, {m.get('cpu_count')} CPUs "
                  f"(torch threads {m.get('torch_threads')}), torch {m.get('torch')}.", ""]
    C.write_text(path, "\n".join(lines))


# ---------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    p = C.parser(__doc__, paragraph=True, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", action="append", metavar="NAME",
                   help=f"a baseline ({', '.join(BASELINES)}) or 'timing'; repeatable "
                        "[default: the MNIST/Fashion-MNIST baselines and timing]")
    C.add_arg(p, "device", help="cpu, cuda or auto [default: cpu]")
    p.add_argument("--epochs", type=int, help="override the recipe's epochs (a CPU budget for CIFAR)")
    p.add_argument("--width", type=float, help="width multiplier for the CIFAR models (cached separately)")
    C.add_arg(p, "threads", help="torch CPU threads [default: 1]")
    C.add_arg(p, "runs", default=BASELINES_DIR, help="checkpoint cache [runs/baselines]")
    p.add_argument("--timing-steps", type=int, default=5, help="timed training steps per model [5]")
    p.add_argument("--warmup-steps", type=int, default=1, help="untimed warm-up steps per model [1]")
    p.add_argument("--results", type=Path, default=RESULTS, help="output folder [benchmarks/results]")
    p.add_argument("--progress", action="store_true", help="progress bars")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    C.setup(args)

    selected = args.only or [n for n, (*_, default) in BASELINES.items() if default] + ["timing"]
    unknown = [n for n in selected if n != "timing" and n not in BASELINES]
    if unknown:
        p.error(f"unknown baseline(s) {', '.join(unknown)}; valid: {', '.join(BASELINES)}, timing")

    args.results.mkdir(parents=True, exist_ok=True)
    json_path = args.results / "baselines.json"
    produced: dict[str, dict] = {"baselines": {}, "timing": {}}  # by this invocation

    def save() -> None:
        # re-read the file each time: entries written meanwhile by other runs (e.g. merged GPU
        # results) are kept; only the entries produced here are replaced
        results = C.read_json(json_path)
        for section, entries in produced.items():
            results.setdefault(section, {}).update(entries)
        results["machine"] = machine_info(resolve_device(args.device))
        results["generated_by"] = "benchmarks/baselines.py"
        C.write_json(json_path, results)
        write_markdown(results, args.results / "baselines.md")

    for name in selected:
        if name == "timing":
            continue
        entry = run_baseline(name, args)
        produced["baselines"][entry["name"]] = entry
        save()
    if "timing" in selected:
        logging.getLogger("weightzip.training.trainer").setLevel(logging.WARNING)  # no per-epoch lines here
        cache: dict = {}
        for model in list_models():
            if model.endswith("_tiny"):
                continue
            produced["timing"][model] = time_model(model, args, cache)
            save()
    save()
    print(f"wrote {json_path} and {args.results / 'baselines.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
