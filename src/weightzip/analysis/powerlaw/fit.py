"""Discrete power-law fits of degree distributions (``powerlaw`` package) and the verdict rule
(both described in :mod:`weightzip.analysis.powerlaw`)."""
from __future__ import annotations

import contextlib
import io
import math
import warnings
from typing import Any, Iterable, Mapping

import numpy as np


COMPARED = ("exponential", "lognormal", "truncated_power_law")
POWER_LAW_LIKE = ("power law", "truncated power law")
# powerlaw >= 2.0 bounds alpha to [0, 3] by default, which pins every steeper tail (an
# Erdos-Renyi layer's, say) at 3.0; the exponent is searched in this range instead (the lower
# bound 0 is the package's: a truncated power law may have alpha < 1)
ALPHA_RANGE = (0.0, 50.0)


@contextlib.contextmanager
def _quiet():
    """Silence the powerlaw package (prints, warnings, numpy floating-point complaints)."""
    with warnings.catch_warnings(), np.errstate(all="ignore"), \
            contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def _num(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _summary(degrees: np.ndarray) -> dict[str, Any]:
    d = np.asarray(degrees, dtype=np.int64).reshape(-1)
    pos = d[d > 0]
    return {"n_units": int(d.size), "n_isolated": int((d == 0).sum()),
            "mean": _num(d.mean()) if d.size else None, "median": _num(np.median(d)) if d.size else None,
            "std": _num(d.std()) if d.size else None, "min_positive": int(pos.min()) if pos.size else None,
            "max": int(d.max()) if d.size else None, "distinct": int(np.unique(pos).size)}


def verdict(fit: Mapping[str, Any] | None, p_threshold: float = 0.1, min_decades: float = 1.0) -> str:
    """The verdict of a :func:`fit_degrees` result (rule in the module docstring)."""
    if not fit or "compare" not in fit:
        return (fit or {}).get("reason", "no fit")
    cmp = fit["compare"]

    def sig(key: str, sign: int) -> bool:
        c = cmp.get(key)
        return bool(c) and c["R"] is not None and c["p"] is not None and sign * c["R"] > 0 and c["p"] < p_threshold

    span = fit.get("tail_decades")
    narrow = span is not None and span < min_decades
    if sig("truncated_power_law", -1) and sig("truncated_vs_exponential", +1):
        return "narrow tail" if narrow else "truncated power law"
    if sig("exponential", -1):
        return "exponential"
    if not sig("exponential", +1):
        return "inconclusive"
    if narrow:
        return "narrow tail"
    if sig("lognormal", -1):
        return "lognormal"
    return "power law"


def fit_degrees(degrees: Iterable[int] | np.ndarray, *, truncated: bool = True, min_units: int = 20,
                min_tail: int = 50, p_threshold: float = 0.1, min_decades: float = 1.0,
                xmin: float | None = None, return_fit: bool = False):
    """Fit a discrete power law (and rivals) to the positive ``degrees``; see module docstring.

    ``xmin`` is searched among the distinct degrees ``<= d_(n - t)`` (the ``t``-th largest, with
    ``t = max(10, min(min_tail, n // 4))``), so the tail keeps at least ``t`` units. Returns a
    JSON-able dict ``{summary fields..., "fit": {"xmin", "alpha", "sigma", "n_tail",
    "tail_fraction", "ks_D", "truncated": {"alpha", "lambda"} | None, "compare": {name: {"R", "p"}}}
    | None, "verdict", "power_law_like"}``; with ``return_fit`` also the ``powerlaw.Fit``
    (``None`` when there was no fit) as a second value. ``xmin``: a fixed lower bound instead of
    the search (e.g. 1: fit every unit).
    """
    d = np.asarray(list(degrees) if not isinstance(degrees, np.ndarray) else degrees, dtype=np.int64).reshape(-1)
    out: dict[str, Any] = _summary(d)
    pos = np.sort(d[d > 0])
    fit_obj = None
    result: dict[str, Any] | None
    if pos.size < min_units:
        result = {"reason": "too few units"}
    elif np.unique(pos).size < 3:
        result = {"reason": "too few distinct degrees"}
    else:
        tail = max(10, min(min_tail, pos.size // 4))
        hi = int(pos[pos.size - tail])       # largest xmin that keeps >= tail units in the tail
        values = np.unique(pos)
        cand = values[values <= hi]          # the xmin candidates
        if xmin is not None:
            if not pos[0] <= xmin <= pos[-1]:
                raise ValueError(f"xmin={xmin} is outside the positive degrees [{pos[0]}, {pos[-1]}]")
            xmin_arg: Any = float(xmin)
        elif cand.size >= 2:
            # powerlaw searches the distinct data values in [lo, up) except the largest one, so the
            # range ends just past the next distinct value above hi
            above = values[values > hi]
            up = float(above[0]) + 0.5 if above.size else float(hi) + 0.5
            xmin_arg = (float(cand[0]), up)
        else:
            xmin_arg = float(cand[0])
        try:
            with _quiet():
                fit_obj, result = _fit_all(pos, xmin_arg, truncated)
        except Exception as e:  # noqa: BLE001 - a numerical failure of the package is a result, not a crash
            fit_obj, result = None, {"reason": f"fit failed ({type(e).__name__}: {e})"}
    out["fit"] = result if result and "reason" not in result else None
    out["verdict"] = verdict(result, p_threshold, min_decades)
    out["power_law_like"] = out["verdict"] in POWER_LAW_LIKE
    return (out, fit_obj) if return_fit else out


def _fit_all(pos: np.ndarray, xmin_arg: Any, truncated: bool):
    """The tail powerlaw.Fit and the JSON-able fit dict of :func:`fit_degrees` (called quietly)."""
    import powerlaw

    fit_obj = powerlaw.Fit(pos, discrete=True, xmin=xmin_arg, verbose=0,
                           parameter_ranges={"alpha": list(ALPHA_RANGE)})
    if not np.isfinite(float(fit_obj.xmin)):
        raise ValueError("no xmin could be chosen")
    pl = fit_obj.power_law
    n_tail = int((pos >= fit_obj.xmin).sum())
    result = {"xmin": _num(fit_obj.xmin), "alpha": _num(pl.alpha), "sigma": _num(pl.sigma),
              "n_tail": n_tail, "tail_fraction": n_tail / pos.size, "ks_D": _num(pl.D),
              "tail_decades": _num(np.log10(pos.max() / float(fit_obj.xmin))),
              "truncated": None, "compare": {}}
    names = COMPARED if truncated else COMPARED[:2]
    for other in names:
        R, p = fit_obj.distribution_compare("power_law", other, normalized_ratio=True)
        result["compare"][other] = {"R": _num(R), "p": _num(p)}
    if truncated:
        tpl = fit_obj.truncated_power_law
        result["truncated"] = {"alpha": _num(tpl.alpha), "lambda": _num(tpl.Lambda)}
        R, p = fit_obj.distribution_compare("truncated_power_law", "exponential", normalized_ratio=True)
        result["compare"]["truncated_vs_exponential"] = {"R": _num(R), "p": _num(p)}
    ln = fit_obj.lognormal
    result["lognormal"] = {"mu": _num(ln.mu), "sigma": _num(ln.sigma)}
    result["exponential"] = {"lambda": _num(fit_obj.exponential.Lambda)}
    # the same comparisons over every unit (xmin = the smallest positive degree)
    full = powerlaw.Fit(pos, discrete=True, xmin=float(pos[0]), verbose=0,
                        parameter_ranges={"alpha": list(ALPHA_RANGE)})
    result["full"] = {"xmin": _num(pos[0]), "alpha": _num(full.power_law.alpha), "compare": {}}
    for other in COMPARED[:2]:
        R, p = full.distribution_compare("power_law", other, normalized_ratio=True)
        result["full"]["compare"][other] = {"R": _num(R), "p": _num(p)}
    return fit_obj, result
