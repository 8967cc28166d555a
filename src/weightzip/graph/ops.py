"""The allowlist of what a graph in a ``.wz`` may name, and the JSON encoding of node arguments.

Nothing is imported or called by a name read from a file unless the name is in one of the
tables below (``FUNCTIONS``, ``METHODS``, ``MODULES``, ``ATEN_OPS``); a file naming anything
else is refused with :class:`~weightzip.errors.WeightzipFormatError` naming it. The tables are
versioned by :data:`OPSET_VERSION` (docs/file-format.md, section 7): a name is only ever added,
never removed or given a new meaning, so a file written by an older weightzip keeps loading.
"""
from __future__ import annotations

import math
import operator
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import WeightzipFormatError
from .modules import GraphOutput

OPSET_VERSION = 2  # 2: pads, in-place operator.i*, more aten pooling / activations, inplace args
GRAPH_VERSION = 1

# ------------------------------------------------------------------------------------------
# call_function targets of torch.fx graphs ("fx" level): "torch.<name>", "F.<name>",
# "operator.<name>", "builtins.getattr"

_TORCH_FUNCS = """
abs add addmm arange argmax argmin baddbmm bmm cat chunk clamp clip cos cumsum div einsum eq exp
flatten floor full full_like gather ge gelu gt index_select layer_norm le log log_softmax lt
masked_fill matmul max maximum mean min minimum mm mul ne neg ones ones_like permute pow relu
reshape rsqrt sigmoid sin softmax split sqrt square squeeze stack sub sum tanh tensor_split
transpose tril triu unsqueeze where zeros zeros_like sign erf numel narrow roll repeat_interleave
conv1d conv2d batch_norm dropout embedding t topk sort std var logsumexp outer mv dot round
""".split()

_F_FUNCS = """
adaptive_avg_pool1d adaptive_avg_pool2d adaptive_max_pool2d avg_pool1d avg_pool2d batch_norm conv1d
conv2d conv_transpose2d dropout elu embedding gelu glu group_norm hardsigmoid hardswish hardtanh
instance_norm layer_norm leaky_relu linear log_softmax max_pool1d max_pool2d mish normalize pad
relu relu6 scaled_dot_product_attention selu sigmoid silu softmax softplus tanh interpolate
pixel_shuffle one_hot cross_entropy
""".split()

_OPERATOR_FUNCS = """
add sub mul truediv floordiv mod pow neg pos matmul getitem eq ne lt le gt ge and_ or_ not_ invert
iadd isub imul itruediv
""".split()

# getattr(x, name) on a proxy: only these attribute names
GETATTR_NAMES = frozenset({"shape", "dtype", "device", "ndim", "T", "mT", "is_cuda"})


def _build_functions() -> dict[str, Callable]:
    table: dict[str, Callable] = {}
    for n in _TORCH_FUNCS:
        if hasattr(torch, n):
            table[f"torch.{n}"] = getattr(torch, n)
    for n in _F_FUNCS:
        if hasattr(F, n):
            table[f"F.{n}"] = getattr(F, n)
    for n in _OPERATOR_FUNCS:
        table[f"operator.{n}"] = getattr(operator, n)
    table["builtins.getattr"] = getattr
    table["weightzip.output"] = GraphOutput  # a dict with attribute access (opset 2)
    table["torch._assert"] = torch._assert
    from torch.fx._symbolic_trace import _assert_is_none

    table["fx._assert_is_none"] = _assert_is_none
    for n in ("sym_max", "sym_min", "sym_not", "sym_float", "sym_int", "sym_ite", "sym_sum"):
        if hasattr(torch, n):
            table[f"torch.{n}"] = getattr(torch, n)
    return table


FUNCTIONS: dict[str, Callable] = _build_functions()
_FUNCTION_NAMES: dict[int, str] = {}
for _name, _fn in FUNCTIONS.items():
    _FUNCTION_NAMES.setdefault(id(_fn), _name)  # torch.relu and F.relu may be one object: first wins

