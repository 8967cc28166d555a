"""Our committed .wz files against MPEG NNC (NNCodec, ISO/IEC 15938-17) on the same decoded tensors.

    python benchmarks/nncodec_compare.py --nnc-python PATH/TO/nnc-venv/bin/python
    python benchmarks/nncodec_compare.py --nnc-python ... --only lenet5-records-99-20ep.wz
    python benchmarks/nncodec_compare.py --table        # rewrite nncodec.md from nncodec.json

NNCodec is not a weightzip dependency (it pins its own torch and numpy). Install it into a
separate virtual environment and point ``--nnc-python`` (or ``$NNCODEC_PYTHON``) at it::

    python3 -m venv nnc-venv
    nnc-venv/bin/pip install torch==2.13.0      # CPU build first (NNCodec then pulls the torch it pins)
    nnc-venv/bin/pip install nncodec==2.1.3

This script runs in the project's environment; it calls that interpreter on ITSELF in
``--worker`` mode (which imports only numpy and nncodec) to code the tensors. For every file:

1. the decoded tensors of the file (``weightzip.codec.container.read`` + ``decode``), exactly
   what ``weightzip.load`` puts in the model;
2. NNCodec (``nncodec.nnc.compression.compress``, every tensor of the state dict) at each
   setting of :data:`SETTINGS` (its uniform quantizer with dependent quantization, and its
   codebook mode; ``qp`` = quantization step ``2^(qp/4)`` at ``qp_density`` 2), the bitstream
   length, then ``decompress``;
3. the MNIST test accuracy of the file's model (``weightzip.load``) and of the same model with
   NNCodec's decoded tensors loaded in its place (full 10,000-image test split).

NNCodec re-quantizes (lossy); ``.wz`` is the file's own lossless coding of its tensors. The
comparison row for a file is NNCodec's SMALLEST bitstream whose accuracy is at least the file's
minus :data:`TOLERANCE_PT` (a tolerance in NNCodec's favour). Sizes: ``.wz`` bytes on disk
(header and manifest included) against NNCodec's whole bitstream.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
JSON = RESULTS / "nncodec.json"
MD = RESULTS / "nncodec.md"

# (mode, qp, nonweight_qp): NNCodec's uniform (dependent) quantizer and its codebook mode over a
# range of weight steps, and three steps for the other tensors (biases; -75 is NNCodec's default)
SETTINGS = ([("uniform", qp, nq) for qp in (-44, -40, -36, -32, -28) for nq in (-75, -56, -44)]
            + [("codebook", qp, nq) for qp in (-44, -38, -34, -30) for nq in (-75, -56, -44)]
            # coarser steps (added with the re-quantized files, which may lose a little test accuracy:
            # NNCodec gets the same room), and a coarser step for the biases
            + [("uniform", qp, nq) for qp in (-24, -20) for nq in (-44, -36)]
            + [("codebook", qp, nq) for qp in (-26, -22) for nq in (-44, -36)]
            + [(m, qp, -36) for m, qps in (("uniform", (-32, -28)), ("codebook", (-34, -30))) for qp in qps])
TOLERANCE_PT = 0.02
FILES = ["lenet300_100-records-80ep-3bits.wz", "lenet5-records-99-20ep.wz", "lenet5-deep-compression.wz",
         "lenet300_100-deep-compression.wz", "lenet300_100-deep-compression-aggressive.wz",
         "lenet5-records-993-20ep.wz", "lenet300_100-records-80ep.wz", "lenet5-records-99.wz",
         "lenet300_100-records-96-3bits.wz", "lenet5-records-3bits.wz"]


# ---------------------------------------------------------------------------------------------
# worker: runs under the NNCodec interpreter (numpy + nncodec only)

def worker(npz: str, out_dir: str, settings: str) -> None:
    import numpy as np
    from nncodec.nnc import compression

    params = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in np.load(npz).items()}
    rows = []
    for mode, qp, nq in json.loads(settings):
        bs_path = os.path.join(out_dir, "bitstream.nnc")
        t0 = time.perf_counter()
        bs = compression.compress(dict(params), bitstream_path=bs_path, qp=qp, nonweight_qp=nq,
                                  codebook_mode=2 if mode == "codebook" else 0,
                                  return_bitstream=True, verbose=False)
        t1 = time.perf_counter()
        rec = compression.decompress(bytearray(bs))
        name = f"{mode}_{qp}_{nq}.npz"
        np.savez(os.path.join(out_dir, name), **{k: np.asarray(rec[k], dtype=np.float32).reshape(params[k].shape)
                                                  for k in params})
        rows.append({"mode": mode, "qp": qp, "nonweight_qp": nq, "bytes": len(bs), "encode_s": t1 - t0, "decoded": name})
    with open(os.path.join(out_dir, "rows.json"), "w") as f:
        json.dump(rows, f)


# ---------------------------------------------------------------------------------------------
# driver: runs in the project's environment

def _nncodec_version(py: str) -> str:
    out = subprocess.run([py, "-c", "import importlib.metadata as m; print(m.version('nncodec'), m.version('torch'))"],
                         capture_output=True, text=True, check=True).stdout.split()
    return f"nncodec {out[0]} (torch {out[1]})"


def measure(name: str, py: str, loaders, settings=None, keep: list | None = None) -> dict:
    """NNCodec at ``settings`` (default :data:`SETTINGS`) on the file's tensors; ``keep``: rows
    measured before, kept beside the new ones."""
    import numpy as np
    import torch

    import weightzip as wz
    from weightzip.codec import container, decode
    from weightzip.training.evaluate import evaluate

    path = RESULTS / name
    _, formats = container.read(path)
    tensors = {k: decode(f).float().numpy() for k, f in formats.items()}
    model = wz.load(path).eval()
    acc_wz = evaluate(model, loaders.test, "classify")["accuracy"]
    with tempfile.TemporaryDirectory() as d:
        npz = os.path.join(d, "tensors.npz")
        np.savez(npz, **tensors)
        subprocess.run([py, str(Path(__file__).resolve()), "--worker", npz, d, json.dumps(settings or SETTINGS)],
                       check=True, cwd=d, stdout=subprocess.DEVNULL)
        rows = json.loads(Path(d, "rows.json").read_text())
        for r in rows:
            dec = dict(np.load(os.path.join(d, r.pop("decoded"))))
            m2 = wz.load(path).eval()
            sd = m2.state_dict()
            m2.load_state_dict({k: torch.from_numpy(dec[k]).to(sd[k].dtype) if k in dec else v for k, v in sd.items()})
            r["accuracy"] = evaluate(m2, loaders.test, "classify")["accuracy"]
            r["max_abs_change"] = max(float(np.abs(dec[k] - tensors[k]).max()) for k in tensors if tensors[k].size)
    order = {tuple(x): i for i, x in enumerate(SETTINGS)}
    rows = sorted((keep or []) + rows, key=lambda r: order.get((r["mode"], r["qp"], r["nonweight_qp"]), len(order)))
    return _with_wz({"file": name, "nncodec": rows}, acc_wz)


def _with_wz(e: dict, acc_wz: float) -> dict:
    """The entry's ``.wz`` fields (bytes on disk now, ``acc_wz`` measured from the file) and the best
    NNCodec row within the tolerance."""
    path = RESULTS / e["file"]
    ok = [r for r in e["nncodec"] if 100 * r["accuracy"] >= 100 * acc_wz - TOLERANCE_PT - 1e-9]
    best = min(ok, key=lambda r: r["bytes"]) if ok else None
    wz_bytes = path.stat().st_size
    return {**e, "wz_bytes": wz_bytes, "wz_manifest_and_header_bytes": _overhead(path), "wz_accuracy": acc_wz,
            "best": best, "wz_vs_best": None if best is None else wz_bytes / best["bytes"] - 1.0}


def refresh_wz(e: dict, loaders) -> dict:
    """Re-measure a file's ``.wz`` bytes and accuracy (from the file) without re-running NNCodec."""
    import weightzip as wz
    from weightzip.training.evaluate import evaluate

    acc = evaluate(wz.load(RESULTS / e["file"]).eval(), loaders.test, "classify")["accuracy"]
    return _with_wz(e, acc)


