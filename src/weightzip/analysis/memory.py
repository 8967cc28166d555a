"""Memory model of a (block-sparse, low-bit) network: weight memory + activation memory.

These are MEMORY-MODEL figures of an accelerator that stores the weights on chip and keeps
activations in buffers - not the size of a ``.wz`` file (that is :mod:`weightzip.analysis.size`).
All figures are in bits::

    W_mem = sum_l kept_l * k_w,l  +  sum_l R_l C_l  +  32 * (biases, BN and every other float)
            (kept weights x bits)    (block-mask bits)   (fp32 bias / BN)

BatchNorm is counted folded (``fold_bn=True``, the default): two fp32 numbers per channel
(scale, shift), the bias of the layer right before it absorbed into the shift.
    A_mem = sum_i n_i * k_a,i        over the activation buffers a_0 .. a_L
    peak  = max_i (n_i k_a,i + n_{i+1} k_a,i+1)   (ping-pong buffer of two consecutive layers)
    total = W_mem + A_mem

A *weight layer* is any module with a floating ``weight`` of >= 2 dims (Linear, Conv*).
``kept_l`` is the number of weights inside kept blocks when the layer carries a block mask
(a ``block_mask`` storage hint, see :mod:`weightzip.methods.structured_qat`; ``block`` applies
to the 2-D view ``[out, numel / out]`` as in the codec), else all of its
weights: without a block mask a layer is stored dense, whatever its zeros. ``R_l C_l`` is the
number of blocks (one bit each).

Activation buffers (counted for ONE example with a forward pass and hooks): ``a_i`` for
``i < L`` is the INPUT of the ``i``-th weight layer in execution order (so pooling between two
layers is already applied), ``a_L`` the output of the last one. Bits: ``a_0`` (the data) at
``input_bits`` (default 8: raw pixels), ``a_L`` (the logits) at ``output_bits`` (default 32),
the others at the bits of the activation quantizer on that layer's input (from
``model.wz_runtime["activation_quant"]``, as written by
:func:`weightzip.core.parametrize.install_activation_quant`), else 32. A layer called several
times counts once (its first call).

Weight bits per layer, in order of precedence: the ``w_bits`` argument (an int for every
layer, or a dict keyed by module name), the ``bits`` of the layer's storage hint (from the
model's parametrizations, or ``hints`` e.g. read from a ``.wz`` manifest), else the number of
distinct non-zero values ``n``: ``ceil(log2 n)`` bits when ``n <= 256``, else 32.

Example::

    rep = memory_report(model, (1, 28, 28))
    rep["weight_memory_bits"], rep["activation_memory_bits"], rep["peak_activation_memory_bits"]
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn

from ..core import parametrize

__all__ = ["weight_layers", "infer_weight_bits", "weight_memory", "activation_memory", "memory_report",
           "hints_from_formats", "default_input_shape", "memory_report_from_file"]

FLOAT_BITS = 32


def weight_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of every module with a floating ``weight`` of >= 2 dims, in module order."""
    out = []
    for name, mod in model.named_modules():
        w = getattr(mod, "weight", None) if _has_weight(mod) else None
        if isinstance(w, Tensor) and w.is_floating_point() and w.dim() >= 2:
            out.append((name, mod))
    return out


def _has_weight(mod: nn.Module) -> bool:
    from torch.nn.utils import parametrize as P

    return "weight" in mod._parameters or "weight" in mod._buffers or (
        P.is_parametrized(mod, "weight"))


def infer_weight_bits(w: Tensor) -> int:
    """Bits of a baked weight from its distinct non-zero values ``n``: ``ceil(log2 n)`` (>= 1)
    when ``n <= 256``, else 32 (an unquantized float tensor)."""
    nz = w.detach().flatten()
    nz = nz[nz != 0]
    n = int(torch.unique(nz).numel())
    if n <= 256:
        return max(1, math.ceil(math.log2(max(n, 1))))
    return FLOAT_BITS


def _lookup(spec: int | Mapping[str, int] | None, name: str) -> int | None:
    if spec is None:
        return None
    if isinstance(spec, Mapping):
        for key in (name, f"{name}.weight" if name else "weight"):
            if key in spec:
                return int(spec[key])
        return None
    return int(spec)


