"""Fuzzing the .wz reader as an attacker would (issue 16, item 3).

    OMP_NUM_THREADS=1 python benchmarks/fuzz_format.py [--n 50000] [--seed 0] [--timeout 10]

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

Also recorded: the slowest refusal, the number of refusals over 1 s, and per case the peak
resident memory over that of the interpreter after imports (``VmHWM`` after resetting it through
``/proc/self/clear_refs`` before the case). Writes ``benchmarks/results/fuzz_format.{json,md}``.
"""
from __future__ import annotations

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
SLOW_REFUSAL_S = 1.0
OUTCOMES = ("refused", "same", "different-valid", "crash", "hang", "over-memory")


def _features(path: Path) -> set[tuple]:
    from weightzip.codec import container

    _, formats = container.read(path)
    out = set()
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


def _worker(conn, files: list[str], scratch: str) -> None:
    import torch

    torch.set_num_threads(1)
    _check(files[0])  # warm imports (zstandard, constriction) before the baseline
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
        res = _check(path)
        # this case's peak resident memory over its own start, and over the interpreter after imports
        hwm = _rss("VmHWM") if per_case else None
        res["rss_case"] = hwm - before if per_case else None
        res["rss_over"] = hwm - base_rss if per_case else None
        res.update(case=case, file=fi, desc=desc, op=desc.split(" ", 1)[0])
        conn.send(("result", res))


class _Pool:
    """One worker process; restarted after a hang or a death."""

    def __init__(self, files, scratch):
        self.files, self.scratch = files, scratch
        self.base_rss: list[int] = []
        self.peak_rss: list[int] = []
        self._start()

    def _start(self):
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker, args=(child, self.files, self.scratch), daemon=True)
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

    raws = [forge.load(f) for f in files]
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
    lines += ["Named forged cases (huge / negative / float / bool shapes, zstd bombs, deep JSON, overlapping and",
              "out-of-range streams, bit widths 0 / 33 / 64, out-of-range codes, unknown kinds, NaN codebooks, ...)",
              "are tests: `pytest tests/codec/test_container_hostile.py` (each refused within 2 s and 200 MB traced).",
              ""]
    import _common  # benchmarks/ is on sys.path when the script runs

    _common.write_results(results / "fuzz_format.json", res, results / "fuzz_format.md", "\n".join(lines))


def main() -> None:
    import _common

    ap = _common.parser(__doc__)
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds before a case counts as a hang")
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument("--out", type=Path, default=RESULTS, help="where to write fuzz_format.{md,json}")
    a = ap.parse_args()
    res = run(a.n, a.seed, a.timeout, a.results)
    write_page(res, a.out)
    print(json.dumps({k: res[k] for k in ("counts", "worst", "slow_refusals")},
                     default=str))


if __name__ == "__main__":
    main()
