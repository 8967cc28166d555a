"""Record a model's computation graph as JSON data (the ``"graph"`` object of a ``.wz`` manifest).

Two capture levels, tried in this order:

* ``fx``: :func:`torch.fx.symbolic_trace` with every allowlisted ``torch.nn`` module kept as a
  ``call_module`` leaf (its kind and constructor arguments are recorded) and everything else
  traced through. Needs no example input; keeps the module tree, so the runtime's packed layers
  (sparse / LUT modes) still apply to the rebuilt model. Arguments with defaults are fixed to
  their defaults (``concrete_args``), guarded by assert nodes.
* ``aten``: :func:`torch.export.export` (non-strict, every input dimension dynamic), for models
  with Python control flow that fx cannot trace (e.g. Hugging Face transformers). Needs example
  inputs; the graph holds allowlisted aten operators; parameters become ``get_attr`` nodes.

The result is ``(graph, extra)``: ``graph`` is JSON (see docs/file-format.md section 7) and
``extra`` maps names of tensors the graph needs but the state_dict does not hold (non-persistent
buffers, constants folded into the graph) to tensors; ``save`` stores them as tensors named
``__graph__.<path>``. Failure raises :class:`GraphCaptureError` with the reason.
"""
from __future__ import annotations

import copy
import gc
import inspect
from typing import Any, Sequence

import torch
import torch.fx as fx
from torch import nn

from .ops import (GETATTR_NAMES, GRAPH_VERSION, METHODS, OPSET_VERSION, EncodeError, encode_arg,
                  function_name, module_kind, module_spec)

EXTRA_PREFIX = "__graph__."


class GraphCaptureError(Exception):
    """The model's graph cannot be recorded; ``str(e)`` is the reason."""


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return module_kind(m) is not None


def clean_copy(model: nn.Module, keep_hooks: bool = False) -> nn.Module:
    """A deep copy in eval mode with parametrizations baked in and (unless ``keep_hooks``)
    forward hooks dropped: an fx graph calls leaf modules, whose hooks the runtime re-installs
    from the manifest (activation quantizers); torch.export records the hooks' operators.

    The parametrization chains themselves (a latent weight, codes, masks per parametrized
    tensor) are never copied: the copy holds the baked values and the model's other tensors,
    about one plain model's worth of memory."""
    from torch.nn.utils import parametrize as P

    memo: dict[int, Any] = {}
    chains: dict[str, nn.Module] = {}
    for mname, mod in model.named_modules():
        if P.is_parametrized(mod):
            memo[id(mod.parametrizations)] = None   # the copy's chain slot is None, replaced below
            chains[mname] = mod
    m = copy.deepcopy(model, memo).cpu().eval()
    tied: dict[int, list[nn.Parameter]] = {}   # id of a latent Parameter -> the baked Parameters made from it
    for mname, mod in m.named_modules():
        src = chains.get(mname)
        if src is not None:
            # not P.remove_parametrizations: it edits the parametrized class, which the deep copy
            # shares with the original model
            values = {name: _baked(src, name) for name in src.parametrizations.keys()}
            del mod._modules["parametrizations"]
            mod.__class__ = type(mod).__bases__[0]
            for name, v in values.items():
                # one latent under several names (an LM head tied to the embedding), baked to equal
                # values: one Parameter in the copy too
                same = tied.setdefault(id(src.parametrizations[name].original), [])
                p = next((q for q in same if q.shape == v.shape and q.dtype == v.dtype and torch.equal(q, v)), None)
                if p is None:
                    p = nn.Parameter(v)
                    same.append(p)
                del v
                mod.register_parameter(name, p)
        if not keep_hooks:
            mod._forward_pre_hooks.clear()
            mod._forward_hooks.clear()
        cfg = getattr(mod, "config", None)
        if getattr(cfg, "use_cache", False) is True:
            # Hugging Face models return a key/value cache object: the graph of a compressed
            # model is a plain forward (no cache), as in evaluation and export
            cfg.use_cache = False
    return m


@torch.no_grad()
def _baked(mod: nn.Module, name: str) -> torch.Tensor:
    """The parametrized value of ``mod.<name>`` on the CPU, owning its memory: the chain's fresh
    output as it is, a copy when it is one of the chain's own tensors (an identity chain)."""
    t = getattr(mod, name).detach()
    chain = mod.parametrizations[name]
    held = {x.untyped_storage().data_ptr() for x in [*chain.parameters(), *chain.buffers()]}
    if t.device.type == "cpu" and t.untyped_storage().data_ptr() not in held:
        return t
    return t.cpu().clone()


