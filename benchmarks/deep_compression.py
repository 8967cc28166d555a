"""Reproduce Deep Compression's MNIST table (Han et al. 2016) with weightzip, measured from files.

    python benchmarks/deep_compression.py                   # LeNet-300-100 and LeNet-5
    python benchmarks/deep_compression.py --only lenet300_100

For each network: get the cached baseline (``weightzip.jobs.runs.ensure_baseline``, trained once with
the recipe's ``baseline`` settings), compress it with the recipe (``weightzip.compress``), write
``benchmarks/results/<model>-deep-compression.wz`` (``weightzip.save``), load that file again
(``weightzip.load``) and measure test accuracy FROM THE FILE. Sizes and ratios come from
``weightzip.analysis.size`` only (file ratio = baseline bytes / file size on disk; payload ratio;
Deep Compression's own accounting of the weight matrices). Results: ``deep_compression.json``
(entries of models not run this time are kept) and ``deep_compression.md`` (generated from the
JSON), plus one summary PNG per model. Nothing here is typed in except the published numbers of
the paper, which are labelled as such.

Targets (issue 3): file ratio >= 40x (LeNet-300-100) and >= 39x (LeNet-5) with a test error at
most 0.1 point above our own baseline; aim: 60x. Run with 1 thread on this 2-core machine:
LeNet-300-100 takes about 2 minutes, LeNet-5 about 10-15 (baselines excluded).
"""
from __future__ import annotations

import argparse
import copy
import logging
import sys
import time
from pathlib import Path

import torch

import _common as C
import weightzip as wz
from weightzip.core import parametrize
from weightzip.jobs import runs
from weightzip.analysis.size import dense_zstd_bytes, size_report
from weightzip.methods.base import StageContext
from weightzip.methods.prune import plot_sensitivity
from weightzip.core.recipe import Recipe
from weightzip.core.registry import get_method
from weightzip.training.checkpoint import machine_info
from weightzip.training.evaluate import evaluate
ROOT = C.ROOT
RESULTS = C.RESULTS

# Published: Deep Compression (Han et al. 2016), Table 1 (MNIST rows). Error in %, sizes in KB.
PAPER = {
    "lenet300_100": {"baseline_error": 1.64, "error": 1.58, "size_before_kb": 1070, "size_after_kb": 27, "ratio": 40},
    "lenet5": {"baseline_error": 0.80, "error": 0.74, "size_before_kb": 1720, "size_after_kb": 44, "ratio": 39},
}
CASES = {
    # case: (model, recipe, output file, target file ratio, overrides of the first stage or None)
    "lenet300_100": ("lenet300_100", "recipes/deep-compression.yaml", "lenet300_100-deep-compression.wz",
                     40.0, None),
    "lenet5": ("lenet5", "recipes/deep-compression-lenet5.yaml", "lenet5-deep-compression.wz", 39.0, None),
    # the same recipe pruned harder, towards the 60x aim: shows what the error bound costs
    "lenet300_100-aggressive": ("lenet300_100", "recipes/deep-compression.yaml",
                                "lenet300_100-deep-compression-aggressive.wz", 40.0,
                                {"sparsity": {"layers.0": 0.96, "layers.2": 0.85, "layers.4": 0.5}}),
}
MAX_ERROR_INCREASE = 0.1  # points of test error above our own baseline
AIM_RATIO = 60.0

log = logging.getLogger("deep_compression")


def _err(metrics: dict) -> float:
    return 100.0 * (1.0 - metrics["accuracy"])


def _drop_bulk(metrics):
    """Stage metrics without per-epoch histories (kept short in the JSON)."""
    return C.without_keys(metrics, ("train_history",))


def sensitivity_analysis(model, loaders, args, png: Path) -> dict:
    """Han et al.'s per-layer pruning sensitivity of the BASELINE (on a copy; nothing is kept).

    Each layer alone is pruned with ``tau = s * std(W)`` for ``s`` in a grid and the validation
    accuracy measured (``prune_magnitude`` with ``sensitivity:``); the curves guide the per-layer
    sparsity of the recipes (the most sensitive layers are pruned least).
    """
    stage = {"method": "prune_magnitude",
             "sensitivity": {"grid": [0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0],
                             "max_drop": 0.5, "metric": "val", "max_eval_batches": None}}
    cfg = Recipe.from_dict({"stages": [stage]}).stages[0]
    ctx = StageContext(loaders=loaders, device=args.device, seed=args.seed, log=lambda m: log.info("%s", m))
    metrics = get_method(cfg.method)(cfg).apply(copy.deepcopy(model), ctx)
    plot_sensitivity(metrics["sensitivity"], png)
    return metrics["sensitivity"]