# call_method names (methods of torch.Tensor)
METHODS = frozenset("""
abs add add_ argmax bool chunk clamp contiguous cos cumsum detach dim div eq exp expand expand_as
flatten float half int long gather ge gelu gt le log log_softmax lt masked_fill matmul max mean min
mul ne neg numel permute pow relu repeat reshape rsqrt sigmoid sin size softmax split sqrt square
squeeze std sub sum t tanh to transpose tril triu type_as unbind unflatten unsqueeze var view view_as
where new_zeros new_ones new_full new_empty masked_fill_ mul_ clone sign norm sort topk argsort round
""".split())

# ------------------------------------------------------------------------------------------
# call_module kinds: torch.nn classes and the constructor arguments read from an instance


def _conv_args(m) -> dict:
    return {"in_channels": m.in_channels, "out_channels": m.out_channels, "kernel_size": list(m.kernel_size),
            "stride": list(m.stride), "padding": m.padding if isinstance(m.padding, str) else list(m.padding),
            "dilation": list(m.dilation), "groups": m.groups, "bias": m.bias is not None,
            "padding_mode": m.padding_mode}


def _convt_args(m) -> dict:
    d = _conv_args(m)
    d["output_padding"] = list(m.output_padding)
    return d


def _bn_args(m) -> dict:
    return {"num_features": m.num_features, "eps": m.eps, "momentum": m.momentum, "affine": m.affine,
            "track_running_stats": m.track_running_stats}


def _pool_args(m) -> dict:
    d = {"kernel_size": m.kernel_size, "stride": m.stride, "padding": m.padding, "ceil_mode": m.ceil_mode}
    if hasattr(m, "dilation"):
        d["dilation"] = m.dilation
    if hasattr(m, "count_include_pad"):
        d["count_include_pad"] = m.count_include_pad
        d["divisor_override"] = m.divisor_override
    return d


def _ln_args(m) -> dict:
    return {"normalized_shape": list(m.normalized_shape), "eps": m.eps,
            "elementwise_affine": m.elementwise_affine, "bias": getattr(m, "bias", None) is not None}


MODULES: dict[str, tuple[type, Callable[[nn.Module], dict]]] = {
    "Linear": (nn.Linear, lambda m: {"in_features": m.in_features, "out_features": m.out_features,
                                     "bias": m.bias is not None}),
    "Conv1d": (nn.Conv1d, _conv_args),
    "Conv2d": (nn.Conv2d, _conv_args),
    "Conv3d": (nn.Conv3d, _conv_args),
    "ConvTranspose1d": (nn.ConvTranspose1d, _convt_args),
    "ConvTranspose2d": (nn.ConvTranspose2d, _convt_args),
    "BatchNorm1d": (nn.BatchNorm1d, _bn_args),
    "BatchNorm2d": (nn.BatchNorm2d, _bn_args),
    "BatchNorm3d": (nn.BatchNorm3d, _bn_args),
    "LayerNorm": (nn.LayerNorm, _ln_args),
    "GroupNorm": (nn.GroupNorm, lambda m: {"num_groups": m.num_groups, "num_channels": m.num_channels,
                                           "eps": m.eps, "affine": m.affine}),
    "Embedding": (nn.Embedding, lambda m: {"num_embeddings": m.num_embeddings, "embedding_dim": m.embedding_dim,
                                           "padding_idx": m.padding_idx, "max_norm": m.max_norm,
                                           "norm_type": m.norm_type, "scale_grad_by_freq": m.scale_grad_by_freq,
                                           "sparse": m.sparse}),
    "Dropout": (nn.Dropout, lambda m: {"p": m.p}),
    "Dropout1d": (nn.Dropout1d, lambda m: {"p": m.p}),
    "Dropout2d": (nn.Dropout2d, lambda m: {"p": m.p}),
    "Identity": (nn.Identity, lambda m: {}),
    "ReLU": (nn.ReLU, lambda m: {}),
    "ReLU6": (nn.ReLU6, lambda m: {}),
    "GELU": (nn.GELU, lambda m: {"approximate": m.approximate}),
    "SiLU": (nn.SiLU, lambda m: {}),
    "Mish": (nn.Mish, lambda m: {}),
    "Tanh": (nn.Tanh, lambda m: {}),
    "Sigmoid": (nn.Sigmoid, lambda m: {}),
    "Hardswish": (nn.Hardswish, lambda m: {}),
    "Hardsigmoid": (nn.Hardsigmoid, lambda m: {}),
    "Hardtanh": (nn.Hardtanh, lambda m: {"min_val": m.min_val, "max_val": m.max_val}),
    "ELU": (nn.ELU, lambda m: {"alpha": m.alpha}),
    "LeakyReLU": (nn.LeakyReLU, lambda m: {"negative_slope": m.negative_slope}),
    "PReLU": (nn.PReLU, lambda m: {"num_parameters": m.num_parameters}),
    "Softmax": (nn.Softmax, lambda m: {"dim": m.dim}),
    "LogSoftmax": (nn.LogSoftmax, lambda m: {"dim": m.dim}),
    "Flatten": (nn.Flatten, lambda m: {"start_dim": m.start_dim, "end_dim": m.end_dim}),
    "Unflatten": (nn.Unflatten, lambda m: {"dim": m.dim, "unflattened_size": list(m.unflattened_size)}),
    "MaxPool1d": (nn.MaxPool1d, _pool_args),
    "MaxPool2d": (nn.MaxPool2d, _pool_args),
    "AvgPool1d": (nn.AvgPool1d, _pool_args),
    "AvgPool2d": (nn.AvgPool2d, _pool_args),
    "AdaptiveAvgPool1d": (nn.AdaptiveAvgPool1d, lambda m: {"output_size": m.output_size}),
    "AdaptiveAvgPool2d": (nn.AdaptiveAvgPool2d, lambda m: {"output_size": m.output_size}),
    "AdaptiveMaxPool2d": (nn.AdaptiveMaxPool2d, lambda m: {"output_size": m.output_size}),
}

