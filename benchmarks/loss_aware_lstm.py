"""Quantized LSTM language models on PTB words, with and without normalization (METHODS.md D).

Hou et al., "Normalization helps training of quantized LSTM" (NeurIPS 2019): LSTM gate weights
quantized with one scale per gate block (8 per layer), normalization applied separately to each
gate's ``W_x x`` and ``W_h h`` (layer norm, batch norm shared across time) or weight norm after
quantization. This script trains ``lstm_lm`` on PTB words for every pair

    weights in {fp32, 1-bit BinaryConnect (no scale), 1-bit LAB, 2-bit LAQ (ternary), 3-bit LAQ linear}
    norm    in {none, layer, batch, weight}

from the same initialisation with the same schedule, and records per training step the mean
|gate pre-activation| of each gate (``LSTMLayer.record_stats``), the gradient norms of the
(latent) ``W_ih`` / ``W_hh`` and the training loss - the quantities that show why unnormalized
quantized LSTMs are hard to train: the pre-activation scale is set by the quantization scale
(alpha * sqrt(fan-in) for binary codes) instead of by learning.

Only the LSTM weights are quantized; the embedding and the softmax layer stay fp32 (as in the
released code, whose input is one-hot and whose softmax layer is full precision). Adam (the
released code's optimizer; loss-aware training needs its second moment), global gradient
norm clipped to 5.

Budgets (``--budget``):

* ``small`` (2 shared CPU cores): 1 x 200 LSTM, embedding 200, batch 20, bptt 35, no dropout,
  Adam lr 0.002 constant, 2 epochs capped at 125 steps each (175 k tokens, about 1/5 of one
  pass over the training text), perplexity on the first 20 k tokens of valid / test.
* ``full``: 1 x 300, dropout 0.5, 40 epochs, lr 0.002 divided by 4 on a plateau of the
  validation loss, full valid / test (the paper trains longer and with SGD for fp32).

Runs are cached under ``--runs`` (per-epoch checkpoints and one JSON per run). Outputs in
``--out``: ``loss_aware_lstm_<budget>.json`` / ``.md`` (perplexity table, targets) and
``loss_aware_lstm_<budget>.png`` (gate scale and gradient norm over training).

    python benchmarks/loss_aware_lstm.py --budget small
    python benchmarks/loss_aware_lstm.py --budget full --device cuda
"""
from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any

import torch

import _common as C
import weightzip
from weightzip.analysis.size import size_report
from weightzip.core import parametrize as P
from weightzip.core.registry import create_model
from weightzip.data import get_loaders
from weightzip.errors import InvalidModelError
from weightzip.methods.loss_aware import LossAware, LossAwareCallback, LossAwareQuant
from weightzip.training.checkpoint import machine_info
from weightzip.training.evaluate import evaluate
from weightzip.training.trainer import Trainer

ROOT = C.ROOT
BUDGETS = {
    "small": {"hidden": 200, "dropout": 0.0, "epochs": 2, "max_steps_per_epoch": 125, "eval_subset": 20000,
              "schedule": "constant"},
    "full": {"hidden": 300, "dropout": 0.5, "epochs": 40, "max_steps_per_epoch": None, "eval_subset": None,
             "schedule": "plateau"},
    "smoke": {"hidden": 32, "dropout": 0.0, "epochs": 1, "max_steps_per_epoch": 5, "eval_subset": 2000,
              "schedule": "constant"},  # checks the script
}
WEIGHTS: dict[str, dict[str, Any] | None] = {
    "fp": None,
    "1bit_bc": {"mode": "bc"},  # BinaryConnect: sign(w), no scale - the classic hard case
    "1bit": {"mode": "lab"},
    "2bit": {"mode": "laq", "bits": 2},
    "3bit": {"mode": "laq", "bits": 3, "levels": "linear"},
}
NORMS = ("none", "layer", "batch", "weight")
LR, BATCH, BPTT, CLIP = 0.002, 20, 35, 5.0


