"""Scale: time and peak memory of 4-bit k-means compression against parameter count (issue 21).

Two paths, each (size) in a fresh process so its peak RSS (``ru_maxrss``) is its own:

* ``stream``: a Llama-style checkpoint (LlamaConfig shapes, random bf16 values) written as
  safetensors shards for the benchmark, then ``weightzip compress DIR -r
  recipes/kmeans4-transformer-ptq.yaml`` tensor by tensor (:mod:`weightzip.jobs.stream`);
* ``memory``: Hugging Face BERT-base built from ``BertConfig()`` and GPT-2 124M from
  ``GPT2Config()`` (random init, fp32), ``wz.compress`` + ``wz.save`` in memory (the issue's
  anchor: ~800 s and 6.6 GB before); ``bert-base-w1`` is BERT-base with one worker thread for
  the k-means stage (every other row uses every core);
* ``read``: the BERT-base ``.wz`` (written once under runs/scale/) loaded / verified /
  inspected (the size report of ``weightzip inspect``), each eager (the whole file read and
  decoded: ``load(lazy=False)``, ``codec.verify.verify``, ``container.read`` + ``size_rows``) or
  lazy (mapped, one tensor at a time: ``load()``, ``weightzip.verify``, ``size_report``).

    python benchmarks/scale.py                       # sizes tiny..100m + the memory and read rows
    python benchmarks/scale.py --sizes 1b --timeout 3000   # the 1.1B model (TinyLlama shapes)
    python benchmarks/scale.py --sizes "" --models gpt2 --reads ""   # only the GPT-2 row

Writes benchmarks/results/scale.json / scale.md / scale.png (log-log time and peak RSS against
parameters, with the fitted slopes). Rows finished earlier are kept (``--force`` re-runs them).
The load average is recorded per row: timings on a shared 2-core machine move with it.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common as C

# LlamaConfig shapes: hidden, intermediate, layers, heads, kv heads, vocab
SIZES = {
    "tiny": (64, 172, 2, 4, 4, 2000),
    "10m": (256, 688, 4, 4, 4, 8000),
    "100m": (768, 2048, 8, 12, 4, 32000),
    "1b": (2048, 5632, 22, 32, 4, 32000),    # TinyLlama-1.1B
}


def llama_shapes(size: str) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes of a LlamaForCausalLM with these config values (untied head)."""
    h, inter, layers, heads, kv, vocab = SIZES[size]
    hd = h // heads
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (vocab, h)}
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes.update({p + "self_attn.q_proj.weight": (h, h), p + "self_attn.k_proj.weight": (kv * hd, h),
                       p + "self_attn.v_proj.weight": (kv * hd, h), p + "self_attn.o_proj.weight": (h, h),
                       p + "mlp.gate_proj.weight": (inter, h), p + "mlp.up_proj.weight": (inter, h),
                       p + "mlp.down_proj.weight": (h, inter), p + "input_layernorm.weight": (h,),
                       p + "post_attention_layernorm.weight": (h,)})
    shapes.update({"model.norm.weight": (h,), "lm_head.weight": (vocab, h)})
    return shapes


def write_checkpoint(size: str, folder: Path, shard_bytes: int = 1 << 30) -> int:
    """Random bf16 shards + model.safetensors.index.json; returns the parameter count."""
    import torch
    from safetensors.torch import save_file

    shapes = llama_shapes(size)
    g = torch.Generator().manual_seed(0)
    wmap, shard, nbytes, k = {}, {}, 0, 0

    def flush():
        nonlocal shard, nbytes, k
        if shard:
            k += 1
            name = f"model-{k:05d}.safetensors"
            save_file(shard, str(folder / name))
            wmap.update({n: name for n in shard})
            shard, nbytes = {}, 0

    for name, shape in shapes.items():
        t = (torch.randn(shape, generator=g) * 0.02).to(torch.bfloat16) if len(shape) > 1 else torch.ones(shape, dtype=torch.bfloat16)
        shard[name] = t
        nbytes += t.numel() * 2
        if nbytes >= shard_bytes:
            flush()
    flush()
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": wmap}))
    return sum(math.prod(s) for s in shapes.values())


