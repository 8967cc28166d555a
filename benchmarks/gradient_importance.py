"""Reproduction + sweep of the accumulated-gradient importance methods (METHODS.md A).

For each model: train the baseline FROM SCRATCH with the importance tracker (the thesis
accumulates |grad| from the first epoch; cached in ``runs/gradient_importance/``), then

* PTQ   - ``grad_ptq`` on the baseline over a grid of bit vectors / K / clusterings;
* ITQ   - ``grad_itq`` runs (quantile schedules, b_low, b_high, reproject / freeze);
* combined - ``grad_ptq`` (a small grid) on each ITQ result (importance keeps accumulating);
* ablation - the same with ``importance: magnitude``.

Every point records the thesis-style ratio (values + one CSR per (layer, cluster),
``analysis.size.gradient_importance_csr_ratio``) and validation accuracy. Chosen points:

* "at published ratio": the best validation accuracy among points whose ratio >= the published one;
* "max ratio within 0.5": the largest ratio whose validation accuracy >= baseline - 0.5 point.

Chosen points are evaluated on the TEST set; the gradient-importance ones are written as
``.wz`` (file ratio, payload ratio) and re-evaluated from the file. Outputs in ``--out``:
``gradient_importance_<model>.json``, ``gradient_importance_<model>.png`` (accuracy vs ratio, Pareto
fronts from ``analysis.pareto``, published ratios marked), ``<model>-gi-<method>.wz`` and
``gradient_importance.md`` (all models run so far).

    python benchmarks/gradient_importance.py --models lenet300_100 lenet5 --sweep
    python benchmarks/gradient_importance.py --models alexnet_cifar vgg16_cifar --data cifar10 \\
        --device cuda --baseline-epochs 160 --budget 36000           # full size on a GPU

``--refresh-files`` re-measures the chosen rows from the committed files as they are now (after
``records.py --rewrite`` re-encoded them with the current codec), without training.

``--budget`` (seconds per model) stops starting new ITQ runs once spent (the skipped runs are
listed in the JSON). Without ``--sweep`` only the default configuration of each method runs.
"""
from __future__ import annotations

import copy
import json
import math
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

import _common as C
import weightzip
from weightzip.core import parametrize as P
from weightzip.analysis.pareto import non_dominated
from weightzip.analysis.size import gradient_importance_csr_ratio
from weightzip.methods.base import StageContext
from weightzip.methods.gradient_importance import GradITQ, GradPTQ, ImportanceTracker
from weightzip.core.registry import create_model
from weightzip.jobs.runs import recipe_for, train_model
from weightzip.training.evaluate import evaluate
ROOT = C.ROOT
PUBLISHED = {  # METHODS.md A: thesis ratios (PTQ, ITQ, combined)
    "lenet300_100": {"ptq": 7.62, "itq": 22.08, "combined": 57.22},
    "lenet5": {"ptq": 10.87, "itq": 21.05, "combined": 50.19},
    "alexnet_cifar": {"ptq": 6.39, "itq": 7.95, "combined": 13.15},
    "vgg16_cifar": {"ptq": 12.43, "itq": 12.71, "combined": 13.53},
}
DEFAULT_DATA = {"lenet300_100": "mnist", "lenet5": "mnist", "alexnet_cifar": "cifar10", "vgg16_cifar": "cifar10"}

# ---- grids ---------------------------------------------------------------------------------
PTQ_DEFAULT = [{"bits": [8, 6, 4, 2], "clustering": "kmeans"}]
PTQ_GRID = (
    [{"bits": b, "clustering": "kmeans"} for b in
     ([8, 6, 4, 2], [6, 4, 2], [8, 4, 2, 0], [6, 4, 2, 0], [6, 5, 4, 0], [5, 4, 0], [6, 5, 3, 0],
      [5, 4, 3, 0], [7, 5, 4, 0], [6, 5, 4, 3, 0])]
    + [{"bits": b, "clustering": "kmeans", "int_bits": "tight"} for b in
       ([8, 6, 4, 2], [6, 4, 2, 0], [5, 4, 3, 0], [4, 3, 2, 0], [5, 4, 3, 2, 0], [5, 5, 4, 3, 0],
        [5, 4, 4, 3, 0], [6, 5, 4, 3, 0], [4, 4, 3, 2, 0])]
    + [{"bits": [6, 5, 0], "clustering": "quantile", "fractions": [p / 3, 2 * p / 3, 1 - p]} for p in (0.2, 0.45)]
)
COMBINED_GRID = (
    [{"bits": b, "clustering": "kmeans"} for b in ([6, 5, 4, 0], [5, 4, 0])]
    + [{"bits": b, "clustering": "kmeans", "int_bits": "tight"} for b in
       ([5, 4, 3, 0], [4, 3, 3, 0], [4, 3, 2, 0], [3, 2, 0])]
)
ITQ_DEFAULT = [{"quantiles": [0.5, 0.75, 0.875], "b_low": 4, "b_high": 8, "variant": "reproject",
                "recovery_epochs": 0}]