def _overhead(path: Path) -> int:
    from weightzip.analysis.size import size_report

    r = size_report(path)
    return r.file_bytes - r.payload_bytes


def write_table(doc: dict) -> None:
    lines = ["# weightzip against MPEG NNC (NNCodec) on the same tensors", "",
             "Generated by `python benchmarks/nncodec_compare.py --nnc-python <nnc-venv>/bin/python` from",
             "`nncodec.json`; do not edit by hand. How to install NNCodec: the script's docstring (a separate",
             f"venv: `pip install torch==2.13.0` then `pip install nncodec==2.1.3`). Measured with {doc.get('nncodec', '?')}.",
             "",
             "For each committed file: its decoded tensors are coded by NNCodec at every setting below; the",
             "MNIST test accuracy (full 10,000 images) of the file's model and of the model holding NNCodec's",
             "decoded tensors are both measured here. NNCodec re-quantizes (lossy); the `.wz` file is the",
             "file as committed (lossless coding of its tensors; header and manifest included). The NNCodec",
             f"column is its smallest bitstream whose accuracy is >= the file's minus {TOLERANCE_PT} pt (in its favour).",
             "Target (issue 24): `.wz` >= 10% smaller, i.e. `.wz / NNCodec - 1 <= -10%`.", "",
             "Settings (mode, qp, nonweight_qp): " + ", ".join(f"{m} {q} {n}" for m, q, n in SETTINGS)
             + "; other NNCodec options at their defaults (dependent quantization on in uniform mode).", "",
             *_summary(doc), "",
             "| file | .wz bytes (header + manifest) | .wz accuracy % | NNCodec best bytes (setting) | NNCodec accuracy % | .wz / NNCodec - 1 | target met |",
             "|---|---|---|---|---|---|---|"]
    for e in doc["files"]:
        b = e["best"]
        if b is None:
            lines.append(f"| `{e['file']}` | {e['wz_bytes']:,} ({e['wz_manifest_and_header_bytes']:,}) | "
                         f"{100 * e['wz_accuracy']:.2f} | none within the tolerance | - | - | - |")
            continue
        d = e["wz_vs_best"]
        lines.append(f"| `{e['file']}` | {e['wz_bytes']:,} ({e['wz_manifest_and_header_bytes']:,}) | {100 * e['wz_accuracy']:.2f} | "
                     f"{b['bytes']:,} ({b['mode']}, qp {b['qp']}, nonweight_qp {b['nonweight_qp']}) | {100 * b['accuracy']:.2f} | **{100 * d:+.1f}%** | "
                     f"{'yes' if d <= -0.10 else 'no'} |")
    lines += ["", "## Every NNCodec setting", "",
              "| file | mode | qp | nonweight_qp | bytes | accuracy % | largest change of a tensor element |", "|---|---|---|---|---|---|---|"]
    for e in doc["files"]:
        for r in e["nncodec"]:
            lines.append(f"| `{e['file']}` | {r['mode']} | {r['qp']} | {r['nonweight_qp']} | {r['bytes']:,} | {100 * r['accuracy']:.2f} | "
                         f"{r['max_abs_change']:.2e} |")
    lines += _requant_section(doc)
    lines += ["", "## Where the bytes are", "",
              "The `.wz` file split into header + manifest and tensor streams (payload), against NNCodec's best",
              "bitstream above (which carries its own small header).", "",
              "| file | .wz payload bytes | payload / NNCodec - 1 | header + manifest bytes | share of the file |",
              "|---|---|---|---|---|"]
    for e in doc["files"]:
        b = e["best"]
        pay = e["wz_bytes"] - e["wz_manifest_and_header_bytes"]
        rel = f"{100 * (pay / b['bytes'] - 1):+.1f}%" if b else "-"
        lines.append(f"| `{e['file']}` | {pay:,} | {rel} | {e['wz_manifest_and_header_bytes']:,} | "
                     f"{100 * e['wz_manifest_and_header_bytes'] / e['wz_bytes']:.1f}% |")
    lines += ["", "## What was tried (issue 24)", "", *WHAT_WAS_TRIED]
    MD.write_text("\n".join(lines) + "\n")


