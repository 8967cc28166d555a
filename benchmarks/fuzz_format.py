"""Fuzzing the .wz reader as an attacker would (issue 16, item 3).

    OMP_NUM_THREADS=1 python benchmarks/fuzz_format.py [--n 50000] [--manifest-n 3000] [--seed 0] [--timeout 10]

The files: committed ``benchmarks/results/**/*.wz``, a few chosen so that between them they hold
every format kind, sparse layout and stream coding that occurs in any committed file (the
smallest file first). The cases: random hostile mutations (:func:`weightzip.codec.forge.random_mutation`),
spread evenly over the files, with every checksum recomputed so CRCs do not refuse them:
any manifest field set to a hostile value (huge / negative / float / bool / string / list), a number
moved, a key deleted or copied from elsewhere, stream bytes changed, a stream cut or replaced; and the
targeted families: zstd bombs (2-32 MiB of JSON, with and without the frame's size), JSON nested
10^4-10^6 deep, overlapping streams, NaN / Inf in float streams, bit widths / alphabets / table sizes
of 0, 33, 64, 2^32+1, unknown kinds. ``file_bytes`` flips bytes of the finished file and leaves the
checksums stale. The named forged cases are tests (``tests/codec/test_container_hostile.py``).

The parent builds each mutated file; each case runs in a worker process with 1 thread: ``container.read`` then ``decode`` of every
tensor (what ``weightzip.load`` does before it builds a model). Outcomes:

* refused: a ``WeightzipFormatError``;
* same: it decodes to the original tensors, bit for bit;
* different-valid: it decodes to other tensors (e.g. a tensor dropped, a shape re-declared);
* crash: any other exception, or the worker process dying;
* hang: still running after ``--timeout`` seconds (the worker is killed and restarted);
* over-memory: a refusal whose traced peak allocation (``tracemalloc``: Python + numpy) or whose
  added peak resident memory is over 200 MB.

The manifest-field section (issue 24, item 4; ``--manifest-n``): every caller field a reader uses
(``model``, ``model.kwargs.*``, ``runtime.activation_quant[*].*``, ``graph.*``, ``tied``, ``metrics``,
``recipe``, ``extra``, ``baseline_bytes``, ...) of a few committed files (a LeNet-5, a ResNet-20, an
MLP with activation quantizers) and of a user model saved with its graph, replaced (or added) with
a wrong type, a huge / negative number (``num_classes`` 10^9, ``image_size`` 10^5, 2^63, 10^30), a
long list, JSON nested 10^2-10^4 deep, every CRC recomputed; each case runs ``weightzip.load``,
``weightzip.verify`` and ``analysis.size.size_report`` (what ``inspect`` prints) in the worker
(``load(mode="compiled")``, which ``inspect`` also runs, compiles native code per case: too slow
here; its image-size case is a test). Outcomes per case: refused (a ``WeightzipFormatError`` from
``load``), loaded, crash (any other exception from any of the three), hang, over-memory (a refusal whose traced
peak or added resident peak is over 300 MB). ``--n 0 --manifest-n N`` reruns only this section and
keeps the codec section of the existing results.

Also recorded: the slowest refusal, the number of refusals over 1 s, and per case the peak
resident memory over that of the interpreter after imports (``VmHWM`` after resetting it through
``/proc/self/clear_refs`` before the case). Writes ``benchmarks/results/fuzz_format.{json,md}``.
"""
from __future__ import annotations

import copy
import hashlib
import json
import multiprocessing as mp
import os
import platform
import random
import resource
import sys
import tempfile
import time
import tracemalloc
from collections import Counter, defaultdict
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
OVER_MEMORY = 200 << 20
MANIFEST_OVER_MEMORY = 300 << 20       # the manifest-field section's target (issue 24): load builds a model
MANIFEST_FILES = ("lenet5-kmeans.wz", "resnet20-tiny-kmeans.wz", "structured-pareto-mnist/designs/deep-sparse_W1A2_c8.wz",
                  "lenet5-records-99-20ep.wz")
