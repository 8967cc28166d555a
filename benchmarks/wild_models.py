"""Models people use, at their real sizes (issue 20, item 6): compress, save, load, run, export.

    nice -n 10 python benchmarks/wild_models.py                        # every model, both recipes
    python benchmarks/wild_models.py --small                            # tiny configs: a smoke test
    nice -n 10 python benchmarks/wild_models.py --models mobilenet_v2 resnet50 --timeout-min 20 --budget-min 80
    python benchmarks/wild_models.py --render-only                      # re-write the page from its JSON

The models are Hugging Face ``transformers`` classes built from their configs with random
initialisation (seed 0; nothing is downloaded): BERT-base (``BertModel(BertConfig())``), GPT-2
124M (``GPT2LMHeadModel(GPT2Config())``, tied embeddings), a Llama-style ~100M
(``LlamaForCausalLM``, hidden 768, MLP 2048, 8 layers, 12 heads / 4 KV heads, vocab 32000),
ViT-B/16 (``ViTForImageClassification(ViTConfig())``), ResNet-50
(``ResNetForImageClassification(ResNetConfig())``) and MobileNetV2 1.0
(``MobileNetV2ForImageClassification(MobileNetV2Config())``). ``--small`` swaps in tiny configs.

Two post-training recipes, no data: ``kmeans4`` (4-bit k-means weight sharing of every
Linear / Conv1D / Conv2d / Embedding weight) and ``prune50-kmeans4`` (magnitude pruning to 50%
of the same weights, then the same k-means). Each (model, recipe) runs in a fresh subprocess
(``--child``) with a time limit, so a slow model cannot eat the session, peak RSS is that
process's own, and a crash is a table cell. The child measures, phase by phase: parameters,
fp32 bytes (``torch.save`` of the state_dict; a tied tensor is stored once), compress time,
``wz.save(model, path, example_inputs=(x,))`` time and file bytes, ``wz.load`` time, the
relative output error ``||y - y_ref|| / ||y_ref||`` of the model loaded from the file against
the fp32 model on a fixed random input (logits, or BERT's last hidden state), the
``mode="compiled"`` load (native plan or torch fallback), and the compressed ONNX export
(``weightzip.export.export_onnx``) run in onnxruntime. Peak RSS per phase is sampled by a
thread (psutil, every 20 ms); ``ru_maxrss`` gives the process maximum.

The child writes its record after every phase (``runs/wild_models/<model>-<recipe>.json``) and
the parent rewrites ``benchmarks/results/wild_models.{json,md}`` after every run, so a run that
is stopped or times out leaves the rows it finished (a timed-out row says in which phase).
``--budget-min`` stops starting new runs once that much wall time is spent; rows not run say so.
A run of some models (``--models``) keeps the other rows of the existing JSON.
"""
from __future__ import annotations

import gc
import io
import json
import os
import platform
import re
import resource
import signal
import subprocess
import sys
import threading
import time
import traceback
import warnings
from pathlib import Path

import _common as C

ROOT = C.ROOT
RESULTS = C.RESULTS
RUNS = ROOT / "runs" / "wild_models"

#: module kinds whose ``weight`` the recipes select (GPT-2's linear layers are ``Conv1D``)
TYPES = ["Linear", "Conv1D", "Conv2d", "Embedding"]

RECIPES = {
    "kmeans4": {"name": "kmeans4", "stages": [
        {"method": "kmeans_share", "bits": 4, "select": {"types": TYPES}}]},
    "prune50-kmeans4": {"name": "prune50-kmeans4", "stages": [
        {"method": "prune_magnitude", "sparsity": 0.5, "select": {"types": TYPES}},
        {"method": "kmeans_share", "bits": 4, "select": {"types": TYPES}}]},
}

#: cheapest first: the order a full run takes
MODEL_ORDER = ["mobilenet_v2", "resnet50", "vit_b16", "bert_base", "llama_100m", "gpt2"]
SEQ_LEN, SEQ_LEN_SMALL = 128, 16
IMAGE, IMAGE_SMALL = 224, 64


