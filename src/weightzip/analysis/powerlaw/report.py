"""Plain-text report of a power-law analysis (``weightzip analyze --powerlaw``)."""
from __future__ import annotations

from typing import Any, Mapping




def _fmt(v: Any, spec: str = ".2f") -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return format(v, spec)
    return str(v)


def _cmp(stats: Mapping[str, Any], key: str, full: bool = False) -> str:
    fit = stats.get("fit") or {}
    if full:
        fit = fit.get("full") or {}
    c = (fit.get("compare") or {}).get(key)
    if not c or c["R"] is None:
        return "-"
    return f"{c['R']:+.1f} ({c['p']:.2g})" if c["p"] is not None else f"{c['R']:+.1f}"


def _row(label: str, stats: Mapping[str, Any]) -> list[str]:
    fit = stats.get("fit") or {}
    return [label, str(stats["n_units"]), _fmt(stats["mean"], ".1f"), _fmt(stats["max"]),
            _fmt(fit.get("alpha")), _fmt(fit.get("xmin"), "g"), _fmt(fit.get("n_tail")),
            _fmt(fit.get("tail_decades")), _cmp(stats, "exponential"), _cmp(stats, "lognormal"),
            _cmp(stats, "truncated_power_law"), _cmp(stats, "exponential", full=True), stats["verdict"]]


def format_report(result: Mapping[str, Any]) -> str:
    """Plain-text report of :func:`analyze_file` / :func:`analyze_model` (for ``weightzip analyze``)."""
    head = ["distribution", "units", "mean", "max", "alpha", "xmin", "tail", "decades", "R,p vs exp",
            "R,p vs lognorm", "R,p vs TPL", "all units: vs exp", "verdict"]
    rows = []
    for layer in result["layers"]:
        for key in ("in", "out"):
            rows.append(_row(f"{layer['name']} {key}", layer[key]))
    rows.append(_row("whole network", result["network"]))
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    out = [f"power-law analysis of {result['source']} ({result['kind']}; conv degrees: {result['conv_mode']})",
           f"weights: {result['nnz']:,} nonzero of {result['numel']:,} ({100 * result['density']:.2f}% dense)"]
    for layer in result["layers"]:
        out.append(f"  {layer['name']}: {layer['kind']} {tuple(layer['shape'])}, {layer['nnz']:,} nonzero "
                   f"({100 * layer['density']:.1f}%)")
    if result.get("cuts"):
        out.append(f"  chain cut before: {', '.join(result['cuts'])} (unit counts differ)")
    out += ["", line(head), line(["-" * w for w in widths])] + [line(r) for r in rows]
    net = result["network"]
    fit = net.get("fit") or {}
    tpl = fit.get("truncated")
    out.append("")
    if fit:
        extra = (f"; truncated power law alpha={tpl['alpha']:.2f}, lambda={tpl['lambda']:.3g}"
                 if tpl and tpl.get("alpha") is not None and tpl.get("lambda") is not None else "")
        out.append(f"whole network: {net['n_units']} units ({net['n_isolated']} isolated), power law alpha="
                   f"{fit['alpha']:.2f} for d >= {fit['xmin']:g} ({fit['n_tail']} units){extra}")
    verdict_line = ("is power-law" if net["power_law_like"] else "is NOT power-law")
    out.append(f"verdict: the connectivity {verdict_line} ({net['verdict']}).")
    out.append(f"R > 0 favours the power law over the rival on the tail d >= xmin (\"all units\": over every "
               f"unit); p < {result['p_threshold']:g} makes the sign significant; a tail spanning fewer than "
               f"{result.get('min_decades', 1.0):g} decade(s) is a \"narrow tail\", not a power law.")
    if len(result["layers"]) > 1:
        out.append("the whole-network distribution mixes layers of different sizes, which alone makes it "
                   "heavy-tailed; the per-layer rows are the ones to judge")
    if result.get("plots"):
        out.append("plots: " + ", ".join(result["plots"]))
    return "\n".join(out)
