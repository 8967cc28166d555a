"""Post-training stages on HF BERT-base at 1 and 2 threads (issue 21: one or two passes per
tensor, every local core): benchmarks/results/scale_stages.md (+ .json).

Each (stage, threads) runs in its own process: BERT-base from ``BertConfig()`` (random init,
seeded), one stage over every Linear and Embedding weight through ``wz.compress``, timed alone
(the model build is not timed). ``threads`` is torch's intra-op thread count and the
stages' tensor pool (``wz.compress(..., workers=threads)``; kmeans_share uses it). PQ rows also
record the quantization error ``sqrt(sum ||W - W'||^2 / sum ||W||^2)`` over all tensors and
over the word embedding alone (``inertia`` of each layer from the stage's metrics).

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
          # (its lloyd engine trains codebooks of > 64 * k sub-vectors on a sample of 64 * k)
          "pq_share": {"method": "pq_share"},
          # the same, Lloyd iterations on all points (the engine before sampled training)
          "pq_share_exact": {"method": "pq_share", "sample_per_centroid": 0},
          # the same with one faiss call per codebook (the engine before the batched Lloyd)
          "pq_share_faiss": {"method": "pq_share", "engine": "faiss"}}


def worker(stage: str, threads: int) -> None:
    import torch
    import transformers as tf

    import weightzip as wz

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = tf.BertModel(tf.BertConfig()).eval()
    cfg = dict(STAGES[stage], select={"types": ["Linear", "Embedding"]})
    sq = {n: float(p.detach().double().pow(2).sum()) for n, p in model.named_parameters()}
    t0 = time.perf_counter()
    res = wz.compress(model, wz.Recipe.from_dict({"name": stage, "stages": [cfg]}), log=lambda s: None,
                      workers=threads)
    out: dict = {"seconds": time.perf_counter() - t0}
    layers = res.stages[0].metrics.get("layers", {})
    if stage.startswith("pq_share") and layers:
        err = {n: v["mse"] * v["kept"] for n, v in layers.items()}        # ||W - W'||^2 per tensor
        emb = "embeddings.word_embeddings.weight"
        out["rel_error"] = (sum(err.values()) / sum(sq[n] for n in err)) ** 0.5
        out["rel_error_word_emb"] = (err[emb] / sq[emb]) ** 0.5 if emb in err else None
    print(json.dumps(out))


def main(argv=None) -> int:
    ap = C.parser(__doc__)
    ap.add_argument("--stages", nargs="+", default=list(STAGES), choices=list(STAGES))
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2], help="thread counts to run each stage at")
    ap.add_argument("--worker", nargs=2, metavar=("STAGE", "THREADS"), help=argparse_hidden())
    args = ap.parse_args(argv)
    if args.worker:
        worker(args.worker[0], int(args.worker[1]))
        return 0
    # rows of stages not run this time are kept from the last page (each row says its load)
    old = (C.read_json(C.RESULTS / "scale_stages.json", {}) or {}).get("rows", [])
    rows = [r for r in old if r["stage"] not in args.stages]
    for stage in args.stages:
        for threads in args.threads:
            load = os.getloadavg()[0]
            out = subprocess.run([sys.executable, __file__, "--worker", stage, str(threads)], capture_output=True,
                                 text=True, check=True)
            res = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append({"stage": stage, "threads": threads, "seconds": res["seconds"], "load": load, "date": C.now(),
                         **{k: v for k, v in res.items() if k.startswith("rel_error")}})
            print(rows[-1], flush=True)
    lines = ["# Post-training stages on HF BERT-base (109.5M parameters) at 1 and 2 threads (issue 21)", "",
             "Produced by `python benchmarks/scale_stages.py`; each row in its own process, the stage alone timed "
             "(`wz.compress` with one stage over every Linear and Embedding weight; random seeded weights). "
             f"Machine: {os.cpu_count()} cores. Written {C.now()}.", "",
             "| stage | threads | seconds | speed-up over 1 thread | rel. error (all / word emb.) | load | measured |",
             "|---|---|---|---|---|---|---|"]
    rows.sort(key=lambda r: (list(STAGES).index(r["stage"]) if r["stage"] in STAGES else 99, r["threads"]))
    one = {r["stage"]: r["seconds"] for r in rows if r["threads"] == 1}
    lloyd2 = next((r["seconds"] for r in rows if r["stage"] == "pq_share" and r["threads"] == 2), None)
    for r in rows:
        up = f"{one[r['stage']] / r['seconds']:.2f}x" if r["stage"] in one else "-"
        err = (f"{r['rel_error']:.4f} / {r['rel_error_word_emb']:.4f}" if r.get("rel_error") is not None
               and r.get("rel_error_word_emb") is not None else "-")
        lines.append(f"| {r['stage']} | {r['threads']} | {r['seconds']:.2f} | {up} | {err} | {r['load']:.1f} | "
                     f"{r.get('date', 'earlier')} |")
    faiss2 = next((r["seconds"] for r in rows if r["stage"] == "pq_share_faiss" and r["threads"] == 2), None)
    exact2 = next((r["seconds"] for r in rows if r["stage"] == "pq_share_exact" and r["threads"] == 2), None)
    if lloyd2 and faiss2:
        lines += ["", f"`pq_share` (d = 4, k = 256, one codebook per sub-space, 25 iterations): the batched Lloyd "
                      f"engine takes {lloyd2:.1f} s at 2 threads, one faiss call per codebook {faiss2:.1f} s "
                      f"({faiss2 / lloyd2:.1f}x)."]
    if lloyd2 and exact2:
        lines += ["", f"`pq_share` trains a codebook of more than 64 k sub-vectors (the word embedding's 30,522) "
                      f"on a seeded sample of 64 k, then one update and the final assignment on all of them; "
                      f"`pq_share_exact` (`sample_per_centroid: 0`) runs every iteration on all points: "
                      f"{exact2:.1f} s -> {lloyd2:.1f} s at 2 threads ({exact2 / lloyd2:.2f}x). "
                      "The relative error is `sqrt(sum ||W - W'||^2 / sum ||W||^2)`."]
    C.write_results(C.RESULTS / "scale_stages.json", {"rows": rows}, C.RESULTS / "scale_stages.md",
                    "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def argparse_hidden():
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    sys.exit(main())