_T = {"int_bits": "tight", "recovery_epochs": 2}
ITQ_GRID = [
    # the thesis's V1 as METHODS.md describes it (no recovery epochs, thesis integer bits)
    {"quantiles": [0.5, 0.75, 0.875], "b_low": 4, "b_high": 8, "variant": "reproject", "recovery_epochs": 0},
    {"quantiles": [0.6, 0.8, 0.9], "b_low": 3, "b_high": 5, "variant": "reproject", **_T},
    {"quantiles": [0.7, 0.85, 0.95], "b_low": 3, "b_high": 5, "variant": "freeze", **_T},
    {"quantiles": [0.7, 0.85, 0.95], "b_low": 3, "b_high": 4, "variant": "reproject", **_T},
    {"quantiles": [0.75, 0.9, 0.97], "b_low": 3, "b_high": 4, "variant": "reproject", **_T},
    # thesis integer bits + recovery: on nets with small weights (LeNet-5) "tight" prunes little
    {"quantiles": [0.7, 0.85, 0.95], "b_low": 4, "b_high": 6, "variant": "reproject", "recovery_epochs": 2},
    {"quantiles": [0.75, 0.9, 0.97], "b_low": 4, "b_high": 5, "variant": "reproject", "recovery_epochs": 2},
    {"quantiles": [0.5, 0.75, 0.875], "b_low": 4, "b_high": 8, "variant": "reproject", "recovery_epochs": 2},
    {"quantiles": [0.6, 0.8, 0.9], "b_low": 4, "b_high": 6, "variant": "reproject", "recovery_epochs": 2},
]
ABLATION_ITQ = [3, 4]  # indices of ITQ_GRID also run with importance: magnitude


log = C.say


# ---- helpers -------------------------------------------------------------------------------
def clone(model: torch.nn.Module) -> torch.nn.Module:
    """A fresh zoo model with the same parametrizations and state."""
    cfg = model.wz_config
    m = create_model(cfg["name"], **cfg["kwargs"])
    P.restore_parametrizations(m, P.parametrization_spec(model))
    m.load_state_dict(model.state_dict())
    m.wz_config = copy.deepcopy(cfg)
    return m.to(next(model.parameters()).device)


def small_val(data: str, batch_size: int, data_opts: dict, n: int | None):
    """The first ``n`` validation examples (``get_loaders(eval_subset=n)``; same split)."""
    from weightzip.jobs.runs import make_loaders

    return make_loaders(data, batch_size, **{**data_opts, "eval_subset": n}).val


def sweep_loaders(data: str, rec: dict, train_cfg: dict, subset: int | None, val_examples: int | None):
    """``(loaders, val)``: the baseline's loaders with ``val`` = its first ``val_examples``
    validation examples (what the sweep selects on; the test split stays whole)."""
    from weightzip.jobs.runs import make_loaders

    data_opts = {**rec["data"], "seed": train_cfg.get("seed", 0), "subset": subset}
    ld = make_loaders(data, train_cfg.get("batch_size", 128), **data_opts)
    val = small_val(data, train_cfg.get("batch_size", 128), data_opts, val_examples)
    return SimpleNamespace(train=ld.train, val=val, test=ld.test, task=ld.task, info=ld.info), val


def accuracy(model, loader, device) -> float:
    return 100.0 * evaluate(model, loader, "classify", device)["accuracy"]


def point(method: str, importance: str, cfg: dict, model, val_acc: float, extra: dict | None = None) -> dict:
    acc = gradient_importance_csr_ratio(model)
    nz = sum(int((t != 0).sum()) for t in P.effective_state(model).values() if t.is_floating_point())
    n = sum(t.numel() for t in P.effective_state(model).values() if t.is_floating_point())
    return {"method": method, "importance": importance, "config": cfg, "thesis_ratio": acc["ratio"],
            "val_acc": val_acc, "density": nz / n, **(extra or {})}


def ptq_point(base, state, cfg, importance, ctx, device, method="ptq", extra=None):
    m = clone(base)
    stage = {"method": "grad_ptq", "importance": importance, **cfg}
    ctx.state = {"importance": state}
    GradPTQ(GradPTQ.Config(**stage)).apply(m, ctx)
    return point(method, importance, cfg, m, accuracy(m, ctx.loaders.val, device), extra), m


