"""Render the CIFAR-10 GPU runs of `benchmarks/cifar10_gpu.sh` (JSON from `weightzip compress
--json`) as Markdown beside the published figures, and re-measure each `.wz` here (size from the
file; accuracy on the CPU from the file when `--eval` is given)."""
import json
import sys
from pathlib import Path

import _common as C
from weightzip.analysis.size import size_report

PUBLISHED = {
    "vgg_small-structured-w2a2c4": "thesis (seed 001): 2W/2A + 4x structured = 50x weight-memory reduction "
                                   "(Yin et al. 2017 report 50x on CIFAR-10)",
    "vgg_small-lab": "LAB paper (arXiv 1611.01600, Table 1, recalled): LAB 10.50% error, full precision 11.90%, "
                     "BWN 10.51% (200 epochs)",
}


def main(folder: str, evaluate: bool = False) -> None:
    root = Path(folder)
    rows = []
    for js in sorted(root.glob("*.json")):
        if js.stem not in PUBLISHED:
            continue
        d = json.loads(js.read_text())
        wz = root / f"{js.stem}.wz"
        rep = size_report(wz)
        row = {"run": js.stem, "recipe": d["recipe"], "baseline_acc": d["baseline_test"]["accuracy"],
               "compressed_acc": d["compressed_test"]["accuracy"], "file_acc": d["from_file_test"]["accuracy"],
               "file_bytes": rep.file_bytes, "file_ratio": rep.file_ratio, "seconds": d["seconds"]}
        if "structured" in js.stem:  # the thesis's figure: the memory model's weight-memory reduction
            from weightzip.analysis.memory import memory_report_from_file

            mem = memory_report_from_file(wz)
            row["weight_memory_reduction"] = mem["weight_memory_reduction"]
            row["total_memory_bits"] = mem["total_memory_bits"]
        if evaluate:
            from weightzip.jobs.runs import evaluate_checkpoint

            row["file_acc_cpu"] = evaluate_checkpoint(wz, "cifar10")["accuracy"]
        rows.append(row)
    lines = ["# CIFAR-10 on a GPU (H100), vgg_small", "",
             "Produced by `bash benchmarks/cifar10_gpu.sh` (commands `weightzip compress ... --json`) and rendered by",
             "`python benchmarks/cifar10_gpu_report.py benchmarks/results/cifar10-gpu`. Sizes are read from the",
             "committed `.wz` files here. Budget: baseline 60 epochs (SGD, cosine, augmentation), then the",
             "recipe's stage (structured QAT 30 epochs from the baseline; LAB 30 epochs from scratch).",
             "`compressed acc` was measured in memory on the GPU, `from file` on the GPU machine after",
             "re-loading the `.wz` on the CPU runtime; with 2-bit activations a few predictions flip",
             "between GPU and CPU arithmetic (rounding thresholds), hence the small difference.", "",
             "`weight-memory reduction` is the memory model of `analysis/memory.py` (kept weights x bits +",
             "block-mask bits + fp32 bias/BN, against fp32 weights), the thesis's measure; `file ratio` is",
             "the `.wz` on disk against the fp32 state_dict (entropy coding included).", "",
             *C.md_header(["run", "baseline acc", "compressed acc", "from file", "file bytes", "file ratio",
                           "weight-memory reduction", "time (s)", "published"])]
    for r in rows:
        lines.append(f"| {r['run']} | {r['baseline_acc']:.4f} | {r['compressed_acc']:.4f} | {r['file_acc']:.4f}"
                     + (f" (CPU here: {r['file_acc_cpu']:.4f})" if "file_acc_cpu" in r else "")
                     + f" | {r['file_bytes']:,} | {r['file_ratio']:.1f}x | "
                     + (f"{r['weight_memory_reduction']:.1f}x" if "weight_memory_reduction" in r else "-")
                     + f" | {r['seconds']:.0f} | {PUBLISHED[r['run']]} |")
    C.write_text(root / "README.md", "\n".join(lines) + "\n")
    C.write_json(root / "summary.json", rows, indent=2)
    print("\n".join(lines))


if __name__ == "__main__":
    main(sys.argv[1], evaluate="--eval" in sys.argv)
