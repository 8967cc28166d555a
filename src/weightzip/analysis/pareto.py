"""Non-dominated (Pareto-optimal) designs and their plots.

A point ``p`` dominates ``q`` when it is at least as good in every objective and strictly
better in one (``minimize``: smaller is better; ``maximize``: larger). The Pareto front is the
set of points no other point dominates. Points are dicts (objectives are keys) or sequences
(objectives are indices); a point with a missing / None / NaN objective is never on the front.

    front = non_dominated(trials, ["error", "total_memory_bits"], ["minimize", "minimize"])

Plots use matplotlib's object API with the Agg canvas (no global backend switch, no display).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

__all__ = ["dominates", "non_dominated_indices", "non_dominated", "plot_front", "plot_memory_breakdown"]

Direction = str  # "minimize" | "maximize"


def _sign(directions: Sequence[Direction] | None, n: int) -> np.ndarray:
    directions = list(directions) if directions is not None else ["minimize"] * n
    if len(directions) != n:
        raise ValueError(f"{n} objectives but {len(directions)} directions")
    bad = [d for d in directions if d not in ("minimize", "maximize")]
    if bad:
        raise ValueError(f"directions must be 'minimize' or 'maximize', got {bad}")
    return np.array([1.0 if d == "minimize" else -1.0 for d in directions])


def _value(p: Any, key: Any) -> float:
    try:
        v = p[key]
    except (KeyError, IndexError, TypeError):
        return math.nan
    return math.nan if v is None else float(v)


def dominates(a: Sequence[float], b: Sequence[float], directions: Sequence[Direction] | None = None) -> bool:
    """True when objective vector ``a`` dominates ``b`` (module docstring)."""
    s = _sign(directions, len(a))
    x, y = np.asarray(a, float) * s, np.asarray(b, float) * s
    return bool(np.all(x <= y) and np.any(x < y))


def non_dominated_indices(points: Sequence[Any], objectives: Sequence[Any],
                          directions: Sequence[Direction] | None = None) -> list[int]:
    """Indices (ascending) of the non-dominated points.

    Two objectives: sort by (f1, f2) and sweep keeping points whose f2 beats the best so far,
    O(n log n); more objectives: pairwise comparison, O(n^2 m). Equal points are all kept.
    """
    s = _sign(directions, len(objectives))
    F = np.array([[_value(p, k) for k in objectives] for p in points], dtype=float).reshape(len(points), len(objectives))
    F = F * s                                                       # minimize everything
    valid = np.where(np.all(np.isfinite(F), axis=1))[0]
    if len(valid) == 0:
        return []
    if F.shape[1] == 2:
        order = valid[np.lexsort((F[valid, 1], F[valid, 0]))]       # by f1, then f2
        keep, best2 = [], math.inf
        i = 0
        while i < len(order):                                       # groups of equal f1
            j = i
            while j < len(order) and F[order[j], 0] == F[order[i], 0]:
                j += 1
            group = order[i:j]
            g2 = F[group, 1].min()                                  # only the group's best f2 can survive
            if g2 < best2:
                keep += [k for k in group if F[k, 1] == g2]
                best2 = g2
            i = j
        return sorted(int(k) for k in keep)
    G = F[valid]
    le = np.all(G[:, None, :] <= G[None, :, :], axis=2)             # le[a, b]: a <= b everywhere
    lt = np.any(G[:, None, :] < G[None, :, :], axis=2)
    dominated = np.any(le & lt, axis=0)                             # some a dominates b
    return sorted(int(k) for k in valid[~dominated])


def non_dominated(points: Sequence[Any], objectives: Sequence[Any],
                  directions: Sequence[Direction] | None = None) -> list[Any]:
    """The non-dominated points themselves, in input order (see :func:`non_dominated_indices`)."""
    return [points[i] for i in non_dominated_indices(points, objectives, directions)]


# ---------------------------------------------------------------------------------------------
# Plots


def _save(fig, path: str | Path) -> Path:
    """Render with the Agg canvas to a temp file, then rename (atomic: concurrent workers)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from ..fileio import atomic_write

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fmt = path.suffix.lstrip(".") or "png"
    return atomic_write(path, lambda f: fig.savefig(f, format=fmt, dpi=120, bbox_inches="tight"),
                        suffix=path.suffix)