# ---- one model -----------------------------------------------------------------------------
def tracked_baseline(name: str, data: str, rec: dict, args):
    """Train (or resume) the baseline with the :class:`ImportanceTracker` from the first epoch.

    Returns ``(model, tracker, train_cfg, checkpoint, seconds)``."""
    train_cfg = {**rec["train"], "progress": False, "device": args.device}
    if args.baseline_epochs:
        train_cfg["epochs"] = args.baseline_epochs
    margs = {"width": args.width} if args.width else None
    ck = ROOT / "runs" / "gradient_importance" / f"{name}@{data}{'-w' + str(args.width) if args.width else ''}-tracked.pt"
    ck.parent.mkdir(parents=True, exist_ok=True)
    tracker = ImportanceTracker()
    log(f"[{name}] tracked baseline ({train_cfg['epochs']} epochs) -> {ck}")
    t0 = time.perf_counter()
    out = train_model(name, data, ck, train=train_cfg, model_args=margs, callbacks=[tracker], resume=True,
                      data_args={"subset": args.subset} if args.subset else None)
    return out["model"].eval(), tracker, train_cfg, ck, time.perf_counter() - t0


def ptq_sweep(base, importance, ctx, device, grid) -> list[dict]:
    """One PTQ point per (importance kind, config of ``grid``)."""
    points = []
    for imp in ("gradient", "magnitude"):
        for cfg in grid:
            p, _ = ptq_point(base, importance, cfg, imp, ctx, device)
            points.append(p)
            log(f"  ptq {imp:9s} {cfg}: ratio {p['thesis_ratio']:.2f} val {p['val_acc']:.2f}")
    return points


def itq_jobs(points: list[dict], args) -> list[tuple[int, dict, str]]:
    """``(index, ITQ config, importance)`` still to run (ITQ points already in ``points`` are skipped)."""
    itq_grid = ITQ_GRID if args.sweep else ITQ_DEFAULT
    chosen_itq = args.itq_configs if args.itq_configs is not None else list(range(len(itq_grid)))
    ablation = args.ablation_itq if args.ablation_itq is not None else ABLATION_ITQ
    jobs = [(i, itq_grid[i], "gradient") for i in chosen_itq if i < len(itq_grid)]
    jobs += [(i, itq_grid[i], "magnitude") for i in ablation if args.sweep and i < len(itq_grid)]
    done = {(json.dumps(p["config"], sort_keys=True), p["importance"]) for p in points if p["method"] == "itq"}
    jobs = [j for j in jobs if (json.dumps(j[1], sort_keys=True), j[2]) not in done]
    if not args.sweep:
        jobs.append((0, itq_grid[0], "magnitude"))
    return jobs


def itq_sweep(base, importance, jobs, ctx, device, itq_train: dict, budget_end: float, points: list[dict], args):
    """Run the ITQ ``jobs`` (and the combined PTQ points after each) until ``budget_end``; new
    points are appended to ``points``. Returns ``(itq_runs, skipped)``, ``itq_runs`` =
    ``[(point, model, importance after training)]``."""
    itq_runs, skipped = [], []
    for i, cfg, imp in jobs:
        if time.perf_counter() > budget_end:
            skipped.append({"config": cfg, "importance": imp, "why": "budget spent"})
            continue
        m = clone(base)
        state = {k: v.clone() for k, v in importance.items()}
        ctx.state = {"importance": state}
        stage = {"method": "grad_itq", "importance": imp, **cfg, "train": itq_train}
        t0 = time.perf_counter()
        res = GradITQ(GradITQ.Config(**stage)).apply(m, ctx)
        secs = time.perf_counter() - t0
        p = point("itq", imp, cfg, m, 100.0 * res["val"]["accuracy"], {"seconds": secs})
        points.append(p)
        itq_runs.append((p, m, dict(ctx.state["importance"])))
        log(f"  itq {imp:9s} {cfg}: ratio {p['thesis_ratio']:.2f} val {p['val_acc']:.2f} ({secs:.0f}s)")
        for ccfg in (COMBINED_GRID if args.sweep else PTQ_DEFAULT):
            q, _ = ptq_point(m, ctx.state["importance"], ccfg, imp, ctx, device, method="combined",
                             extra={"itq": cfg})
            points.append(q)
            log(f"    combined {ccfg}: ratio {q['thesis_ratio']:.2f} val {q['val_acc']:.2f}")
    return itq_runs, skipped