KEEP_VERSION = ("lenet5-records-99-20ep.wz",)   # forged in its own format (3), the others as format 1
MANIFEST_OUTCOMES = ("refused", "loaded", "crash", "hang", "over-memory")
SLOW_REFUSAL_S = 1.0
OUTCOMES = ("refused", "same", "different-valid", "crash", "hang", "over-memory")


def _features(path: Path) -> set[tuple]:
    from weightzip.codec import container

    _, formats = container.read(path)
    out = {("version", int.from_bytes(path.read_bytes()[8:10], "little"))}   # format 1, 2 and 3 files all fuzzed
    for f in formats.values():
        out.add(("kind", f.kind))
        out.add(("layout", f.kind, f.meta.get("sparse") or f.meta.get("mask") or
                 "/".join(sorted({c.get("sparse", "?") for c in f.meta.get("clusters", [])}))))
        for inf in f.meta["stream_info"].values():
            out.add(("coding", inf["coding"]))
        if f.kind == "uniform":
            out.add(("q_mode", f.meta.get("q_mode")))
    return out


def choose_files(results: Path) -> list[Path]:
    """Greedy cover of every (kind, layout, coding) feature by the committed files, smallest first."""
    files = sorted(results.rglob("*.wz"), key=lambda p: p.stat().st_size)
    feats = {p: _features(p) for p in files}
    need = set().union(*feats.values())
    chosen = []
    while need:
        best = max(files, key=lambda p: (len(feats[p] & need), -p.stat().st_size))
        chosen.append(best)
        need -= feats[best]
    return chosen


def _digest(tensors: dict) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        h.update(name.encode() + str(t.dtype).encode() + str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).numpy().tobytes())
    return h.hexdigest()


def _check(path: str) -> dict:
    """Read + decode every tensor of ``path``; the outcome, time and traced peak."""
    from weightzip.codec import container, decode
    from weightzip.errors import WeightzipFormatError

    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        _, formats = container.read(path)
        digest = _digest({n: decode(f) for n, f in formats.items()})
        res = {"outcome": "decoded", "digest": digest}
    except WeightzipFormatError as e:
        res = {"outcome": "refused", "message": str(e).split(": ", 1)[-1][:200]}
    except Exception as e:  # noqa: BLE001 - what the fuzzer looks for
        res = {"outcome": "crash", "message": f"{type(e).__name__}: {str(e)[:200]}"}
    res["seconds"] = time.perf_counter() - t0
    res["peak"] = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return res


def _rss(field: str) -> int:
    """``VmRSS`` / ``VmHWM`` (peak since the last reset) of this process in bytes, from /proc."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def _reset_peak() -> bool:
    """Reset this process's peak RSS to its current RSS (Linux >= 4.0: ``5 > /proc/self/clear_refs``)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _worker(conn, files: list[str], scratch: str, kind: str = "codec") -> None:
    import torch

    torch.set_num_threads(1)
    check = _check if kind == "codec" else _check_manifest_case
    check(files[0])  # warm imports (zstandard, constriction; the zoo, the compiled runtime) before the baseline
    base_rss = _rss("VmRSS")
    per_case = _reset_peak()
    conn.send(("ready", base_rss))
    path = os.path.join(scratch, f"case{os.getpid()}.wz")
    while True:
        msg = conn.recv()
        if msg is None:
            conn.send(("rss", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024))
            return
        case, fi, data, desc = msg
        with open(path, "wb") as f:
            f.write(data)
        del data
        before = _rss("VmRSS")
        if per_case:
            _reset_peak()
        res = check(path)
        # this case's peak resident memory over its own start, and over the interpreter after imports
        hwm = _rss("VmHWM") if per_case else None
        res["rss_case"] = hwm - before if per_case else None
        res["rss_over"] = hwm - base_rss if per_case else None
        res.update(case=case, file=fi, desc=desc, op=desc.split(" ", 1)[0])
        conn.send(("result", res))