def _with_inplace(get_args: Callable[[nn.Module], dict]) -> Callable[[nn.Module], dict]:
    """Record ``inplace=True`` where a module has it: an in-place activation also changes its
    input, which other consumers of that value then see (the graph must compute the same)."""
    def args(m):
        d = get_args(m)
        if getattr(m, "inplace", False) is True:
            d["inplace"] = True
        return d
    return args


for _kind in ("ReLU", "ReLU6", "SiLU", "Mish", "Hardswish", "Hardsigmoid", "Hardtanh", "ELU", "LeakyReLU",
              "Dropout", "Dropout1d", "Dropout2d"):
    MODULES[_kind] = (MODULES[_kind][0], _with_inplace(MODULES[_kind][1]))

# Modules whose JSON constructor arguments must be turned back into tuples
_TUPLE_ARGS = {"kernel_size", "stride", "padding", "dilation", "output_padding", "normalized_shape",
               "unflattened_size", "output_size"}


from .modules import Conv1D, is_gpt_conv1d  # noqa: E402

MODULES["Conv1D"] = (Conv1D, lambda m: {"nf": m.nf, "nx": m.nx})


def module_kind(m: nn.Module) -> str | None:
    """The allowlisted kind of ``m`` (seen through parametrize's ``Parametrized<Name>``), or None."""
    if is_gpt_conv1d(m):
        return "Conv1D"
    for cls in type(m).__mro__:
        for kind, (k, _) in MODULES.items():
            if cls is k:
                return kind
        if "forward" in vars(cls):
            # a subclass with its own forward (timm's BatchNormAct2d: batch norm + activation)
            # computes something else than its base: it is traced through, never recorded as one
            return None
    return None


def module_spec(m: nn.Module) -> dict:
    kind = module_kind(m)
    assert kind is not None
    return {"kind": kind, "args": MODULES[kind][1](m)}


def build_module(spec: Any, where: str) -> nn.Module:
    """Construct an allowlisted module from ``{"kind", "args"}`` (parameters uninitialized values)."""
    if not isinstance(spec, dict) or not isinstance(spec.get("kind"), str) or not isinstance(spec.get("args", {}), dict):
        raise WeightzipFormatError(f"graph: module {where!r}: entry must be {{'kind': str, 'args': object}}")
    kind = spec["kind"]
    if kind not in MODULES:
        raise WeightzipFormatError(f"graph: module {where!r} has kind {kind!r}, which is not in the allowlist "
                                   f"(opset {OPSET_VERSION}; allowed: {', '.join(sorted(MODULES))})")
    args = {}
    for k, v in spec.get("args", {}).items():
        if not isinstance(k, str) or not _plain(v):
            raise WeightzipFormatError(f"graph: module {where!r} ({kind}): argument {k!r} is not a plain value")
        args[k] = tuple(v) if k in _TUPLE_ARGS and isinstance(v, list) else v
    cls = MODULES[kind][0]
    try:
        with torch.device("meta"):
            mod = cls(**args)
        return mod
    except Exception as e:  # wrong argument names / values
        raise WeightzipFormatError(f"graph: module {where!r} ({kind}) cannot be built from {args}: {e}") from None