def run_case(case: str, args: argparse.Namespace) -> dict:
    model_name, recipe_path, out_name, target_ratio, overrides = CASES[case]
    recipe = Recipe.from_yaml(ROOT / recipe_path)
    if overrides:
        d = recipe.to_dict()
        d["stages"][0].update(overrides)
        d["name"] = f"{recipe.name} ({case})"
        recipe = Recipe.from_dict(d)
    data = recipe.data or "mnist"
    t0 = time.perf_counter()

    # 1. baseline (cached under runs/baselines, shared with benchmarks/baselines.py)
    base_path = runs.ensure_baseline(model_name, data, device=args.device, train=recipe.baseline or None,
                                     model_args=recipe.model_args or None, root=args.runs)
    model, info = runs.load_model(base_path, args.device)
    t_base = time.perf_counter() - t0
    rec = runs.recipe_for(model_name, data)
    opts = C.data_options(info, rec, ("val_size", "split_seed", "eval_batch_size"))
    opts.update({k: v for k, v in recipe.data_args.items() if k != "batch_size"})
    batch = int(recipe.data_args.get("batch_size", rec["train"].get("batch_size", 128)))
    loaders = runs.make_loaders(data, batch, **opts)
    base_test = evaluate(model, loaders.test, device=args.device)
    before = {k: v.clone() for k, v in parametrize.effective_state(model).items()}
    zstd_bytes = dense_zstd_bytes(model)
    log.info("%s baseline: test error %.2f%%", model_name, _err(base_test))

    sens_png = RESULTS / f"deep_compression-{model_name}-sensitivity.png"
    sensitivity = sensitivity_analysis(model, loaders, args, sens_png) if not overrides else None

    # 2. compress with the recipe
    t1 = time.perf_counter()
    workdir = ROOT / "runs" / "deep_compression" / case  # stage checkpoints (not committed)
    result = wz.compress(model, recipe, loaders=loaders, device=args.device, workdir=workdir, seed=args.seed,
                         log=lambda m: log.info("%s", m))
    t_compress = time.perf_counter() - t1
    comp_test = evaluate(model, loaders.test, device=args.device)

    # 3. write the file, read it back, evaluate FROM THE FILE
    out = RESULTS / out_name
    model.cpu()
    saved_report, reloaded = C.save_and_reload(
        model, out, recipe=recipe, metrics={"baseline_test": base_test, "compressed_test": comp_test, "data": data})
    size = size_report(out)
    file_test = evaluate(reloaded, loaders.test, device="cpu")
    after = parametrize.effective_state(model)
    dec = reloaded.state_dict()
    exact = all(torch.equal(after[k], dec[k].cpu()) for k in after if k in dec)

    plot = RESULTS / f"deep_compression-{case}.png"
    try:
        from weightzip.report.plots import compression_summary

        compression_summary(before, after, size.rows, plot,
                            title=f"{model_name} / {recipe.name}: {size.file_ratio:.1f}x (file), "
                                  f"test error {_err(file_test):.2f}% (from the file)")
    except ImportError:  # plots are optional for the numbers
        plot = None

    base_err, file_err = _err(base_test), _err(file_test)
    entry = {
        "case": case,
        "model": model_name,
        "stage0_overrides": overrides,
        "data": data,
        "recipe": recipe_path,
        "recipe_settings": recipe.to_dict(),
        "file": str(out.relative_to(ROOT)),
        "paper": PAPER[model_name],
        "baseline_test_error": base_err,
        "compressed_test_error_in_memory": _err(comp_test),
        "test_error_from_file": file_err,
        "error_increase": file_err - base_err,
        "decoded_weights_equal_model": exact,
        "baseline_bytes": size.baseline_bytes,
        "file_bytes": size.file_bytes,
        "payload_bytes": size.payload_bytes,
        "manifest_and_container_bytes": size.manifest_bytes,
        "file_ratio": size.file_ratio,
        "payload_ratio": size.payload_ratio,
        "paper_ratio_deep_compression": size.paper.get("deep_compression"),
        "dense_fp32_zstd_bytes": zstd_bytes,
        "dense_zstd_ratio": size.baseline_bytes / zstd_bytes,
        "layers": size.rows,
        "baseline_val_error": _err(result.baseline["val"]),
        "compressed_val_error": _err(result.stages[-1].metrics["val"]),
        "sensitivity_of_baseline": sensitivity,
        "sensitivity_plot": str(sens_png.relative_to(ROOT)) if sensitivity else None,
        "stages": [_drop_bulk(s.__dict__) for s in result.stages],
        "targets": {
            "file_ratio_min": target_ratio,
            "max_error_increase": MAX_ERROR_INCREASE,
            "aim_ratio": AIM_RATIO,
            "ratio_met": size.file_ratio >= target_ratio,
            "error_met": file_err <= base_err + MAX_ERROR_INCREASE + 1e-9,
            "aim_met": size.file_ratio >= AIM_RATIO,
        },
        "baseline_checkpoint": str(base_path.resolve().relative_to(ROOT)) if base_path.resolve().is_relative_to(ROOT)
        else str(base_path),
        "baseline_train_config": info.get("train_config"),
        "seconds": {"baseline_ensure": t_base, "compress": t_compress, "total": time.perf_counter() - t0},
        "plot": str(plot.relative_to(ROOT)) if plot else None,
        "machine": machine_info(args.device),
        "torch_threads": torch.get_num_threads(),
        "date": C.now(),
    }
    entry["targets"]["met"] = entry["targets"]["ratio_met"] and entry["targets"]["error_met"]
    log.info("%s: %.1fx (file), error %.2f%% -> %.2f%% (from the file)", case, size.file_ratio,
             base_err, file_err)
    return entry