def child_stream(size: str) -> dict:
    from weightzip.jobs.stream import compress_safetensors

    with tempfile.TemporaryDirectory(dir=C.ROOT / "runs") as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        params = write_checkpoint(size, folder)
        t_write = time.perf_counter() - t0
        rss_before = _maxrss()
        out = compress_safetensors(folder, C.ROOT / "recipes" / "kmeans4-transformer-ptq.yaml",
                                   folder / "out.wz", progress=False, log=lambda s: None)
        return {"params": params, "seconds": out["seconds"], "write_checkpoint_s": t_write,
                "peak_rss_bytes": _maxrss(), "rss_before_bytes": rss_before, "file_bytes": out["file_bytes"],
                "fp32_bytes": out["baseline_bytes"], "file_ratio": out["file_ratio"],
                "largest_tensor_fp32_bytes": 4 * max(math.prod(s) for s in llama_shapes(size).values())}


MEMORY_MODELS = ("bert-base", "bert-base-w1", "gpt2")
READS = ("load-eager", "load-lazy", "verify-eager", "verify-lazy", "inspect-eager", "inspect-lazy")


def memory_model_classes(name: str):
    """``(model class, config class, vocabulary)`` of a memory row (importing the model's code)."""
    if name.startswith("bert-base"):
        from transformers import BertConfig, BertModel

        return BertModel, BertConfig, 30522
    from transformers import GPT2Config, GPT2LMHeadModel

    return GPT2LMHeadModel, GPT2Config, 50257


class _PhasePeaks:
    """The peak RSS of each phase of a row: a thread reads the process's current RSS
    (``/proc/self/statm``) every 2 ms into the peak of the phase set last (``phase``)."""

    def __init__(self):
        import threading

        self.phase, self.peaks, self._stop = None, {}, threading.Event()
        self._page = os.sysconf("SC_PAGE_SIZE")
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self._page

    def _run(self):
        while not self._stop.is_set():
            r, ph = self.rss(), self.phase
            if ph is not None and r > self.peaks.get(ph, 0):
                self.peaks[ph] = r
            self._stop.wait(0.002)

    def wrap(self, module, fn: str, phase: str) -> None:
        """Run ``module.fn`` as ``phase`` (the caller's phase again afterwards)."""
        orig = getattr(module, fn)

        def wrapped(*a, **k):
            outer, self.phase = self.phase, phase
            try:
                return orig(*a, **k)
            finally:
                r = self.rss()   # the phase's last reading, however short it was
                self.peaks[phase] = max(self.peaks.get(phase, 0), r)
                self.phase = outer

        setattr(module, fn, wrapped)

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        return dict(self.peaks)


#: save's phases as the page names them: the graph capture (a clean copy of the model with the
#: weights baked, torch.export, the check run), the per-tensor encoding, the file written
SAVE_PHASES = (("_capture_graph", "save: graph capture"), ("encode_model", "save: encode"))


def child_memory(name: str, out: Path | None = None) -> dict:
    import warnings

    import weightzip as wz
    import weightzip.api as wz_api

    import torch

    model_cls, config_cls, vocab = memory_model_classes(name)   # the model's code imported first
    warnings.simplefilter("ignore")
    rss0 = _maxrss()
    torch.manual_seed(0)                                         # the same weights (and file) every run
    model = model_cls(config_cls()).eval()                       # random init, fp32
    example = torch.randint(0, vocab, (1, 16))
    rss_model = _maxrss()
    params = sum(p.numel() for p in model.parameters())
    recipe = wz.Recipe.from_yaml(C.ROOT / "recipes" / "kmeans4-transformer-ptq.yaml")
    workers = 1 if name.endswith("-w1") else None
    phases = _PhasePeaks()
    for fn, label in SAVE_PHASES:
        phases.wrap(wz_api, fn, label)
    phases.phase = "compress"
    t0 = time.perf_counter()
    wz.compress(model, recipe, log=lambda s: None, workers=workers)
    t1 = time.perf_counter()
    peak_compress = _maxrss()
    phases.phase = "save: other"
    with tempfile.TemporaryDirectory(dir=C.ROOT / "runs") as tmp:
        path = Path(tmp) / "model.wz"
        rep = wz.save(model, path, example_inputs=(example,), progress=False)
        t2 = time.perf_counter()
        phases.phase = None
        sha = _sha256(path)
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, out)
    held = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes()
            for t in [*model.parameters(), *model.buffers()]}
    return {"params": params, "seconds": t2 - t0, "compress_s": t1 - t0, "save_s": t2 - t1,
            "peak_rss_bytes": _maxrss(), "peak_compress_rss_bytes": peak_compress, "rss_interpreter_bytes": rss0,
            "rss_model_bytes": rss_model, "fp32_bytes": 4 * params, "file_bytes": rep.file_bytes,
            "file_ratio": rep.file_ratio, "workers": workers or len(os.sched_getaffinity(0)),
            "phase_peak_rss_bytes": phases.stop(), "compressed_model_held_bytes": sum(held.values()),
            "file_sha256": sha}