WHAT_WAS_TRIED = [
    "* Lossless, in the codec (all committed record / Deep Compression files rewritten, `python",
    "  benchmarks/records.py --rewrite`; per-file sizes before / after in `records.md`): file format 3",
    "  (the tensor table as compact lists with the derivable meta fields dropped, one CRC32 for a",
    "  stream area up to 4 MiB instead of one per stream, zstd with a built-in dictionary of typical",
    "  manifests: header + manifest 387-602 -> about 170-300 bytes per file, see the table above) and the",
    "  context-mixing binary arithmetic coder for the mask and the codes of a sparse layer",
    "  (`codec/mixing.py`: column, row, previous-row and neighbour estimates mixed in the logistic",
    "  domain, integer-only), model 2: counts-based adaptive states and, for the codes, the last code of",
    "  the same column as a context (-0.4% to -0.9% of the payload of these files).",
    "* Mixer variants measured during development on the 31 distinct masks and 33 code streams of these",
    "  files (a harness outside the repository, not reproduced by a script), relative to model 1: an",
    "  APM / SSE stage on the mask probability by (column count, row count) -0.2%; an extra mask input by",
    "  (column count, previous row's count, row count so far) +0.2%; counts-based states for every",
    "  adaptive probability of the codes -0.5% (the column's last code as a context: -0.7%, kept); mask",
    "  inputs from the neighbouring columns' counts (c +- 1, c +- the image / kernel width) and from the",
    "  column's group (a conv input channel, a 4x4 feature map) +0.4% (the mixer's cost exceeded what they",
    "  told). The",
    "  masks of magnitude-pruned layers hold little structure beyond row and column densities (a static",
    "  row x column model was not smaller either), so the lossless coder is within a few percent of",
    "  what these models can reach.",
    "* Why the lossless `.wz` rows stay short of the target: NNCodec re-quantizes. At equal accuracy its",
    "  best bitstreams are 0-25% smaller than the float32 values they replace could be coded",
    "  losslessly: the Deep Compression files keep 8-bit conv codebooks and dense float32 biases that",
    "  NNCodec rounds, and the record files' float32 codebooks and biases cost 4 bytes a value. A",
    "  lossless coder of the same tensors cannot remove that information; the optional lossy step",
    "  below does, chosen on the validation split.",
    "* Lossy, optional (`records.py --requant`, chosen on the VALIDATION split, test accuracy then",
    "  measured from the written file): biases on a grid 2^-f, a further share of the smallest weights",
    "  pruned, codebook values merged and put on a grid 2^-f (stored as small integers: float coding",
    "  `grid`); per-file choices in `records.md`. Each search stops at its first failing step: trying every",
    "  step and keeping the coarsest that passed on validation let noise through (LeNet-300-100: validation",
    "  accuracy up, test error +0.2 pt), so it was not kept. The greedy search is limited by the 5,000-image",
    "  validation split: pruning 1% more of the largest layer already moves its accuracy by an image.",
]