# ---------------------------------------------------------------------------------------------
# the manifest-field section (issue 24, item 4)


def _check_manifest_case(path: str) -> dict:
    """``weightzip.load``, ``weightzip.verify`` and ``size_report`` (``inspect``) of ``path``: per step ok / refused / crash; the outcome is crash
    if any step crashed, else refused when ``load`` refused, else loaded."""
    import warnings

    import weightzip
    from weightzip.analysis.size import size_report
    from weightzip.errors import WeightzipFormatError

    steps = {}
    res: dict = {"steps": steps}
    tracemalloc.start()
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, fn in (("load", lambda: weightzip.load(path)), ("verify", lambda: weightzip.verify(path)),
                         ("inspect", lambda: size_report(path))):
            try:
                out = fn()
                steps[name] = "ok" if name != "verify" or out["ok"] else "refused"
                del out
            except WeightzipFormatError as e:
                steps[name] = "refused"
                if name == "load":
                    res["message"] = str(e).split(": ", 1)[-1][:200]
            except Exception as e:  # noqa: BLE001 - what the fuzzer looks for
                steps[name] = "crash"
                res.setdefault("crash_message", f"{name}: {type(e).__name__}: {str(e)[:200]}")
            if name == "load":
                res["seconds"] = time.perf_counter() - t0
    res["peak"] = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    res["outcome"] = ("crash" if "crash" in steps.values() else "refused" if steps["load"] == "refused" else "loaded")
    if res["outcome"] == "crash":
        res["message"] = res.pop("crash_message")
    return res


DEEP = "__wz_fuzz_deep__"
FIELD_VALUES = [10**9, 10**5, -10**9, 2**31, 2**63, 10**30, -1, 0, 1.5, float("nan"), float("inf"), True, None, "",
                "x", "lenet5", "user model", [], {}, [0], [-1], [10**9], [[1]], {"a": 1}, {"module": "x", "bits": 2},
                [{"module": "x", "bits": 2}], [{"module": "head", "bits": 99}], [{"module": "head", "bits": 2, "clip": -1}],
                [7], ["x"], {"nodes": [], "modules": {}}]
USED_FIELDS = ("model", "model.name", "model.kwargs", "runtime", "runtime.activation_quant", "graph", "graph.nodes",
               "graph.modules", "graph.params", "graph.example_inputs", "tied", "metrics", "recipe", "extra",
               "baseline_bytes", "weightzip_version")
ADDED = (("graph",), ("tied",), ("runtime", "activation_quant"), ("model", "kwargs", "num_classes"),
         ("model", "kwargs", "image_size"), ("model", "kwargs", "in_channels"), ("baseline_bytes",))


def field_name(path: tuple) -> str:
    """``model.kwargs.num_classes``, ``runtime.activation_quant[].bits``, ``graph.nodes[]``, ``extra.*``."""
    parts: list[str] = []
    for p in path:
        if isinstance(p, int):
            parts[-1] += "[]"
        else:
            parts.append(str(p))
    if parts[0] in ("metrics", "recipe", "extra", "tied") and len(parts) > 1:
        return parts[0] + ".*"
    if parts[0] == "graph" and len(parts) > 2:
        return ".".join(parts[:2]) + ".*"
    return ".".join(parts)


