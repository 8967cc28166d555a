"""Types and ranges of the caller's manifest fields, checked before any reader uses them.

A forged file can carry valid checksums around semantic garbage: ``"model": "lenet5"``,
``"kwargs": {"num_classes": 10**9}``, ``"runtime": {"activation_quant": [7]}``, a graph of 10^6
nodes. :func:`check_manifest` (called by ``container.read`` and ``container.read_manifest``)
refuses every field a reader of this package uses when it has the wrong JSON type or lies
outside its range, with a :class:`~weightzip.errors.WeightzipFormatError` that names the field
and what is allowed. Checked (``docs/file-format.md`` section 2):

* the whole manifest: nested at most :data:`MAX_DEPTH` objects / lists deep;
* ``model``: absent, null or an object; ``name`` and ``class`` strings;
* ``model.kwargs``: absent, null or an object of at most :data:`MAX_KWARGS` identifier keys whose
  values are null, bool, int, finite float, string, or a list of at most :data:`MAX_LIST` such
  scalars; one input sample (``in_channels x image_size^2`` float32) within ``max_decoded_bytes``;
* ``runtime``: absent, null or an object; ``runtime.activation_quant``: absent, null or a list of
  at most :data:`MAX_ACT_QUANT` objects ``{"module": str, "bits": int 1..16, "clip": finite
  number > 0}`` (``clip`` optional);
* ``graph``: absent, null or an object; ``nodes`` a list of at most :data:`MAX_GRAPH_NODES`,
  ``modules`` an object of at most :data:`MAX_GRAPH_MODULES`, ``params`` a list of strings, an
  example input within ``max_decoded_bytes`` (the nodes and modules: ``weightzip.graph.rebuild``);
* ``tied``, ``metrics``, ``recipe``, ``extra``: absent, null or an object (``tied``'s names:
  ``runtime.load.tied_names``);
* ``baseline_bytes``: absent, null or an integer in ``[0, 2^63)``; ``weightzip_version``: a string.

What a zoo model's kwargs would allocate is checked where the model is built
(:func:`weightzip.runtime.load.build_model`: on the meta device first).
"""
from __future__ import annotations

import math
from typing import Any

from ..errors import WeightzipFormatError

MAX_DEPTH = 64            # real manifests: <= 8 (a graph's nested args); JSON itself stops near 1000
MAX_KWARGS = 64
MAX_LIST = 64
MAX_STR = 1024
MAX_ACT_QUANT = 4096
MAX_GRAPH_NODES = 100_000   # ~1 KiB of Python objects each once rebuilt; large HF graphs have a few 10^3
MAX_GRAPH_MODULES = 100_000
MAX_INT = 2**63 - 1
DISPLAY_FIELDS = ("metrics", "recipe", "extra", "tied")


def _fail(field: str, msg: str) -> WeightzipFormatError:
    return WeightzipFormatError(f"manifest field {field!r}: {msg}")


def _type(v: Any) -> str:
    return "null" if v is None else {dict: "object", list: "list", str: "string", bool: "bool", int: "integer",
                                     float: "number"}.get(type(v), type(v).__name__)


def _show(v: Any) -> str:
    s = repr(v) if not isinstance(v, (dict, list)) else f"a {_type(v)} of {len(v)} entries"
    return s if len(s) <= 60 else s[:57] + "..."


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _scalar(v: Any) -> bool:
    """A plain JSON scalar: null, bool, int (|v| < 2^63), finite float, string of <= MAX_STR chars."""
    if v is None or isinstance(v, bool):
        return True
    if isinstance(v, int):
        return -MAX_INT <= v <= MAX_INT
    if isinstance(v, float):
        return math.isfinite(v)
    return isinstance(v, str) and len(v) <= MAX_STR