def write_markdown(results: dict, path: Path) -> None:
    """``deep_compression.md`` from the JSON only."""
    L = ["# Deep Compression on MNIST: weightzip vs the paper", "",
         "Generated by `benchmarks/deep_compression.py` from `deep_compression.json`. Our ratios are "
         "measured on the `.wz` file on disk (baseline bytes = 4 x every float of the state_dict, "
         "biases included); test errors are measured on the model loaded FROM THE FILE. The paper's "
         "numbers are Han et al. 2016, Table 1.", "",
         "| model | | baseline error | compressed error | size | ratio |",
         "|---|---|---|---|---|---|"]
    order = sorted(results, key=lambda n: (results[n].get("model", n), n))
    shown = set()
    for name in order:
        e = results[name]
        model, p = e.get("model", name), e["paper"]
        if model not in shown:
            shown.add(model)
            L.append(f"| {model} | Deep Compression (paper) | {p['baseline_error']:.2f}% | {p['error']:.2f}% | "
                     f"{p['size_before_kb']} KB -> {p['size_after_kb']} KB | {p['ratio']}x |")
        what = "weightzip (file)" if not e.get("stage0_overrides") else "weightzip, pruned harder (file)"
        L.append(f"| {model} | {what} | {e['baseline_test_error']:.2f}% | {e['test_error_from_file']:.2f}% | "
                 f"{e['baseline_bytes'] / 1000:.0f} KB -> {e['file_bytes'] / 1000:.1f} KB | "
                 f"**{e['file_ratio']:.1f}x** |")
    L += ["", "Targets (issue 3): file ratio >= 40x (LeNet-300-100) / 39x (LeNet-5) with a test error at "
          "most 0.1 point above our own baseline; aim 60x. The `-aggressive` case is the same recipe with "
          f"higher first-stage sparsity (overrides in the JSON), run to show what the aim costs in error.",
          "", "| case | file ratio | payload ratio | paper accounting (weights only) | dense fp32 + zstd | "
          "error increase | target | met |", "|---|---|---|---|---|---|---|---|"]
    for name in order:
        e, t = results[name], results[name]["targets"]
        L.append(f"| {name} | {e['file_ratio']:.1f}x | {e['payload_ratio']:.1f}x | "
                 f"{e['paper_ratio_deep_compression']:.1f}x | {e['dense_zstd_ratio']:.2f}x | "
                 f"{e['error_increase']:+.2f} pt | >= {t['file_ratio_min']:g}x, <= +{t['max_error_increase']} pt | "
                 f"{'yes' if t['met'] else 'NO'}{' (and >= 60x)' if t['aim_met'] and t['met'] else ''} |")
    for name in order:
        e = results[name]
        L += ["", f"## {name}", "",
              f"Recipe `{e['recipe']}`; file `{e['file']}` ({e['file_bytes']} bytes: {e['payload_bytes']} "
              f"payload + {e['manifest_and_container_bytes']} manifest and container); decoded weights equal "
              f"the compressed model's: {e['decoded_weights_equal_model']}. Baseline checkpoint "
              f"`{e['baseline_checkpoint']}`." + (f" First-stage overrides: `{e['stage0_overrides']}`."
                                                  if e.get("stage0_overrides") else ""), "",
              "| tensor | format | shape | nnz | density | value bits | index bits | coding | bytes | bits/weight |",
              "|---|---|---|---|---|---|---|---|---|---|"]
        show = lambda v: "-" if v in (None, "none", False) else str(v)  # noqa: E731
        for r in e["layers"]:
            layout = show(r.get("sparse"))
            L.append(f"| {r['name']} | {r['format']}{'' if layout == '-' else f' ({layout})'} | {r['shape']} | "
                     f"{r['nnz']} | {100 * r['density']:.1f}% | {show(r.get('value_bits'))} | "
                     f"{show(r.get('index_bits'))} | {show(r.get('coding'))} | {r['bytes']} | "
                     f"{r['bits_per_weight']:.3f} |")
        L += ["", "| stage | method | seconds | val accuracy after |", "|---|---|---|---|"]
        for s in e["stages"]:
            acc = (s["metrics"].get("val") or {}).get("accuracy")
            L.append(f"| {s['index']} | {s['method']}{' (' + s['label'] + ')' if s.get('label') else ''} | "
                     f"{s['seconds']:.1f} | {'' if acc is None else f'{100 * acc:.2f}%'} |")
        sec = e["seconds"]
        L += ["", f"Time: compress {sec['compress']:.0f} s, total {sec['total']:.0f} s "
                  f"(baseline ensure {sec['baseline_ensure']:.0f} s), {e['torch_threads']} torch thread(s), "
                  f"{e['machine'].get('processor')}, {e['date']}."]
        L += ["", f"Validation error (held-out training images): baseline {e['baseline_val_error']:.2f}%, "
                  f"compressed {e['compressed_val_error']:.2f}% (in memory, end of the last stage)."]
        if e.get("plot"):
            L += ["", f"![{name}]({Path(e['plot']).name})"]
        if e.get("sensitivity_plot"):
            chosen = {k: v["chosen_s"] for k, v in e["sensitivity_of_baseline"]["layers"].items()}
            L += ["", "Pruning sensitivity of the baseline (each layer alone, tau = s * std(W), "
                      f"validation accuracy; largest s within a 0.5-point drop: {chosen}):", "",
                  f"![{name} sensitivity]({Path(e['sensitivity_plot']).name})"]
    C.write_text(path, C.repo_relative("\n".join(L) + "\n"))