def manifest_mutation(raw, rng) -> tuple[bytes, str, str]:
    """One caller field of ``raw`` (a ``forge.RawFile``) replaced, or added, with a hostile value;
    returns (file bytes with every CRC recomputed, description, field name)."""
    from weightzip.codec import forge

    r = raw.copy()
    caller = {k: v for k, v in r.doc.items() if k != "tensors"}
    nodes = [p for p, _ in forge._nodes(caller) if p]
    used = [p for p in nodes if field_name(p) in USED_FIELDS or (len(p) >= 2 and p[:2] in (("model", "kwargs"),
            ("runtime", "activation_quant")))]
    added = [p for p in ADDED if isinstance(_parent(r.doc, p), dict)]
    pick = rng.random()
    path = rng.choice(used if pick < 0.5 and used else added if pick < 0.65 and added else nodes)
    kind = rng.random()
    try:
        current = _get(r.doc, path)
    except (KeyError, IndexError, TypeError):
        current = None                      # an added field
    if kind < 0.15:
        value, what = DEEP, f"nested {rng.choice([100, 900, 10**4])} deep"
    elif kind < 0.25:
        value = rng.choice([[1] * 10**5, "x" * 10**6, {str(i): i for i in range(10**4)}])
        what = f"{type(value).__name__} of {len(value)}"
    elif kind < 0.4 and isinstance(current, (int, float)) and not isinstance(current, bool):
        v = current
        value = rng.choice([v * 10**rng.randint(2, 12), -v, v + 1, v - 1, v * 0.5, 0])
        what = repr(value)
    else:
        value = copy.deepcopy(rng.choice(FIELD_VALUES))
        what = repr(value)[:40]
    forge._set(r.doc, path, value)
    if value == DEEP:
        depth = int(what.split()[1])
        doc = r.doc
        if r.version >= 3:                  # format 3: the tensor table as the compact list
            doc = {**doc, "tensors": forge._table3(doc["tensors"], r.area)}
        text = json.dumps(doc, allow_nan=True).replace(json.dumps(DEEP), "[" * depth + "]" * depth, 1)
        data = forge.dump(r, manifest=text.encode())
    else:
        data = forge.dump(r)
    name = field_name(path)
    return data, f"{name} = {what}", name


def _parent(doc, path):
    try:
        return _get(doc, path[:-1])
    except (KeyError, IndexError, TypeError):
        return None


def _get(doc, path):
    node = doc
    for p in path:
        node = node[p]
    return node


def graph_file(scratch: str) -> Path:
    """A user model saved with its graph (no committed file has one): 16-8-4 MLP."""
    import torch
    from torch import nn

    import weightzip

    torch.manual_seed(0)
    out = Path(scratch) / "user-graph.wz"
    weightzip.save(nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4)), out,
                   example_inputs=(torch.randn(2, 16),))
    return out