class TrainingStats:
    """Per training step: mean |gate pre-activation| per gate, ||grad W_ih||, ||grad W_hh||, loss.

    ``on_step`` runs after backward and before clipping / the optimizer step, so the gradient
    norms are the raw ones. Gate statistics come from ``LSTMLayer.record_stats`` (one [4]
    vector per time step, averaged over the window); the statistics of evaluation passes are
    discarded.
    """

    def __init__(self, every: int = 1):
        self.every = every
        self.rows: list[list[float]] = []  # [step, i, f, g, o, grad_ih, grad_hh, loss]

    def _layer(self, trainer):
        return trainer.model.lstm_layers[0]

    def on_train_begin(self, trainer) -> None:
        trainer.model.record_gate_stats(True)

    def on_epoch_begin(self, trainer, epoch) -> None:
        self._layer(trainer).stats = []

    def on_step(self, trainer, step) -> None:
        layer = self._layer(trainer)
        if step % self.every == 0 and layer.stats:
            gates = torch.stack(layer.stats).mean(0).tolist()  # (4)
            g_ih = P.original(layer, "weight_ih").grad
            g_hh = P.original(layer, "weight_hh").grad
            self.rows.append([float(step), *gates, float(g_ih.norm()), float(g_hh.norm()), float(trainer.loss.detach())])
        layer.stats = []

    def on_epoch_end(self, trainer, epoch, metrics) -> None:
        self._layer(trainer).stats = []

    def on_train_end(self, trainer) -> None:
        trainer.model.record_gate_stats(False)

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rows = [list(r) for r in state.get("rows", [])]


def train_config(b: dict[str, Any], device: str, seed: int) -> dict[str, Any]:
    return {"epochs": b["epochs"], "lr": LR, "optimizer": "adam", "weight_decay": 0.0, "grad_clip": CLIP,
            "schedule": b["schedule"], "gamma": 0.25, "batch_size": BATCH, "bptt": BPTT, "seed": seed,
            "device": device, "progress": False, "max_steps_per_epoch": b["max_steps_per_epoch"]}


def run_one(weights: str, norm: str, budget: str, loaders, args) -> dict[str, Any]:
    b = BUDGETS[budget]
    tag = f"ptb-{budget}-{weights}-{norm}"
    rec_path = args.runs / f"{tag}.json"
    if (rec := C.cached(rec_path, args.force)) is not None:
        return rec
    torch.manual_seed(args.seed)  # the same initial weights for every run of a norm
    model = create_model("lstm_lm", vocab_size=loaders.info["vocab_size"], hidden_size=b["hidden"],
                         dropout=b["dropout"], norm=norm)
    stats = TrainingStats(every=1 if b["max_steps_per_epoch"] else 10)
    callbacks: list[Any] = []
    cfg = WEIGHTS[weights]
    targets = []
    if cfg is not None:
        method = LossAware(LossAware.Config(method="loss_aware", select={"types": ["LSTMLayer"]}, **cfg))
        targets = method.attach(model, log=C.say)
        callbacks.append(LossAwareCallback(targets))
    callbacks.append(stats)
    trainer = Trainer(model, train_config(b, args.device, args.seed), loaders, callbacks=callbacks,
                      checkpoint=args.runs / f"{tag}.pt", meta={"benchmark": "loss_aware_lstm", "run": tag})
    t0 = time.perf_counter()
    fit = trainer.fit(resume=True)
    model = trainer.model.cpu().eval()
    wz = args.runs / f"{tag}.wz"
    weightzip.save(model, wz, metrics={"test": fit["test"]})
    size = size_report(wz)
    lstm_rows = [r for r in size.rows if ".weight_ih" in r["name"] or ".weight_hh" in r["name"]]
    from_file = evaluate(weightzip.load(wz), loaders.test, "lm", "cpu") if args.from_file else None
    layer = model.lstm_layers[0]
    scales = {t: P.find(layer, t, LossAwareQuant).alpha.tolist() for t in ("weight_ih", "weight_hh")} if targets else {}
    hist = fit["history"]
    rec = {
        "weights": weights, "norm": norm, "budget": budget, "model": b, "config": cfg, "tag": tag,
        "val_ppl": hist[-1].get("val_perplexity"), "test_ppl": fit["test"]["perplexity"],
        "from_file_test_ppl": from_file["perplexity"] if from_file else None,
        "train_ppl": hist[-1].get("train_perplexity"), "history": hist,
        "train_seconds": fit["wall_time_s"], "seconds_this_session": time.perf_counter() - t0,
        "lstm_bits_per_weight": {r["name"]: r["bits_per_weight"] for r in lstm_rows},
        "file_ratio": size.file_ratio, "file_bytes": size.file_bytes, "gate_scales": scales,
        "stats_columns": ["step", "gate_i", "gate_f", "gate_g", "gate_o", "grad_w_ih", "grad_w_hh", "loss"],
        "stats": stats.rows,
    }
    C.write_json(rec_path, rec)
    return rec


def _fmt(x: float | None) -> str:
    if x is None or not math.isfinite(x):
        return "diverged"
    return f"{x:.1f}"