def main(argv=None) -> int:
    """Run the selected cases, merge them into the JSON, regenerate the Markdown."""
    ap = C.parser(__doc__)
    ap.add_argument("--only", choices=sorted(CASES), action="append", help="run only this case (repeatable)")
    C.add_arg(ap, "device")
    C.add_arg(ap, "threads", help="torch threads (1 on the shared 2-core machine)")
    C.add_arg(ap, "runs", type=str, default=str(ROOT / runs.BASELINES_DIR), help="cached baselines folder")
    C.add_arg(ap, "seed")
    ap.add_argument("--markdown-only", action="store_true", help="only regenerate the .md from the JSON")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stdout)
    C.setup(args)
    RESULTS.mkdir(parents=True, exist_ok=True)
    json_path = RESULTS / "deep_compression.json"
    results = C.read_json(json_path)
    for name in [] if args.markdown_only else (args.only or list(CASES)):
        results[name] = run_case(name, args)
        C.write_json(json_path, C.repo_relative(results))
        write_markdown(results, RESULTS / "deep_compression.md")
    if args.markdown_only:   # re-written as the loop writes it (paths relative to the repository)
        C.write_json(json_path, C.repo_relative(results))
    write_markdown(results, RESULTS / "deep_compression.md")
    ok = all(e["targets"]["met"] for name, e in results.items() if not CASES.get(name, (0,) * 5)[4])
    print(f"wrote {json_path} and deep_compression.md; targets met: {ok}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
