"""Whole models and files: degrees + fits per layer and for the network (:func:`analyze_model`),
plus plots (:func:`analyze_file`)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Mapping

import numpy as np
import torch
from torch import Tensor, nn

from ...errors import WeightzipError, WeightzipFormatError
from .degrees import ConvMode, network_degrees, weight_layers
from .fit import _summary, fit_degrees
from .plots import _plot_layers, plot_ccdf_fits

TruncatedWhere = Literal["none", "network", "all"]


def _as_module_or_state(source: Any) -> tuple[nn.Module | Mapping[str, Tensor], dict[str, Any]]:
    """Resolve ``source`` (see :func:`analyze_file`) to a module or a state_dict, plus info."""
    if isinstance(source, nn.Module):
        return source, {"kind": "module", "source": type(source).__name__}
    if isinstance(source, Mapping):
        if "model" in source and isinstance(source["model"], Mapping):
            if source.get("model_config"):
                from ...training.checkpoint import model_from_checkpoint

                return model_from_checkpoint(source), {"kind": "checkpoint", "source": "checkpoint dict"}
            return source["model"], {"kind": "state_dict", "source": "checkpoint dict"}
        return source, {"kind": "state_dict", "source": "state_dict"}
    path = Path(source)
    if not path.is_file():
        raise WeightzipError(f"file {str(path)!r} not found; give a .wz file, a .pt checkpoint or a model")
    if path.suffix == ".wz":
        from ...runtime.load import load as wz_load

        try:
            return wz_load(path), {"kind": "wz", "source": str(path)}
        except WeightzipFormatError as e:
            if "user model" not in str(e):
                raise
            from ...runtime.load import read_model_state  # a user model: analyse the decoded tensors

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