# ------------------------------------------------------------------------------------------ models
def build(name: str, small: bool):
    """``(model, config summary, input)`` for one model name; the model is in eval mode."""
    import torch
    import transformers as T

    lm = name in ("bert_base", "gpt2", "llama_100m")
    if name == "bert_base":
        cfg = T.BertConfig(**(dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                   intermediate_size=64, vocab_size=1000) if small else {}))
        model = T.BertModel(cfg)
        summary = dict(cls="BertModel", hidden=cfg.hidden_size, layers=cfg.num_hidden_layers,
                       heads=cfg.num_attention_heads, intermediate=cfg.intermediate_size, vocab=cfg.vocab_size)
    elif name == "gpt2":
        cfg = T.GPT2Config(**(dict(n_embd=32, n_layer=2, n_head=2, vocab_size=1000, n_positions=64) if small else {}))
        model = T.GPT2LMHeadModel(cfg)
        summary = dict(cls="GPT2LMHeadModel", n_embd=cfg.n_embd, n_layer=cfg.n_layer, n_head=cfg.n_head,
                       vocab=cfg.vocab_size, tied=bool(cfg.tie_word_embeddings))
    elif name == "llama_100m":
        cfg = T.LlamaConfig(**(dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                    num_key_value_heads=1, vocab_size=1000) if small else
                               dict(hidden_size=768, intermediate_size=2048, num_hidden_layers=8,
                                    num_attention_heads=12, num_key_value_heads=4, vocab_size=32000)))
        model = T.LlamaForCausalLM(cfg)
        summary = dict(cls="LlamaForCausalLM", hidden=cfg.hidden_size, intermediate=cfg.intermediate_size,
                       layers=cfg.num_hidden_layers, heads=cfg.num_attention_heads, kv_heads=cfg.num_key_value_heads,
                       vocab=cfg.vocab_size, tied=bool(cfg.tie_word_embeddings))
    elif name == "vit_b16":
        cfg = T.ViTConfig(**(dict(image_size=IMAGE_SMALL, patch_size=16, hidden_size=32, num_hidden_layers=2,
                                  num_attention_heads=2, intermediate_size=64) if small else {}))
        model = T.ViTForImageClassification(cfg)
        summary = dict(cls="ViTForImageClassification", hidden=cfg.hidden_size, layers=cfg.num_hidden_layers,
                       heads=cfg.num_attention_heads, patch=cfg.patch_size, image=cfg.image_size,
                       labels=cfg.num_labels)
    elif name == "resnet50":
        cfg = T.ResNetConfig(**(dict(embedding_size=8, hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1])
                                if small else {}))
        model = T.ResNetForImageClassification(cfg)
        summary = dict(cls="ResNetForImageClassification", depths=list(cfg.depths), hidden_sizes=list(cfg.hidden_sizes),
                       layer_type=cfg.layer_type, labels=cfg.num_labels)
    elif name == "mobilenet_v2":
        cfg = T.MobileNetV2Config(**(dict(depth_multiplier=0.35, image_size=IMAGE_SMALL) if small else {}))
        model = T.MobileNetV2ForImageClassification(cfg)
        summary = dict(cls="MobileNetV2ForImageClassification", depth_multiplier=cfg.depth_multiplier,
                       image=cfg.image_size, labels=cfg.num_labels)
    else:
        raise KeyError(f"unknown model {name!r}; valid: {', '.join(MODEL_ORDER)}")
    g = torch.Generator().manual_seed(1)
    if lm:
        x = torch.randint(0, cfg.vocab_size, (1, SEQ_LEN_SMALL if small else SEQ_LEN), generator=g)
    else:
        s = IMAGE_SMALL if small else IMAGE
        x = torch.randn(1, 3, s, s, generator=g)
    summary["input"] = f"{tuple(x.shape)} {str(x.dtype).replace('torch.', '')}"
    return model.eval(), summary, x


def main_output(y):
    """The tensor compared: ``logits`` where the output has them, else the last hidden state."""
    import torch

    if isinstance(y, torch.Tensor):
        return y
    for key in ("logits", "last_hidden_state"):
        v = y.get(key) if isinstance(y, dict) else getattr(y, key, None)
        if v is not None:
            return v
    if isinstance(y, dict):
        return next(v for v in y.values() if v is not None)
    return y[0]


def rel_err(y, ref) -> float:
    import torch

    y, ref = y.detach().double().reshape(ref.shape), ref.detach().double()
    return float(torch.linalg.vector_norm(y - ref) / torch.linalg.vector_norm(ref))


def why(e: BaseException) -> str:
    """``ExceptionType: first line`` of an exception (a table cell)."""
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0][:300] if lines else ''}".rstrip(": ")


