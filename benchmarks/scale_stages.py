"""Post-training stages on HF BERT-base at 1 and 2 threads (issue 21: one or two passes per
tensor, every local core): benchmarks/results/scale_stages.md (+ .json).

Each (stage, threads) runs in its own process: BERT-base from ``BertConfig()`` (random init,
seeded), one stage over every Linear and Embedding weight through ``wz.compress``, timed alone
(the model build is not timed). ``threads`` is torch's intra-op thread count and the
stages' tensor pool (``wz.compress(..., workers=threads)``; kmeans_share uses it).

    python benchmarks/scale_stages.py                 # quantize_uniform, prune_magnitude, kmeans_share, pq_share
    python benchmarks/scale_stages.py --stages prune_magnitude

Run it with nothing else timing on the machine (the CIFAR job paused); the page records the load.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import _common as C

STAGES = {"quantize_uniform": {"method": "quantize_uniform", "bits": 8, "scale": "maxabs"},
          "prune_magnitude": {"method": "prune_magnitude", "sparsity": 0.5},
          "kmeans_share": {"method": "kmeans_share", "bits": 4},
          # default PQ: d = 4, k = 256, one codebook per sub-space (the batched Lloyd engine)
          "pq_share": {"method": "pq_share"}}


def worker(stage: str, threads: int) -> None:
    import torch
    import transformers as tf

    import weightzip as wz

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = tf.BertModel(tf.BertConfig()).eval()
    cfg = dict(STAGES[stage], select={"types": ["Linear", "Embedding"]})
    t0 = time.perf_counter()
    wz.compress(model, wz.Recipe.from_dict({"name": stage, "stages": [cfg]}), log=lambda s: None, workers=threads)
    print(json.dumps({"seconds": time.perf_counter() - t0}))


def main(argv=None) -> int:
    ap = C.parser(__doc__)
    ap.add_argument("--stages", nargs="+", default=list(STAGES), choices=list(STAGES))
    ap.add_argument("--worker", nargs=2, metavar=("STAGE", "THREADS"), help=argparse_hidden())
    args = ap.parse_args(argv)
    if args.worker:
        worker(args.worker[0], int(args.worker[1]))
        return 0
    rows = []
    for stage in args.stages:
        for threads in (1, 2):
            load = os.getloadavg()[0]
            out = subprocess.run([sys.executable, __file__, "--worker", stage, str(threads)], capture_output=True,
                                 text=True, check=True)
            sec = json.loads(out.stdout.strip().splitlines()[-1])["seconds"]
            rows.append({"stage": stage, "threads": threads, "seconds": sec, "load": load})
            print(rows[-1], flush=True)
    lines = ["# Post-training stages on HF BERT-base (109.5M parameters) at 1 and 2 threads (issue 21)", "",
             "Produced by `python benchmarks/scale_stages.py`; each row in its own process, the stage alone timed "
             "(`wz.compress` with one stage over every Linear and Embedding weight; random seeded weights). "
             f"Machine: {os.cpu_count()} cores. Written {C.now()}.", "",
             "| stage | threads | seconds | speed-up over 1 thread | load |", "|---|---|---|---|---|"]
    one = {r["stage"]: r["seconds"] for r in rows if r["threads"] == 1}
    for r in rows:
        lines.append(f"| {r['stage']} | {r['threads']} | {r['seconds']:.2f} | {one[r['stage']] / r['seconds']:.2f}x | "
                     f"{r['load']:.1f} |")
    C.write_results(C.RESULTS / "scale_stages.json", {"rows": rows}, C.RESULTS / "scale_stages.md",
                    "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def argparse_hidden():
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    sys.exit(main())