def picks_of(pts: list[dict], published_ratio: float | None, base_val: float) -> dict[str, dict | None]:
    """The chosen points of one (method, importance): the most accurate at or above the published
    ratio (when there is one) and the highest ratio within 0.5 point of the baseline (validation)."""
    picks = {}
    if published_ratio:
        over = [p for p in pts if p["thesis_ratio"] >= published_ratio]
        picks["at_published_ratio"] = max(over, key=lambda p: p["val_acc"]) if over else None
    ok = [p for p in pts if p["val_acc"] >= base_val - 0.5]
    picks["max_ratio_within_0.5"] = max(ok, key=lambda p: p["thesis_ratio"]) if ok else None
    return picks


def choose(name: str, points, old, published, base_val, base, importance, itq_runs, ctx, device, itq_train,
           test_loader, args) -> list[dict]:
    """Test accuracy of the chosen points (and their ``.wz``); an earlier run's measurements of the
    same point (``--append``) are kept."""
    chosen = []
    for method in ("ptq", "itq", "combined"):
        for imp in ("gradient", "magnitude"):
            pts = [p for p in points if p["method"] == method and p["importance"] == imp]
            if not pts:
                continue
            for kind, p in picks_of(pts, published.get(method), base_val).items():
                if p is None:
                    chosen.append({"method": method, "importance": imp, "pick": kind, "found": False})
                    continue
                prev = [c for c in (old or {}).get("chosen", []) if c.get("found") and c["method"] == method
                        and c["importance"] == imp and c["config"] == p["config"] and c.get("itq") == p.get("itq")]
                prev.sort(key=lambda c: "file_ratio" not in c)
                wants_wz = imp == "gradient" and kind == "max_ratio_within_0.5"
                if prev and (not wants_wz or "file_ratio" in prev[0]):
                    chosen.append({**prev[0], "pick": kind})  # an earlier run's point: keep its measurements
                    continue
                m = rebuild(p, base, importance, itq_runs, ctx, device, itq_train)
                row = {"method": method, "importance": imp, "pick": kind, "found": True,
                       "config": p["config"], "itq": p.get("itq"), "thesis_ratio": p["thesis_ratio"],
                       "val_acc": p["val_acc"], "test_acc": accuracy(m, test_loader, device),
                       "density": p["density"]}
                if wants_wz:
                    save_chosen(name, method, m, row, test_loader, args)
                    m.to(device)
                chosen.append(row)
                log(f"  chosen {method}/{imp}/{kind}: ratio {row['thesis_ratio']:.2f} test {row['test_acc']:.2f}"
                    + (f" file {row['file_ratio']:.2f}x" if "file_ratio" in row else ""))
    return chosen


def run_model(name: str, data: str, args) -> dict:
    """Tracked baseline, PTQ / ITQ / combined sweep, chosen points; writes the model's JSON and PNG."""
    t_start = time.perf_counter()
    published = PUBLISHED.get(name, {})
    rec = recipe_for(name, data)
    base, tracker, train_cfg, ck, base_s = tracked_baseline(name, data, rec, args)
    importance = {k: v.clone() for k, v in tracker.store.items()}
    device = args.device

    ld, val = sweep_loaders(data, rec, train_cfg, args.subset, args.val_subset)
    ctx = StageContext(loaders=ld, device=device, log=log, seed=0)
    base_val = accuracy(base, val, device)
    base_test = accuracy(base, ld.test, device)
    log(f"[{name}] baseline val {base_val:.2f}  test {base_test:.2f}  ({base_s:.0f}s)")
    budget_end = t_start + args.budget if args.budget else math.inf

    out_json = Path(args.out) / f"gradient_importance_{name}.json"
    old = C.cached(out_json) if args.append else None
    points: list[dict] = list(old["points"]) if old else []
    points += ptq_sweep(base, importance, ctx, device, [] if old else (PTQ_GRID if args.sweep else PTQ_DEFAULT))
    jobs = itq_jobs(points, args)
    itq_train = {**train_cfg, "lr": args.itq_lr, "schedule": "cosine", "warmup_epochs": 0.0,
                 "test_at_end": False, "max_steps_per_epoch": args.itq_steps}
    itq_train.pop("epochs", None)
    itq_runs, skipped = itq_sweep(base, importance, jobs, ctx, device, itq_train, budget_end, points, args)
    chosen = choose(name, points, old, published, base_val, base, importance, itq_runs, ctx, device, itq_train,
                    ld.test, args)

    result = {
        "model": name, "data": data, "device": device, "threads": torch.get_num_threads(),
        "baseline": {"val_acc": base_val, "test_acc": base_test, "train": train_cfg, "seconds": base_s,
                     "tracked_steps": tracker.steps, "checkpoint": os.path.relpath(ck, ROOT)},
        "val_examples": args.val_subset, "subset": args.subset,
        "published": published, "itq_train": itq_train, "points": points, "chosen": chosen,
        "skipped": skipped, "seconds": time.perf_counter() - t_start + (old["seconds"] if old else 0.0),
    }
    front = non_dominated(points, ["thesis_ratio", "val_acc"], ["maximize", "maximize"])
    result["pareto"] = [points.index(p) for p in front]
    C.write_json(out_json, result, indent=1, default=float)
    plot(result, Path(args.out) / f"gradient_importance_{name}.png")
    log(f"[{name}] done in {result['seconds']:.0f}s -> {out_json}")
    return result