# ------------------------------------------------------------------------------------------ child
class RSS:
    """Peak resident set size per phase, sampled by a daemon thread every ``dt`` seconds."""

    def __init__(self, dt: float = 0.02):
        import psutil

        self.proc = psutil.Process()
        self.dt = dt
        self.peak = 0
        self.lock = threading.Lock()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while True:
            r = self.proc.memory_info().rss
            with self.lock:
                self.peak = max(self.peak, r)
            time.sleep(self.dt)

    def start(self) -> None:
        with self.lock:
            self.peak = self.proc.memory_info().rss

    def stop(self) -> int:
        r = self.proc.memory_info().rss
        with self.lock:
            self.peak = max(self.peak, r)
            return self.peak


def max_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def child(model_name: str, recipe_name: str, small: bool, record_path: Path) -> None:
    """One (model, recipe): every phase's figures, written to ``record_path`` after each phase."""
    import torch

    import weightzip as wz
    from weightzip.core.select import Selection, select

    torch.set_num_threads(int(os.environ.get("WILD_THREADS", "1")))
    rss = RSS()
    rec_src = C.repo_relative(str(Path(wz.__file__).resolve().parent))
    tag = f"{model_name}-{recipe_name}" + ("-small" if small else "")
    wz_path, onnx_path = RUNS / f"{tag}.wz", RUNS / f"{tag}.onnx"
    rec: dict = {"model": model_name, "recipe": recipe_name, "small": small, "phases_done": [], "errors": {},
                 "peak_rss": {}, "seconds": {}, "loadavg_start": C.load_average(), "pid": os.getpid(),
                 "weightzip_imported_from": rec_src}

    def write(phase: str | None = None):
        if phase:
            rec["phases_done"].append(phase)
        rec["max_rss"] = max_rss_bytes()
        rec["loadavg_now"] = C.load_average()
        C.write_json(record_path, C.repo_relative(rec))

    def phase(name: str):
        rec["phase"] = name
        write()
        rss.start()
        return time.perf_counter()

    def done(name: str, t0: float):
        rec["seconds"][name] = time.perf_counter() - t0
        rec["peak_rss"][name] = rss.stop()
        write(name)

    # 1. build the fp32 model and its reference output
    t0 = phase("build")
    torch.manual_seed(0)
    model, rec["config"], x = build(model_name, small)
    rec["params"] = sum(p.numel() for p in model.parameters())  # parameters() lists a tied tensor once
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)                          # one storage per tied tensor
    rec["fp32_bytes"] = buf.tell()
    del buf
    picked = select(model, Selection(types=TYPES))
    rec["selected_tensors"] = len(picked)
    seen = {id(getattr(m, t)): getattr(m, t).numel() for _, m, t in picked}
    rec["selected_params"] = sum(seen.values())
    rec["types_present"] = sorted({type(m).__name__ for _, m, _ in picked})
    with torch.no_grad():
        t1 = time.perf_counter()
        y_ref = main_output(model(x)).detach().clone()
        rec["fp32_forward_s"] = time.perf_counter() - t1
    rec["output_shape"] = list(y_ref.shape)
    done("build", t0)

    # 2. compress (post-training: no data)
    t0 = phase("compress")
    recipe = wz.Recipe.from_dict(RECIPES[recipe_name])
    try:
        result = wz.compress(model, recipe, log=lambda *a, **k: None)
        model = result.model if getattr(result, "model", None) is not None else model
        with torch.no_grad():
            y_mem = main_output(model(x)).detach().clone()
        rec["rel_err_memory_vs_fp32"] = rel_err(y_mem, y_ref)
    except Exception as e:  # noqa: BLE001 - every failure is a table cell
        rec["errors"]["compress"] = why(e)
        rec["tracebacks"] = {"compress": traceback.format_exc()[-3000:]}
        done("compress", t0)
        return
    done("compress", t0)

    # 3. save with the graph recorded
    t0 = phase("save")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            report = wz.save(model, wz_path, recipe=recipe, example_inputs=(x,))
        rec["save_warnings"] = [str(w.message)[:400] for w in caught if "graph" in str(w.message)]
        rec["wz_bytes"] = report.file_bytes
        rec["wz_baseline_bytes"] = report.baseline_bytes
        rec["file_ratio"] = rec["fp32_bytes"] / report.file_bytes
        rec["wz_path"] = str(wz_path)
    except Exception as e:  # noqa: BLE001
        rec["errors"]["save"] = why(e)
        rec.setdefault("tracebacks", {})["save"] = traceback.format_exc()[-3000:]
        done("save", t0)
        return
    done("save", t0)
    del model, result
    gc.collect()

    # 4. load from the file (dense) without the class, run
    t0 = phase("load")
    try:
        m2 = wz.load(wz_path)
        rec["load_s"] = time.perf_counter() - t0
        with torch.no_grad():
            y_file = main_output(m2(x)).detach().clone()
        rec["rel_err_file_vs_fp32"] = rel_err(y_file, y_ref)
        rec["rel_err_file_vs_memory"] = rel_err(y_file, y_mem)
        del m2
    except Exception as e:  # noqa: BLE001
        y_file = None
        rec["errors"]["load"] = why(e)
        rec.setdefault("tracebacks", {})["load"] = traceback.format_exc()[-3000:]
    gc.collect()
    done("load", t0)

    # 5. compiled mode: does it run natively?
    t0 = phase("compiled")
    try:
        from weightzip.runtime.compiled.module import CompiledModel

        mc = wz.load(wz_path, mode="compiled")
        rec["compiled_load_s"] = time.perf_counter() - t0
        with torch.no_grad():
            yc = mc(x)
        comp: dict = {"class": type(mc).__name__}
        if isinstance(mc, CompiledModel):
            comp["resident_bytes"] = mc.resident_bytes()
            plans = list(mc.plans.values())
            if not plans:
                comp["coverage"] = "torch fallback"
                comp["reason"] = (f"{str(x.dtype).replace('torch.', '')} input: CompiledModel runs the decoded "
                                  "dense model for non-float32 inputs (no plan built)")
            else:
                p = plans[0]
                natives = sum(1 for s in p.segments if not hasattr(s, "module"))
                comp["segments"], comp["native_segments"] = len(p.segments), natives
                comp["fallbacks"] = [list(f) for f in p.fallbacks][:20]
                comp["n_fallbacks"] = len(p.fallbacks)
                if p.whole_model_reason:
                    comp["coverage"], comp["reason"] = "torch fallback", p.whole_model_reason
                elif p.native_only:
                    comp["coverage"] = "native"
                else:
                    comp["coverage"] = "partial"
                    comp["reason"] = f"{len(p.fallbacks)} layer(s) in torch, e.g. {p.fallbacks[0][0]}: {p.fallbacks[0][1]}"
        else:
            comp["coverage"] = "torch fallback"
            comp["reason"] = f"load returned {type(mc).__name__}, not a CompiledModel"
        if y_file is not None:
            comp["rel_err_vs_dense_load"] = rel_err(main_output(yc), y_file)
        rec["compiled"] = comp
        del mc, yc
    except Exception as e:  # noqa: BLE001
        rec["errors"]["compiled"] = why(e)
        rec.setdefault("tracebacks", {})["compiled"] = traceback.format_exc()[-3000:]
    gc.collect()
    done("compiled", t0)

    # 6. compressed ONNX export, run in onnxruntime
    t0 = phase("onnx")
    try:
        from weightzip.export import export_onnx

        r = export_onnx(wz_path, onnx_path)
        rec["onnx_export_s"] = time.perf_counter() - t0
        rec["onnx_bytes"] = r["bytes"]
        rec["onnx_compressed_tensors"] = len(r["compressed"])
        rec["onnx_dense_tensors"] = len(r["dense"])
        write()
        try:
            import onnxruntime as ort

            so = ort.SessionOptions()
            so.intra_op_num_threads = so.inter_op_num_threads = 1
            sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
            outs = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
            y_onnx = next((o for o in outs if tuple(o.shape) == tuple(y_ref.shape)), outs[0])
            rec["onnx_rel_err_vs_file"] = rel_err(torch.from_numpy(y_onnx), y_file) if y_file is not None else None
            rec["onnx_rel_err_vs_fp32"] = rel_err(torch.from_numpy(y_onnx), y_ref)
            del sess
        except Exception as e:  # noqa: BLE001
            rec["errors"]["onnxruntime"] = why(e)
            rec.setdefault("tracebacks", {})["onnxruntime"] = traceback.format_exc()[-3000:]
    except Exception as e:  # noqa: BLE001
        rec["errors"]["onnx"] = why(e)
        rec.setdefault("tracebacks", {})["onnx"] = traceback.format_exc()[-3000:]
    done("onnx", t0)
    rec["phase"] = "finished"
    write()


