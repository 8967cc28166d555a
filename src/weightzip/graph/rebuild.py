"""Rebuild a runnable ``torch.fx.GraphModule`` from the JSON graph of a ``.wz`` manifest.

Only allowlisted names are resolved (``ops.FUNCTIONS``, ``ops.ATEN_OPS``, ``ops.METHODS``,
``ops.MODULES``); identifiers (placeholder names, attribute paths, keyword names) must be plain
Python identifiers. Anything else raises :class:`~weightzip.errors.WeightzipFormatError` naming
the node and the offending name. The module's tensors are created empty with the file's shapes
and dtypes (``shapes``) and filled by the caller's ``load_state_dict``; ``extra`` holds the
tensors stored as ``__graph__.<path>`` (non-persistent buffers, graph constants).
"""
from __future__ import annotations

import keyword
import re
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from ..errors import WeightzipFormatError
from .modules import GraphOutput
from .ops import (GETATTR_NAMES, GRAPH_VERSION, METHODS, OPSET_VERSION, build_module, decode_arg,
                  resolve_function)

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _ident(s: Any, where: str, what: str) -> str:
    if not isinstance(s, str) or not _IDENT.match(s) or keyword.iskeyword(s):
        raise WeightzipFormatError(f"graph: {where}: {what} {str(s)[:60]!r} is not a plain identifier")
    return s


def _path(s: Any, where: str) -> str:
    if not isinstance(s, str) or not s:
        raise WeightzipFormatError(f"graph: {where}: attribute path must be a non-empty string")
    for part in s.split("."):
        if not (part.isdigit() or (_IDENT.match(part) and not keyword.iskeyword(part))):
            raise WeightzipFormatError(f"graph: {where}: attribute path {s[:80]!r} is not a dotted identifier")
    return s


def _owner(root: nn.Module, path: str) -> tuple[nn.Module, str]:
    parent, _, leaf = path.rpartition(".")
    mod = root
    if parent:
        for part in parent.split("."):
            nxt = mod._modules.get(part)
            if nxt is None:
                if part in mod._parameters or part in mod._buffers:
                    raise WeightzipFormatError(f"graph: path {path!r} goes through a tensor")
                nxt = nn.Module()
                mod.add_module(part, nxt)
            mod = nxt
    return mod, leaf


def _set_tensor(root: nn.Module, path: str, t: torch.Tensor, param: bool, persistent: bool = True) -> None:
    mod, leaf = _owner(root, path)
    if leaf in mod._modules:
        raise WeightzipFormatError(f"graph: tensor {path!r} collides with a module")
    if param and t.is_floating_point():
        mod.register_parameter(leaf, nn.Parameter(t, requires_grad=True))
    else:
        mod.register_buffer(leaf, t, persistent=persistent)


def _has_tensor(root: nn.Module, path: str) -> bool:
    parent, _, leaf = path.rpartition(".")
    try:
        mod = root.get_submodule(parent) if parent else root
    except AttributeError:
        return False
    return leaf in mod._parameters or leaf in mod._buffers