def check_depth(doc: Any, limit: int = MAX_DEPTH) -> None:
    """Refuse objects / lists nested deeper than ``limit`` (iterative: no recursion to exhaust)."""
    stack = [(doc, 1, "")]
    while stack:
        node, depth, where = stack.pop()
        if depth > limit:
            raise _fail((where[:60] + "..." if len(where) > 60 else where) or "(root)", f"nested more than {limit} objects / lists deep; allowed: at most {limit}")
        if isinstance(node, dict):
            stack.extend((v, depth + 1, f"{where}.{k}" if where else str(k)) for k, v in node.items()
                         if isinstance(v, (dict, list)))
        elif isinstance(node, list):
            stack.extend((v, depth + 1, f"{where}[{i}]") for i, v in enumerate(node) if isinstance(v, (dict, list)))


def _optional_object(doc: dict, key: str) -> dict:
    v = doc.get(key)
    if v is not None and not isinstance(v, dict):
        raise _fail(key, f"must be an object (or absent), got {_type(v)} {_show(v)}")
    return v or {}


def check_model(model: Any, max_decoded_bytes: int) -> None:
    """``model``: ``{"name": str, "kwargs": {identifier: scalar | [scalar, ...]}, "class": str}``."""
    if model is None:
        return
    if not isinstance(model, dict):
        raise _fail("model", f"must be an object {{'name': str, 'kwargs': object}}, got {_type(model)} {_show(model)}")
    for key in ("name", "class"):
        v = model.get(key)
        if v is not None and (not isinstance(v, str) or len(v) > MAX_STR):
            raise _fail(f"model.{key}", f"must be a string of at most {MAX_STR} characters, got {_type(v)} {_show(v)}")
    kwargs = model.get("kwargs")
    if kwargs is None:
        return
    if not isinstance(kwargs, dict):
        raise _fail("model.kwargs", f"must be an object {{argument: value}}, got {_type(kwargs)} {_show(kwargs)}")
    if len(kwargs) > MAX_KWARGS:
        raise _fail("model.kwargs", f"has {len(kwargs)} arguments; allowed: at most {MAX_KWARGS}")
    for k, v in kwargs.items():
        if not k.isidentifier():
            raise _fail("model.kwargs", f"argument name {_show(k)} is not a Python identifier")
        where = f"model.kwargs.{k}"
        if isinstance(v, list):
            if len(v) > MAX_LIST or not all(_scalar(x) and not isinstance(x, list) for x in v):
                raise _fail(where, f"must be a list of at most {MAX_LIST} plain scalars (null, bool, integer, finite "
                                   f"number, string), got {_show(v)}")
        elif not _scalar(v):
            raise _fail(where, f"must be a plain scalar (null, bool, integer < 2^63, finite number, string of at most "
                               f"{MAX_STR} characters) or a small list of them, got {_type(v)} {_show(v)}")
    c, s = kwargs.get("in_channels", 1), kwargs.get("image_size")
    if is_int(c) and is_int(s) and c > 0 and s > 0 and 4 * c * s * s > max_decoded_bytes:
        raise _fail("model.kwargs.image_size", f"in_channels {c} x image_size {s}^2 float32 is {4 * c * s * s} bytes "
                                               f"per input sample, more than max_decoded_bytes={max_decoded_bytes}; "
                                               f"allowed: at most {max_decoded_bytes} bytes (raise the limit if the "
                                               "file is trusted)")


def check_activation_quant(aq: Any) -> None:
    """``runtime.activation_quant``: ``[{"module": str, "bits": 1..16, "clip": finite > 0}, ...]``."""
    if aq is None:
        return
    field = "runtime.activation_quant"
    if not isinstance(aq, list) or len(aq) > MAX_ACT_QUANT:
        raise _fail(field, f"must be a list of at most {MAX_ACT_QUANT} objects {{'module': str, 'bits': 1..16, "
                           f"'clip': number > 0}}, got {_type(aq)} {_show(aq)}")
    for i, item in enumerate(aq):
        where = f"{field}[{i}]"
        if not isinstance(item, dict):
            raise _fail(where, f"must be an object {{'module': str, 'bits': 1..16, 'clip': number > 0}}, got "
                               f"{_type(item)} {_show(item)}")
        m, b, c = item.get("module"), item.get("bits"), item.get("clip", 1.0)
        if not isinstance(m, str) or len(m) > MAX_STR:
            raise _fail(f"{where}.module", f"must be a module name (string), got {_type(m)} {_show(m)}")
        if not is_int(b) or not 1 <= b <= 16:
            raise _fail(f"{where}.bits", f"must be an integer in [1, 16], got {_type(b)} {_show(b)}")
        if isinstance(c, bool) or not isinstance(c, (int, float)) or not math.isfinite(c) or not c > 0:
            raise _fail(f"{where}.clip", f"must be a finite number > 0, got {_type(c)} {_show(c)}")


