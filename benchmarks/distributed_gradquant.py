"""Data-parallel training with quantized gradients: bytes on the wire vs accuracy (issue 8).

    python benchmarks/distributed_gradquant.py                  # the committed results (~20 min)
    python benchmarks/distributed_gradquant.py --quick          # smoke test (1-2 min)
    python benchmarks/distributed_gradquant.py --workers 2      # skip the 4-process runs
    python benchmarks/distributed_gradquant.py --longer         # 2-bit vs fp32 at 3 full epochs (MLP)

What runs: LeNet-5 on MNIST and the MLP (2 x 256) on Fashion-MNIST, trained from the same
random initialisation by W = 2 (and 4) gloo processes on 127.0.0.1 (one thread each), with

* gradients: fp32 all-reduce; 2-, 3- and 8-bit stochastic quantization with and without
  clipping at 3 standard deviations (:mod:`weightzip.training.distributed.grad_quant`, one scale per
  parameter tensor); 2-bit clipped with error feedback (W = 2); PowerSGD rank 1 (PyTorch's
  hook, counted; fp32 weights, W = 2). W = 4: fp32 and 2-bit with/without clipping, fp32 weights;
* weights: full precision (a ``finetune`` stage) or loss-aware ternary (a ``loss_aware`` stage,
  ``mode: lat``), both run as a one-stage compression recipe through
  :class:`weightzip.methods.pipeline.Pipeline` - the same path as ``weightzip compress``.

Budget (2 shared CPU cores): a training subset, few epochs, Adam with a cosine decay, batch per
process as given (global batch = W x batch); the test set is evaluated in full (10,000), split
among the processes. Every run starts from the same seed, so runs differ only by their gradient
communication. The per-step training loss (mean over processes) gives the loss curves.

Bytes (per worker, see ``docs/distributed.md``): ``payload`` = what a worker contributes to the
collectives per step (its packets with their fp32 scales; fp32 tensors for all-reduce), the
quantity the paper counts; ``wire`` = what it transmits under ring algorithms (all-gather:
(W-1) x packet; all-reduce: 2 (W-1)/W x tensor). PyTorch's uint8 ``quantization_pertensor_hook``
runs on NCCL only; its bytes are computed from the bucket sizes (``estimate_step_bytes``), as are
those of every scheme in the analytic table.

Also measured without processes ("effect of clipping"): for one real gradient per model, the
relative error ``E ||Q(g) - g||^2 / ||g||^2`` and bias ``||mean_r Q_r(g) - g|| / ||g||`` of each
quantizer over repeated draws.
"""
from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch

import _common as C

torch.set_num_threads(1)

RESULTS = C.RESULTS
NAME = "distributed_gradquant"

TASKS = [("lenet5", "mnist"), ("mlp", "fashion_mnist")]
GRADS = ["fp32", "mbit:bits=2,clip=3", "mbit:bits=2", "mbit:bits=3,clip=3", "mbit:bits=3",
         "mbit:bits=8,clip=3", "mbit:bits=8"]
EXTRA = ["mbit:bits=2,clip=3,error_feedback=true"]  # tried for the 2-bit target, W = 2
EXTRA_FP = ["powersgd:powersgd_rank=1,powersgd_start_iter=10"]  # PyTorch's hook, fp weights, W = 2
GRADS_W4 = ["fp32", "mbit:bits=2,clip=3", "mbit:bits=2"]
ANALYTIC = ["fp32", "mbit:bits=8", "mbit:bits=3", "mbit:bits=2", "ternary", "sign", "torch_pertensor",
            "powersgd:powersgd_rank=1", "powersgd:powersgd_rank=4"]