def _summary(doc: dict) -> list[str]:
    rel = [e["wz_vs_best"] for e in doc["files"] if e.get("wz_vs_best") is not None]
    if not rel:
        return []
    met = sum(r <= -0.10 for r in rel)
    short = [r for r in rel if r > -0.10]
    gap = (f" The files that miss it are {100 * (min(short) + 0.10):.1f} to {100 * (max(short) + 0.10):.1f} points"
           " short of -10% (why: \"What was tried\" below)." if short else "")
    return [f"**Summary: {met} of {len(rel)} files meet the target.** `.wz / NNCodec - 1` ranges from "
            f"{100 * min(rel):+.1f}% to {100 * max(rel):+.1f}% (lossless `.wz` against NNCodec's lossy best at the"
            " same accuracy)." + gap]


def _requant_rows(doc: dict) -> list[tuple[dict, float, dict | None]]:
    """(records.json row, test accuracy from the file, NNCodec's best row at >= it minus the tolerance)."""
    rec = RESULTS / "records.json"
    rq = (json.loads(rec.read_text()).get("__requant__") or []) if rec.is_file() else []
    by = {e["file"]: e for e in doc["files"]}
    out = []
    for r in rq:
        e = by.get(r["from"])
        if e is None:
            continue
        acc = 1 - r["test_error_from_file"] / 100
        ok = [x for x in e["nncodec"] if 100 * x["accuracy"] >= 100 * acc - TOLERANCE_PT - 1e-9]
        out.append((r, acc, min(ok, key=lambda x: x["bytes"]) if ok else None))
    return out


