"""Degree distributions of sparse networks and power-law fits (Hou & Kwok, arXiv 1805.01891).

A sparse network is a graph: its units (neurons; channels of a convolution) are the nodes and
its nonzero weights the edges. For a weight layer:

* fully connected ``W (n_out, n_in)``: the in-degree of output unit ``j`` is
  ``sum_i [W[j, i] != 0]`` (row count), the out-degree of input unit ``i`` is
  ``sum_j [W[j, i] != 0]`` (column count);
* convolution ``W (c_out, c_in / groups, kh, kw)``, one node per channel, two ways of counting
  (``conv_mode``):

  - ``"weight"`` (default): every nonzero kernel weight is one connection, so the in-degree
    of output channel ``o`` is ``nnz(W[o])`` and the out-degree of input channel ``c`` is the
    number of nonzeros of all kernel slices that read ``c``;
  - ``"kernel"``: channels ``c -> o`` are connected once when their ``kh x kw`` kernel slice
    has any nonzero (so degrees count channels, at most ``c_in / groups`` and ``c_out``).

The whole network chains the weight layers in the order the model registers them (a
feed-forward network: MLPs, LeNets, VGG-style nets): the output units of layer ``l`` are the
input units of layer ``l + 1`` and a unit's total degree is its in-degree from ``l`` plus its
out-degree into ``l + 1``. A convolution followed by a fully connected layer is joined through
the channel-major flatten: the ``n_in / c_out`` consecutive columns of the FC weight that read
channel ``o`` add to channel ``o``'s out-degree. Where consecutive unit counts disagree
(residual or recurrent nets) the chain is cut there. Units of degree 0 (pruned away, e.g.
border pixels of MNIST) are counted as ``isolated`` and left out of the fits.

Fits use the ``powerlaw`` package (Alstott et al. 2014, following Clauset, Shalizi & Newman
2009) on the integer degrees (``discrete=True``): the power law ``p(d) ~ d^-alpha`` for
``d >= xmin`` (``alpha`` searched in :data:`ALPHA_RANGE`) with ``xmin`` chosen by the smallest
Kolmogorov-Smirnov distance (searched only among the degrees that leave at least ``min_tail``
units in the tail - this bounds the search and avoids fits to a handful of points; or fixed
with ``xmin=``), the truncated power law ``p(d) ~ d^-alpha e^(-lambda
d)`` (the package's exponential cutoff; Hou & Kwok's "truncated" power law bounds the range
instead - both model the fall-off of the largest degrees), and log-likelihood-ratio tests
``(R, p)`` of the power law against the exponential, the log-normal and the truncated power
law (``R > 0``: the power law is the likelier one; ``p``: significance of the sign of ``R``),
and of the truncated power law against the exponential.

Verdict (on the tail ``d >= xmin``; ``p_threshold`` = 0.1 as in Clauset et al.; "narrow" means
the tail spans less than ``min_decades``, i.e. ``log10(max / xmin) < 1`` by default)::

    truncated power law beats the power law AND the exponential (both significant)
                                                          -> "truncated power law" ("narrow tail" if narrow)
    else power law vs exponential significantly negative  -> "exponential"
    not significant either way                            -> "inconclusive"
    significantly positive (heavy tail), then:
        narrow                                            -> "narrow tail"
        log-normal beats the power law (significant)      -> "lognormal"
        else                                              -> "power law"

The "narrow tail" rule guards against the classic failure of the xmin search: on a
binomial (Erdos-Renyi) degree distribution it may pick the last few degrees above the mean,
where a steep power law (alpha ~ 10) beats the exponential over a range of a factor 1.5 -
which says nothing about scale-free structure (Stumpf & Porter 2012 ask for two decades).
The same comparisons over ALL units (``xmin`` = the smallest positive degree) are reported
under ``"full"``, for reference; they do not enter the verdict.

``power_law_like`` is true for "power law" and "truncated power law". Fewer than
``min_units`` units with positive degree, or fewer than 3 distinct degrees, give no fit
(verdict "too few units" / "too few distinct degrees").

Entry points: :func:`analyze_file` (a ``.wz``, a ``.pt`` checkpoint, a checkpoint dict, a
state_dict or an ``nn.Module``; writes plots when ``out_dir`` is given) and
:func:`format_report` (text for the CLI). The discrete truncated-power-law fit is slow (the
package normalises it with mpmath's Lerch function, seconds per fit), so by default it is done
for the whole-network distribution only (``truncated="network"``).
"""
from __future__ import annotations