# ------------------------------------------------------------------------------------------ parent
def snapshot(rev: str) -> tuple[str, Path]:
    """``src/`` of commit ``rev`` extracted under ``runs/wild_models/src-<hash>/`` (the children import
    weightzip from there, so edits in progress in the working tree do not change a long run)."""
    full = subprocess.run(["git", "rev-parse", rev], cwd=ROOT, check=True, capture_output=True, text=True).stdout.strip()
    dest = RUNS / f"src-{full[:12]}"
    if not (dest / "src" / "weightzip" / "__init__.py").is_file():
        dest.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "archive", full, "src"], cwd=ROOT, check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return full, dest / "src"


def run_one(model_name: str, recipe_name: str, small: bool, timeout_s: float, threads: int,
            src: Path | None = None) -> dict:
    """Run one (model, recipe) in a fresh subprocess; its record, with ``status`` added."""
    tag = f"{model_name}-{recipe_name}" + ("-small" if small else "")
    record_path = RUNS / f"{tag}.json"
    log_path = RUNS / f"{tag}.log"
    record_path.unlink(missing_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", model_name, recipe_name, str(record_path)]
    if small:
        cmd.append("--small")
    env = dict(os.environ, WILD_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(src)] + [p for p in [env.get("PYTHONPATH")] if p])
    t0 = time.perf_counter()
    status = "finished"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        try:
            rc = proc.wait(timeout=timeout_s)
            if rc != 0:
                status = f"child exited with code {rc}"
        except subprocess.TimeoutExpired:
            proc.kill()   # this child only, by its own handle
            proc.wait()
            status = "timed out"
    wall = time.perf_counter() - t0
    rec = C.read_json(record_path) or {"model": model_name, "recipe": recipe_name, "phases_done": [], "errors": {}}
    if status == "timed out":
        status = f"timed out after {wall / 60:.1f} min in phase '{rec.get('phase', 'start')}'"
    elif status != "finished":
        tail = log_path.read_text(errors="replace").strip().splitlines()[-1:] if log_path.exists() else []
        status += f" in phase '{rec.get('phase', 'start')}'" + (f" ({tail[0][:200]})" if tail else "")
    rec["status"] = status
    rec["wall_s"] = wall
    rec["log"] = str(log_path)
    return rec