def save_chosen(name: str, method: str, m, row: dict, test_loader, args) -> None:
    """Write ``<name>-gi-<method>.wz`` (+ a checkpoint in runs/ to rewrite it), re-evaluate from the file."""
    path = Path(args.out) / f"{name}-gi-{method}.wz"
    m = m.cpu()
    rep = weightzip.save(m, path, metrics={"test_accuracy": row["test_acc"]},
                         extra={"benchmark": "gradient_importance", "config": row["config"], "itq": row.get("itq")})
    ck = ROOT / "runs" / "gradient_importance" / "chosen" / f"{name}-gi-{method}.pt"
    ck.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": m.state_dict(), "model_config": m.wz_config,
                "parametrizations": P.parametrization_spec(m)}, ck)
    m2 = weightzip.load(path)
    row.update(wz=os.path.relpath(path, ROOT), file_bytes=rep.file_bytes, file_ratio=rep.file_ratio,
               payload_ratio=rep.baseline_bytes / rep.payload_bytes,
               test_acc_from_file=accuracy(m2, test_loader, "cpu"))


def refresh_files(name: str, data: str, args) -> None:
    """``--refresh-files``: the chosen rows' sizes, ratios and test accuracy measured again from
    the committed ``.wz`` files as they are now (e.g. after ``records.py --rewrite`` re-encoded them
    with the current codec: same tensors, smaller file); no training."""
    from weightzip.analysis.size import size_report

    out_json = Path(args.out) / f"gradient_importance_{name}.json"
    r = json.loads(out_json.read_text())
    rec = recipe_for(name, data)
    train_cfg = dict(r["baseline"]["train"])
    ld, _ = sweep_loaders(data, rec, train_cfg, r.get("subset"), r.get("val_examples"))
    for row in r["chosen"]:
        if not row.get("wz") or not (ROOT / row["wz"]).is_file():
            continue
        path = ROOT / row["wz"]
        rep = size_report(path)
        row.setdefault("file_bytes_first", row.get("file_bytes"))
        row.update(file_bytes=rep.file_bytes, file_ratio=rep.file_ratio,
                   payload_ratio=rep.baseline_bytes / rep.payload_bytes,
                   test_acc_from_file=accuracy(weightzip.load(path), ld.test, "cpu"))
        log(f"  {row['wz']}: {row['file_bytes_first']} -> {rep.file_bytes} bytes, file ratio "
            f"{rep.file_ratio:.2f}x, test from file {row['test_acc_from_file']:.2f}")
    C.write_json(out_json, r, indent=1, default=float)


