"""A .wz that travels (issue 14): models from outside the zoo in, no class needed, exports that
keep the compression.

    OMP_NUM_THREADS=1 python benchmarks/portable.py            # full run (about 15-20 min, 1 thread)
    python benchmarks/portable.py --quick                       # smoke test at tiny sizes

1. ONNX export of the committed Deep Compression files (LeNet-300-100, LeNet-5): bytes of the
   compressed ONNX (`weightzip export --to onnx`) vs the fp32 ONNX (`--dense`), MNIST test
   accuracy in onnxruntime vs the .wz, onnxruntime latency (batch 1 and 64, median, 1 thread).
2. A Hugging Face `transformers` GPT-2-style LM built from a config (no download), trained briefly
   on PTB (word level) with the project's trainer, compressed with 4-bit k-means codebooks on every
   Conv1D / Linear / Embedding weight (centroids fine-tuned), its ONNX export run in onnxruntime.
3. A `transformers` ViT classifier on MNIST built from a config, and a user CNN (BN, residual adds,
   depthwise convs): trained briefly, pruned + 4-bit k-means.
For every model: file ratio, accuracy / perplexity before and after, and whether `wz.load` WITHOUT
the class gives the same outputs as the load into the class (`torch.equal` on a test batch).
Writes `benchmarks/results/portable.{json,md}`; the .wz / .onnx files go to `runs/portable/`.
`--from-json` re-renders the page from a run's JSON (no computation).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import time
from pathlib import Path

import _common as C
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import weightzip as wz
from weightzip.analysis.size import size_report
from weightzip.data import get_loaders
from weightzip.export import export_onnx
from weightzip.models.adapters import CausalLM, Classifier
from weightzip.training.config import TrainConfig
from weightzip.training.evaluate import evaluate
from weightzip.training.trainer import Trainer

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------ onnxruntime
def session(path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def ort_classify(sess, loader) -> float:
    name = sess.get_inputs()[0].name
    correct = n = 0
    for x, y in loader:
        logits = sess.run(None, {name: x.numpy()})[0]
        correct += int((logits.argmax(1) == y.numpy()).sum())
        n += len(y)
    return correct / n


def ort_lm(sess, loader) -> float:
    """Perplexity ``exp(sum_t CE / #tokens)`` over the same windows as ``training.evaluate``."""
    name = sess.get_inputs()[0].name
    total, count = 0.0, 0
    for x, y in loader:
        logits = torch.from_numpy(sess.run(None, {name: x.numpy()})[0])
        total += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum"))
        count += y.numel()
    return math.exp(total / count)


def ort_latency(sess, x: np.ndarray, repeat=7, number=100) -> float:
    name = sess.get_inputs()[0].name
    for _ in range(10):
        sess.run(None, {name: x})
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(number):
            sess.run(None, {name: x})
        times.append((time.perf_counter() - t0) / number)
    return statistics.median(times) * 1e3


# ------------------------------------------------------------------------------------------ helpers
def _first(y):
    return y[0] if isinstance(y, tuple) else y


@torch.no_grad()
def same_outputs(path, make_model, x) -> bool:
    """wz.load without the class vs wz.load into a freshly built instance of the class."""
    a = wz.load(path)
    b = wz.load(path, model=make_model())
    return bool(torch.equal(_first(a(x)), _first(b(x))))


def metric(m: dict, task: str) -> float:
    return m["perplexity"] if task == "lm" else m["accuracy"]


def train(model, loaders, cfg: dict):
    Trainer(model, TrainConfig(progress=False, test_at_end=False, **cfg), loaders).fit()
    return model.eval()


def compress_and_measure(name, model, make_model, loaders, recipe_yaml, out_dir, task, example, log):
    """fp32 metrics -> compress -> save -> metrics from the file (without the class) -> checks."""
    rec = {"model": name}
    t0 = time.perf_counter()
    model.eval()
    base = evaluate(model, loaders.test, task)
    rec["fp32_test"] = base
    fp32_path = out_dir / f"{name}-fp32.wz"
    wz.save(model, fp32_path, example_inputs=(example,))
    rec["fp32_wz_bytes"] = fp32_path.stat().st_size
    rec["baseline_bytes"] = size_report(fp32_path).baseline_bytes
    recipe = wz.Recipe.from_yaml(recipe_yaml)
    result = wz.compress(model, recipe, loaders=loaders, log=log)
    model.eval()
    path = out_dir / f"{name}-{recipe.name}.wz"
    rep = wz.save(model, path, recipe=recipe, example_inputs=(example,),
                  metrics={"baseline_test": base, "data": rec.get("data")})
    size = size_report(path)
    loaded = wz.load(path)  # no class
    rec.update({
        "recipe": recipe.name, "methods": [s.method for s in result.stages], "file": str(path.relative_to(ROOT)),
        "file_bytes": rep.file_bytes, "file_ratio": size.file_ratio, "payload_ratio": size.payload_ratio,
        "graph_level": loaded.wz_manifest["graph"]["level"],
        "from_file_test": evaluate(loaded, loaders.test, task),
        "same_outputs_without_class": same_outputs(path, make_model, example),
        "fp32_same_outputs_without_class": same_outputs(fp32_path, make_model, example),
    })
    rec["change"] = metric(rec["from_file_test"], task) / metric(base, task) - 1 if task == "lm" else \
        metric(rec["from_file_test"], task) - metric(base, task)
    onnx_c = out_dir / f"{name}.onnx"
    onnx_d = out_dir / f"{name}-fp32.onnx"
    rc = export_onnx(path, onnx_c)
    rd = export_onnx(path, onnx_d, dense=True)
    sess = session(onnx_c)
    rec["onnx_bytes"], rec["onnx_fp32_bytes"] = rc["bytes"], rd["bytes"]
    rec["onnx_compressed_tensors"] = len(rc["compressed"])
    rec["onnx_test"] = ort_lm(sess, loaders.test) if task == "lm" else ort_classify(sess, loaders.test)
    rec["onnx_vs_wz"] = (rec["onnx_test"] / metric(rec["from_file_test"], task) - 1 if task == "lm"
                         else rec["onnx_test"] - metric(rec["from_file_test"], task))
    rec["seconds"] = time.perf_counter() - t0
    return rec


# ------------------------------------------------------------------------------------------ 1. LeNets
def lenet_exports(out_dir: Path, quick: bool) -> list[dict]:
    rows = []
    loaders = get_loaders("mnist", 256, subset=2000 if quick else None, eval_subset=1000 if quick else None)
    for fname in ("lenet300_100-deep-compression.wz", "lenet5-deep-compression.wz"):
        path = RESULTS / fname
        wz_acc = evaluate(wz.load(path), loaders.test, "classify")["accuracy"]
        c, d = out_dir / fname.replace(".wz", ".onnx"), out_dir / fname.replace(".wz", "-fp32.onnx")
        rc, rd = export_onnx(path, c), export_onnx(path, d, dense=True)
        sc, sd = session(c), session(d)
        row = {"file": fname, "wz_bytes": path.stat().st_size, "onnx_bytes": rc["bytes"], "onnx_fp32_bytes": rd["bytes"],
               "onnx_ratio": rd["bytes"] / rc["bytes"], "wz_accuracy": wz_acc,
               "onnx_accuracy": ort_classify(sc, loaders.test), "onnx_fp32_accuracy": ort_classify(sd, loaders.test)}
        for b in (1, 64):
            x = np.random.default_rng(0).standard_normal((b, 1, 28, 28)).astype(np.float32)
            n = 20 if quick else (300 if b == 1 else 30)
            row[f"ms_b{b}"] = ort_latency(sc, x, number=n)
            row[f"ms_fp32_b{b}"] = ort_latency(sd, x, number=n)
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------------------ 2. GPT-2
def gpt2(out_dir: Path, quick: bool, steps: int, ft_steps: int, log) -> dict:
    from transformers import GPT2Config, GPT2LMHeadModel

    loaders = get_loaders("ptb", 20, eval_batch_size=10, bptt=35, eval_subset=3000 if quick else None)
    V = loaders.info["vocab_size"]
    eos = loaders.info["eos_id"]
    size = dict(n_layer=1, n_embd=32, n_head=2) if quick else dict(n_layer=4, n_embd=256, n_head=4)
    cfg = GPT2Config(vocab_size=V, n_positions=64, tie_word_embeddings=False, bos_token_id=eos, eos_token_id=eos,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **size)

    def make():
        return CausalLM(GPT2LMHeadModel(cfg))

    torch.manual_seed(0)
    model = make()
    t0 = time.perf_counter()
    train(model, loaders, {"epochs": 1, "max_steps_per_epoch": steps, "lr": 2e-3, "optimizer": "adam",
                           "schedule": "cosine", "grad_clip": 1.0, "bptt": 35, "log_every": 50})
    train_s = time.perf_counter() - t0
    recipe = f"""
name: kmeans4
stages:
  - method: kmeans_share
    bits: 4
    select: {{types: [Conv1D, Linear, Embedding]}}
    finetune: {{epochs: 1, max_steps_per_epoch: {ft_steps}, lr: 0.0005, optimizer: adam, grad_clip: 1.0, bptt: 35}}
storage: {{entropy: auto}}
"""
    example = next(iter(loaders.test))[0]
    rec = compress_and_measure("gpt2-ptb", model, make, loaders, recipe, out_dir, "lm", example, log)
    rec.update({"config": {k: getattr(cfg, k) for k in ("n_layer", "n_embd", "n_head", "vocab_size", "n_positions")},
                "params": sum(p.numel() for p in model.parameters()), "train_steps": steps,
                "train_tokens": steps * 20 * 35, "train_seconds": train_s, "finetune_steps": ft_steps})
    return rec


# ------------------------------------------------------------------------------------------ 3. ViT, user CNN
class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.dw = nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.pw = nn.Conv2d(c, c, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x):
        return F.relu(x + self.bn2(self.pw(F.relu(self.bn1(self.dw(x))))))


class UserCNN(nn.Module):
    """Stem conv, two residual depthwise-separable blocks per stage, BN everywhere, linear head."""

    def __init__(self, c=32):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU())
        self.stage1 = nn.Sequential(Block(c), Block(c))
        self.down = nn.Sequential(nn.Conv2d(c, 2 * c, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(2 * c), nn.ReLU())
        self.stage2 = nn.Sequential(Block(2 * c), Block(2 * c))
        self.head = nn.Linear(2 * c, 10)

    def forward(self, x):
        x = self.stage2(self.down(F.max_pool2d(self.stage1(self.stem(x)), 2)))
        return self.head(x.mean(dim=(2, 3)))


def image_models(out_dir: Path, quick: bool, steps: int, log) -> list[dict]:
    from transformers import ViTConfig, ViTForImageClassification

    loaders = get_loaders("mnist", 128, eval_batch_size=500, subset=2000 if quick else None,
                          eval_subset=1000 if quick else None)
    vcfg = ViTConfig(image_size=28, patch_size=7, num_channels=1, num_labels=10,
                     **(dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32) if quick
                        else dict(hidden_size=128, num_hidden_layers=4, num_attention_heads=4, intermediate_size=256)))
    out = []
    for name, make, lr in (("vit-mnist", lambda: Classifier(ViTForImageClassification(vcfg)), 1e-3),
                           ("usercnn-mnist", lambda: UserCNN(8 if quick else 32), 2e-3)):
        torch.manual_seed(0)
        model = make()
        t0 = time.perf_counter()
        train(model, loaders, {"epochs": 1, "max_steps_per_epoch": steps, "lr": lr, "optimizer": "adam",
                               "schedule": "cosine"})
        train_s = time.perf_counter() - t0
        types = "[Linear, Conv2d]"
        recipe = f"""
name: prune-kmeans4
stages:
  - method: prune_magnitude
    sparsity: 0.5
    select: {{types: {types}}}
  - method: finetune
    train: {{epochs: 1, max_steps_per_epoch: {max(steps // 4, 2)}, lr: 0.0005, optimizer: adam}}
  - method: kmeans_share
    bits: 4
    select: {{types: {types}}}
    finetune: {{epochs: 1, max_steps_per_epoch: {max(steps // 4, 2)}, lr: 0.0005, optimizer: adam}}
storage: {{entropy: auto}}
"""
        example = next(iter(loaders.test))[0][:8]
        rec = compress_and_measure(name, model, make, loaders, recipe, out_dir, "classify", example, log)
        rec.update({"params": sum(p.numel() for p in model.parameters()), "train_steps": steps, "train_seconds": train_s})
        out.append(rec)
    return out