def _mb(v) -> str:
    return "-" if v is None else f"{v / 2**20:,.0f}"


def _sec(v) -> str:
    return "-" if v is None else (f"{v:.1f}" if v < 100 else f"{v:.0f}")


def _err(rec: dict, *phases: str) -> str | None:
    for p in phases:
        if p in rec.get("errors", {}):
            return f"FAILED ({p}): {rec['errors'][p]}"
    return None


def _cell(rec: dict, key: str, f, *phases: str) -> str:
    """The value, or why there is none: the phase's error, 'not reached' (timed out / crashed)."""
    if rec.get(key) is not None:
        return f(rec[key])
    e = _err(rec, *phases)
    if e:
        return e
    if rec.get("status") == "not run":
        return "not run"
    if phases and phases[-1] not in rec.get("phases_done", []):
        return "not reached" if rec.get("phases_done") else "-"
    return "-"


def _status(rec: dict) -> str:
    """The row's status; a child ended by a signal that is not the time limit's kill was stopped from
    outside the script (e.g. by hand, to give its time to other rows), which the cell says."""
    st = str(rec.get("status", "-"))
    m = re.match(r"child exited with code -(\d+)(.*)", st)
    if m:
        try:
            sig = signal.Signals(int(m.group(1))).name
        except ValueError:
            sig = f"signal {m.group(1)}"
        return f"stopped by {sig} from outside the script{m.group(2)}"
    return st


def _idle(rec: dict) -> bool:
    """A row with nothing measured: not run (budget, or not reached), or still running."""
    return str(rec.get("status", "")).startswith(("not run", "running")) and not rec.get("phases_done")


def compiled_cell(rec: dict) -> str:
    comp = rec.get("compiled")
    if not comp:
        return _cell(rec, "compiled", str, "compiled")
    cov = comp.get("coverage")
    if cov == "native":
        return f"native ({_mb(comp['resident_bytes']['native'])} MB resident)"
    reason = comp.get("reason", "")
    return f"{cov}: {reason}"