def _plain(v) -> bool:
    if v is None or isinstance(v, (bool, int, float, str)):
        return True
    if isinstance(v, list):
        return all(_plain(x) for x in v)
    return False


# ------------------------------------------------------------------------------------------
# torch.export ("aten" level) graphs: aten operators by packet name; any overload of an
# allowlisted packet. Ops that read files, allocate from storages or touch global state are absent.

ATEN_OPS = frozenset("""
abs add addmm alias amax amin any all arange argmax argmin avg_pool2d baddbmm bitwise_and
bitwise_not bitwise_or bmm cat ceil clamp clamp_min clamp_max clone constant_pad_nd contiguous conv1d
conv2d convolution copy cos cumsum detach diff div dropout embedding empty_like eq erf exp expand
expand_as flatten floor floor_divide full full_like gather ge gelu gt hardtanh index index_select
layer_norm le leaky_relu lift_fresh_copy linear log log_softmax logical_and logical_not logical_or lt
masked_fill matmul max max_pool2d maximum mean min minimum mm mul native_layer_norm ne neg new_ones
new_zeros new_full new_empty ones ones_like permute pow reciprocal relu remainder repeat reshape rsqrt
scalar_tensor scaled_dot_product_attention select sigmoid silu sin slice softmax split split_with_sizes
sqrt squeeze stack sub sum sym_size sym_numel sym_stride t tanh to transpose tril triu type_as unbind
unsqueeze view where zeros zeros_like _assert_tensor_metadata _assert_scalar sym_constrain_range_for_size
__and__ __or__ __invert__ _to_copy _softmax _log_softmax batch_norm _native_batch_norm_legit_no_training
adaptive_avg_pool2d _adaptive_avg_pool2d mean_dim var std rsub hardswish hardsigmoid mish elu
group_norm instance_norm glu _unsafe_view unflatten chunk narrow tensor_split fill round
pad constant_pad_nd reflection_pad2d replication_pad2d adaptive_max_pool2d max_pool2d_with_indices
avg_pool1d max_pool1d conv_transpose2d softplus square addcmul slice_scatter select_scatter index_put
""".split())


def aten_op(name: str, where: str = "graph"):
    """``"aten.linear.default"`` -> ``torch.ops.aten.linear.default`` if the packet is allowlisted."""
    parts = name.split(".")
    if len(parts) != 3 or parts[0] != "aten" or parts[1] not in ATEN_OPS:
        raise WeightzipFormatError(f"{where}: operator {name!r} is not in the allowlist (opset {OPSET_VERSION})")
    packet = getattr(torch.ops.aten, parts[1], None)
    if packet is None or parts[2] not in packet.overloads():
        raise WeightzipFormatError(f"{where}: operator {name!r} does not exist in this torch version")
    return getattr(packet, parts[2])


def function_name(fn) -> str | None:
    """The allowlist name of a call_function target (fx or aten level), or None."""
    if isinstance(fn, torch._ops.OpOverload):
        name = f"{fn.namespace}.{fn._opname}.{fn._overloadname}"
        return name if fn.namespace == "aten" and fn._opname in ATEN_OPS else None
    return _FUNCTION_NAMES.get(id(fn))


def resolve_function(name: Any, where: str):
    if not isinstance(name, str):
        raise WeightzipFormatError(f"{where}: call_function target must be a string")
    if name.startswith("aten."):
        return aten_op(name, where)
    if name in FUNCTIONS:
        return FUNCTIONS[name]
    raise WeightzipFormatError(f"{where}: function {name!r} is not in the allowlist (opset {OPSET_VERSION})")


