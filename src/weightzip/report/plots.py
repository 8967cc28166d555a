"""Plots for compressed models: weight histograms, per-layer sparsity and bits, accuracy vs ratio.

All functions write a PNG and return its path; matplotlib runs headless (Agg).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402


def compression_summary(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor],
                        rows: Sequence[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """One figure: weight histograms before/after for the largest tensor, per-layer density and bits.

    ``before`` / ``after``: state dicts (dense); ``rows``: per-tensor rows of
    :func:`weightzip.analysis.size.size_rows` (``name``, ``density``, ``bits_per_weight``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    weights = [r for r in rows if r["name"].endswith("weight") and r["numel"] > 1]
    big = max(weights, key=lambda r: r["numel"])["name"] if weights else next(iter(after))
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    b = before[big].flatten().numpy() if big in before else None
    a = after[big].flatten().numpy()
    if b is not None:
        axes[0].hist(b, bins=200, alpha=0.6, label="before", color="tab:gray")
    nz = a[a != 0]
    axes[0].hist(nz, bins=200, alpha=0.8, label=f"after (non-zero: {nz.size}/{a.size})", color="tab:blue")
    axes[0].set_title(f"{big}: weight histogram")
    axes[0].set_yscale("log")
    axes[0].legend()
    names = [r["name"].replace(".weight", "") for r in weights]
    x = np.arange(len(names))
    axes[1].bar(x, [r["density"] for r in weights], color="tab:green")
    axes[1].set_xticks(x, names, rotation=45, ha="right")
    axes[1].set_ylim(0, 1)
    axes[1].set_title("density (non-zero fraction) per layer")
    axes[2].bar(x, [r["bits_per_weight"] for r in weights], color="tab:orange")
    axes[2].set_xticks(x, names, rotation=45, ha="right")
    axes[2].set_title("stored bits per weight (all streams / elements)")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def accuracy_vs_ratio(points: Sequence[dict[str, Any]], path: str | Path, *, x: str = "file_ratio",
                      y: str = "accuracy", label: str = "label", refs: Sequence[dict[str, Any]] = (),
                      title: str = "") -> Path:
    """Scatter/line of ``y`` against ``x`` (log scale) for ``points``; ``refs`` are published marks."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 5))
    groups: dict[str, list] = {}
    for p in points:
        groups.setdefault(str(p.get("group", "ours")), []).append(p)
    for g, ps in groups.items():
        ps = sorted(ps, key=lambda p: p[x])
        ax.plot([p[x] for p in ps], [p[y] for p in ps], "o-", label=g)
        for p in ps:
            if p.get(label):
                ax.annotate(str(p[label]), (p[x], p[y]), fontsize=7, alpha=0.7)
    for r in refs:
        ax.scatter([r[x]], [r[y]], marker="*", s=150, color="red", zorder=5)
        ax.annotate(str(r.get(label, "published")), (r[x], r[y]), fontsize=8, color="red")
    ax.set_xscale("log")
    ax.set_xlabel(x.replace("_", " "))
    ax.set_ylabel(y.replace("_", " "))
    ax.grid(True, alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