def _bn_following(model: nn.Module, weight_names: set[str]) -> dict[str, str | None]:
    """``{bn_name: weight layer it directly follows (or None)}`` in module registration order."""
    from torch.nn.modules.batchnorm import _BatchNorm

    seq = []
    for name, mod in model.named_modules():
        if ".parametrizations" in f".{name}":
            continue
        if name in weight_names or isinstance(mod, _BatchNorm) or not any(True for _ in mod.children()):
            seq.append((name, mod))
    out = {}
    for i, (name, mod) in enumerate(seq):
        if isinstance(mod, _BatchNorm):
            prev = seq[i - 1][0] if i > 0 else None
            out[name] = prev if prev in weight_names else None
    return out


def weight_memory(model: nn.Module, w_bits: int | Mapping[str, int] | None = None,
                  hints: Mapping[str, Mapping[str, Any]] | None = None, *,
                  fold_bn: bool = True) -> dict[str, Any]:
    """The weight half of the model: per-layer records and totals (bits); see module docstring.

    ``fold_bn`` (default): at inference a BatchNorm is a per-channel affine map, stored as two
    fp32 numbers per channel (scale, shift), and the bias of the layer right before it folds
    into that shift; without folding, every float tensor (bias, BN weight, bias, running mean
    and variance) counts. ``fp32_weight_memory_bits`` is the same model with every weight
    dense at 32 bits (same bias/BN rule), ``weight_memory_reduction`` the ratio of the two
    (a memory-model figure, not a file ratio).
    """
    state = parametrize.effective_state(model)
    all_hints = dict(parametrize.storage_hints(model))
    all_hints.update(hints or {})
    wl = weight_layers(model)
    bns = _bn_following(model, {n for n, _ in wl}) if fold_bn else {}
    absorbed = {prev for prev in bns.values() if prev is not None}
    layers, counted = [], set()
    for name, mod in wl:
        key = f"{name}.weight" if name else "weight"
        w = state[key]
        hint = all_hints.get(key, {}) or {}
        bits = _lookup(w_bits, name)
        source = "given"
        if bits is None and hint.get("bits") is not None:
            bits, source = int(hint["bits"]), "hint"
        if bits is None:
            bits, source = infer_weight_bits(w), "values"
        bm = hint.get("block_mask")
        if bm is not None:
            bm = torch.as_tensor(bm)
            mask = hint.get("mask")
            if mask is None:  # block bitmap of the 2-D view [out, numel/out] (codec convention)
                from ..primitives.blocks import expand_block_mask
                mask = expand_block_mask(bm, (w.shape[0], w.numel() // max(w.shape[0], 1)), hint["block"])
            kept = int(torch.as_tensor(mask).bool().sum())
            mask_bits = int(bm.numel())
        else:
            kept, mask_bits = w.numel(), 0
        bias_key = f"{name}.bias" if name else "bias"
        bias = state.get(bias_key)
        bias_n = int(bias.numel()) if isinstance(bias, Tensor) and bias.is_floating_point() else 0
        if name in absorbed:
            bias_n = 0                                   # folded into the next BN's shift
        counted.update({key, bias_key})
        layers.append({
            "name": name, "type": type(mod).__name__.replace("Parametrized", ""),
            "shape": list(w.shape), "weights": int(w.numel()), "kept_weights": kept,
            "w_bits": bits, "w_bits_source": source,
            "block": list(hint["block"]) if bm is not None else None,
            "block_mask_bits": mask_bits, "bias_params": bias_n,
            "weight_memory_bits": kept * bits + mask_bits + FLOAT_BITS * bias_n,
        })
    other: dict[str, int] = {}
    modules = dict(model.named_modules())
    for bn in bns:                                       # folded BN: scale + shift per channel
        mod = modules[bn]
        prefix = f"{bn}." if bn else ""
        counted.update(prefix + k for k, _ in list(mod.named_parameters(recurse=False)) +
                       list(mod.named_buffers(recurse=False)))
        other[f"{prefix}(scale, shift)"] = 2 * int(mod.num_features)
    other.update({k: int(t.numel()) for k, t in state.items()
                  if k not in counted and t.is_floating_point()})
    other_n = sum(other.values())
    kept_bits = sum(L["kept_weights"] * L["w_bits"] for L in layers)
    mask_bits = sum(L["block_mask_bits"] for L in layers)
    float_bits = FLOAT_BITS * (sum(L["bias_params"] for L in layers) + other_n)
    fp32 = FLOAT_BITS * sum(L["weights"] for L in layers) + float_bits
    total = kept_bits + mask_bits + float_bits
    return {
        "layers": layers,
        "kept_weight_bits": kept_bits,
        "block_mask_bits": mask_bits,
        "float_param_bits": float_bits,
        "other_float_params": other,
        "fold_bn": fold_bn,
        "weight_memory_bits": total,
        "fp32_weight_memory_bits": fp32,
        "weight_memory_reduction": fp32 / total if total else float("nan"),
    }


def _activation_bits_from_model(model: nn.Module) -> dict[str, int]:
    spec = (getattr(model, "wz_runtime", None) or {}).get("activation_quant", []) or []
    return {str(item["module"]): int(item["bits"]) for item in spec}


@torch.no_grad()
def activation_memory(model: nn.Module, input_shape: Sequence[int] | None = None, *,
                      example: Tensor | None = None, a_bits: int | Mapping[str, int] | None = None,
                      input_bits: int = 8, output_bits: int = FLOAT_BITS) -> dict[str, Any]:
    """Activation buffers ``a_0 .. a_L`` of one example (see module docstring), their bits,
    ``activation_memory_bits = sum_i n_i k_i`` and the ping-pong peak ``max_i (a_i + a_{i+1})``.

    ``input_shape`` excludes the batch dimension (``(1, 28, 28)``); or pass ``example`` with a
    batch dimension of 1. ``a_bits``: an int for every layer input except the data, or a dict
    keyed by module name.
    """
    if example is None:
        if input_shape is None:
            raise ValueError("activation_memory needs input_shape (without batch dim) or example")
        example = torch.zeros((1, *[int(s) for s in input_shape]))
    if example.shape[0] != 1:
        raise ValueError(f"example must hold ONE example (batch dim 1), got shape {tuple(example.shape)}")
    layers = weight_layers(model)
    names = {id(m): n for n, m in layers}
    order: list[tuple[str, int, int]] = []   # (name, input elements, output elements)
    seen: set[str] = set()
    handles = []

    def hook(mod, args, out):
        name = names[id(mod)]
        if name in seen:
            return
        seen.add(name)
        x = args[0] if args else None
        n_in = int(x.numel()) if isinstance(x, Tensor) else 0
        o = out[0] if isinstance(out, tuple) else out
        n_out = int(o.numel()) if isinstance(o, Tensor) else 0
        order.append((name, n_in, n_out))

    for _, m in layers:
        handles.append(m.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        dev = next((p.device for p in model.parameters()), torch.device("cpu"))
        model(example.to(dev))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    quant = _activation_bits_from_model(model)
    buffers = []
    for i, (name, n_in, _) in enumerate(order):
        if i == 0:
            bits, src = (_lookup(a_bits, name) if isinstance(a_bits, Mapping) else None), "given"
            if bits is None:
                bits, src = int(input_bits), "input"
        else:
            bits, src = _lookup(a_bits, name), "given"
            if bits is None and name in quant:
                bits, src = quant[name], "activation_quant"
            if bits is None:
                bits, src = FLOAT_BITS, "float"
        buffers.append({"into": name, "elements": n_in, "bits": bits, "bits_source": src,
                        "memory_bits": n_in * bits})
    if order:
        n_out = order[-1][2]
        buffers.append({"into": "output", "elements": n_out, "bits": int(output_bits),
                        "bits_source": "output", "memory_bits": n_out * int(output_bits)})
    sizes = [b["memory_bits"] for b in buffers]
    pairs = [sizes[i] + sizes[i + 1] for i in range(len(sizes) - 1)]
    peak_i = max(range(len(pairs)), key=pairs.__getitem__) if pairs else None
    return {
        "activations": buffers,
        "activation_memory_bits": sum(sizes),
        "peak_activation_memory_bits": pairs[peak_i] if pairs else sum(sizes),
        "peak_pair": [buffers[peak_i]["into"], buffers[peak_i + 1]["into"]] if pairs else None,
        "fp32_activation_memory_bits": FLOAT_BITS * sum(b["elements"] for b in buffers),
    }


def memory_report(model: nn.Module, input_shape: Sequence[int] | None = None,
                  w_bits: int | Mapping[str, int] | None = None,
                  a_bits: int | Mapping[str, int] | None = None, *,
                  hints: Mapping[str, Mapping[str, Any]] | None = None, example: Tensor | None = None,
                  input_bits: int = 8, output_bits: int = FLOAT_BITS, fold_bn: bool = True) -> dict[str, Any]:
    """Weight memory, activation memory, ping-pong peak and total, in bits (module docstring).

    Returns the keys of :func:`weight_memory` (``weight_memory_bits``, ``kept_weight_bits``,
    ``block_mask_bits``, ``float_param_bits``, ``layers`` ...) and, when ``input_shape`` or
    ``example`` is given, of :func:`activation_memory` plus
    ``total_memory_bits = weight_memory_bits + activation_memory_bits``. Without an input the
    activation keys are ``None``.
    """
    rep = weight_memory(model, w_bits, hints, fold_bn=fold_bn)
    if input_shape is None and example is None:
        rep.update({"activations": None, "activation_memory_bits": None,
                    "peak_activation_memory_bits": None, "peak_pair": None,
                    "fp32_activation_memory_bits": None, "total_memory_bits": None})
        return rep
    rep.update(activation_memory(model, input_shape, example=example, a_bits=a_bits,
                                 input_bits=input_bits, output_bits=output_bits))
    rep["total_memory_bits"] = rep["weight_memory_bits"] + rep["activation_memory_bits"]
    return rep


# ---------------------------------------------------------------------------------------------
# From a .wz file


def hints_from_formats(formats: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Storage facts the memory model needs, read from codec Formats (``container.read``):
    ``{"block", "block_mask"}`` for block layouts and ``bits`` of codebook (``ceil(log2 K)``
    for K stored levels) and uniform formats."""
    from ..codec import decode_parts

    hints: dict[str, dict[str, Any]] = {}
    for name, fmt in formats.items():
        h: dict[str, Any] = {}
        if fmt.kind == "codebook":
            k = int((fmt.meta or {}).get("codebook_size") or 0)
            if k:
                h["bits"] = max(1, math.ceil(math.log2(k)))
        elif fmt.kind == "uniform" and (fmt.meta or {}).get("bits"):
            h["bits"] = int(fmt.meta["bits"])
        if (fmt.meta or {}).get("sparse") == "block":
            parts = decode_parts(fmt)
            h["block"] = tuple(int(b) for b in parts["block"])
            h["block_mask"] = torch.as_tensor(parts["block_mask"], dtype=torch.bool)
        if h:
            hints[name] = h
    return hints


def default_input_shape(model_config: Mapping[str, Any]) -> tuple[int, ...] | None:
    """``(in_channels, image_size, image_size)`` of a zoo model config (its kwargs, else the
    constructor's defaults); None when the model takes no image."""
    import inspect as _inspect

    from ..core import registry

    name, kwargs = model_config.get("name"), dict(model_config.get("kwargs") or {})
    registry.import_plugins()
    fn = registry._MODELS.get(name)
    if fn is not None:
        for p in _inspect.signature(fn).parameters.values():
            if p.name in ("in_channels", "image_size") and p.default is not _inspect.Parameter.empty:
                kwargs.setdefault(p.name, p.default)
    if "in_channels" in kwargs and "image_size" in kwargs:
        return (int(kwargs["in_channels"]), int(kwargs["image_size"]), int(kwargs["image_size"]))
    return None


def memory_report_from_file(path, input_shape: Sequence[int] | None = None, **kwargs: Any) -> dict[str, Any]:
    """:func:`memory_report` of a ``.wz``: the model rebuilt by the runtime (activation
    quantizers re-installed from the manifest), block masks and bits from the stored formats,
    the input shape from the zoo model's arguments unless given (user models: pass it)."""
    from ..codec import container
    from ..runtime.load import load

    manifest, formats = container.read(path)
    model = load(path)
    if input_shape is None:
        input_shape = default_input_shape(manifest.get("model") or {})
    return memory_report(model, input_shape, hints=hints_from_formats(formats), **kwargs)
