"""``weightzip report``: a Markdown page + PNG plots over every ``.wz`` file under a folder."""
from __future__ import annotations

from pathlib import Path
from typing import Any


def _accuracy(metrics: dict[str, Any]) -> float | None:
    for key in ("from_file_test", "compressed_test", "test"):
        m = metrics.get(key)
        if isinstance(m, dict) and m.get("accuracy") is not None:
            return float(m["accuracy"])
    return None


def collect(root: str | Path) -> list[dict[str, Any]]:
    """One entry per ``.wz`` under ``root``: sizes from the file, metrics from its manifest."""
    from ..analysis.size import size_report
    from ..codec.container import read_manifest
    from ..errors import WeightzipFormatError

    rows = []
    for path in sorted(Path(root).rglob("*.wz")):
        try:
            man = read_manifest(path)
            rep = size_report(path)
        except WeightzipFormatError as e:  # a broken file is reported, not fatal for the others
            rows.append({"path": str(path), "error": str(e)})
            continue
        model = (man.get("model") or {}).get("name", "?")
        recipe = (man.get("recipe") or {}).get("name", "-")
        rows.append({
            "path": str(path), "model": model, "recipe": recipe, "file_bytes": rep.file_bytes,
            "baseline_bytes": rep.baseline_bytes, "file_ratio": rep.file_ratio,
            "payload_ratio": rep.payload_ratio, "accuracy": _accuracy(man.get("metrics") or {}),
            "baseline_accuracy": ((man.get("metrics") or {}).get("baseline_test") or {}).get("accuracy"),
            "group": model, "label": recipe,
        })
    return rows


def write_report(root: str | Path, out: str | Path) -> Path:
    """Write ``out/report.md`` and ``out/accuracy_vs_ratio.png``; returns the Markdown path."""
    from .plots import accuracy_vs_ratio

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = collect(root)
    lines = [f"# weightzip report: {root}", "",
             "Sizes are read from the files on disk; accuracies are those recorded in each file's "
             "manifest when it was written (re-measure with `weightzip eval FILE --data DATASET`).", "",
             "| file | model | recipe | bytes | file ratio | payload ratio | test acc | baseline acc |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['path']} | unreadable: {r['error'][:120]} | | | | | | |")
            continue
        acc = "-" if r["accuracy"] is None else f"{r['accuracy']:.4f}"
        base = "-" if r["baseline_accuracy"] is None else f"{r['baseline_accuracy']:.4f}"
        lines.append(f"| {r['path']} | {r['model']} | {r['recipe']} | {r['file_bytes']:,} | "
                     f"{r['file_ratio']:.1f}x | {r['payload_ratio']:.1f}x | {acc} | {base} |")
    plotted = [r for r in rows if r.get("accuracy") is not None]
    if plotted:
        accuracy_vs_ratio(plotted, out / "accuracy_vs_ratio.png", title="accuracy vs file ratio")
        lines += ["", "![accuracy vs file ratio](accuracy_vs_ratio.png)"]
    if not rows:
        lines.append(f"\n(no .wz files under {root})")
    md = out / "report.md"
    md.write_text("\n".join(lines) + "\n")
    return md