def check_graph(graph: Any, max_decoded_bytes: int) -> None:
    """The outer shape of ``graph`` (sizes a rebuild would allocate for); ``weightzip.graph.rebuild``
    checks the nodes and modules themselves."""
    if graph is None:
        return
    if not isinstance(graph, dict):
        raise _fail("graph", f"must be an object, got {_type(graph)} {_show(graph)}")
    nodes, modules = graph.get("nodes"), graph.get("modules", {})
    if not isinstance(nodes, list) or len(nodes) > MAX_GRAPH_NODES:
        raise _fail("graph.nodes", f"must be a list of at most {MAX_GRAPH_NODES} nodes, got {_type(nodes)} {_show(nodes)}")
    if not isinstance(modules, dict) or len(modules) > MAX_GRAPH_MODULES:
        raise _fail("graph.modules", f"must be an object of at most {MAX_GRAPH_MODULES} modules, got "
                                     f"{_type(modules)} {_show(modules)}")
    params = graph.get("params")
    if params is not None and (not isinstance(params, list) or not all(isinstance(p, str) for p in params)):
        raise _fail("graph.params", f"must be a list of tensor names (strings), got {_type(params)} {_show(params)}")
    ex = graph.get("example_inputs")
    if ex is None:
        return
    if not isinstance(ex, list) or len(ex) > MAX_LIST:
        raise _fail("graph.example_inputs", f"must be a list of at most {MAX_LIST} objects {{'shape': [int], "
                                            f"'dtype': str}}, got {_type(ex)} {_show(ex)}")
    for i, e in enumerate(ex):
        where = f"graph.example_inputs[{i}]"
        shape = e.get("shape") if isinstance(e, dict) else None
        if not isinstance(e, dict) or not isinstance(shape, list) or len(shape) > 16 or \
                not all(is_int(d) and 0 <= d <= MAX_INT for d in shape):
            raise _fail(where, f"must be an object {{'shape': [at most 16 non-negative integers], 'dtype': str}}, "
                               f"got {_show(e)}")
        if e.get("dtype") is not None and not isinstance(e.get("dtype"), str):
            raise _fail(f"{where}.dtype", f"must be a string, got {_type(e.get('dtype'))}")
        if 4 * math.prod(shape) > max_decoded_bytes:
            raise _fail(f"{where}.shape", f"{shape} is {4 * math.prod(shape)} float32 bytes, more than "
                                          f"max_decoded_bytes={max_decoded_bytes}; allowed: at most that many bytes")


def check_manifest(doc: dict, max_decoded_bytes: int) -> None:
    """Check every caller field a reader uses (see the module docstring); raises
    :class:`WeightzipFormatError` naming the field. ``doc``: the parsed manifest (with or without
    ``"tensors"``, whose entries ``container`` checks itself)."""
    check_depth(doc)
    check_model(doc.get("model"), max_decoded_bytes)
    runtime = _optional_object(doc, "runtime")
    check_activation_quant(runtime.get("activation_quant"))
    check_graph(doc.get("graph"), max_decoded_bytes)
    for key in DISPLAY_FIELDS:
        _optional_object(doc, key)
    b = doc.get("baseline_bytes")
    if b is not None and (not is_int(b) or not 0 <= b <= MAX_INT):
        raise _fail("baseline_bytes", f"must be an integer in [0, 2^63), got {_type(b)} {_show(b)}")
    v = doc.get("weightzip_version")
    if v is not None and (not isinstance(v, str) or len(v) > MAX_STR):
        raise _fail("weightzip_version", f"must be a string, got {_type(v)} {_show(v)}")


__all__ = ["check_manifest", "check_model", "check_activation_quant", "check_graph", "check_depth", "MAX_DEPTH"]