def markdown(res: dict) -> str:
    rows = res["rows"]
    small = res.get("small")
    L = ["# Models people use, at their real sizes" + (" (--small: tiny configs, a smoke test)" if small else ""), "",
         f"Produced by `{res['command']}` on {res['machine']}; {res.get('weightzip', 'weightzip')}; torch {res['torch']}, transformers "
         f"{res['transformers']}; {res['threads']} torch thread(s) per run, {res.get('jobs', 1)} run(s) at a time, "
         f"under `nice -n 10` on a 2-core machine "
         f"shared with a CIFAR training job (load average {_load(res.get('loadavg_before'))} at the start, "
         f"{_load(res.get('loadavg_after'))} at the end), so times are those of a loaded machine.",
         f"Last invocation started {res['started']}; wall time spent {res['seconds'] / 60:.1f} min in all the invocations "
         f"(the last one's budget: {res['budget_min']:.0f} min, {res['timeout_min']:.0f} min limit per (model, recipe) "
         "run; a run's limit is cut to what is left of the budget)." +
         (" **Partial**: some rows were not run or did not finish (status column)." if res.get("partial") else ""), "",
         "Models: `transformers` classes from their configs, random init (seed 0), nothing downloaded. Inputs: one "
         f"fixed random sample (token ids `[1, {SEQ_LEN_SMALL if small else SEQ_LEN}]`, images "
         f"`[1, 3, {IMAGE_SMALL if small else IMAGE}, {IMAGE_SMALL if small else IMAGE}]`). Recipes, no data: "
         "`kmeans4` = 4-bit k-means sharing of every "
         f"{' / '.join(TYPES)} weight; `prune50-kmeans4` = magnitude pruning of the same weights to 50%, then the same "
         "k-means. `fp32 bytes` = `torch.save(state_dict)` (a tied tensor stored once); `ratio` = fp32 bytes / .wz bytes; "
         "`rel. error` = `||y - y_ref|| / ||y_ref||` of the logits (BERT: last hidden state) of the model loaded from "
         "the .wz WITHOUT its class against the fp32 model (random weights: the figure measures the round trip and "
         "the quantization noise, not accuracy). The configs are the `transformers` defaults (as listed under "
         "Models): the vision classifiers have the default `num_labels=2` head, not ImageNet's 1000 classes, so "
         "they have fewer parameters than the published ResNet-50 (25.6M), MobileNetV2 (3.5M) and ViT-B/16 "
         "(86.6M).", ""]
    sources = sorted({r["weightzip"] for r in rows if r.get("weightzip")})
    if len(sources) > 1:
        L += ["Rows come from runs of different weightzip versions: " + "; ".join(sources) +
              " (each row's `weightzip` in the JSON).", ""]
    L += ["## Sizes and output error", ""]
    L += C.md_header(["model", "recipe", "params", "selected (tensors)", "fp32 bytes", ".wz bytes", "ratio",
                      "rel. error .wz vs fp32", ".wz vs in-memory", "ONNX bytes (ratio)", "ONNX (ort) vs .wz"])
    for r in rows:
        if _idle(r):
            L.append(C.md_row([r["model"], r["recipe"], r["status"]] + [""] * 8))
            continue
        onnx = _cell(r, "onnx_bytes", lambda v: f"{v:,} ({r['fp32_bytes'] / v:.2f}x)", "onnx")
        L.append(C.md_row([
            r["model"], r["recipe"], _cell(r, "params", lambda v: f"{v / 1e6:.1f}M", "build"),
            _cell(r, "selected_params", lambda v: f"{100 * v / r['params']:.1f}% ({r['selected_tensors']})", "build"),
            _cell(r, "fp32_bytes", lambda v: f"{v:,}", "build"),
            _cell(r, "wz_bytes", lambda v: f"{v:,}", "compress", "save"),
            _cell(r, "file_ratio", lambda v: f"{v:.2f}x", "compress", "save"),
            _cell(r, "rel_err_file_vs_fp32", lambda v: f"{v:.4f}", "compress", "save", "load"),
            _cell(r, "rel_err_file_vs_memory", lambda v: f"{v:.1e}", "compress", "save", "load"),
            onnx, _cell(r, "onnx_rel_err_vs_file", lambda v: f"{v:.1e}", "onnx", "onnxruntime")]))
    L += ["", "## Time, memory, compiled mode", ""]
    L += C.md_header(["model", "recipe", "fp32 fwd s", "compress s", "save s", "load s", "ONNX export s",
                      "peak RSS MB: build / compress / save / load / compiled / onnx", "compiled (mode=\"compiled\")",
                      "load avg start / end", "status"])
    for r in rows:
        if _idle(r):
            L.append(C.md_row([r["model"], r["recipe"]] + [""] * 8 + [r["status"]]))
            continue
        pk = r.get("peak_rss", {})
        peaks = " / ".join(_mb(pk.get(p)) for p in ("build", "compress", "save", "load", "compiled", "onnx"))
        sec = r.get("seconds", {})
        L.append(C.md_row([
            r["model"], r["recipe"], _sec(r.get("fp32_forward_s")),
            _sec(sec.get("compress")) if "compress" in sec else _cell(r, "x", str, "compress"),
            _sec(sec.get("save")) if "save" in sec else _cell(r, "x", str, "save"),
            _sec(r.get("load_s")) if r.get("load_s") is not None else _cell(r, "x", str, "load"),
            _sec(r.get("onnx_export_s")) if r.get("onnx_export_s") is not None else _cell(r, "x", str, "onnx"),
            peaks if pk else "-", compiled_cell(r),
            f"{_load(r.get('loadavg_start'))} / {_load(r.get('loadavg_now'))}" if r.get("loadavg_start") else "-",
            _status(r)]))
    L += ["", "`peak RSS`: the largest resident set size sampled (every 20 ms) during each phase of the run's own "
          "process (build = the fp32 model + its reference output; each later phase starts with what the earlier "
          "ones left: the compressed model is freed before `load`). `load s`: `wz.load(path)` (dense). The compiled "
          "column loads with `mode=\"compiled\"`, runs the input once and reads the plan "
          "(`weightzip.runtime.compiled.module.CompiledModel.plans` / `resident_bytes`): `native` = one native "
          "program over the compressed weights; `torch fallback` = the decoded dense torch model runs, with the "
          "reason.", ""]
    L += ["## Models", ""]
    L += C.md_header(["model", "config", "types selected", "output"])
    seen = set()
    for r in rows:
        if r["model"] in seen or not r.get("config"):
            continue
        seen.add(r["model"])
        cfg = ", ".join(f"{k}={v}" for k, v in r["config"].items())
        L.append(C.md_row([r["model"], cfg, ", ".join(r.get("types_present", [])),
                           f"{r.get('output_shape')}"]))
    fails = [(r, p, m) for r in rows for p, m in r.get("errors", {}).items()]
    other = [r for r in rows if r.get("status") not in ("finished", None) and not _idle(r)]
    if fails or other:
        L += ["", "## Failures", ""]
        for r, p, m in fails:
            L.append(f"* {r['model']} / {r['recipe']}, phase `{p}`: `{m}`")
        for r in other:
            L.append(f"* {r['model']} / {r['recipe']}: {_status(r)} (log: `{r.get('log')}`)")
    L += ["", "Per-run records (every phase's figures, tracebacks of failures) and logs are written under "
          "`runs/wild_models/` (not committed); this page and its JSON are re-written by the script after every run "
          "(`--render-only` re-renders the page from the JSON).", ""]
    return "\n".join(L)