def plot_front(points: Sequence[dict], x: str, y: str, path: str | Path, *,
               front: Sequence[dict] | None = None, label: Callable[[dict], str] | str | None = None,
               group: str | None = None, logx: bool = True, xscale: float = 1.0,
               xlabel: str | None = None, ylabel: str | None = None, title: str | None = None) -> Path:
    """Scatter of every design (coloured by ``group``) with the Pareto ``front`` as a step line.

    ``x``/``y`` are keys of the point dicts; ``xscale`` divides x (e.g. 8 * 1024 for KiB);
    ``label`` (a key or a function) annotates the front points.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 5))
    ax = fig.add_subplot(1, 1, 1)
    pts = [p for p in points if math.isfinite(_value(p, x)) and math.isfinite(_value(p, y))]
    groups = sorted({str(p.get(group)) for p in pts}) if group else [None]
    for gname in groups:
        sel = [p for p in pts if group is None or str(p.get(group)) == gname]
        ax.scatter([_value(p, x) / xscale for p in sel], [_value(p, y) for p in sel], s=22, alpha=0.6,
                   label=gname)
    if front:
        fr = sorted(front, key=lambda p: (_value(p, x), _value(p, y)))
        ax.step([_value(p, x) / xscale for p in fr], [_value(p, y) for p in fr], where="post",
                color="black", lw=1.2, label="Pareto front")
        ax.scatter([_value(p, x) / xscale for p in fr], [_value(p, y) for p in fr], s=60,
                   facecolors="none", edgecolors="black")
        if label is not None:
            fn = (lambda p: str(p.get(label))) if isinstance(label, str) else label
            for p in fr:
                ax.annotate(fn(p), (_value(p, x) / xscale, _value(p, y)), fontsize=6,
                            xytext=(3, 3), textcoords="offset points")
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel or x)
    ax.set_ylabel(ylabel or y)
    if title:
        ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    if group or front:
        ax.legend(fontsize=7)
    return _save(fig, path)


def plot_memory_breakdown(designs: Sequence[dict], path: str | Path, *,
                          parts: Sequence[tuple[str, str]] = (
                              ("kept_weight_bits", "weights (kept x bits)"),
                              ("block_mask_bits", "block mask"),
                              ("float_param_bits", "fp32 bias / BN"),
                              ("activation_memory_bits", "activations")),
                          label: Callable[[dict], str] | str = "design", scale: float = 8 * 1024,
                          unit: str = "KiB", title: str | None = None) -> Path:
    """Stacked bars of the memory-model parts of every design: absolute (bits / ``scale``) and
    as shares of the design's total (so small designs stay readable)."""
    from matplotlib.figure import Figure

    fn = (lambda p: str(p.get(label))) if isinstance(label, str) else label
    fig = Figure(figsize=(11, 0.45 * max(len(designs), 2) + 1.5))
    ax, axr = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    ys = np.arange(len(designs))
    vals = np.array([[_value(d, key) for key, _ in parts] for d in designs], float).reshape(len(designs), len(parts))
    vals = np.nan_to_num(vals)
    totals = vals.sum(1, keepdims=True)
    shares = np.divide(vals, totals, out=np.zeros_like(vals), where=totals > 0)
    left, left_r = np.zeros(len(designs)), np.zeros(len(designs))
    for j, (_, name) in enumerate(parts):
        ax.barh(ys, vals[:, j] / scale, left=left, label=name)
        axr.barh(ys, 100 * shares[:, j], left=left_r, label=name)
        left += vals[:, j] / scale
        left_r += 100 * shares[:, j]
    ax.set_yticks(ys, [fn(d) for d in designs], fontsize=7)
    axr.set_yticks(ys, [""] * len(designs))
    ax.set_xlabel(f"memory ({unit}, memory model)")
    axr.set_xlabel("share of the design's memory (%)")
    axr.set_xlim(0, 100)
    if title:
        fig.suptitle(title)
    handles, names = ax.get_legend_handles_labels()
    fig.legend(handles, names, fontsize=7, loc="lower center", ncol=len(parts), frameon=False)
    fig.subplots_adjust(bottom=0.12 + 0.25 / max(len(designs), 2))
    for a in (ax, axr):
        a.grid(True, axis="x", alpha=0.3)
    return _save(fig, path)