def _requant_section(doc: dict) -> list[str]:
    """The optional re-quantized files (``records.py --requant``) against NNCodec at THEIR accuracy."""
    rows = []
    rel_all = []
    for r, acc, best in _requant_rows(doc):
        if best is None:
            rows.append(f"| `{r['file']}` | {r['bytes']:,} | {100 * acc:.2f} ({100 - r['from_test_error']:.2f}) | - | - | - | - |")
            continue
        rel = r["bytes"] / best["bytes"] - 1
        rel_all.append(rel)
        rows.append(f"| `{r['file']}` | {r['bytes']:,} | {100 * acc:.2f} ({100 - r['from_test_error']:.2f}) | "
                    f"{best['bytes']:,} ({best['mode']}, qp {best['qp']}, nonweight_qp {best['nonweight_qp']})"
                    f" | {100 * best['accuracy']:.2f} | **{100 * rel:+.1f}%** | {'yes' if rel <= -0.10 else 'no'} |")
    if not rows:
        return []
    met = sum(x <= -0.10 for x in rel_all)
    short = [x for x in rel_all if x > -0.10]
    summary = (f"**{met} of {len(rel_all)} re-quantized files meet the target** (`file / NNCodec - 1` from "
               f"{100 * min(rel_all):+.1f}% to {100 * max(rel_all):+.1f}%)." if rel_all else "")
    if short:
        summary += (f" The others are {100 * (min(short) + 0.10):.1f} to {100 * (max(short) + 0.10):.1f} points short"
                    " of -10%.")
    return ["", "## The optional re-quantized files against NNCodec at their own accuracy", "",
            "`python benchmarks/records.py --requant` (every choice made on the validation split, see records.md):",
            "the re-quantized file's test accuracy (measured from the file; in brackets the file it comes from)",
            "against NNCodec's smallest bitstream of the ORIGINAL file's tensors at that accuracy or above (minus",
            f"{TOLERANCE_PT} pt). NNCodec's rows are the ones above; where the re-quantized file lost test accuracy,",
            "NNCodec is still held to that lower accuracy only. Where NNCodec's best row is at the coarsest step",
            "tried (qp -20 / -22), a coarser step might make it smaller still: those rows are not a bound.", "",
            summary, "",
            "| file | bytes | test accuracy % (from) | NNCodec best bytes (setting) | NNCodec accuracy % | file / NNCodec - 1 | target met |",
            "|---|---|---|---|---|---|---|", *rows]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worker", nargs=3, metavar=("NPZ", "OUT_DIR", "SETTINGS"), help=argparse.SUPPRESS)
    p.add_argument("--nnc-python", default=os.environ.get("NNCODEC_PYTHON"),
                   help="python of a venv with nncodec installed (default $NNCODEC_PYTHON)")
    p.add_argument("--only", nargs="*", help="file names under benchmarks/results (default: FILES)")
    p.add_argument("--table", action="store_true", help="only rewrite nncodec.md from nncodec.json")
    p.add_argument("--missing", action="store_true",
                   help="run NNCodec only at the settings a file's entry does not have yet (rows kept)")
    p.add_argument("--wz-only", action="store_true",
                   help="re-measure only the .wz files (bytes, accuracy from the file); NNCodec rows kept")
    args = p.parse_args(argv)
    if args.worker:
        worker(*args.worker)
        return 0
    doc = json.loads(JSON.read_text()) if JSON.is_file() else {"files": []}
    if args.wz_only:
        import torch

        from weightzip.jobs.runs import make_loaders
        from weightzip.training.checkpoint import atomic_write_json

        torch.set_num_threads(1)
        loaders = make_loaders("mnist", 1000, eval_batch_size=1000)
        doc["files"] = [refresh_wz(e, loaders) for e in doc["files"]]
        atomic_write_json(JSON, doc)
    elif not args.table:
        if not args.nnc_python:
            p.error("--nnc-python (or $NNCODEC_PYTHON) is required: see the docstring for how to install NNCodec")
        import torch

        from weightzip.jobs.runs import make_loaders
        from weightzip.training.checkpoint import atomic_write_json

        torch.set_num_threads(1)
        loaders = make_loaders("mnist", 1000, eval_batch_size=1000)
        doc["nncodec"] = _nncodec_version(args.nnc_python)
        for name in args.only or FILES:
            old = next((f for f in doc["files"] if f["file"] == name), None)
            if args.missing and old is not None:
                have = {(r["mode"], r["qp"], r["nonweight_qp"]) for r in old["nncodec"]}
                todo = [s for s in SETTINGS if tuple(s) not in have]
                keep = [r for r in old["nncodec"] if (r["mode"], r["qp"], r["nonweight_qp"]) in set(map(tuple, SETTINGS))]
                e = measure(name, args.nnc_python, loaders, todo, keep) if todo else refresh_wz(old, loaders)
            else:
                e = measure(name, args.nnc_python, loaders)
            print(f"{name}: .wz {e['wz_bytes']} B ({100 * e['wz_accuracy']:.2f}%), NNCodec best "
                  f"{e['best'] and e['best']['bytes']} B, .wz/NNCodec-1 = {e['wz_vs_best']}", flush=True)
            doc["files"] = [f for f in doc["files"] if f["file"] != name] + [e]
            doc["files"].sort(key=lambda f: FILES.index(f["file"]) if f["file"] in FILES else len(FILES))
            atomic_write_json(JSON, doc)
    write_table(doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