def markdown(rows: dict[tuple[str, str], dict[str, Any]], budget: str, meta: dict[str, Any]) -> str:
    b = BUDGETS[budget]
    steps = (f"{b['epochs']} epoch(s) x {b['max_steps_per_epoch']} steps" if b["max_steps_per_epoch"]
             else f"{b['epochs']} epochs")
    evals = f"first {b['eval_subset']} tokens of valid/test" if b["eval_subset"] else "full valid/test"
    lines = [
        f"# Quantized LSTM on PTB words ({budget} budget)",
        "",
        f"`lstm_lm` 1 x {b['hidden']} (embedding {b['hidden']}), batch {BATCH}, bptt {BPTT}, dropout {b['dropout']}, "
        f"Adam lr {LR} ({b['schedule']}), gradient norm clip {CLIP}, {steps}, seed {meta['seed']}; {evals}. "
        "Only the LSTM weights are quantized (one scale per gate block: 8 per layer); embedding and softmax fp32. "
        "Every run starts from the same initial weights.",
        "" if budget == "full" else
        "**Shortened**: the paper trains 1 x 300 for many epochs; this budget is what 2 shared CPU cores allow.",
        "",
        "Test perplexity (validation in parentheses):",
        "",
        "| weights | " + " | ".join(f"norm={n}" for n in NORMS) + " |",
        "|---|" + "---|" * len(NORMS),
    ]
    for w in WEIGHTS:
        cells = []
        for n in NORMS:
            r = rows.get((w, n))
            cells.append("" if r is None else f"{_fmt(r['test_ppl'])} ({_fmt(r['val_ppl'])})")
        lines.append(f"| {w} | " + " | ".join(cells) + " |")
    lines += ["", "Bits per stored LSTM weight in the `.wz` (codes + per-gate scales, entropy-coded where smaller):", ""]
    for w in ("1bit_bc", "1bit", "2bit", "3bit"):
        r = rows.get((w, "none")) or next((rows[k] for k in rows if k[0] == w), None)
        if r:
            bpw = ", ".join(f"{k.split('.')[-1]} {v:.2f}" for k, v in r["lstm_bits_per_weight"].items())
            lines.append(f"- {w}: {bpw}")
    fp = rows.get(("fp", "none"))
    lines += ["", "Target (issue 7): a normalized 2-bit LSTM within 10% of the full-precision perplexity "
              "(reference: fp32 without normalization, the usual LSTM).", ""]
    if fp and fp.get("test_ppl"):
        for n in ("layer", "batch", "weight"):
            r = rows.get(("2bit", n))
            if r and r["test_ppl"] and math.isfinite(r["test_ppl"]):
                rel = r["test_ppl"] / fp["test_ppl"] - 1
                same = rows.get(("fp", n))
                extra = (f"; vs fp32 with the same norm ({_fmt(same['test_ppl'])}): {100 * (r['test_ppl'] / same['test_ppl'] - 1):+.1f}%"
                         if same and same.get("test_ppl") else "")
                lines.append(f"- 2-bit, norm={n}: {_fmt(r['test_ppl'])} vs {_fmt(fp['test_ppl'])} -> {100 * rel:+.1f}% "
                             f"-> {'met' if rel <= 0.10 else 'NOT met'}{extra}")
        r = rows.get(("2bit", "none"))
        if r:
            lines.append(f"- 2-bit, norm=none (contrast): {_fmt(r['test_ppl'])}")
    diffs = [abs(r["from_file_test_ppl"] - r["test_ppl"]) for r in rows.values()
             if r.get("from_file_test_ppl") is not None and r.get("test_ppl") is not None]
    if diffs:
        lines += ["", f"Evaluated again from each run's `.wz`: largest |test ppl from file - in memory| = {max(diffs):.3g} "
                  f"over {len(diffs)} runs."]
    bc = rows.get(("1bit_bc", "none"))
    if bc and bc.get("stats"):
        s = torch.tensor(bc["stats"])
        lines += ["", f"BinaryConnect without normalization: mean |gate pre-activation| {s[:, 1:5].mean():.2f} and "
                  f"median ||grad W_hh|| {s[:, 6].median():.3g} over training (fp32, norm=none: "
                  + (f"{torch.tensor(rows[('fp', 'none')]['stats'])[:, 1:5].mean():.2f} and "
                     f"{torch.tensor(rows[('fp', 'none')]['stats'])[:, 6].median():.3g})." if ("fp", "none") in rows else "n/a).")]
    lines += ["", f"Plot: `loss_aware_lstm_{budget}.png` - per training step: mean |gate pre-activation| (mean of the 4 "
              "gates), ||grad W_hh|| of the latent weights (before clipping) and the training loss; one column per "
              "weight precision, one line per normalization.", "",
              C.machine_line(meta["machine"]), ""]
    return "\n".join(lines)