def write_wz(name: str, data: str, args) -> None:
    """``--write-wz``: (re)write the chosen gradient-importance ``.wz`` of a finished sweep.

    The model comes from its checkpoint in ``runs/gradient_importance/chosen/`` or is rebuilt
    deterministically (PTQ from the cached tracked baseline; ITQ re-trained with the recorded
    settings; the rebuilt model must reproduce the recorded validation accuracy)."""
    out_json = Path(args.out) / f"gradient_importance_{name}.json"
    r = json.loads(out_json.read_text())
    rec = recipe_for(name, data)
    train_cfg = dict(r["baseline"]["train"])
    tracker = ImportanceTracker()
    res = train_model(name, data, ROOT / r["baseline"]["checkpoint"], train=train_cfg,
                      model_args={"width": args.width} if args.width else None, callbacks=[tracker], resume=True,
                      data_args={"subset": r["subset"]} if r.get("subset") else None)
    base = res["model"].eval()
    ld, val = sweep_loaders(data, rec, train_cfg, r.get("subset"), r.get("val_examples"))
    ctx = StageContext(loaders=ld, device=args.device, log=log, seed=0)
    for row in r["chosen"]:
        if not (row.get("found") and row["importance"] == "gradient" and row["pick"] == "max_ratio_within_0.5"):
            continue
        ck = ROOT / "runs" / "gradient_importance" / "chosen" / f"{name}-gi-{row['method']}.pt"
        if ck.exists():
            from weightzip.training.checkpoint import model_from_checkpoint
            m = model_from_checkpoint(torch.load(ck, weights_only=True))
        elif row["method"] == "ptq":
            m = ptq_point(base, dict(tracker.store), row["config"], "gradient", ctx, args.device)[1]
        else:
            m = clone(base)
            ctx.state = {"importance": {k: v.clone() for k, v in tracker.store.items()}}
            itq_cfg = row["config"] if row["method"] == "itq" else row["itq"]
            GradITQ(GradITQ.Config(method="grad_itq", importance="gradient", **itq_cfg, train=r["itq_train"])).apply(m, ctx)
            if row["method"] == "combined":
                m = ptq_point(m, ctx.state["importance"], row["config"], "gradient", ctx, args.device)[1]
        v = accuracy(m, val, args.device)
        if abs(v - row["val_acc"]) > 1e-9:
            log(f"  WARNING {row['method']}: rebuilt val accuracy {v:.2f} != recorded {row['val_acc']:.2f}")
            row["rebuilt_val_acc"] = v
        save_chosen(name, row["method"], m, row, ld.test, args)
        log(f"  wrote {row['wz']}: file ratio {row['file_ratio']:.2f}x, test from file {row['test_acc_from_file']:.2f}")
    C.write_json(out_json, r, indent=1, default=float)


def rebuild(p, base, importance, itq_runs, ctx, device, itq_train):
    """The model of a sweep point (PTQ configs are re-applied; ITQ models were kept, or - for
    points of an earlier run (``--append``) - re-trained deterministically)."""
    if p["method"] == "ptq":
        return ptq_point(base, importance, p["config"], p["importance"], ctx, device)[1]
    itq_cfg = p["config"] if p["method"] == "itq" else p["itq"]
    found = [(m, st) for q, m, st in itq_runs if q["config"] == itq_cfg and q["importance"] == p["importance"]]
    if found:
        m, state = found[0]
    else:
        m = clone(base)
        ctx.state = {"importance": {k: v.clone() for k, v in importance.items()}}
        GradITQ(GradITQ.Config(method="grad_itq", importance=p["importance"], **itq_cfg, train=itq_train)).apply(m, ctx)
        state = ctx.state["importance"]
        itq_runs.append(({"config": itq_cfg, "importance": p["importance"]}, m, dict(state)))
    if p["method"] == "itq":
        return m
    return ptq_point(m, state, p["config"], p["importance"], ctx, device)[1]