def _state_info(m: nn.Module) -> tuple[set[str], set[str]]:
    state = set(m.state_dict().keys())
    params = {n for n, _ in m.named_parameters(remove_duplicate=False)}
    return state, params


def _resolve_attr(root: nn.Module, path: str):
    obj: Any = root
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def _nodes_json(graph: fx.Graph, fix_placeholders=None) -> list[dict]:
    names = {n: n.name for n in graph.nodes}
    node_name = lambda a: names.get(a) if isinstance(a, fx.Node) else None  # noqa: E731
    out = []
    for n in graph.nodes:
        entry: dict[str, Any] = {"name": n.name, "op": n.op}
        if n.op == "call_function":
            t = function_name(n.target)
            if t is None:
                tn = getattr(n.target, "__module__", "") + "." + getattr(n.target, "__name__", str(n.target))
                raise GraphCaptureError(f"node {n.name!r} calls {tn.strip('.')}, which is not in the op allowlist")
            if t == "builtins.getattr" and (len(n.args) != 2 or n.args[1] not in GETATTR_NAMES):
                raise GraphCaptureError(f"node {n.name!r} reads attribute {n.args[1:]!r} (allowed: {sorted(GETATTR_NAMES)})")
            entry["target"] = t
        elif n.op == "call_method":
            if n.target not in METHODS:
                raise GraphCaptureError(f"node {n.name!r} calls tensor method {n.target!r}, which is not in the allowlist")
            entry["target"] = n.target
        elif n.op in ("call_module", "get_attr", "placeholder"):
            entry["target"] = str(n.target)
        try:
            entry["args"] = encode_arg(list(n.args), node_name)
            entry["kwargs"] = encode_arg(dict(n.kwargs), node_name)["dict"]
        except EncodeError as e:
            raise GraphCaptureError(f"node {n.name!r}: cannot record {e}") from None
        out.append(entry)
    return out


def _forward_defaults(model: nn.Module) -> tuple[list[str], dict[str, Any]]:
    """Names of forward's parameters without defaults, and those with defaults (name -> default)."""
    sig = inspect.signature(model.forward)
    required, defaults = [], {}
    for p in sig.parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.default is inspect.Parameter.empty:
            required.append(p.name)
        else:
            defaults[p.name] = p.default
    return required, defaults


def _example_spec(example_inputs) -> list[dict]:
    return [{"shape": list(x.shape), "dtype": str(x.dtype).removeprefix("torch.")} for x in example_inputs]


def capture_fx(model: nn.Module, m: nn.Module | None = None) -> tuple[dict, dict[str, torch.Tensor]]:
    """fx-level capture of a clean copy of ``model`` (see the module docstring); ``m``: that
    copy (:func:`clean_copy` without hooks), if already made."""
    m = clean_copy(model) if m is None else m
    _, defaults = _forward_defaults(m)
    concrete = {k: v for k, v in defaults.items() if v is None or isinstance(v, (bool, int, float, str))}
    try:
        graph = _Tracer().trace(m, concrete_args=concrete or None)
    except Exception as e:
        raise GraphCaptureError(f"torch.fx cannot trace {type(model).__name__}: {type(e).__name__}: {str(e).splitlines()[0][:200]}") from None
    state, params = _state_info(m)
    modules = {}
    extra: dict[str, torch.Tensor] = {}
    for n in graph.nodes:
        if n.op == "call_module":
            modules[n.target] = module_spec(m.get_submodule(n.target))
        elif n.op == "get_attr":
            obj = _resolve_attr(m, n.target)
            if not isinstance(obj, torch.Tensor):
                raise GraphCaptureError(f"node {n.name!r} reads {n.target!r}, a {type(obj).__name__}, not a tensor")
            if n.target not in state:
                extra[n.target] = obj.detach().clone()
    nodes = _nodes_json(graph)
    g = {"version": GRAPH_VERSION, "opset": OPSET_VERSION, "level": "fx", "nodes": nodes, "modules": modules,
         "params": sorted(params & state), "extra": sorted(extra)}
    return g, extra


def _out_structure(spec, leaves: list) -> Any:
    """Rebuild the nested output (tuple/list/dict/None of leaves) from a pytree spec."""
    import torch.utils._pytree as pytree

    it = iter(leaves)

    def walk(s):
        if s.is_leaf():
            return next(it)
        kids = [walk(c) for c in (s.children() if hasattr(s, 'children') else s.children_specs)]
        t = s.type
        if t is tuple or (isinstance(t, type) and issubclass(t, tuple) and not hasattr(t, "_fields")):
            return tuple(kids)
        if t is list:
            return kids
        if t is dict or isinstance(s.context, (list, tuple)) and all(isinstance(k, str) for k in (s.context or [])):
            keys = list(s.context)
            return dict(zip(keys, kids))
        if t is type(None):
            return None
        raise GraphCaptureError(f"output container {getattr(t, '__name__', t)} cannot be recorded")

    return walk(spec)


