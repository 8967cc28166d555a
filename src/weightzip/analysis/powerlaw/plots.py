"""Log-log CCDF plots of degree distributions and their fits (PNG, matplotlib Agg)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .fit import _quiet


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _empirical_ccdf(deg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(x, P(D >= x))`` over the distinct positive degrees ``x``."""
    d = np.sort(np.asarray(deg)[np.asarray(deg) > 0])
    if d.size == 0:
        return np.zeros(0), np.zeros(0)
    x, first = np.unique(d, return_index=True)
    return x, 1.0 - first / d.size


def _draw_fits(ax, deg: np.ndarray, fit_obj, *, which=("power_law", "truncated_power_law", "exponential",
                                                      "lognormal")) -> None:
    """Fitted CCDFs over ``[xmin, max]``, scaled by the tail fraction to sit on the empirical CCDF."""
    if fit_obj is None:
        return
    d = np.asarray(deg)[np.asarray(deg) > 0]
    xmin = float(fit_obj.xmin)
    tail_frac = float((d >= xmin).sum()) / d.size
    xs = np.unique(np.round(np.geomspace(xmin, d.max(), 60)))
    styles = {"power_law": ("C3", "--", "power law"), "truncated_power_law": ("C2", "-.", "truncated PL"),
              "exponential": ("C1", ":", "exponential"), "lognormal": ("C4", (0, (5, 1, 1, 1)), "log-normal")}
    with _quiet():
        for key in which:
            if key == "truncated_power_law" and "truncated_power_law" not in fit_obj.__dict__:
                continue  # not fitted (fits are computed lazily and the truncated one is slow)
            dist = getattr(fit_obj, key)
            try:
                ccdf = dist.ccdf(data=xs)  # discrete power law: 1 - P(X < x) = P(X >= x)
            except Exception:  # noqa: BLE001 - a failed rival fit must not stop the plot
                continue
            ccdf = np.asarray(ccdf, dtype=float) * tail_frac
            ok = np.isfinite(ccdf) & (ccdf > 0)
            color, ls, label = styles[key]
            if key == "power_law":
                label += f" (alpha={dist.alpha:.2f}, xmin={xmin:g})"
            ax.plot(xs[ok], ccdf[ok], color=color, ls=ls, lw=1.3, label=label)


def plot_ccdf_fits(degrees: np.ndarray, fit_obj, path: str | Path, *, title: str = "") -> None:
    """Log-log CCDF ``P(D >= d)`` of ``degrees`` with the fitted distributions; writes a PNG."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.6, 4.2))
    x, y = _empirical_ccdf(degrees)
    ax.loglog(x, y, "o", ms=3, color="C0", label="empirical")
    _draw_fits(ax, degrees, fit_obj)
    ax.set_xlabel("degree d")
    ax.set_ylabel("P(D >= d)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_layers(res: dict[str, Any], fits: dict[str, Any], degrees: dict[str, np.ndarray], path: Path,
                 name: str) -> None:
    plt = _plt()
    n = len(res["layers"])
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    for ax, row in zip(axes.flat, res["layers"]):
        for key, color in (("in", "C0"), ("out", "C5")):
            deg = degrees[f"{row['name']}:{key}"]
            x, y = _empirical_ccdf(deg)
            ax.loglog(x, y, "o", ms=2.5, color=color, label=f"{key}-degree ({row[key]['verdict']})")
            f = fits[f"{row['name']}:{key}"]
            if f is not None:
                _draw_fits(ax, deg, f, which=("power_law",))
        ax.set_title(f"{row['name']} ({100 * row['density']:.1f}% dense)", fontsize=8)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=6)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle(f"{name}: degree CCDFs per layer", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_ccdfs(curves: Mapping[str, np.ndarray], path: str | Path, *, title: str = "", ncols: int = 1,
               panels: Mapping[str, Mapping[str, np.ndarray]] | None = None) -> None:
    """Empirical log-log CCDFs of several degree arrays (``{label: degrees}``) on one plot, or
    one panel per entry of ``panels`` (``{panel title: {label: degrees}}``); writes a PNG."""
    plt = _plt()
    groups = dict(panels) if panels is not None else {title: curves}
    n = len(groups)
    cols = min(ncols, n) if panels is not None else 1
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.6 * rows), squeeze=False)
    for ax, (ptitle, cs) in zip(axes.flat, groups.items()):
        for i, (label, deg) in enumerate(cs.items()):
            x, y = _empirical_ccdf(deg)
            ax.loglog(x, y, "o-", ms=2, lw=0.8, color=f"C{i % 10}", label=label)
        ax.set_xlabel("degree d")
        ax.set_ylabel("P(D >= d)")
        ax.set_title(ptitle, fontsize=8)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=6)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    if panels is not None and title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