def cpu_name() -> str:
    """The CPU model (``/proc/cpuinfo``), else ``platform.processor()``, and the core count."""
    name = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name or platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def _load(x) -> str:
    return "-" if x is None else f"{float(x):.2f}"


def main() -> None:
    ap = C.parser(__doc__)
    ap.add_argument("--models", nargs="*", default=MODEL_ORDER, choices=MODEL_ORDER, help="which models (in this order)")
    ap.add_argument("--recipes", nargs="*", default=list(RECIPES), choices=list(RECIPES))
    ap.add_argument("--small", action="store_true", help="tiny configs (a smoke test; results go to runs/wild_models/)")
    ap.add_argument("--timeout-min", type=float, default=20.0, help="time limit per (model, recipe) run")
    ap.add_argument("--jobs", type=int, default=1, help="runs at the same time (each its own process)")
    ap.add_argument("--budget-min", type=float, default=90.0, help="start no new run after this much wall time")
    ap.add_argument("--weightzip-commit", metavar="REV",
                    help="run weightzip as committed in REV (extracted under runs/wild_models/), not the working tree")
    ap.add_argument("--resume", action="store_true",
                    help="keep the rows the existing results JSON has finished; run the others")
    ap.add_argument("--render-only", action="store_true", help="re-write the page from the results JSON")
    ap.add_argument("--child", nargs=3, metavar=("MODEL", "RECIPE", "RECORD"), help=argparse_hidden())
    C.add_arg(ap, "threads")
    args = ap.parse_args()
    if args.child:
        RUNS.mkdir(parents=True, exist_ok=True)
        child(args.child[0], args.child[1], args.small, Path(args.child[2]))
        return
    out_md = (RUNS / "wild_models-small.md") if args.small else (RESULTS / "wild_models.md")
    out_json = out_md.with_suffix(".json")
    if args.render_only:
        res = json.loads(out_json.read_text())
        C.write_text(out_md, markdown(res))
        print(f"wrote {out_md}")
        return
    RUNS.mkdir(parents=True, exist_ok=True)
    import torch
    import transformers

    cmd = "nice -n 10 python benchmarks/wild_models.py" + (" --small" if args.small else "")
    if args.models != MODEL_ORDER:
        cmd += " --models " + " ".join(args.models)
    if args.recipes != list(RECIPES):
        cmd += " --recipes " + " ".join(args.recipes)
    cmd += f" --timeout-min {args.timeout_min:g} --budget-min {args.budget_min:g} --jobs {args.jobs}"
    if args.weightzip_commit:
        commit, src = snapshot(args.weightzip_commit)
        cmd += f" --weightzip-commit {commit[:12]}"
        source = f"weightzip as committed in {commit[:12]} (`--weightzip-commit`)"
    else:
        src = None
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "src"], cwd=ROOT, capture_output=True,
                               text=True).stdout.strip()
        source = f"weightzip from the working tree at {head[:12]}" + (" (src/ had uncommitted edits)" if dirty else "")
    old = C.read_json(out_json)
    res = {"weightzip": source, "command": cmd, "machine": cpu_name(),
           "torch": torch.__version__, "transformers": transformers.__version__, "threads": args.threads,
           "small": args.small, "started": C.now(), "loadavg_before": C.load_average(), "seconds": 0.0,
           "timeout_min": args.timeout_min, "budget_min": args.budget_min, "jobs": args.jobs, "rows": []}
    # recipe-major: every model gets its kmeans4 row before any gets a second recipe (coverage under a budget)
    todo = [(m, r) for r in args.recipes for m in args.models]
    if args.resume:  # rows an earlier run finished stay as they are
        done_rows = {(row["model"], row["recipe"]) for row in old.get("rows", []) if row.get("status") == "finished"}
        todo = [k for k in todo if k not in done_rows]
    keep = [row for row in old.get("rows", []) if (row["model"], row["recipe"]) not in set(todo)]
    if args.resume:
        cmd += " --resume"
        res["command"] = cmd
    if keep:  # rows of models not run now come from the earlier run
        res["command"] = f"{old.get('command')}; then {cmd}"
    fresh = {k: {"model": k[0], "recipe": k[1], "status": "not run", "errors": {}, "phases_done": []} for k in todo}
    t_start = time.perf_counter()

    def flush():
        order = {m: i for i, m in enumerate(MODEL_ORDER)}
        rows = keep + list(fresh.values())
        rows.sort(key=lambda r: (order.get(r["model"], 99), list(RECIPES).index(r["recipe"])))
        res["rows"] = rows
        res["seconds"] = time.perf_counter() - t_start + (old.get("seconds", 0.0) if keep else 0.0)
        res["loadavg_after"] = C.load_average()
        res["partial"] = any(r.get("status") != "finished" for r in rows)
        C.write_results(out_json, res, out_md, markdown(res))

    lock = threading.Lock()
    queue = list(todo)

    def worker():
        while True:
            with lock:
                if not queue:
                    return
                m, r = queue.pop(0)
                left = args.budget_min * 60 - (time.perf_counter() - t_start)
                if left < 60:
                    fresh[(m, r)]["status"] = f"not run (the {args.budget_min:g}-min budget was spent)"
                    flush()
                    continue
                fresh[(m, r)]["status"] = "running (interrupted?)"
                C.say(f"[{C.now()}] {m} / {r} (limit {min(args.timeout_min * 60, left) / 60:.1f} min)")
            rec = run_one(m, r, args.small, min(args.timeout_min * 60, left), args.threads, src)
            rec["weightzip"] = source
            with lock:
                fresh[(m, r)] = rec
                C.say(f"    {m} / {r}: {rec['status']} in {rec['wall_s']:.0f} s; ratio {rec.get('file_ratio')}, "
                      f"rel err {rec.get('rel_err_file_vs_fp32')}, errors {rec.get('errors')}")
                flush()

    with lock:
        flush()
    pool = [threading.Thread(target=worker) for _ in range(max(1, args.jobs))]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    for k, rec in fresh.items():
        if rec.get("status") == "not run":
            rec["status"] = "not run"
    flush()
    print(f"wrote {out_md}")


def argparse_hidden():
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