# ------------------------------------------------------------------------------------------
# argument encoding: JSON values; node references and non-JSON constants are tagged objects

_DTYPES = {str(d).removeprefix("torch."): d for d in (
    torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int8, torch.uint8, torch.int16,
    torch.int32, torch.int64, torch.bool, torch.complex64)}
_LAYOUTS = {"strided": torch.strided}
_MEMFMT = {"contiguous_format": torch.contiguous_format, "preserve_format": torch.preserve_format,
           "channels_last": torch.channels_last}


class EncodeError(Exception):
    """An argument value that the graph format cannot hold (the graph is then not recorded)."""


def encode_arg(a: Any, node_name: Callable[[Any], str | None]) -> Any:
    """JSON form of an fx node argument; ``node_name(x)`` returns the name if ``x`` is a Node."""
    n = node_name(a)
    if n is not None:
        return {"node": n}
    if a is None or isinstance(a, (bool, str)):
        return a
    if isinstance(a, int):
        return a
    if isinstance(a, float):
        return a if math.isfinite(a) else {"float": repr(a)}
    if isinstance(a, torch.Size):
        return {"tuple": [encode_arg(x, node_name) for x in a]}
    if isinstance(a, tuple):
        return {"tuple": [encode_arg(x, node_name) for x in a]}
    if isinstance(a, list):
        return [encode_arg(x, node_name) for x in a]
    if isinstance(a, dict):
        if not all(isinstance(k, str) for k in a):
            raise EncodeError(f"dict argument with non-string keys {list(a)[:3]}")
        return {"dict": {k: encode_arg(v, node_name) for k, v in a.items()}}
    if isinstance(a, slice):
        return {"slice": [encode_arg(a.start, node_name), encode_arg(a.stop, node_name), encode_arg(a.step, node_name)]}
    if a is Ellipsis:
        return {"ellipsis": True}
    if isinstance(a, torch.dtype):
        key = str(a).removeprefix("torch.")
        if key not in _DTYPES:
            raise EncodeError(f"dtype {a}")
        return {"dtype": key}
    if isinstance(a, torch.device):
        return {"device": a.type}
    if isinstance(a, torch.layout):
        return {"layout": str(a).removeprefix("torch.")}
    if isinstance(a, torch.memory_format):
        return {"memory_format": str(a).removeprefix("torch.")}
    raise EncodeError(f"argument of type {type(a).__name__} ({str(a)[:60]})")


def decode_arg(a: Any, nodes: dict[str, Any], where: str) -> Any:
    """Inverse of :func:`encode_arg`; ``nodes`` maps names to the rebuilt fx nodes."""
    if a is None or isinstance(a, (bool, int, float, str)):
        return a
    if isinstance(a, list):
        return [decode_arg(x, nodes, where) for x in a]
    if not isinstance(a, dict) or len(a) != 1:
        raise WeightzipFormatError(f"{where}: bad argument encoding {str(a)[:80]}")
    (tag, v), = a.items()
    if tag == "node":
        if v not in nodes:
            raise WeightzipFormatError(f"{where}: refers to node {v!r} before it is defined")
        return nodes[v]
    if tag == "tuple" and isinstance(v, list):
        return tuple(decode_arg(x, nodes, where) for x in v)
    if tag == "dict" and isinstance(v, dict):
        return {k: decode_arg(x, nodes, where) for k, x in v.items()}
    if tag == "slice" and isinstance(v, list) and len(v) == 3:
        return slice(*(decode_arg(x, nodes, where) for x in v))
    if tag == "ellipsis":
        return Ellipsis
    if tag == "float" and v in ("inf", "-inf", "nan"):
        return float(v)
    if tag == "dtype" and v in _DTYPES:
        return _DTYPES[v]
    if tag == "device" and v in ("cpu", "cuda", "meta"):
        return torch.device("cpu") if v != "meta" else torch.device("meta")
    if tag == "layout" and v in _LAYOUTS:
        return _LAYOUTS[v]
    if tag == "memory_format" and v in _MEMFMT:
        return _MEMFMT[v]
    raise WeightzipFormatError(f"{where}: unknown argument tag {tag!r} (value {str(v)[:60]})")