# ------------------------------------------------------------------------------------------ report
def _load(x):
    return f"{float(x):.2f}" if x is not None else "-"


def _pct(x):
    return f"{100 * x:+.2f}%"


def markdown(res: dict) -> str:
    L = ["# A .wz that travels: any model in, no class needed, compressed exports", "",
         f"Produced by `{res['command']}` ({res['machine']}, {res['threads']} thread(s), load average "
         f"before / after: {_load(res['loadavg_before'])} / {_load(res['loadavg_after'])} (of the last run; other jobs "
         f"shared the 2 cores throughout); total {res['seconds'] / 60:.1f} min).",
         "All sizes are bytes on disk; ratios are file ratios (fp32 state_dict bytes / .wz bytes). The ONNX files",
         "are plain protobuf (no zstd); `fp32 ONNX` is `weightzip export --to onnx --dense` of the same file.", ""]
    L += ["## 1. ONNX export of the Deep Compression LeNets", "",
          "| file | .wz | ONNX fp32 | ONNX compressed | ONNX ratio | acc .wz | acc ONNX (ort) | acc fp32 ONNX | "
          "ort ms b1 (fp32) | ort ms b64 (fp32) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["lenet"]:
        L.append(f"| {r['file']} | {r['wz_bytes']:,} | {r['onnx_fp32_bytes']:,} | {r['onnx_bytes']:,} | "
                 f"{r['onnx_ratio']:.1f}x | {100 * r['wz_accuracy']:.2f} | {100 * r['onnx_accuracy']:.2f} | "
                 f"{100 * r['onnx_fp32_accuracy']:.2f} | {r['ms_b1']:.3f} ({r['ms_fp32_b1']:.3f}) | "
                 f"{r['ms_b64']:.3f} ({r['ms_fp32_b64']:.3f}) |")
    L += ["", "Targets (issue 14): >= 8x smaller than the fp32 ONNX, accuracy within 0.05 pt of the .wz, "
          "latency no worse than fp32. The decoding subgraphs (Gather / CumSum / ScatterElements on initializers) "
          "are constant-folded by onnxruntime at session creation, so inference runs the dense kernels.", ""]
    L += ["## 2-3. Models from outside the zoo", "",
          "| model | params | methods | file ratio | fp32 test | from .wz (no class) | change | "
          "no-class outputs == class outputs (fp32 / compressed) | graph | ONNX bytes (fp32) | ONNX test (ort) | ONNX vs .wz |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["models"]:
        lm = "perplexity" in r["fp32_test"]
        f = (lambda m: f"ppl {m['perplexity']:.2f}") if lm else (lambda m: f"acc {100 * m['accuracy']:.2f}")
        onnx_t = f"ppl {r['onnx_test']:.2f}" if lm else f"acc {100 * r['onnx_test']:.2f}"
        chg = _pct(r["change"]) if lm else f"{100 * r['change']:+.2f} pt"
        ovw = _pct(r["onnx_vs_wz"]) if lm else f"{100 * r['onnx_vs_wz']:+.2f} pt"
        L.append(f"| {r['model']} | {r['params']:,} | {' + '.join(r['methods'])} | {r['file_ratio']:.2f}x "
                 f"({r['file_bytes']:,} B) | {f(r['fp32_test'])} | {f(r['from_file_test'])} | {chg} | "
                 f"{r['fp32_same_outputs_without_class']} / {r['same_outputs_without_class']} | {r['graph_level']} | "
                 f"{r['onnx_bytes']:,} ({r['onnx_fp32_bytes']:,}) | {onnx_t} | {ovw} |")
    g = next((r for r in res["models"] if r["model"].startswith("gpt2")), None)
    if g:
        L += ["", f"GPT-2 (`transformers.GPT2LMHeadModel` from `GPT2Config({', '.join(f'{k}={v}' for k, v in g['config'].items())}, "
              "tie_word_embeddings=False, dropout 0)`, wrapped by `weightzip.models.adapters.CausalLM`): trained "
              f"{g['train_steps']} Adam steps ({g['train_tokens']:,} PTB tokens, {g['train_seconds'] / 60:.1f} min) -- a brief "
              "budget, so the perplexities are far from a converged model's; 4-bit k-means on every Conv1D / Linear / "
              f"Embedding weight with {g['finetune_steps']} centroid fine-tuning steps. Targets: .wz >= 7x smaller than fp32 "
              "with perplexity within 3%; ONNX perplexity within 1% of the .wz."]
    L += ["", "`graph`: how the graph in the file was recorded (`fx`: torch.fx symbolic trace, module tree kept; "
          "`aten`: torch.export, for models with Python control flow such as transformers). `wz.load(path)` "
          "rebuilds the model from the graph alone; the check compares its outputs with `wz.load(path, model=<class>(...))` "
          "on a test batch with `torch.equal`.", ""]
    L += ["## Notes", "",
          "* The fp32 ONNX baseline is this exporter's `--dense` output (dynamo exporter, per-node metadata dropped); "
          "the old TorchScript export of LeNet-300-100 quoted in issue 14 was 1,067,455 bytes, LeNet-5 1,726,134.",
          "* LeNet rows: accuracy on the full MNIST test set; latency is onnxruntime on 1 thread, median of 7 "
          "repeats, on a machine shared with other jobs (load average above), so differences of a few percent are noise.",
          "* Training budgets are brief and stated (steps above); the comparisons are fp32 vs compressed of the same "
          "model, not against published perplexities / accuracies.",
          "* The GPT-2 is untied (`tie_word_embeddings=False`): with tied embeddings the shared tensor appears twice "
          "in the state_dict, and the file would store it twice.", ""]
    return "\n".join(L) + "\n"


def main() -> None:
    ap = C.parser(__doc__)
    ap.add_argument("--quick", action="store_true", help="tiny sizes and few steps (a smoke test, not results)")
    ap.add_argument("--lm-steps", type=int, default=600)
    ap.add_argument("--lm-finetune-steps", type=int, default=100)
    ap.add_argument("--image-steps", type=int, default=400)
    C.add_args(ap, "threads")
    ap.add_argument("--only", nargs="*", default=["lenet", "gpt2", "image"])
    ap.add_argument("--from-json", type=Path, help="re-render the page from this results JSON")
    C.add_arg(ap, "out", default=RESULTS / "portable.md")
    args = ap.parse_args()
    if args.from_json:
        res = json.loads(args.from_json.read_text())
        C.write_text(args.out, markdown(res))
        print(f"wrote {args.out}")
        return
    out_dir = ROOT / "runs" / "portable"
    C.setup(args)
    out_dir.mkdir(parents=True, exist_ok=True)
    log = C.say
    t0 = time.perf_counter()
    res = {"command": "python benchmarks/portable.py" + (" --quick" if args.quick else ""), "threads": args.threads,
           "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
           "loadavg_before": C.load_average(), "lenet": [], "models": []}
    if args.quick:
        args.lm_steps, args.lm_finetune_steps, args.image_steps = 5, 2, 5
    if "lenet" in args.only:
        res["lenet"] = lenet_exports(out_dir, args.quick)
        log(json.dumps(res["lenet"], indent=1))
    if "gpt2" in args.only:
        res["models"].append(gpt2(out_dir, args.quick, args.lm_steps, args.lm_finetune_steps, log))
        log(json.dumps(res["models"][-1], indent=1))
    if "image" in args.only:
        res["models"] += image_models(out_dir, args.quick, args.image_steps, log)
        log(json.dumps(res["models"][-2:], indent=1))
    res["seconds"] = time.perf_counter() - t0
    res["loadavg_after"] = C.load_average()
    out = args.out if not args.quick else out_dir / "portable-quick.md"
    if set(args.only) != {"lenet", "gpt2", "image"}:  # a partial run updates the parts it ran
        old = C.read_json(out.with_suffix(".json"))
        if old:
            ran = {m["model"] for m in res["models"]}
            res["models"] = [m for m in old.get("models", []) if m["model"] not in ran] + res["models"]
            res["lenet"] = res["lenet"] or old.get("lenet", [])
            res["command"] = f"{old.get('command')}; then {res['command']} --only {' '.join(args.only)}"
            res["seconds"] += old.get("seconds", 0)
    C.write_results(out.with_suffix(".json"), res, out, markdown(res))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