import contextlib
import io
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import WeightzipError, WeightzipFormatError

__all__ = [
    "ConvMode",
    "LayerDegrees",
    "layer_degrees",
    "weight_layers",
    "network_degrees",
    "fit_degrees",
    "verdict",
    "analyze_model",
    "analyze_file",
    "format_report",
    "plot_ccdf_fits",
    "plot_ccdfs",
]

ConvMode = Literal["weight", "kernel"]
TruncatedWhere = Literal["none", "network", "all"]
LINEAR_TYPES = ("Linear",)
CONV_TYPES = ("Conv2d", "Conv1d")
COMPARED = ("exponential", "lognormal", "truncated_power_law")
POWER_LAW_LIKE = ("power law", "truncated power law")
# powerlaw >= 2.0 bounds alpha to [0, 3] by default, which pins every steeper tail (an
# Erdos-Renyi layer's, say) at 3.0; the exponent is searched in this range instead (the lower
# bound 0 is the package's: a truncated power law may have alpha < 1)
ALPHA_RANGE = (0.0, 50.0)


# ---------------------------------------------------------------------------------------------
# Degrees


@dataclass
class LayerDegrees:
    """Degrees of one weight layer: ``in_degree (n_out_units,)``, ``out_degree (n_in_units,)``."""

    name: str
    kind: str                 # "linear" | "conv"
    shape: tuple[int, ...]
    in_degree: np.ndarray     # int64 (n_out_units,): connections into each output unit / channel
    out_degree: np.ndarray    # int64 (n_in_units,): connections out of each input unit / channel
    nnz: int
    numel: int

    @property
    def density(self) -> float:
        return self.nnz / max(1, self.numel)