def run_manifest(n: int, seed: int, timeout: float, results: Path, log=print) -> dict:
    """The manifest-field section: ``n`` cases spread evenly over :data:`MANIFEST_FILES` and a graph file."""
    import shutil
    import subprocess

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from weightzip.codec import forge

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parent).stdout.strip()
    scratch = tempfile.mkdtemp(prefix="wz-fuzz-man-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    files = [results / f for f in MANIFEST_FILES] + [graph_file(scratch)]
    names = list(MANIFEST_FILES) + ["user-graph.wz (a 16-8-4 nn.Sequential saved with its graph, made by the run)"]
    log(f"manifest fields: {names}")
    raws = [forge.load(f, keep_version=f.name in KEEP_VERSION) for f in files]
    pool = _Pool([str(f) for f in files], scratch, kind="manifest")
    rng = random.Random(seed + 1)
    counts, per_field, per_file = Counter(), defaultdict(Counter), defaultdict(Counter)
    steps = defaultdict(Counter)
    crashes, hangs, overmem = [], [], []
    worst = {"refusal_s": 0.0, "refusal_peak": 0, "rss_case_refused": 0, "rss_over_refused": 0}
    t0 = time.time()
    for case in range(n):
        fi = case % len(files)
        data, desc, field = manifest_mutation(raws[fi], random.Random(rng.getrandbits(64)))
        res = pool.run(case, fi, data, desc, timeout)
        out = res["outcome"]
        for step, r in res.get("steps", {}).items():
            steps[step][r] += 1
        if out == "refused":
            for key in ("rss_case", "rss_over"):
                if (res.get(key) or 0) > worst[f"{key}_refused"]:
                    worst[f"{key}_refused"], worst[f"{key}_refused_case"] = res[key], desc
            if res["peak"] > MANIFEST_OVER_MEMORY or (res.get("rss_case") or 0) > MANIFEST_OVER_MEMORY:
                out = "over-memory"
                overmem.append(res)
            if res["seconds"] > worst["refusal_s"]:
                worst.update(refusal_s=res["seconds"], refusal_s_case=desc)
            if res["peak"] > worst["refusal_peak"]:
                worst.update(refusal_peak=res["peak"], refusal_peak_case=desc)
        if out == "crash":
            crashes.append(res)
        if out == "hang":
            hangs.append(res)
        counts[out] += 1
        per_field[field][out] += 1
        per_file[names[fi]][out] += 1
        if (case + 1) % 250 == 0:
            log(f"manifest {case + 1}/{n} {dict(counts)} {time.time() - t0:.0f}s")
    pool.close()
    shutil.rmtree(scratch, ignore_errors=True)
    return {"commit": commit, "n": n, "seed": seed, "timeout_s": timeout, "seconds": time.time() - t0,
            "loadavg": os.getloadavg(), "files": names,
            "counts": dict(counts), "per_field": {k: dict(v) for k, v in sorted(per_field.items())},
            "per_file": {k: dict(v) for k, v in per_file.items()}, "steps": {k: dict(v) for k, v in steps.items()},
            "worst": worst, "worker_interpreter_rss": min(pool.base_rss), "restarts": len(pool.base_rss) - 1,
            "over_memory_limit": MANIFEST_OVER_MEMORY,
            "crashes": crashes[:50], "hangs": hangs[:50], "over_memory": overmem[:50]}


class _Pool:
    """One worker process; restarted after a hang or a death."""

    def __init__(self, files, scratch, kind: str = "codec"):
        self.files, self.scratch, self.kind = files, scratch, kind
        self.base_rss: list[int] = []
        self.peak_rss: list[int] = []
        self._start()

    def _start(self):
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker, args=(child, self.files, self.scratch, self.kind), daemon=True)
        self.proc.start()
        tag, rss = self.conn.recv()
        self.base_rss.append(rss)

    def _restart(self):
        self.proc.kill()
        self.proc.join()
        self._start()

    def run(self, case, fi, data, desc, timeout) -> dict:
        self.conn.send((case, fi, data, desc))
        if not self.conn.poll(timeout):
            self._restart()
            return {"outcome": "hang", "case": case, "file": fi, "seconds": timeout, "peak": 0,
                    "desc": desc, "op": desc.split(" ", 1)[0]}
        try:
            return self.conn.recv()[1]
        except EOFError:
            code = self.proc.exitcode
            self._restart()
            return {"outcome": "crash", "case": case, "file": fi, "seconds": 0.0, "peak": 0,
                    "message": f"worker died (exit code {code})", "desc": desc, "op": desc.split(" ", 1)[0]}

    def close(self):
        self.conn.send(None)
        tag, rss = self.conn.recv()
        self.peak_rss.append(rss)
        self.proc.join()