def rebuild(graph: dict, shapes: dict[str, tuple[tuple[int, ...], torch.dtype]],
            extra: dict[str, torch.Tensor] | None = None) -> fx.GraphModule:
    """``GraphModule`` for ``graph``; ``shapes`` = ``{state name: (shape, dtype)}`` of the file."""
    extra = extra or {}
    if not isinstance(graph, dict):
        raise WeightzipFormatError("graph: manifest 'graph' must be an object")
    v, ops_v = graph.get("version"), graph.get("opset")
    if not isinstance(v, int) or not isinstance(ops_v, int):
        raise WeightzipFormatError("graph: 'version' and 'opset' must be integers")
    if v > GRAPH_VERSION or ops_v > OPSET_VERSION:
        raise WeightzipFormatError(f"graph: written with graph version {v} / opset {ops_v}; this weightzip "
                                   f"reads up to {GRAPH_VERSION} / {OPSET_VERSION}: upgrade weightzip")
    if graph.get("level") not in ("fx", "aten"):
        raise WeightzipFormatError(f"graph: unknown level {graph.get('level')!r} (fx or aten)")
    nodes_j, modules_j = graph.get("nodes"), graph.get("modules", {})
    if not isinstance(nodes_j, list) or not isinstance(modules_j, dict):
        raise WeightzipFormatError("graph: 'nodes' must be a list and 'modules' an object")
    params = set(graph.get("params") or [])

    root = nn.Module()
    for mpath, spec in modules_j.items():
        _path(mpath, f"module {mpath!r}")
        mod = build_module(spec, mpath)
        parent, _, leaf = mpath.rpartition(".")
        owner, _ = _owner(root, mpath) if parent else (root, leaf)
        owner.add_module(leaf, mod.to_empty(device="cpu"))
    for name, (shape, dtype) in shapes.items():
        _path(name, f"tensor {name!r}")
        if _has_tensor(root, name):
            mod, leaf = _owner(root, name)
            cur = getattr(mod, leaf)
            if cur is not None and tuple(cur.shape) != tuple(shape):
                raise WeightzipFormatError(f"graph: tensor {name!r} has shape {tuple(shape)} in the file, its "
                                           f"module expects {tuple(cur.shape)}")
            if cur is not None and cur.dtype != dtype and cur.is_floating_point():
                # a bf16 / fp16 model: its layers keep the file's dtype (load_state_dict would cast)
                if leaf in mod._parameters:
                    mod._parameters[leaf] = nn.Parameter(cur.to(dtype), requires_grad=cur.requires_grad)
                else:
                    mod._buffers[leaf] = cur.to(dtype)
            continue
        _set_tensor(root, name, torch.zeros(shape, dtype=dtype), name in params)
    for name, t in extra.items():
        _path(name, f"tensor {name!r}")
        _set_tensor(root, name, t, False, persistent=False)

    g = fx.Graph()
    env: dict[str, fx.Node] = {}
    seen_output = False
    for i, nj in enumerate(nodes_j):
        if not isinstance(nj, dict):
            raise WeightzipFormatError(f"graph: node {i} is not an object")
        name, op, target = nj.get("name"), nj.get("op"), nj.get("target")
        where = f"node {name!r}"
        _ident(name, where, "node name")
        if name in env:
            raise WeightzipFormatError(f"graph: {where} is defined twice")
        raw_kwargs = nj.get("kwargs", {})
        if not isinstance(raw_kwargs, dict):
            raise WeightzipFormatError(f"graph: {where}: kwargs must be an object")
        args = decode_arg(nj.get("args", []), env, f"graph: {where}")
        if not isinstance(args, list):
            raise WeightzipFormatError(f"graph: {where}: args must be a list")
        args = tuple(args)
        kwargs = {_ident(k, where, "keyword"): decode_arg(x, env, f"graph: {where}") for k, x in raw_kwargs.items()}
        if op == "placeholder":
            _ident(target, where, "placeholder")
            default = args[0] if args else fx.node.inspect.Signature.empty
            node = g.placeholder(target, default_value=default)
        elif op == "get_attr":
            _path(target, where)
            if not _has_tensor(root, target):
                raise WeightzipFormatError(f"graph: {where} reads {target!r}, which the file does not hold")
            node = g.get_attr(target)
        elif op == "call_function":
            fn = resolve_function(target, f"graph: {where}")
            if target == "builtins.getattr" and (len(args) != 2 or args[1] not in GETATTR_NAMES):
                raise WeightzipFormatError(f"graph: {where}: getattr of {args[1:]!r} is not allowed")
            node = g.call_function(fn, args, kwargs)
        elif op == "call_method":
            if target not in METHODS:
                raise WeightzipFormatError(f"graph: {where}: tensor method {target!r} is not in the allowlist "
                                           f"(opset {OPSET_VERSION})")
            node = g.call_method(target, args, kwargs)
        elif op == "call_module":
            if target not in modules_j:
                raise WeightzipFormatError(f"graph: {where} calls module {target!r}, which 'modules' does not define")
            node = g.call_module(target, args, kwargs)
        elif op == "output":
            if seen_output:
                raise WeightzipFormatError("graph: more than one output node")
            node = g.output(args[0] if len(args) == 1 else args)
            seen_output = True
        else:
            raise WeightzipFormatError(f"graph: {where} has unknown op {op!r}")
        env[name] = node
    if not seen_output:
        raise WeightzipFormatError("graph: no output node")
    out_node = next(n for n in g.nodes if n.op == "output")
    if isinstance(out_node.args[0], dict):  # a mapping output reads as out.logits too
        with g.inserting_before(out_node):
            wrapped = g.call_function(GraphOutput, (dict(out_node.args[0]),))
        out_node.args = (wrapped,)
    try:
        g.lint()
        gm = fx.GraphModule(root, g, class_name="WzGraphModule")
    except WeightzipFormatError:
        raise
    except Exception as e:
        raise WeightzipFormatError(f"graph: cannot be rebuilt: {type(e).__name__}: {str(e)[:200]}") from None
    # every recorded module keeps its kind, also where the graph only reads its tensors (aten level)
    for mpath in modules_j:
        real = root.get_submodule(mpath)
        owner, leaf = _owner(gm, mpath)
        cur = owner._modules.get(leaf)
        if cur is not real:
            if cur is not None and cur._modules:
                raise WeightzipFormatError(f"graph: module {mpath!r} has submodules {list(cur._modules)[:3]}")
            owner.add_module(leaf, real)
    # tensors the graph does not reference (tied/unused weights) keep their place in the state_dict
    for name, (shape, dtype) in shapes.items():
        if not _has_tensor(gm, name):
            _set_tensor(gm, name, torch.zeros(shape, dtype=dtype), name in params)
    for name, t in extra.items():
        if not _has_tensor(gm, name):
            _set_tensor(gm, name, t, False, persistent=False)
        else:  # GraphModule copies buffers as persistent ones
            mod, leaf = _owner(gm, name)
            mod._non_persistent_buffers_set.add(leaf)
    gm.wz_graph_level = graph["level"]
    return gm