def capture_export(model: nn.Module, example_inputs: Sequence[torch.Tensor],
                   m: nn.Module | None = None) -> tuple[dict, dict[str, torch.Tensor]]:
    """aten-level capture through :func:`torch.export.export` with ``example_inputs`` (positional);
    ``m``: the clean copy (:func:`clean_copy` with hooks), if already made."""
    from torch.export import Dim

    m = clean_copy(model, keep_hooks=True) if m is None else m
    args = tuple(x.detach().cpu() for x in example_inputs)
    if not args or not all(isinstance(x, torch.Tensor) for x in args):
        raise GraphCaptureError("torch.export needs example inputs (tensors, positional)")
    # a batch of one would be specialized (the graph would take batch 1 only): export with two
    args = tuple(torch.cat([x, x]) if x.dim() > 0 and x.shape[0] == 1 else x for x in args)
    dyn = tuple({i: Dim.AUTO for i in range(x.dim())} for x in args)
    try:
        with torch.no_grad():
            ep = torch.export.export(m, args, dynamic_shapes=dyn, strict=False)
    except Exception as e:
        raise GraphCaptureError(f"torch.export failed on {type(model).__name__}: {type(e).__name__}: {str(e).splitlines()[0][:200]}") from None
    if any(isinstance(n.target, torch._ops.OpOverload) and n.target._schema.is_mutable
           for n in ep.graph.nodes if n.op == "call_function"):
        try:  # in-place ops (x += y, hardswish_(x)): functionalize, keeping every other op as is
            ep = ep.run_decompositions({})
        except Exception as e:
            raise GraphCaptureError(f"the in-place operators of {type(model).__name__} cannot be made "
                                    f"functional: {type(e).__name__}: {str(e).splitlines()[0][:200]}") from None
    sig = ep.graph_signature
    for o in sig.output_specs:
        if o.kind.name != "USER_OUTPUT":
            raise GraphCaptureError(f"the exported graph mutates {o.target!r} ({o.kind.name}); save a model in eval mode")
    state, params = _state_info(m)
    g = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    extra: dict[str, torch.Tensor] = {}
    specs = {s.arg.name: s for s in sig.input_specs}
    required, defaults = _forward_defaults(m)
    names_in = (required + list(defaults))[: len(args)]
    user_i = 0
    old_nodes = list(ep.graph.nodes)
    for n in old_nodes:
        if n.op != "placeholder":
            continue
        s = specs[n.name]
        kind = s.kind.name
        if kind == "USER_INPUT":
            pname = names_in[user_i] if user_i < len(names_in) else f"input_{user_i}"
            env[n] = g.placeholder(pname)
            user_i += 1
        elif kind in ("PARAMETER", "BUFFER", "CONSTANT_TENSOR"):
            target = s.target
            if kind == "CONSTANT_TENSOR" or target not in state:
                t = ep.constants[target] if kind == "CONSTANT_TENSOR" else ep.state_dict.get(target, ep.constants.get(target))
                if not isinstance(t, torch.Tensor):
                    raise GraphCaptureError(f"graph input {target!r} is a {type(t).__name__}, not a tensor")
                target = target if kind != "CONSTANT_TENSOR" else "_wz_const." + target.replace(".", "_")
                extra[target] = t.detach().clone()
            env[n] = ("get_attr", target)  # placed after the placeholders below
        else:
            raise GraphCaptureError(f"graph input {n.name!r} of kind {kind} cannot be recorded")
    # forward arguments not captured (fixed to their defaults, which must be None)
    for pname, dv in list(defaults.items())[max(0, len(args) - len(required)):]:
        if dv is not None:
            continue
        ph = g.placeholder(pname, default_value=None)
        from torch.fx._symbolic_trace import _assert_is_none

        g.call_function(_assert_is_none, (ph, f"{pname} was None when the graph was recorded"))
    for k, v in list(env.items()):
        if isinstance(v, tuple):
            env[k] = g.get_attr(v[1])
    out_node = None
    for n in old_nodes:
        if n.op == "placeholder":
            continue
        if n.op == "output":
            out_node = n
            break
        if n.op != "call_function":
            raise GraphCaptureError(f"node {n.name!r} has op {n.op!r} (control flow or submodules in the export)")
        env[n] = g.node_copy(n, lambda a: env[a])
    flat = list(out_node.args[0])
    outs = [env[a] if isinstance(a, fx.Node) else a for a in flat]
    g.output(_out_structure(ep.call_spec.out_spec, outs))
    g.eliminate_dead_code()
    nodes = _nodes_json(g)
    used_attrs = {n.target for n in g.nodes if n.op == "get_attr"}
    extra = {k: v for k, v in extra.items() if k in used_attrs}
    # the allowlisted layers whose tensors the graph reads keep their kind (methods select by it);
    # the graph itself reads their tensors (get_attr), it does not call them
    modules = {}
    for mname, mod in m.named_modules():
        if mname and module_kind(mod) is not None and any(t.startswith(mname + ".") for t in used_attrs | state):
            modules[mname] = module_spec(mod)
    out = {"version": GRAPH_VERSION, "opset": OPSET_VERSION, "level": "aten", "nodes": nodes, "modules": modules,
           "params": sorted(params & state), "extra": sorted(extra)}
    return out, extra