def layer_degrees(weight: Tensor, *, conv_mode: ConvMode = "weight", groups: int = 1
                  ) -> tuple[np.ndarray, np.ndarray]:
    """``(in_degree, out_degree)`` of a weight tensor's units, from its nonzero pattern.

    ``weight (n_out, n_in)``: ``in_degree[j] = #{i: W[j,i] != 0}``, ``out_degree[i] = #{j: W[j,i] != 0}``.
    ``weight (c_out, c_in/groups, *kernel)``: per channel as in the module docstring; with
    ``groups > 1`` input channel ``g * (c_in/groups) + c`` is read by the output channels of
    group ``g`` only. Returns int64 arrays ``(n_out,)`` and ``(n_in,)`` (``n_in = c_in``).

    >>> w = torch.tensor([[1., 0., 2.], [0., 0., 3.]])
    >>> [a.tolist() for a in layer_degrees(w)]
    [[2, 1], [1, 0, 2]]
    """
    if conv_mode not in ("weight", "kernel"):
        raise ValueError(f"unknown conv_mode {conv_mode!r}; use 'weight' (every nonzero kernel weight is a "
                         "connection) or 'kernel' (a channel pair is connected when its kernel slice is nonzero)")
    w = weight.detach()
    if w.dim() < 2:
        raise ValueError(f"a weight layer needs at least 2 dimensions, got shape {tuple(w.shape)}")
    nz = (w != 0).cpu()
    if w.dim() > 2:
        nz = nz.flatten(2)                                       # (c_out, c_in/g, kh*kw)
        nz = nz.any(dim=2) if conv_mode == "kernel" else nz.sum(dim=2)  # (c_out, c_in/g)
    nz = nz.to(torch.int64)                                      # (n_out, n_in/g)
    in_degree = nz.sum(dim=1)                                    # (n_out,)
    if groups == 1:
        out_degree = nz.sum(dim=0)                               # (n_in,)
    else:
        n_out, per = nz.shape
        if n_out % groups:
            raise ValueError(f"{n_out} output channels do not split into {groups} groups")
        out_degree = nz.reshape(groups, n_out // groups, per).sum(dim=1).reshape(-1)  # (groups * per,)
    return in_degree.numpy(), out_degree.numpy()


def _type_name(module: nn.Module) -> str:
    from ..core.select import type_name

    return type_name(module)


def weight_layers(source: nn.Module | Mapping[str, Tensor]) -> list[tuple[str, str, Tensor, int]]:
    """The weight layers of a model, in order: ``[(name, kind, weight, groups)]``.

    ``nn.Module``: every ``Linear`` / ``Conv1d`` / ``Conv2d`` (seen through parametrizations:
    the effective, e.g. masked, weight is used). A state_dict: every ``*.weight`` tensor with 2
    dimensions (linear) or 3-4 (convolution, groups assumed 1), in the dict's order.
    """
    out: list[tuple[str, str, Tensor, int]] = []
    if isinstance(source, nn.Module):
        with torch.no_grad():
            for mname, mod in source.named_modules():
                t = _type_name(mod)
                if t in LINEAR_TYPES or t in CONV_TYPES:
                    name = f"{mname}.weight" if mname else "weight"
                    out.append((name, "linear" if t in LINEAR_TYPES else "conv",
                                mod.weight.detach().cpu(), int(getattr(mod, "groups", 1))))
        return out
    for name, t in source.items():
        if not isinstance(t, Tensor) or not t.is_floating_point() or not name.endswith("weight"):
            continue
        if ".parametrizations." in name:
            continue  # latent tensors of a parametrized checkpoint: use an nn.Module instead
        if t.dim() == 2:
            out.append((name, "linear", t.detach().cpu(), 1))
        elif t.dim() in (3, 4):
            out.append((name, "conv", t.detach().cpu(), 1))
    return out


def _units_in(kind: str, weight: Tensor, groups: int) -> int:
    return int(weight.shape[1]) * (groups if kind == "conv" else 1)


def network_degrees(layers: Sequence[tuple[str, str, Tensor, int]], *, conv_mode: ConvMode = "weight"
                    ) -> dict[str, Any]:
    """Per-layer degrees and the total degree of every unit of the chained network.

    Returns ``{"layers": [LayerDegrees], "units": [{"name", "degree" (int64 array), "joined"}],
    "network": int64 array (every unit, concatenated), "cuts": [names where the chain broke]}``.
    ``units`` lists the unit groups in order: the inputs of the first layer, then the outputs
    of each layer (joined with the inputs of the next one when the counts fit, see module
    docstring).
    """
    if not layers:
        raise WeightzipError("the model has no Linear or Conv weight layers to analyse")
    per: list[LayerDegrees] = []
    for name, kind, w, groups in layers:
        ind, outd = layer_degrees(w, conv_mode=conv_mode, groups=groups)
        per.append(LayerDegrees(name, kind, tuple(int(s) for s in w.shape), ind, outd,
                                int((w != 0).sum()), int(w.numel())))
    units: list[dict[str, Any]] = []
    cuts: list[str] = []
    first = per[0]
    units.append({"name": f"{first.name}:inputs", "degree": first.out_degree.copy(), "joined": False})
    for idx, ld in enumerate(per):
        deg = ld.in_degree.copy()  # (n_out_units,)
        joined = False
        if idx + 1 < len(per):
            nxt = per[idx + 1]
            n_in_next = nxt.out_degree.size
            if n_in_next == deg.size:
                deg = deg + nxt.out_degree
                joined = True
            elif ld.kind == "conv" and nxt.kind == "linear" and n_in_next % deg.size == 0:
                # channel-major flatten: columns [o*s, (o+1)*s) of the FC weight read channel o
                deg = deg + nxt.out_degree.reshape(deg.size, n_in_next // deg.size).sum(axis=1)
                joined = True
            else:
                cuts.append(nxt.name)
        units.append({"name": f"{ld.name}:outputs", "degree": deg, "joined": joined})
        if idx + 1 < len(per) and not joined:
            nxt = per[idx + 1]
            units.append({"name": f"{nxt.name}:inputs", "degree": nxt.out_degree.copy(), "joined": False})
    network = np.concatenate([u["degree"] for u in units]).astype(np.int64)
    return {"layers": per, "units": units, "network": network, "cuts": cuts}


# ---------------------------------------------------------------------------------------------
# Fits


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


# ---------------------------------------------------------------------------------------------
# Whole models and files


def _as_module_or_state(source: Any) -> tuple[nn.Module | Mapping[str, Tensor], dict[str, Any]]:
    """Resolve ``source`` (see :func:`analyze_file`) to a module or a state_dict, plus info."""
    if isinstance(source, nn.Module):
        return source, {"kind": "module", "source": type(source).__name__}
    if isinstance(source, Mapping):
        if "model" in source and isinstance(source["model"], Mapping):
            if source.get("model_config"):
                from .. import methods  # noqa: F401 - registers every parametrization kind a checkpoint may use
                from ..jobs.runs import model_from_checkpoint

                return model_from_checkpoint(source), {"kind": "checkpoint", "source": "checkpoint dict"}
            return source["model"], {"kind": "state_dict", "source": "checkpoint dict"}
        return source, {"kind": "state_dict", "source": "state_dict"}
    path = Path(source)
    if not path.is_file():
        raise WeightzipError(f"file {str(path)!r} not found; give a .wz file, a .pt checkpoint or a model")
    if path.suffix == ".wz":
        from ..api import load as wz_load

        try:
            return wz_load(path), {"kind": "wz", "source": str(path)}
        except WeightzipFormatError as e:
            if "user model" not in str(e):
                raise
            from ..runtime.load import read_model_state  # a user model: analyse the decoded tensors

            _, state, _ = read_model_state(path)
            return state, {"kind": "wz", "source": str(path), "note": "user model: layers taken from the tensors"}
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file gets one clear message
        raise WeightzipError(f"cannot read {str(path)!r} as a .wz file or a PyTorch checkpoint "
                             f"({type(e).__name__}: {e})") from None
    if not isinstance(ck, Mapping):
        raise WeightzipError(f"{str(path)!r} holds a {type(ck).__name__}, not a checkpoint or state_dict")
    obj, info = _as_module_or_state(ck)
    info["source"] = str(path)
    return obj, info


def analyze_model(source: Any, *, conv_mode: ConvMode = "weight", truncated: TruncatedWhere = "network",
                  min_units: int = 20, min_tail: int = 50, p_threshold: float = 0.1, min_decades: float = 1.0,
                  keep_fits: bool = False) -> dict[str, Any]:
    """Degree distributions and fits per layer and for the whole network (no plots).

    ``source``: an ``nn.Module``, a state_dict, a checkpoint dict, or a path (``.wz``, ``.pt``).
    ``truncated``: where the (slow) truncated power law is fitted: ``"network"`` (default),
    ``"all"`` (every distribution) or ``"none"``. Returns a JSON-able dict::

        {"source", "kind", "conv_mode", "p_threshold", "nnz", "numel", "density", "cuts",
         "layers": [{"name", "kind", "shape", "nnz", "density", "in": stats, "out": stats}],
         "units": [{"name", "joined", **stats}], "network": stats}

    where ``stats`` is a :func:`fit_degrees` result. ``units`` carry summaries only (no fits).
    With ``keep_fits`` the ``powerlaw.Fit`` objects and raw degrees are kept under ``"_fits"``
    and ``"_degrees"`` (used for plots; not JSON-able).
    """
    if truncated not in ("none", "network", "all"):
        raise ValueError(f"truncated must be 'none', 'network' or 'all', got {truncated!r}")
    obj, info = _as_module_or_state(source)
    layers = weight_layers(obj)
    if not layers:
        raise WeightzipError(f"{info['source']}: no Linear or Conv weight layers found to analyse")
    graph = network_degrees(layers, conv_mode=conv_mode)
    kw = dict(min_units=min_units, min_tail=min_tail, p_threshold=p_threshold, min_decades=min_decades,
              return_fit=True)
    fits: dict[str, Any] = {}
    degrees: dict[str, np.ndarray] = {}
    rows = []
    for ld in graph["layers"]:
        row = {"name": ld.name, "kind": ld.kind, "shape": list(ld.shape), "nnz": ld.nnz, "numel": ld.numel,
               "density": ld.density}
        for key, deg in (("in", ld.in_degree), ("out", ld.out_degree)):
            stats, f = fit_degrees(deg, truncated=truncated == "all", **kw)
            row[key] = stats
            fits[f"{ld.name}:{key}"] = f
            degrees[f"{ld.name}:{key}"] = deg
        rows.append(row)
    units = [{"name": u["name"], "joined": u["joined"], **_summary(u["degree"])} for u in graph["units"]]
    net, f = fit_degrees(graph["network"], truncated=truncated != "none", **kw)
    fits["network"] = f
    degrees["network"] = graph["network"]
    nnz = sum(ld.nnz for ld in graph["layers"])
    numel = sum(ld.numel for ld in graph["layers"])
    out = {"source": info["source"], "kind": info["kind"], "conv_mode": conv_mode, "p_threshold": p_threshold,
           "min_decades": min_decades,
           "nnz": nnz, "numel": numel, "density": nnz / max(1, numel), "cuts": graph["cuts"],
           "layers": rows, "units": units, "network": net}
    if "note" in info:
        out["note"] = info["note"]
    if keep_fits:
        out["_fits"] = fits
        out["_degrees"] = degrees
    return out


def analyze_file(path_or_checkpoint: Any, out_dir: str | Path | None = None, *, conv_mode: ConvMode = "weight",
                 truncated: TruncatedWhere = "network", min_units: int = 20, min_tail: int = 50,
                 p_threshold: float = 0.1, min_decades: float = 1.0, name: str | None = None) -> dict[str, Any]:
    """:func:`analyze_model` of a file (``.wz`` / ``.pt``) or object, plus log-log plots.

    With ``out_dir``: writes ``<name>-network.png`` (CCDF of the whole-network degrees with
    the fitted power law, truncated power law, exponential and log-normal) and
    ``<name>-layers.png`` (one panel per weight layer: in- and out-degree CCDFs with their
    power-law fits); their paths are listed under ``"plots"``. ``name`` defaults to the file
    stem (``"model"`` for objects). The result is JSON-able.
    """
    res = analyze_model(path_or_checkpoint, conv_mode=conv_mode, truncated=truncated, min_units=min_units,
                        min_tail=min_tail, p_threshold=p_threshold, min_decades=min_decades,
                        keep_fits=out_dir is not None)
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        if name is None:
            name = Path(path_or_checkpoint).stem if isinstance(path_or_checkpoint, (str, Path)) else "model"
        fits, degrees = res.pop("_fits"), res.pop("_degrees")
        p_net = out_dir / f"{name}-network.png"
        plot_ccdf_fits(degrees["network"], fits["network"], p_net,
                       title=f"{name}: degree of every unit ({res['network']['verdict']})")
        p_lay = out_dir / f"{name}-layers.png"
        _plot_layers(res, fits, degrees, p_lay, name)
        res["plots"] = [str(p_net), str(p_lay)]
    return res


# ---------------------------------------------------------------------------------------------
# Plots


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


# ---------------------------------------------------------------------------------------------
# Text report


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