def run(n: int, seed: int, timeout: float, results: Path, log=print) -> dict:
    import subprocess

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parent).stdout.strip()
    files = choose_files(results)
    log(f"commit {commit}, files: {[str(f.relative_to(results)) for f in files]}")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from weightzip.codec import container, decode

    ref = []
    for f in files:
        _, formats = container.read(f)
        ref.append(_digest({k: decode(v) for k, v in formats.items()}))
    scratch = tempfile.mkdtemp(prefix="wz-fuzz-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    from weightzip.codec import forge

    raws = [forge.load(f, keep_version=True) for f in files]     # a format-2 / 3 file is forged as format 2 / 3
    pool = _Pool([str(f) for f in files], scratch)
    rng = random.Random(seed)
    counts = Counter()
    per_file = defaultdict(Counter)
    per_op = defaultdict(Counter)
    crashes, hangs, slow, overmem = [], [], [], []
    worst = {"refusal_s": 0.0, "refusal_peak": 0, "refusal_s_case": None, "refusal_peak_case": None}
    t0 = time.time()
    for case in range(n):
        fi = case % len(files)
        data, desc = forge.random_mutation(raws[fi], random.Random(rng.getrandbits(64)))
        res = pool.run(case, fi, data, desc, timeout)
        out = res["outcome"]
        if out == "decoded":
            out = "same" if res["digest"] == ref[fi] else "different-valid"
        for key in ("rss_case", "rss_over"):
            if res.get(key) is not None and res[key] > worst.get(f"{key}_{out}", 0):
                worst[f"{key}_{out}"] = res[key]
                worst[f"{key}_{out}_case"] = res["desc"]
        if out == "refused":
            if res["peak"] > OVER_MEMORY or (res.get("rss_case") or 0) > OVER_MEMORY:
                out = "over-memory"
                overmem.append(res)
            if res["seconds"] > SLOW_REFUSAL_S:
                slow.append(res)
            if res["seconds"] > worst["refusal_s"]:
                worst.update(refusal_s=res["seconds"], refusal_s_case=res["desc"])
            if res["peak"] > worst["refusal_peak"]:
                worst.update(refusal_peak=res["peak"], refusal_peak_case=res["desc"])
        if out == "crash":
            crashes.append(res)
        if out == "hang":
            hangs.append(res)
        counts[out] += 1
        per_file[fi][out] += 1
        per_op[res.get("op", "?")][out] += 1
        if (case + 1) % 2000 == 0:
            log(f"{case + 1}/{n} {dict(counts)} {time.time() - t0:.0f}s")
    pool.close()
    import shutil

    shutil.rmtree(scratch, ignore_errors=True)
    elapsed = time.time() - t0
    return {
        "commit": commit, "n": n, "seed": seed, "timeout_s": timeout, "seconds": elapsed, "loadavg": os.getloadavg(),
        "python": platform.python_version(), "machine": platform.machine(),
        "files": [str(f.relative_to(results)) for f in files], "counts": dict(counts),
        "per_file": {str(files[i].relative_to(results)): dict(c) for i, c in per_file.items()},
        "per_op": {k: dict(v) for k, v in per_op.items()},
        "worst": worst, "slow_refusals": len(slow),
        "worker_interpreter_rss": min(pool.base_rss), "restarts": len(pool.base_rss) - 1,
        "crashes": crashes[:50], "hangs": hangs[:50], "over_memory": overmem[:50], "slow": slow[:50],
    }


def _row(name, c):
    return f"| {name} | " + " | ".join(str(c.get(o, 0)) for o in OUTCOMES) + f" | {sum(c.values())} |"


def write_page(res: dict, results: Path) -> None:
    head = "| | " + " | ".join(OUTCOMES) + " | total |\n|---|" + "---:|" * (len(OUTCOMES) + 1)
    mib = 2**20
    w = res["worst"]
    lines = [
        "# Fuzzing the .wz reader (issue 16)",
        "",
        f"`OMP_NUM_THREADS=1 python benchmarks/fuzz_format.py --n {res['n']} --seed {res['seed']} "
        f"--timeout {res['timeout_s']:g}`: {res['n']:,} random hostile mutations (see the script's docstring), checksums recomputed "
        f"(except `file_bytes`), each read and fully decoded in a 1-thread worker process, at commit {res['commit']}. Run time "
        f"{res['seconds'] / 60:.1f} min, load average at the end {', '.join(f'{x:.2f}' for x in res['loadavg'])} "
        "(2 shared cores).",
        "",
        "## Outcomes",
        "",
        head,
        _row("**all**", res["counts"]),
        *[_row(f"`{f}`", c) for f, c in res["per_file"].items()],
        "",
        "## By mutation",
        "",
        head,
        *[_row(f"`{op}`", c) for op, c in sorted(res["per_op"].items())],
        "",
        "## Resources",
        "",
        f"* slowest refusal: {w['refusal_s'] * 1000:.0f} ms (`{w['refusal_s_case']}`); refusals over "
        f"{SLOW_REFUSAL_S:g} s: {res['slow_refusals']}",
        f"* largest traced peak of a refusal (tracemalloc, Python + numpy): {w['refusal_peak'] / mib:.1f} MiB "
        f"(`{w['refusal_peak_case']}`); over-memory limit {OVER_MEMORY // mib} MB",
        "* peak RSS a case adds to the worker (its peak, reset before the case through /proc/self/clear_refs, "
        f"minus its RSS at the start): largest of a refusal {w.get('rss_case_refused', 0) / mib:.1f} MiB "
        f"(`{w.get('rss_case_refused_case')}`), of a decoded case "
        f"{max(w.get('rss_case_same', 0), w.get('rss_case_different-valid', 0)) / mib:.1f} MiB",
        f"* peak RSS of a refusal over the interpreter after imports ({res['worker_interpreter_rss'] / mib:.0f} MiB), "
        f"including what the worker kept from earlier cases: {w.get('rss_over_refused', 0) / mib:.1f} MiB; "
        f"worker restarts: {res['restarts']}",
        "* targets: 0 crash, 0 hang, every refusal <= 200 MB above the interpreter and within 1 s",
        "",
    ]
    for title, key in (("Crashes", "crashes"), ("Hangs", "hangs"), ("Over-memory", "over_memory"),
                       ("Slow refusals", "slow")):
        if res[key]:
            lines += [f"## {title} (first {len(res[key])})", ""]
            lines += [f"* case {r['case']} file {r['file']}: `{r['desc']}` -> {r.get('message', '')} "
                      f"({r['seconds']:.2f} s, {r['peak'] / mib:.0f} MiB)" for r in res[key]]
            lines.append("")
    if res.get("manifest"):
        lines += manifest_page(res["manifest"])
    lines += ["Named forged cases (huge / negative / float / bool shapes, zstd bombs, deep JSON, overlapping and",
              "out-of-range streams, bit widths 0 / 33 / 64, out-of-range codes, unknown kinds, NaN codebooks, ...)",
              "are tests: `pytest tests/codec/test_container_hostile.py` (each refused within 2 s and 200 MB traced).",
              ""]
    import _common  # benchmarks/ is on sys.path when the script runs

    _common.write_results(results / "fuzz_format.json", res, results / "fuzz_format.md", "\n".join(lines))


def _mrow(name, c):
    return f"| {name} | " + " | ".join(str(c.get(o, 0)) for o in MANIFEST_OUTCOMES) + f" | {sum(c.values())} |"


def manifest_page(m: dict) -> list[str]:
    """The manifest-field section of the page."""
    mib = 2**20
    w = m["worst"]
    head = "| | " + " | ".join(MANIFEST_OUTCOMES) + " | total |\n|---|" + "---:|" * (len(MANIFEST_OUTCOMES) + 1)
    lines = [
        "## Manifest fields (issue 24)",
        "",
        f"`OMP_NUM_THREADS=1 python benchmarks/fuzz_format.py --n 0 --manifest-n {m['n']} --seed {m['seed']} "
        f"--timeout {m['timeout_s']:g}` (`--n 0` keeps the sections above): {m['n']:,} cases, one caller field "
        "of the manifest replaced or added (wrong type, huge / negative number, long list, nesting 10^2-10^4 deep; "
        "see the script's docstring), checksums recomputed; each runs `weightzip.load`, "
        "`weightzip.verify` and `size_report` (`inspect`) in a 1-thread worker process, at commit "
        f"{m['commit']}. Run time {m['seconds'] / 60:.1f} min, load average at the end "
        f"{', '.join(f'{x:.2f}' for x in m['loadavg'])} (2 shared cores). Files: "
        + ", ".join(f"`{f}`" for f in m["files"]) + ".",
        "",
        head,
        _mrow("**all**", m["counts"]),
        *[_mrow(f"`{f}`", c) for f, c in m["per_file"].items()],
        "",
        "By field (`[]`: any list entry, `.*`: any key below):",
        "",
        head,
        *[_mrow(f"`{f}`", c) for f, c in m["per_field"].items()],
        "",
        "Per step (ok / refused / crash): " + "; ".join(
            f"{k} " + " / ".join(str(v.get(o, 0)) for o in ("ok", "refused", "crash")) for k, v in m["steps"].items()),
        "",
        f"* slowest refusal by `load`: {w['refusal_s'] * 1000:.0f} ms (`{w.get('refusal_s_case')}`)",
        f"* largest traced peak of a refusal (tracemalloc, all three steps): {w['refusal_peak'] / mib:.1f} MiB "
        f"(`{w.get('refusal_peak_case')}`)",
        f"* largest peak RSS a refused case adds to the worker (VmHWM reset before the case): "
        f"{w['rss_case_refused'] / mib:.1f} MiB (`{w.get('rss_case_refused_case')}`); over the interpreter after "
        f"imports ({m['worker_interpreter_rss'] / mib:.0f} MiB), including what the worker kept from earlier cases: "
        f"{w['rss_over_refused'] / mib:.1f} MiB; worker restarts: {m['restarts']}",
        f"* targets: 0 crash (an exception other than WeightzipFormatError from any step), 0 hang, every refusal "
        f"<= {m['over_memory_limit'] // mib} MB over the interpreter",
        "",
    ]
    for title, key in (("Crashes", "crashes"), ("Hangs", "hangs"), ("Over-memory", "over_memory")):
        if m[key]:
            lines += [f"### Manifest fields: {title.lower()} (first {len(m[key])})", ""]
            lines += [f"* case {r['case']} file {r['file']}: `{r['desc']}` -> {r.get('message', '')} "
                      f"({r['seconds']:.2f} s, {r['peak'] / mib:.0f} MiB)" for r in m[key]]
            lines.append("")
    lines += ["Named hostile manifests (num_classes 10^9, image_size 10^5, model as a string / list, activation_quant",
              "garbage, a 2^28-entry codebook, graph modules larger than their tensors, ...) are tests:",
              "`pytest tests/runtime/test_load_hostile.py tests/codec/test_manifest.py`.", ""]
    return lines


def main() -> None:
    import _common

    ap = _common.parser(__doc__)
    ap.add_argument("--n", type=int, default=50_000, help="codec mutations (0: keep the existing results' section)")
    ap.add_argument("--manifest-n", type=int, default=3000, help="manifest-field cases (0: keep the existing section)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds before a case counts as a hang")
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument("--out", type=Path, default=RESULTS, help="where to write fuzz_format.{md,json}")
    a = ap.parse_args()
    old = _common.read_json(a.out / "fuzz_format.json")
    res = run(a.n, a.seed, a.timeout, a.results) if a.n else {k: v for k, v in old.items() if k != "manifest"}
    if a.manifest_n:
        res["manifest"] = run_manifest(a.manifest_n, a.seed, a.timeout, a.results)
    elif old.get("manifest"):
        res["manifest"] = old["manifest"]
    write_page(res, a.out)
    print(json.dumps({k: res[k] for k in ("counts", "worst", "slow_refusals")}, default=str))
    if res.get("manifest"):
        print(json.dumps({k: res["manifest"][k] for k in ("counts", "worst")}, default=str))


if __name__ == "__main__":
    main()