def capture(model: nn.Module, example_inputs: Sequence[torch.Tensor] | None = None, *,
            check: bool = True) -> tuple[dict, dict[str, torch.Tensor]]:
    """Record ``model``'s graph: fx first, then torch.export when example inputs are given.

    With ``example_inputs`` and ``check``, the rebuilt module is run on them and must give the
    model's outputs (``torch.allclose`` at rtol 1e-4, atol 1e-5), else the graph is refused.
    """
    reasons = []
    for level in ("fx", "aten"):
        m = None
        try:
            if level == "fx":
                m = clean_copy(model)
                g, extra = capture_fx(model, m)
            else:
                if example_inputs is None:
                    raise GraphCaptureError("no example inputs to try torch.export (pass example_inputs=)")
                m = clean_copy(model, keep_hooks=True)   # an aten graph holds the hooks' operators
                g, extra = capture_export(model, example_inputs, m)
            if example_inputs is not None:
                g["example_inputs"] = _example_spec(example_inputs)
                if check:
                    _check(model, g, extra, example_inputs, m)
            return g, extra
        except GraphCaptureError as e:
            reasons.append(f"{level}: {e}")
        finally:
            # one clean copy alive at a time: a failed trace's traceback and the export's graphs
            # hold it through reference cycles, which only the cycle collector frees
            del m
            gc.collect()
    raise GraphCaptureError("; ".join(reasons))


def _flatten_out(y) -> list[torch.Tensor]:
    if isinstance(y, torch.Tensor):
        return [y]
    if isinstance(y, (tuple, list)):
        return [t for v in y for t in _flatten_out(v)]
    if isinstance(y, dict):
        return [t for v in y.values() for t in _flatten_out(v)]
    if hasattr(y, "to_tuple"):
        return _flatten_out(y.to_tuple())
    return []


@torch.no_grad()
def _check(model: nn.Module, g: dict, extra: dict, example_inputs, m: nn.Module | None = None) -> None:
    """Run the rebuilt graph and ``m`` (the clean copy the graph was captured from) on the
    example inputs; the outputs must agree. The rebuilt module is built on the meta device and
    given the copy's tensors (``assign``): no second copy of the weights."""
    from .rebuild import rebuild

    if m is None:
        m = clean_copy(model, keep_hooks=g["level"] == "aten")  # an aten graph holds the hooks' operators
    state = m.state_dict()
    shapes = {k: (tuple(v.shape), v.dtype) for k, v in state.items()}
    try:
        with torch.device("meta"):
            rebuilt = rebuild(g, shapes, extra)
        rebuilt.load_state_dict(state, assign=True)
        if any(t.is_meta for t in [*rebuilt.parameters(), *rebuilt.buffers()]):  # a tensor outside the state
            rebuilt = rebuild(g, shapes, extra)
            rebuilt.load_state_dict(state)
        rebuilt.eval()
        # fresh copies of the inputs for each run: a model may change its input in place
        y_ref = _flatten_out(m(*(x.clone() for x in example_inputs)))
        y = _flatten_out(rebuilt(*(x.clone() for x in example_inputs)))
    except Exception as e:
        raise GraphCaptureError(f"the recorded graph does not run: {type(e).__name__}: {str(e)[:200]}") from None
    if len(y) != len(y_ref) or not all(a.shape == b.shape and torch.allclose(a.float(), b.float(), rtol=1e-4, atol=1e-5)
                                       for a, b in zip(y, y_ref)):
        raise GraphCaptureError("the recorded graph gives other outputs than the model on the example inputs")