def plot(result: dict, path: Path) -> None:
    from matplotlib.figure import Figure
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = Figure(figsize=(8, 5.2))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    colors = {"ptq": "tab:blue", "itq": "tab:orange", "combined": "tab:green"}
    pts = result["points"]
    for method, col in colors.items():
        for imp, marker in (("gradient", "o"), ("magnitude", "x")):
            sel = [p for p in pts if p["method"] == method and p["importance"] == imp]
            if sel:
                ax.scatter([p["thesis_ratio"] for p in sel], [p["val_acc"] for p in sel], c=col, marker=marker,
                           s=22, alpha=0.75, label=f"{method} / {imp}")
    for imp, ls in (("gradient", "-"), ("magnitude", ":")):
        sel = [p for p in pts if p["importance"] == imp]
        fr = sorted(non_dominated(sel, ["thesis_ratio", "val_acc"], ["maximize", "maximize"]),
                    key=lambda p: p["thesis_ratio"])
        if fr:
            ax.plot([p["thesis_ratio"] for p in fr], [p["val_acc"] for p in fr], ls, color="black", lw=1,
                    label=f"Pareto front ({imp})")
    for c in result["chosen"]:
        if c.get("found") and c["importance"] == "gradient":
            ax.scatter([c["thesis_ratio"]], [c["val_acc"]], s=90, facecolors="none", edgecolors="red")
    b = result["baseline"]["val_acc"]
    ax.axhline(b, color="grey", lw=0.8)
    ax.axhline(b - 0.5, color="grey", lw=0.8, ls="--")
    lo = min([p["val_acc"] for p in pts] + [b - 2])
    ax.set_ylim(max(lo, b - 10), b + 0.5)
    for method, r in result["published"].items():
        ax.axvline(r, color=colors[method], ls="--", lw=1)
        ax.annotate(f"thesis {method} {r}x", (r, max(lo, b - 10)), rotation=90, fontsize=7,
                    xytext=(2, 4), textcoords="offset points", color=colors[method])
    ax.set_xscale("log")
    ax.set_xlabel("thesis-style ratio (values + CSR per layer x cluster)")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title(f"{result['model']} / {result['data']}: accumulated-gradient importance (red: chosen)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=6, loc="lower left")
    fig.savefig(path, dpi=120, bbox_inches="tight")


def markdown(out_dir: Path) -> None:
    """``gradient_importance.md`` from every ``gradient_importance_<model>.json`` present."""
    lines = ["# Accumulated-gradient importance, mixed-bit fixed point: results", "",
             "Written by `benchmarks/gradient_importance.py` (numbers are read from the JSON files "
             "beside this page). Ratio = thesis-style accounting (values + one CSR per (layer, "
             "cluster), `analysis.size.gradient_importance_csr_ratio`); file ratio = baseline bytes / "
             ".wz size. Accuracies in %; sweep points are selected on a validation split, test accuracy "
             "is reported for the selected points only. The file ratio exceeds the thesis-style ratio "
             "because the codec keeps the smallest exact format per tensor (often a codebook of the few "
             "distinct fixed-point values with entropy-coded relative indices) instead of one plain CSR "
             "per (layer, cluster). `int_bits: tight` and ITQ `recovery_epochs` are reconstructed "
             "options (docs/methods/gradient-importance.md); the first ITQ configuration of each sweep "
             "is the thesis's V1 as METHODS.md describes it.", ""]
    for path in sorted(out_dir.glob("gradient_importance_*.json")):
        r = json.loads(path.read_text())
        b = r["baseline"]
        lines += [f"## {r['model']} on {r['data']}", "",
                  f"Baseline (trained from scratch with the tracker, {b['train']['epochs']} epochs): "
                  f"test {b['test_acc']:.2f}, val {b['val_acc']:.2f}. Run time {r['seconds']:.0f} s "
                  f"({r['device']}, {r['threads']} thread(s)); ITQ runs: {r['itq_train'].get('max_steps_per_epoch') or 'full'} "
                  f"steps per epoch, one epoch per quantile plus the recovery epochs.", "",
                  *C.md_header(["method", "importance", "thesis ratio", "pick", "our ratio", "test acc",
                                "test drop vs baseline", "file ratio", "config"])]
        for c in r["chosen"]:
            pub = r["published"].get(c["method"], "")
            if not c.get("found"):
                lines.append(f"| {c['method']} | {c['importance']} | {pub} | {c['pick']} | (none) | | | | |")
                continue
            cfg = json.dumps(c["config"]) + (f" after ITQ {json.dumps(c['itq'])}" if c.get("itq") else "")
            fr = f"{c['file_ratio']:.2f}" if "file_ratio" in c else ""
            lines.append(f"| {c['method']} | {c['importance']} | {pub} | {c['pick']} | {c['thesis_ratio']:.2f} "
                         f"| {c['test_acc']:.2f} | {b['test_acc'] - c['test_acc']:+.2f} | {fr} | `{cfg}` |")
        refreshed = [c for c in r["chosen"] if c.get("file_bytes_first") and c["file_bytes_first"] != c.get("file_bytes")]
        if refreshed:
            lines += ["", "File ratios measured from the committed files re-encoded with the current codec "
                      "(`records.py --rewrite`: the same tensors, bit-identical; then `--refresh-files`: size and "
                      "test accuracy from each file, " + ", ".join(
                          f"{c['method']} {c['file_bytes_first']:,} -> {c['file_bytes']:,} bytes, "
                          f"test {c['test_acc_from_file']:.2f}" for c in refreshed) + "). Not retrained."]
        lines += ["", verdict(r), "", f"![curve](gradient_importance_{r['model']}.png)", ""]
        if r.get("skipped"):
            lines += [f"Skipped for the budget: {len(r['skipped'])} ITQ run(s).", ""]
    C.write_text(out_dir / "gradient_importance.md", "\n".join(lines) + "\n")


def verdict(r: dict) -> str:
    """Target check and ablation answer, computed from the chosen points."""
    b = r["baseline"]["test_acc"]
    parts = []
    for method, pub in r["published"].items():
        g = [c for c in r["chosen"] if c["method"] == method and c["importance"] == "gradient" and c.get("found")]
        met = [c for c in g if c["thesis_ratio"] >= pub and b - c["test_acc"] <= 0.5]
        if met:
            c = max(met, key=lambda c: c["thesis_ratio"])
            parts.append(f"{method}: MET ({c['thesis_ratio']:.2f}x vs {pub}x, test drop {b - c['test_acc']:+.2f})")
        elif g:
            c = max(g, key=lambda c: (c["pick"] == "max_ratio_within_0.5", c["thesis_ratio"]))
            parts.append(f"{method}: NOT met (best within 0.5 on validation: {c['thesis_ratio']:.2f}x vs {pub}x, "
                         f"test drop {b - c['test_acc']:+.2f})")
        else:
            parts.append(f"{method}: NOT met (no point)")
    def pick(method, imp, kind):
        c = [c for c in r["chosen"] if c["method"] == method and c["importance"] == imp and c.get("found")
             and c["pick"] == kind]
        return c[0] if c else None

    abl, abl2 = [], []
    for method in ("ptq", "itq", "combined"):
        g, m = pick(method, "gradient", "max_ratio_within_0.5"), pick(method, "magnitude", "max_ratio_within_0.5")
        if g and m:
            gr, mr = g["thesis_ratio"], m["thesis_ratio"]
            abl.append(f"{method}: gradient {gr:.2f}x vs magnitude {mr:.2f}x -> "
                       f"{'gradient' if gr > mr else 'magnitude'} wins")
        elif g or m:
            abl.append(f"{method}: only {'gradient' if g else 'magnitude'} has a point within 0.5 "
                       "(the ablation ran fewer ITQ configurations): not compared")
        g, m = pick(method, "gradient", "at_published_ratio"), pick(method, "magnitude", "at_published_ratio")
        if g and m:
            abl2.append(f"{method}: gradient {g['test_acc']:.2f}% ({g['thesis_ratio']:.1f}x) vs magnitude "
                        f"{m['test_acc']:.2f}% ({m['thesis_ratio']:.1f}x) -> "
                        f"{'gradient' if g['test_acc'] > m['test_acc'] else 'magnitude'} wins")
    return ("Target (>= published ratio, test drop <= 0.5): " + "; ".join(parts) + ".\n\n"
            "Ablation, largest ratio within 0.5 point on validation: " + ("; ".join(abl) or "n/a")
            + ".\n\nAblation, best test accuracy at or above the published ratio: " + ("; ".join(abl2) or "n/a") + ".")


def main(argv=None) -> None:
    ap = C.parser(__doc__)
    ap.add_argument("--models", nargs="+", default=["lenet300_100", "lenet5"])
    ap.add_argument("--data", default=None, help="dataset (default: mnist for LeNets, cifar10 for AlexNet/VGG)")
    ap.add_argument("--sweep", action="store_true", help="sweep the grids (else the default config of each method)")
    ap.add_argument("--budget", type=float, default=None, help="seconds per model; later ITQ runs are skipped")
    C.add_args(ap, "device", "threads")
    ap.add_argument("--baseline-epochs", type=int, default=None, help="default: the zoo recipe's epochs")
    ap.add_argument("--itq-steps", type=int, default=None, help="optimizer steps per ITQ epoch (default: full epochs)")
    ap.add_argument("--itq-lr", type=float, default=0.01)
    ap.add_argument("--itq-configs", type=lambda v: [int(x) for x in v.split(",")], default=None,
                    help="indices of ITQ_GRID to run (default: all), e.g. 0,3,4")
    ap.add_argument("--ablation-itq", type=lambda v: [int(x) for x in v.split(",")], default=None,
                    help="indices of ITQ_GRID also run with magnitude importance (default: ABLATION_ITQ)")
    ap.add_argument("--val-subset", type=int, default=5000, help="validation examples used by the sweep")
    ap.add_argument("--width", type=float, default=None, help="width multiplier of CIFAR models")
    ap.add_argument("--subset", type=int, default=None, help="train on the first N training examples (smoke tests)")
    C.add_arg(ap, "out", type=str, default=str(C.RESULTS))
    ap.add_argument("--append", action="store_true",
                    help="add ITQ runs to an existing sweep (its PTQ points and measured picks are kept)")
    ap.add_argument("--write-wz", action="store_true",
                    help="only (re)write the chosen .wz files of finished sweeps (JSON in --out)")
    ap.add_argument("--refresh-files", action="store_true",
                    help="only re-measure the chosen rows from their committed .wz files (no training)")
    args = ap.parse_args(argv)
    C.setup(args, "out")
    for name in args.models:
        data = args.data or DEFAULT_DATA.get(name, "mnist")
        if args.refresh_files:
            refresh_files(name, data, args)
        elif args.write_wz:
            write_wz(name, data, args)
        else:
            run_model(name, data, args)
        markdown(Path(args.out))


if __name__ == "__main__":
    sys.exit(main())