def plot(rows: dict[tuple[str, str], dict[str, Any]], path: Path, budget: str) -> None:
    plt = C.pyplot()
    fig, axes = plt.subplots(3, len(WEIGHTS), figsize=(4 * len(WEIGHTS), 9), sharex=True, squeeze=False)
    for j, w in enumerate(WEIGHTS):
        for n in NORMS:
            r = rows.get((w, n))
            if not r or not r["stats"]:
                continue
            s = torch.tensor(r["stats"])  # (steps x 8)
            steps = s[:, 0]
            axes[0, j].plot(steps, s[:, 1:5].mean(1), label=n)
            axes[1, j].plot(steps, s[:, 6], label=n)
            axes[2, j].plot(steps, s[:, 7], label=n)
        axes[0, j].set_title(f"{w} LSTM weights")
        axes[0, j].set_yscale("log")
        axes[1, j].set_yscale("log")
        axes[2, j].set_xlabel("training step")
    axes[0, 0].set_ylabel("mean |gate pre-activation|")
    axes[1, 0].set_ylabel("||grad W_hh|| (latent)")
    axes[2, 0].set_ylabel("training loss")
    axes[0, 0].legend(title="norm")
    fig.suptitle(f"PTB word LM, {budget} budget: gate pre-activation scale and gradients over training")
    C.save_figure(fig, path, dpi=80)


def main(argv: list[str] | None = None) -> int:
    ap = C.parser(__doc__)
    ap.add_argument("--budget", choices=sorted(BUDGETS), default="small")
    C.add_arg(ap, "device")
    ap.add_argument("--weights", nargs="*", default=list(WEIGHTS), choices=list(WEIGHTS))
    ap.add_argument("--norms", nargs="*", default=list(NORMS), choices=list(NORMS))
    C.add_arg(ap, "data_dir", help="dataset root (default: $WEIGHTZIP_DATA)")
    C.add_arg(ap, "runs", default=ROOT / "runs" / "loss_aware", help="cache of checkpoints and runs")
    C.add_args(ap, "out", "seed", "threads")
    ap.add_argument("--no-from-file", dest="from_file", action="store_false",
                    help="skip re-evaluating each run from its .wz")
    C.add_arg(ap, "force", help="retrain runs whose result is cached")
    args = ap.parse_args(argv)
    C.setup(args, "runs", "out")
    b = BUDGETS[args.budget]
    loaders = get_loaders("ptb", batch_size=BATCH, bptt=BPTT, root=args.data_dir, eval_batch_size=BATCH,
                          eval_subset=b["eval_subset"], seed=args.seed)
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for w in args.weights:
        for n in args.norms:
            print(f"== {w} weights, norm={n}", flush=True)
            try:
                r = run_one(w, n, args.budget, loaders, args)
            except InvalidModelError as e:  # a diverged run is a result, not a crash
                print(f"   diverged: {e}", flush=True)
                r = {"weights": w, "norm": n, "budget": args.budget, "val_ppl": None, "test_ppl": None,
                     "from_file_test_ppl": None, "diverged": str(e), "stats": [], "lstm_bits_per_weight": {}}
                C.write_json(args.runs / f"ptb-{args.budget}-{w}-{n}.json", r)
            rows[(w, n)] = r
            print(f"   test ppl {_fmt(r['test_ppl'])}  val ppl {_fmt(r['val_ppl'])}  "
                  f"({r.get('train_seconds', 0):.0f}s)", flush=True)
    # runs finished earlier with the same budget complete the table
    C.complete_from_cache(rows, [(w, n) for w in WEIGHTS for n in NORMS],
                          lambda wn: args.runs / f"ptb-{args.budget}-{wn[0]}-{wn[1]}.json")
    meta = {"seed": args.seed, "machine": machine_info(args.device), "budget": b,
            "train": train_config(b, args.device, args.seed)}
    stem = f"loss_aware_lstm_{args.budget}"
    thinned = {f"{w}/{n}": {**r, "stats": [[float(f"{x:.4g}") for x in row]
                                           for row in r["stats"][:: max(1, math.ceil(len(r["stats"]) / 50))]]}
               for (w, n), r in rows.items()}
    C.write_results(args.out / f"{stem}.json",
                    {"meta": meta, "rows": thinned,
                     "note": "stats thinned to <= 50 rows per run (4 digits); full series in --runs"},
                    args.out / f"{stem}.md", markdown(rows, args.budget, meta))
    plot(rows, args.out / f"{stem}.png", args.budget)
    print(f"wrote {args.out / stem}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