# ---------------------------------------------------------------------------------------------
# Worker side
# ---------------------------------------------------------------------------------------------
class LossCurve:
    """Trainer callback: this process's training loss after every step."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_after_step(self, trainer, step: int) -> None:
        self.losses.append(float(trainer.loss.detach()))


def _sharded_test(model, loaders, rank: int, world: int) -> dict[str, float]:
    """Accuracy and loss on the whole test set, each process evaluating its 1/W (summed over ranks)."""
    import torch.distributed as dist

    from weightzip.training.distributed.launch import shard_loader
    from weightzip.training.evaluate import evaluate
    part = shard_loader(loaders.test, rank, world)
    n = len(part.sampler) if hasattr(part, "sampler") else None
    m = evaluate(model, part, loaders.task, "cpu")
    t = torch.tensor([m["accuracy"] * n, m["loss"] * n, n], dtype=torch.float64)
    dist.all_reduce(t)
    return {"accuracy": float(t[0] / t[2]), "loss": float(t[1] / t[2]), "examples": int(t[2])}


def _context_class():
    from weightzip.methods.base import StageContext

    class BenchContext(StageContext):
        """Adds the loss-curve callback to every fit; evaluates on the sharded test set once trained."""

        def __init__(self, *a, rank: int = 0, world: int = 1, **kw):
            super().__init__(*a, **kw)
            self.rank, self.world, self.curve, self.trained = rank, world, LossCurve(), False

        def fit(self, model, train, callbacks=(), optimizer=None, tag="fit"):
            out = super().fit(model, train, [*callbacks, self.curve], optimizer=optimizer, tag=tag)
            self.trained = True
            self.fit_out = out
            return out

        def evaluate(self, model, split="val"):
            if not self.trained:  # the pipeline's look at the untrained model: skipped (budget)
                return {"loss": math.nan, "accuracy": math.nan}
            return _sharded_test(model, self.loaders, self.rank, self.world)

    return BenchContext


def _run_one(rank: int, world: int, task: tuple[str, str], weights: str, grad: str, loaders, plan: dict
             ) -> dict[str, Any] | None:
    import torch.distributed as dist

    from weightzip.training.distributed import launch
    from weightzip.methods.pipeline import Pipeline
    from weightzip.core.recipe import Recipe
    from weightzip.jobs.runs import build_model
    from weightzip.training.config import seed_everything
    model_name, data = task
    seed_everything(plan["seed"])
    model = build_model(model_name, loaders.task, loaders.info)
    launch.configure(grad)
    train = {"epochs": plan["epochs"], "optimizer": "adam", "weight_decay": 0.0, "schedule": "cosine",
             "batch_size": plan["batch_size"], "seed": plan["seed"], "device": "cpu", "progress": False,
             "test_at_end": False, "max_steps_per_epoch": plan.get("max_steps")}
    if weights == "fp":
        stage = {"method": "finetune", "train": {**train, "lr": plan["lr_fp"]}}
    else:
        stage = {"method": "loss_aware", "mode": plan["laq_mode"], "train": {**train, "lr": plan["lr_laq"]}}
    recipe = Recipe.from_dict({"name": f"{weights}-weights", "stages": [stage]})
    ctx = _context_class()(loaders=loaders, device="cpu", seed=plan["seed"], log=lambda m: None,
                           rank=rank, world=world)
    t0 = time.perf_counter()
    result = Pipeline(recipe, ctx).run(model)
    seconds = time.perf_counter() - t0
    test = result.stages[-1].metrics["val"]  # BenchContext.evaluate: the full test set, sharded
    curves = [None] * world
    dist.all_gather_object(curves, ctx.curve.losses)
    launch.configure(None)
    if rank != 0:
        return None
    fit = ctx.fit_out
    steps = min(len(c) for c in curves)
    curve = [sum(c[i] for c in curves) / world for i in range(steps)]
    d = fit.get("distributed") or {}
    return {"model": model_name, "data": data, "world_size": world, "weights": weights,
            "grad": grad, "grad_label": d.get("grad_quant_label"), "grad_config": d.get("grad_quant"),
            "test_accuracy": test["accuracy"], "test_loss": test["loss"], "test_examples": test["examples"],
            "train_loss_last_epoch": fit["history"][-1]["train_loss"], "comm": d.get("comm"),
            "epochs": [{k: v for k, v in h.items()} for h in fit["history"]],
            "steps": fit["global_step"], "seconds": seconds, "curve": curve}


def worker(rank: int, world: int, plan: dict) -> list[dict]:
    """Every (task, weights, gradients) run of ``plan`` for this world size, in order."""
    from weightzip.jobs.runs import make_loaders

    out = []
    for model_name, data in plan["tasks"]:
        loaders = make_loaders(data, plan["batch_size"], subset=plan["subset"], val_size=0,
                               eval_batch_size=1000, seed=plan["seed"], eval_subset=plan.get("eval_subset"))
        for weights in plan["weights"]:
            for grad in plan["grads"][weights]:
                r = _run_one(rank, world, (model_name, data), weights, grad, loaders, plan)
                if r is not None:
                    out.append(r)
                    print(f"  W={world} {model_name}/{data} {weights:>2} {r['grad_label']:<16} "
                          f"acc {r['test_accuracy']:.4f}  {r['comm']['payload_bytes_per_step']:>10,.0f} B/step  "
                          f"{r['seconds']:.0f}s", flush=True)
    return out


# ---------------------------------------------------------------------------------------------
# Parent side: analytic bytes, quantization error, tables and plots
# ---------------------------------------------------------------------------------------------
def analytic_bytes(tasks, worlds) -> list[dict]:
    from weightzip.training.distributed import GradQuantConfig, estimate_step_bytes
    from weightzip.jobs.runs import build_model

    rows = []
    for model_name, data in tasks:
        info = {"num_classes": 10, "in_channels": 1, "image_size": 28}
        shapes = [tuple(p.shape) for p in build_model(model_name, "classify", info).parameters()]
        for w in worlds:
            for g in ANALYTIC:
                e = estimate_step_bytes(shapes, g, world_size=w)
                rows.append({"model": model_name, "data": data, "world_size": w, "grad": g,
                             "label": GradQuantConfig.parse(g).label().replace(" noclip", ""), "params": sum(math.prod(s) for s in shapes),
                             **{f"{k}_bytes": v for k, v in e.items()},
                             "payload_ratio": e["fp32_payload"] / e["payload"],
                             "wire_ratio": e["fp32_wire"] / e["wire"] if e["wire"] else 0.0})
    return rows


def quantization_error(tasks, plan, draws: int = 40) -> list[dict]:
    """Relative MSE and bias of each quantizer on one real gradient (batch of 64 at initialisation)."""
    from weightzip.primitives.grad_quant import clip_by_std, dequantize, quantize
    from weightzip.jobs.runs import build_model, make_loaders
    from weightzip.training.config import seed_everything
    rows = []
    for model_name, data in tasks:
        loaders = make_loaders(data, 64, subset=2000, val_size=0, seed=plan["seed"])
        seed_everything(plan["seed"])
        model = build_model(model_name, loaders.task, loaders.info)
        x, y = next(iter(loaders.train))
        torch.nn.functional.cross_entropy(model(x), y).backward()
        params = list(model.parameters())
        g = torch.cat([p.grad.reshape(-1) for p in params])
        lengths = [p.numel() for p in params]
        for grad in GRADS[1:]:
            from weightzip.training.distributed import GradQuantConfig

            c = GradQuantConfig.parse(grad)
            gen = torch.Generator().manual_seed(0)
            acc = torch.zeros_like(g)
            mse = 0.0
            for _ in range(draws):
                q, s = quantize(g, lengths, scheme=c.scheme, bits=c.bits, clip=c.clip, generator=gen)
                gh = dequantize(q, s, lengths, scheme=c.scheme, bits=c.bits)
                mse += float((gh - g).square().sum() / g.square().sum())
                acc += gh
            clipped = clip_by_std(g, lengths, c.clip) if c.clip is not None else g
            rows.append({"model": model_name, "data": data, "grad": grad, "label": c.label(),
                         "rel_mse": mse / draws,
                         "rel_bias": float((acc / draws - g).norm() / g.norm()),
                         "clipped_fraction": float((clipped != g).float().mean()),
                         "clip_bias": float((clipped - g).norm() / g.norm())})
    return rows


def _smooth(v: list[float], k: int) -> list[float]:
    out, s = [], 0.0
    for i, x in enumerate(v):
        s += x
        if i >= k:
            s -= v[i - k]
        out.append(s / min(i + 1, k))
    return out


def plot_curves(runs: list[dict], out_dir: Path, name: str = NAME) -> list[str]:
    plt = C.pyplot()
    paths = []
    for model_name, data in sorted({(r["model"], r["data"]) for r in runs}):
        mine = [r for r in runs if r["model"] == model_name and r["data"] == data]
        panels = sorted({(r["world_size"], r["weights"]) for r in mine})
        fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.2), squeeze=False)
        for ax, (w, weights) in zip(axes[0], panels):
            for r in [r for r in mine if r["world_size"] == w and r["weights"] == weights]:
                k = max(1, len(r["curve"]) // 15)
                style = "-" if "noclip" not in (r["grad_label"] or "") else "--"
                ax.plot(_smooth(r["curve"], k), style, lw=1.3,
                        label=f"{r['grad_label']} ({r['test_accuracy'] * 100:.2f}%)")
            ax.set_title(f"{model_name} / {data}, W={w}, {'fp32' if weights == 'fp' else 'loss-aware ternary'} weights",
                         fontsize=9)
            ax.set_xlabel("step")
            ax.set_ylabel("training loss (mean over workers, smoothed)")
            ax.set_yscale("log")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        p = out_dir / f"{name}-{model_name}-{data}.png"
        C.save_figure(fig, p, dpi=110)
        paths.append(p.name)
    return paths


def markdown(res: dict) -> str:
    plan, runs, name = res["plan"], res["runs"], res.get("name", NAME)
    subset = f"a training subset of {plan['subset']:,} examples" if plan["subset"] else "the whole training split"
    L = [f"# Distributed training with quantized gradients ({NAME}.py{' --longer' if name != NAME else ''})", "",
         f"Generated {res['date']} from `{name}.json` on {res['machine']['platform']} "
         f"({res['machine']['cpu_count']} CPU cores shared with other jobs, load average at start "
         f"{res['load_start']}); total {res['seconds'] / 60:.1f} min.", "",
         "**Budget** (short, stated): " + (
             f"{plan['epochs']} epoch(s) over {subset}"
             + (f", at most {plan['max_steps']} steps per epoch" if plan.get("max_steps") else "")
             + f"; batch {plan['batch_size']} per process (global {plan['batch_size']} x W); Adam with a cosine "
             f"decay, lr {plan['lr_fp']} (fp32 weights) / {plan['lr_laq']} (loss-aware `{plan['laq_mode']}` "
             f"ternary weights, latent weights clipped to [-1, 1]); seed {plan['seed']} for every run (same "
             f"initialisation and data order); test accuracy on the full test set. gloo on 127.0.0.1, one thread "
             "per process."), "",
         "Bytes are per worker. **payload** = what a worker puts into the collectives per step (packed codes + "
         "fp32 scales; fp32 tensors for all-reduce) - what it would push to a parameter server, the quantity "
         "the paper counts; **wire** = what it transmits with ring algorithms (all-gather: (W-1) x packet; "
         "all-reduce: 2(W-1)/W x tensor). Ratios are fp32 all-reduce / scheme. Measured by the hooks' counters "
         "during training.", ""]
    # target check
    L += ["## Target: 2-bit gradients", ""]
    for (m, d) in [tuple(t) for t in plan["tasks"]]:
        for w in sorted({r["world_size"] for r in runs}):
            for weights in plan["weights"]:
                base = next((r for r in runs if (r["model"], r["data"], r["world_size"], r["weights"], r["grad"])
                             == (m, d, w, weights, "fp32")), None)
                if base is None:
                    continue
                for g in ("mbit:bits=2,clip=3", "mbit:bits=2", *EXTRA):
                    r = next((r for r in runs if (r["model"], r["data"], r["world_size"], r["weights"], r["grad"])
                              == (m, d, w, weights, g)), None)
                    if r is None:
                        continue
                    gap = (base["test_accuracy"] - r["test_accuracy"]) * 100
                    ratio = r["comm"]["payload_ratio"]
                    ok_b, ok_a = ratio >= 12, gap <= 0.3
                    L.append(f"- {m}/{d}, W={w}, {weights} weights, {r['grad_label']}: payload 1/{ratio:.1f} of fp32 "
                             f"({'meets' if ok_b else 'MISSES'} <= 1/12; wire 1/{r['comm']['wire_ratio']:.1f}); "
                             f"accuracy {r['test_accuracy'] * 100:.2f}% vs fp32 gradients "
                             f"{base['test_accuracy'] * 100:.2f}% (gap {gap:+.2f} points: "
                             f"{'meets' if ok_a else 'MISSES'} <= 0.3)")
    if name == NAME:
        L += ["", f"The same target at a longer budget (MLP / Fashion-MNIST, 3 full epochs): `{NAME}-longer.md` "
              f"(`python benchmarks/{NAME}.py --longer`). Error feedback (EF) is meant for contractive "
              "compressors; the 2-bit quantizer's relative error is above 1 (table below), so its residual grows "
              "- see docs/distributed.md."]
    L += ["", "## Effect of clipping on accuracy", "",
          "Test accuracy with clipping at 3 std minus without, same bits (points):", ""]
    for (m, d) in [tuple(t) for t in plan["tasks"]]:
        for w in sorted({r["world_size"] for r in runs}):
            for weights in plan["weights"]:
                cells = []
                for b in (2, 3, 8):
                    key = lambda g: next((r for r in runs if (r["model"], r["data"], r["world_size"],  # noqa: E731
                                                              r["weights"], r["grad"]) == (m, d, w, weights, g)), None)
                    c, nc = key(f"mbit:bits={b},clip=3"), key(f"mbit:bits={b}")
                    if c and nc:
                        cells.append(f"{b}-bit {(c['test_accuracy'] - nc['test_accuracy']) * 100:+.2f}")
                if cells:
                    L.append(f"- {m}/{d}, W={w}, {weights} weights: " + ", ".join(cells))
    L += ["", "## Runs", "",
          "| model / data | W | weights | gradients | test acc % | vs fp32 grads | payload B/step | payload ratio "
          "| wire B/step | wire ratio | steps | MB/epoch (payload) | s |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        base = next((b for b in runs if (b["model"], b["data"], b["world_size"], b["weights"], b["grad"]) ==
                     (r["model"], r["data"], r["world_size"], r["weights"], "fp32")), None)
        gap = f"{(r['test_accuracy'] - base['test_accuracy']) * 100:+.2f}" if base else ""
        c = r["comm"]
        per_epoch = c["payload_bytes"] / max(1, len(r["epochs"])) / 1e6
        L.append(f"| {r['model']} / {r['data']} | {r['world_size']} | {'fp32' if r['weights'] == 'fp' else 'LAT (ternary)'} "
                 f"| {r['grad_label']} | {r['test_accuracy'] * 100:.2f} | {gap} | {c['payload_bytes_per_step']:,.0f} "
                 f"| {c['payload_ratio']:.1f} | {c['wire_bytes_per_step']:,.0f} | {c['wire_ratio']:.1f} | {r['steps']} "
                 f"| {per_epoch:.2f} | {r['seconds']:.0f} |")
    L += ["", "PowerSGD runs fp32 all-reduce for its first 10 steps (PyTorch's `start_powerSGD_iter`), "
          "included in its average.", "",
          "## Bytes per step from the bucket sizes (all schemes, incl. PyTorch's hooks)", "",
          "Computed by `weightzip.training.distributed.estimate_step_bytes` from the parameter shapes: m-bit "
          "`4 S + ceil(n b / 8)` per bucket (S tensors, one fp32 scale each), ternary `ceil(n / 5)` (5 trits "
          "per byte), sign `ceil(n / 8)`; PyTorch `quantization_pertensor_hook` `8 + n` (scale and zero point, "
          "then uint8 codes, two all-gathers; NCCL only, so not run here); PyTorch `powerSGD_hook` "
          "`4 (sum uncompressed + sum (n_i + m_i) r)` once compressing (a tensor viewed as n x m is compressed "
          "when (n + m) r 2 < n m; biases never).", "",
          "| model | params | W | gradients | payload B/step | payload ratio | wire B/step | wire ratio |",
          "|---|---|---|---|---|---|---|---|"]
    for a in res["analytic"]:
        L.append(f"| {a['model']} | {a['params']:,} | {a['world_size']} | {a['label']} | {a['payload_bytes']:,.0f} "
                 f"| {a['payload_ratio']:.1f} | {a['wire_bytes']:,.0f} | {a['wire_ratio']:.1f} |")
    L += ["", "With W processes an all-gather sends (W-1) packets while a ring all-reduce sends 2(W-1)/W "
          "tensors, so the wire ratio of the all-gather hooks is the payload ratio x 2/W: equal at W = 2, half "
          "at W = 4. (A parameter server or a reduce-scatter of quantized chunks would keep the payload ratio.)", "",
          "## Effect of clipping on the quantizer (one real gradient, no training)", "",
          f"Gradient of the initial model on one batch of 64; {res['qerror_draws']} draws per quantizer; one "
          "scale per tensor. rel MSE = E||Q(g) - g||^2 / ||g||^2 (variance + clipping bias); rel bias = "
          "||mean Q(g) - g|| / ||g|| (stochastic rounding is unbiased w.r.t. the clipped g, so without clipping "
          "this is only sampling noise).", "",
          "| model | gradients | rel MSE | rel bias | clipped entries | clipping bias |", "|---|---|---|---|---|---|"]
    for q in res["qerror"]:
        L.append(f"| {q['model']} | {q['label']} | {q['rel_mse']:.3g} | {q['rel_bias']:.3g} | "
                 f"{q['clipped_fraction'] * 100:.2f}% | {q['clip_bias']:.3g} |")
    L += ["", "## Loss curves", ""] + [f"![{p}]({p})" for p in res["plots"]]
    if res.get("notes"):
        L += ["", "## Notes", ""] + [f"- {n}" for n in res["notes"]]
    return "\n".join(L) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = C.parser(__doc__)
    ap.add_argument("--workers", default="2,4", help="process counts, e.g. 2,4 or 2")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--subset", type=int, default=20000, help="training examples (of the 55,000 after the split)")
    ap.add_argument("--batch-size", type=int, default=64, help="per process")
    ap.add_argument("--max-steps", type=int, default=None, help="cap on steps per epoch")
    ap.add_argument("--lr-fp", type=float, default=2e-3)
    ap.add_argument("--lr-laq", type=float, default=1e-2)
    ap.add_argument("--laq-mode", default="lat")
    C.add_arg(ap, "seed")
    ap.add_argument("--quick", action="store_true", help="tiny budget smoke test (results not written)")
    ap.add_argument("--longer", action="store_true", help="the 2-bit target at a longer budget: MLP / "
                    "Fashion-MNIST, fp32 weights, W = 2, 3 epochs of the whole training split (~5 min); "
                    f"writes {NAME}-longer.*")
    C.add_arg(ap, "out")
    args = ap.parse_args(argv)

    from weightzip.core import registry
    import weightzip.methods  # noqa: F401  (registration)
    from weightzip.training.distributed import run_local
    from weightzip.training.checkpoint import machine_info
    have_laq = "loss_aware" in registry.list_methods()
    notes = [] if have_laq else ["the `loss_aware` method is not registered: only fp32 weights were run"]
    worlds = [int(w) for w in args.workers.split(",") if w.strip()]
    plan = {"tasks": TASKS, "epochs": args.epochs, "subset": args.subset, "batch_size": args.batch_size,
            "max_steps": args.max_steps, "lr_fp": args.lr_fp, "lr_laq": args.lr_laq, "laq_mode": args.laq_mode,
            "seed": args.seed, "weights": ["fp", "laq"] if have_laq else ["fp"]}
    if args.quick:
        plan.update(subset=2000, max_steps=8, eval_subset=1000)
    tasks, name = TASKS, NAME
    if args.longer:
        tasks, name, worlds = [("mlp", "fashion_mnist")], f"{NAME}-longer", [2]
        plan.update(tasks=tasks, epochs=3, subset=None, weights=["fp"])
    t0 = time.perf_counter()
    load = C.load_average()
    runs: list[dict] = []
    for w in worlds:
        grads = ({"fp": GRADS + EXTRA + EXTRA_FP, "laq": GRADS + EXTRA} if w == 2 else {"fp": GRADS_W4, "laq": []})
        if args.longer:
            grads = {"fp": GRADS_W4}
        p = {**plan, "grads": grads, "weights": [k for k in plan["weights"] if grads.get(k)]}
        print(f"W={w}: {sum(len(grads[k]) for k in p['weights']) * len(tasks)} runs", flush=True)
        res = run_local(worker, w, args=(p,), timeout_s=300, deadline_s=3600, threads=1)
        runs += res[0]["result"]
    qerror = quantization_error(tasks, plan, draws=40)
    analytic = analytic_bytes(tasks, worlds)
    out = {"name": name, "date": C.now(), "plan": plan, "workers": worlds,
           "machine": machine_info("cpu"), "load_start": round(load, 2) if load is not None else None,
           "runs": runs, "analytic": analytic, "qerror": qerror, "qerror_draws": 40, "notes": notes}
    out["seconds"] = time.perf_counter() - t0
    if args.quick:
        print(json.dumps([{k: r[k] for k in ("model", "world_size", "weights", "grad_label", "test_accuracy")}
                          for r in runs], indent=1))
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    out["plots"] = plot_curves(runs, args.out, name)
    C.write_results(args.out / f"{name}.json", out, args.out / f"{name}.md", markdown(out))
    print(f"wrote {args.out / (name + '.md')} in {out['seconds'] / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