READ_FILE = C.ROOT / "runs" / "scale" / "bert-base.wz"


def child_read(op: str) -> dict:
    """Peak RSS of one read of the BERT-base file (written by the memory row's code if missing)."""
    import warnings

    import weightzip as wz
    from weightzip.analysis.size import size_report, size_rows
    from weightzip.codec import container
    from weightzip.codec.verify import verify as eager_verify

    warnings.simplefilter("ignore")
    if not READ_FILE.exists():
        subprocess.run([sys.executable, __file__, "--child", "write-read-file", "-"], check=True, cwd=C.ROOT)
    rss0 = _maxrss()
    t0 = time.perf_counter()
    what, mode = op.split("-")
    if what == "load":
        m = wz.load(READ_FILE, lazy=mode == "lazy")
        n = sum(p.numel() for p in m.parameters())
    elif what == "verify":
        r = (eager_verify if mode == "eager" else wz.verify)(READ_FILE)
        assert r["ok"], r["errors"][:1]
        n = None
    else:
        if mode == "eager":
            _, formats = container.read(READ_FILE)
            rows = size_rows(formats)
        else:
            rows = size_report(READ_FILE).rows
        n = len(rows)
    seconds = time.perf_counter() - t0
    return {"op": op, "seconds": seconds, "peak_rss_bytes": _maxrss(), "rss_before_bytes": rss0,
            "file_bytes": READ_FILE.stat().st_size, "model_params": n}


def _commit() -> str | None:
    """The checked-out commit (``+`` when ``src/`` differs from it), or ``$WEIGHTZIP_COMMIT`` for a
    tree exported from a commit (``git archive``), or None."""
    if os.environ.get("WEIGHTZIP_COMMIT"):
        return os.environ["WEIGHTZIP_COMMIT"]
    try:
        head = subprocess.run(["git", "rev-parse", "--short=8", "HEAD"], capture_output=True, text=True,
                              cwd=C.ROOT, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "src"], capture_output=True,
                               text=True, cwd=C.ROOT).stdout.strip()
        return head + ("+" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def _sha256(path: Path) -> str:
    """sha256 of a file, read 1 MB at a time (the row's peak RSS is not raised by it)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _maxrss() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_child(kind: str, size: str, timeout: int) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, size]
    load0 = C.load_average()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=C.ROOT)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s", "load_average": load0}
    if p.returncode != 0:
        tail = (p.stderr or p.stdout).strip().splitlines()[-1:] or ["?"]
        return {"error": f"exit {p.returncode}: {tail[0][:200]}", "load_average": load0}
    row = json.loads(p.stdout.strip().splitlines()[-1])
    row["load_average"] = load0
    return row


def slope(rows: list[dict], key: str) -> float | None:
    pts = [(math.log(r["params"]), math.log(r[key])) for r in rows if r.get(key) and r.get("params")]
    if len(pts) < 2:
        return None
    n = len(pts)
    mx, my = sum(x for x, _ in pts) / n, sum(y for _, y in pts) / n
    return sum((x - mx) * (y - my) for x, y in pts) / sum((x - mx) ** 2 for x, _ in pts)


def render(res: dict) -> str:
    rows = res["rows"]
    lines = ["# Scale: 4-bit k-means compression time and peak memory against parameters", "",
             "Produced by `python benchmarks/scale.py` (issue 21). Each row ran in its own process; peak RSS is",
             "that process's `ru_maxrss` (the interpreter and imports included). Random weights (bf16",
             "Llama-style checkpoints written for the benchmark; BERT-base and GPT-2 from their default",
             "configs), so the file ratios are those of random Gaussian weights. Load average: the 1-minute",
             "load when the row started, on the shared 2-core machine (other jobs ran beside some rows).", "",
             f"Machine: {res.get('machine', '?')}", ""]
    lines += C.md_header(["path", "model", "params", "fp32 MB", "time s", "peak RSS MB", "RSS / fp32",
                          "largest tensor MB", "(peak - start) / largest", ".wz MB", "ratio", "load", "note"])
    mb = lambda b: C.fmt(b / 1e6 if b is not None else None, ".0f")  # noqa: E731
    for key, r in rows.items():
        kind, size = key.split(":")
        if kind == "read":
            continue
        if "error" in r:
            lines.append(C.md_row([kind, size, "-", "-", "-", "-", "-", "-", "-", "-", "-", C.fmt(r.get("load_average"), ".1f"), r["error"]]))
            continue
        lines.append(C.md_row([kind, size, f"{r['params'] / 1e6:.1f}M", mb(r["fp32_bytes"]), C.fmt(r["seconds"], ".1f"),
                               mb(r["peak_rss_bytes"]), C.fmt(r["peak_rss_bytes"] / r["fp32_bytes"], ".2f"),
                               mb(r.get("largest_tensor_fp32_bytes")),
                               C.fmt((r["peak_rss_bytes"] - r["rss_before_bytes"]) / r["largest_tensor_fp32_bytes"], ".0f")
                               if r.get("largest_tensor_fp32_bytes") and "rss_before_bytes" in r else "-",
                               C.fmt(r["file_bytes"] / 1e6, ".2f"),
                               C.fmt(r["file_ratio"], ".2f"), C.fmt(r.get("load_average"), ".1f"),
                               f"compress {r['compress_s']:.1f} s + save {r['save_s']:.1f} s" if "compress_s" in r else "stream"]))
    st = [r for k, r in rows.items() if k.startswith("stream:") and "error" not in r]
    lines += ["", f"Fitted log-log slopes of the streaming rows ({len(st)} sizes): time "
              f"{C.fmt(slope(st, 'seconds'), '.2f')}, peak RSS {C.fmt(slope(st, 'peak_rss_bytes'), '.2f')} "
              "(target: time slope <= 1.1).", ""]
    mem = {k.split(":")[1]: r for k, r in rows.items() if k.startswith("memory:") and "error" not in r
           and "rss_interpreter_bytes" in r}
    if mem:
        lines += ["## In memory: peak over the interpreter", "",
                  "`wz.compress` + `wz.save` of a model built in the process. `over interpreter` = peak RSS minus",
                  "the RSS after the imports (torch, transformers, weightzip), before the model is built; the",
                  "target is 1.5x the fp32 model bytes (the model itself is 1.0x of that).", ""]
        lines += C.md_header(["model", "workers", "compress s", "save s", "total s", "compress peak over interp. MB",
                              "peak over interp. MB", "peak over interp. / fp32", "load", "commit"])
        for name, r in mem.items():
            over = r["peak_rss_bytes"] - r["rss_interpreter_bytes"]
            pc = r.get("peak_compress_rss_bytes")
            lines.append(C.md_row([name, r.get("workers", "-"), C.fmt(r["compress_s"], ".1f"), C.fmt(r["save_s"], ".1f"),
                                   C.fmt(r["seconds"], ".1f"), mb(pc - r["rss_interpreter_bytes"]) if pc else "-",
                                   mb(over), C.fmt(over / r["fp32_bytes"], ".2f"), C.fmt(r.get("load_average"), ".1f"),
                                   r.get("weightzip_commit") or "-"]))
        lines.append("")
        ph = {n: r for n, r in mem.items() if r.get("phase_peak_rss_bytes")}
        if ph:
            names = ["compress", "save: graph capture", "save: encode", "save: other"]
            lines += ["Where the peak is: the peak RSS of each phase over the interpreter (RSS sampled every 2 ms;",
                      "`save: graph capture` makes a clean copy of the model with every weight baked to fp32, then",
                      "runs torch.export and a check; `save: encode` encodes one tensor at a time; `save: other`:",
                      "tied-name check, file write). `model held` = the bytes of the compressed model's tensors",
                      "after `compress` (uint8 codes, centroids, the unshared tensors; dropped latents take none);",
                      "`sha256` of the written file (weights seeded: the same file every run).", ""]
            lines += C.md_header(["model", *[f"{n} MB" for n in names], "model held MB", "sha256", "commit"])
            for n, r in ph.items():
                p = r["phase_peak_rss_bytes"]
                lines.append(C.md_row([n, *[mb(p[k] - r["rss_interpreter_bytes"]) if k in p else "-" for k in names],
                                       mb(r.get("compressed_model_held_bytes")), (r.get("file_sha256") or "-")[:16],
                                       r.get("weightzip_commit") or "-"]))
            lines.append("")
            for n, r in ph.items():
                p = r["phase_peak_rss_bytes"]
                top = max(p, key=p.get)
                over = r["peak_rss_bytes"] - r["rss_interpreter_bytes"]
                held = r.get("compressed_model_held_bytes") or 0
                line = (f"- {n}: the peak ({mb(over)} MB over the interpreter, {over / r['fp32_bytes']:.2f}x fp32, "
                        f"target {1.5 * r['fp32_bytes'] / 1e6:.0f} MB = 1.5x) is in `{top}`")
                if top == "save: graph capture":
                    rest = p[top] - r["rss_interpreter_bytes"] - held - r["fp32_bytes"]
                    line += (f": the compressed model ({mb(held)} MB) plus the clean copy with every weight baked to "
                             f"fp32 ({mb(r['fp32_bytes'])} MB) leave {mb(rest)} MB for torch.export, the check run "
                             "and the process's other memory")
                lines.append(line + ".")
            lines += ["", "GPT-2's LM head is tied to its token embedding: `graph.capture.clean_copy` bakes the head's",
                      "weight too before finding it equal to the embedding's and keeping one Parameter, so one more",
                      "fp32 copy of the largest tensor is alive for a moment inside the graph capture.", ""]
    reads = {k.split(":")[1]: r for k, r in rows.items() if k.startswith("read:")}
    if reads:
        lines += ["## Reading the BERT-base file: eager against lazy (mmap, one tensor at a time)", "",
                  "`load`: `wz.load(path, lazy=False)` / `wz.load(path)` (the model rebuilt from the file's graph);",
                  "`verify`: `codec.verify.verify` / `wz.verify`; `inspect`: the size report of `weightzip inspect`",
                  "(`container.read` + `size_rows` / `size_report`). Peak over start = `ru_maxrss` minus the RSS",
                  "after the imports.", ""]
        lines += C.md_header(["op", "eager s", "lazy s", "eager peak over start MB", "lazy peak over start MB",
                              ".wz MB", "load", "commit"])
        for op in ("load", "verify", "inspect"):
            e, z = reads.get(f"{op}-eager", {}), reads.get(f"{op}-lazy", {})
            if not e and not z:
                continue
            d = lambda r: mb(r["peak_rss_bytes"] - r["rss_before_bytes"]) if "peak_rss_bytes" in r else r.get("error", "-")  # noqa: E731
            lines.append(C.md_row([op, C.fmt(e.get("seconds"), ".2f"), C.fmt(z.get("seconds"), ".2f"), d(e), d(z),
                                   C.fmt((z or e).get("file_bytes", 0) / 1e6, ".1f"),
                                   C.fmt(z.get("load_average", e.get("load_average")), ".1f"),
                                   z.get("weightzip_commit") or e.get("weightzip_commit") or "-"]))
        lines.append("")
    targets = ["The `(peak - start) / largest` column is the streaming path's working set per tensor in units",
               "of the largest tensor's fp32 bytes (at the commit of its row). Per tensor, the k-means holds a",
               "float32 sorted copy, float64 prefix sums every 4096 values and uint8 codes; the encoder reads",
               "the values in place, holds the dense candidate as a view of them, codes uint8 symbols and",
               "checks each candidate by decoding its codes a chunk at a time.", "",
               "## Targets (issue 21)", "",
               "- BERT-base 4-bit k-means, compress + save <= 60 s, peak RSS <= 1.5x fp32 over the interpreter.",
               "- ~1.1B Llama-style, 4-bit k-means, <= 10 min, peak <= 8 GB.",
               "- Rows missing above were not run in the budget of the session that wrote this page."]
    return "\n".join(lines + targets) + "\n"


def plot(res: dict, path: Path) -> None:
    plt = C.pyplot()
    st = [r for k, r in res["rows"].items() if k.startswith("stream:") and "error" not in r]
    if len(st) < 2:
        return
    st.sort(key=lambda r: r["params"])
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.6))
    x = [r["params"] for r in st]
    ax[0].loglog(x, [r["seconds"] for r in st], "o-")
    ax[0].set(xlabel="parameters", ylabel="seconds", title=f"time (slope {slope(st, 'seconds'):.2f})")
    ax[1].loglog(x, [r["peak_rss_bytes"] / 1e6 for r in st], "o-", label="peak RSS")
    ax[1].loglog(x, [r["fp32_bytes"] / 1e6 for r in st], "--", label="fp32 model")
    ax[1].set(xlabel="parameters", ylabel="MB", title=f"peak RSS (slope {slope(st, 'peak_rss_bytes'):.2f})")
    ax[1].legend()
    C.save_figure(fig, path)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        kind, size = sys.argv[2], sys.argv[3]
        if kind == "write-read-file":
            child_memory("bert-base", READ_FILE)
            return
        out = child_stream(size) if kind == "stream" else child_memory(size) if kind == "memory" else child_read(size)
        print(json.dumps(out))
        return
    ap = C.parser(__doc__)
    ap.add_argument("--sizes", default="tiny,10m,100m", help="streaming sizes: " + ", ".join(SIZES))
    ap.add_argument("--memory", action=__import__("argparse").BooleanOptionalAction, default=True,
                    help="also the in-memory rows (--models)")
    ap.add_argument("--models", default=",".join(MEMORY_MODELS), help="in-memory rows: " + ", ".join(MEMORY_MODELS))
    ap.add_argument("--reads", default=",".join(READS), help="read rows (BERT-base file): " + ", ".join(READS))
    ap.add_argument("--timeout", type=int, default=1800, help="seconds per row")
    C.add_args(ap, "out", "force")
    ap.add_argument("--render-only", action="store_true", help="re-write the page and plot from the JSON")
    args = ap.parse_args()
    (C.ROOT / "runs").mkdir(exist_ok=True)
    jpath = args.out / "scale.json"
    res = C.read_json(jpath, {}) or {}
    res.setdefault("rows", {})
    if args.render_only:
        C.write_results(jpath, res, args.out / "scale.md", render(res))
        plot(res, args.out / "scale.png")
        return
    import platform

    res["machine"] = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    keys = ([f"stream:{s}" for s in args.sizes.split(",") if s]
            + ([f"memory:{m}" for m in args.models.split(",") if m] if args.memory else [])
            + [f"read:{r}" for r in args.reads.split(",") if r])
    for key in keys:
        if key in res["rows"] and "error" not in res["rows"][key] and not args.force:
            C.say(f"{key}: kept from {jpath.name}")
            continue
        kind, size = key.split(":")
        C.say(f"{key} ...")
        res["rows"][key] = run_child(kind, size, args.timeout)
        res["rows"][key]["weightzip_commit"] = _commit()
        C.say(f"{key}: {res['rows'][key]}")
        C.write_results(jpath, res, args.out / "scale.md", render(res))
        plot(res, args.out / "scale.png")


if __name__ == "__main__":
    main()
