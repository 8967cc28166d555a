"""The one model-modification mechanism: ``torch.nn.utils.parametrize``.

A compression stage never rewrites a module. It registers parametrizations on the tensors it
touches; stacking pruning and quantization is two parametrizations on one tensor::

    W_eff = Codebook(Mask(W))        # Mask: W * m ;  Codebook: C[codes] * m

Every parametrization here derives :class:`WzParametrization`, which gives it

* a registered ``kind`` so a checkpoint can rebuild the chain before ``load_state_dict``
  (:func:`parametrization_spec` / :func:`restore_parametrizations`);
* ``storage_hint()``: how its output should be stored, as plain numbers and tensors (never
  codec types: methods and parametrizations do not import ``codec``).

The baked model (what a ``.wz`` stores) is :func:`effective_state` : every tensor of the
state_dict with parametrizations applied, plus :func:`storage_hints` per tensor.
"""
from __future__ import annotations

from typing import Any, Iterator, Mapping

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize as P

_PARAMETRIZATIONS: dict[str, type["WzParametrization"]] = {}


def register_parametrization(cls: type["WzParametrization"]) -> type["WzParametrization"]:
    """Class decorator: make a parametrization rebuildable from a checkpoint by its ``kind``."""
    if not getattr(cls, "kind", None):
        raise TypeError(f"{cls.__name__} needs a class attribute `kind`")
    _PARAMETRIZATIONS[cls.kind] = cls
    return cls


class WzParametrization(nn.Module):
    """Base class. Subclasses define ``kind``, ``forward(W) -> W'``, and usually ``storage_hint``.

    ``init_args()`` returns the constructor arguments that are NOT tensors saved in the
    state_dict (ints, floats, strings), so ``cls.from_spec(args, shapes)`` can rebuild an
    instance whose buffers/parameters have the right shapes; ``load_state_dict`` then fills them.
    """

    kind: str = ""

    def init_args(self) -> dict[str, Any]:
        return {}

    @classmethod
    def from_spec(cls, args: dict[str, Any], shapes: dict[str, tuple[int, ...]]):
        """Rebuild with placeholder tensors of the recorded ``shapes`` (filled by load_state_dict)."""
        tensors = {k: torch.zeros(s) for k, s in shapes.items()}
        return cls(**args, **tensors)

    def storage_hint(self) -> dict[str, Any]:
        """How the output of this parametrization should be stored (merged along the chain)."""
        return {}


def ste(w: Tensor, wq: Tensor) -> Tensor:
    """Straight-through estimator: value exactly ``wq``, gradient of the identity w.r.t. ``w``.

    Written ``wq + (w - w)`` (``w - w`` is exactly 0) rather than ``w + (wq - w)``, which can be
    one ulp off ``wq`` and would give the codec more distinct values than the quantizer has.
    """
    return wq.detach() + (w - w.detach())


@register_parametrization
class Mask(WzParametrization):
    """Pruning mask: ``W' = W * m`` with ``m`` a {0,1} buffer of W's shape (saved with the model).

    Gradients to pruned entries are zero, so the output stays pruned under any optimizer
    (``weightzip.methods.prune.set_mask`` also zeroes the latent weights).
    """

    kind = "mask"

    def __init__(self, mask: Tensor):
        super().__init__()
        self.register_buffer("mask", mask.detach().to(torch.float32).clone())

    def forward(self, w: Tensor) -> Tensor:
        return w * self.mask.to(w.dtype)  # a bf16 / fp16 weight stays in its dtype

    def storage_hint(self) -> dict[str, Any]:
        return {"mask": self.mask.bool()}


@register_parametrization
class UniformQuant(WzParametrization):
    """Symmetric uniform (fixed-point) fake quantization with STE.

    ``W' = clamp(round(W / s), -2^(b-1), 2^(b-1) - 1) * s``; with ``power_of_two`` the scale is
    ``s = 2^-f`` (fixed point with ``f`` fraction bits). ``scale`` is a buffer, set once when the
    quantizer is attached (or recalibrated by the method), so the stored codes are exact.
    """

    kind = "uniform"

    def __init__(self, bits: int, scale: Tensor):
        super().__init__()
        if not 2 <= int(bits) <= 16:
            raise ValueError(f"uniform quantization needs 2 <= bits <= 16, got {bits}")
        self.bits = int(bits)
        self.register_buffer("scale", torch.as_tensor(scale, dtype=torch.float32).reshape(()).clone())

    def init_args(self) -> dict[str, Any]:
        return {"bits": self.bits}

    def forward(self, w: Tensor) -> Tensor:
        qmax = 2 ** (self.bits - 1) - 1
        wq = torch.clamp(torch.round(w / self.scale), -qmax - 1, qmax) * self.scale
        return ste(w, wq)

    def storage_hint(self) -> dict[str, Any]:
        return {"kind": "uniform", "scale": float(self.scale), "bits": self.bits}


@register_parametrization
class Codebook(WzParametrization):
    """Shared weights: ``W' = C[codes] * m``. The centroids ``C`` (k,) are a trainable Parameter.

    The incoming W is ignored (its gradient is zero); the gradient of centroid j is the sum of
    the gradients of the weights that use it - Deep Compression's centroid fine-tuning:
    ``dL/dC_j = sum_{i: codes_i = j} dL/dW'_i``.

    Held per weight: the codes as uint8 when ``k <= 256`` (int32 above), and a bool mask only
    when some weight is masked (``mask`` is None when all are kept): 1 byte per weight for a
    k-means codebook of an unpruned tensor, 2 when pruned (12 bytes with int64 codes and a
    float mask). Index with ``codes.long()`` (a uint8 index tensor would be read as a mask);
    :meth:`keep` is the mask, or all ones.
    """

    kind = "codebook"

    def __init__(self, centroids: Tensor, codes: Tensor, mask: Tensor | None = None):
        super().__init__()
        self.centroids = nn.Parameter(centroids.detach().to(torch.float32).clone())
        dt = self.codes_dtype(self.centroids.numel())
        codes = codes.detach()
        self.register_buffer("codes", codes.to(dt) if codes.dtype != dt else codes.clone())
        m = None if mask is None else mask.detach() != 0
        self.register_buffer("mask", None if m is None or bool(m.all()) else m)

    @staticmethod
    def codes_dtype(k: int) -> torch.dtype:
        """uint8 for up to 256 centroids, else int32 (an index must be int32 or int64)."""
        return torch.uint8 if k <= 256 else torch.int32

    @classmethod
    def from_spec(cls, args, shapes):
        k = int(torch.Size(shapes["centroids"]).numel())
        mask = torch.zeros(shapes["mask"], dtype=torch.bool) if "mask" in shapes else None
        return cls(torch.zeros(shapes["centroids"]), torch.zeros(shapes["codes"], dtype=cls.codes_dtype(k)), mask)

    def keep(self) -> Tensor:
        """The bool mask of the kept weights (all ones when nothing is masked)."""
        return self.mask if self.mask is not None else torch.ones_like(self.codes, dtype=torch.bool)

    def forward(self, w: Tensor) -> Tensor:
        # W itself is no longer used; the shared values take W's dtype (bf16 / fp16 models)
        if torch.is_grad_enabled() and self.centroids.requires_grad:
            out = self.centroids[self.codes.to(torch.int32)]   # int32 index: 4 transient bytes per weight
        else:  # no autograd (baking, saving, evaluation): the lookup chunk by chunk, no full-size index
            out = torch.empty(self.codes.shape, dtype=self.centroids.dtype, device=self.codes.device)
            flat, codes = out.view(-1), self.codes.reshape(-1)
            for s in range(0, flat.numel(), 1 << 20):
                torch.index_select(self.centroids, 0, codes[s:s + (1 << 20)].to(torch.int32), out=flat[s:s + (1 << 20)])
        if self.mask is not None:
            out = out * self.mask
        return out.to(w.dtype)

    def storage_hint(self) -> dict[str, Any]:
        k = self.centroids.numel()
        hint: dict[str, Any] = {"kind": "codebook", "bits": max(1, (k - 1).bit_length())}
        if self.mask is not None:  # (nothing masked: no all-ones tensor made for the hint)
            hint["mask"] = self.mask
        return hint


# ---------------------------------------------------------------------------------------------
# Attaching, listing, rebuilding


def attach(module: nn.Module, tensor_name: str, parametrization: WzParametrization) -> None:
    """Register ``parametrization`` on ``module.<tensor_name>`` (stacked after existing ones)."""
    if not isinstance(parametrization, WzParametrization):
        raise TypeError("weightzip parametrizations must derive WzParametrization")
    P.register_parametrization(module, tensor_name, parametrization)


def chain(module: nn.Module, tensor_name: str) -> list[WzParametrization]:
    """The parametrizations on ``module.<tensor_name>``, innermost first (empty if none)."""
    if not P.is_parametrized(module, tensor_name):
        return []
    return list(module.parametrizations[tensor_name])


def find(module: nn.Module, tensor_name: str, cls: type) -> WzParametrization | None:
    """The last parametrization of type ``cls`` on the tensor, or None."""
    found = [p for p in chain(module, tensor_name) if isinstance(p, cls)]
    return found[-1] if found else None


def original(module: nn.Module, tensor_name: str) -> Tensor:
    """The latent (unparametrized) tensor: ``module.parametrizations[name].original``."""
    if P.is_parametrized(module, tensor_name):
        return module.parametrizations[tensor_name].original
    return getattr(module, tensor_name)


def drop_latent(module: nn.Module, tensor_name: str) -> None:
    """Free the latent tensor of ``module.<tensor_name>`` when its chain no longer reads it (the
    last parametrization is a :class:`Codebook`, whose output ignores its input): the latent
    becomes a zero-memory stand-in of the same shape and dtype (zeros, a stride-0 view, no
    gradient). The model computes the same outputs; what reads the latent afterwards
    (:func:`original`, a later stage quantizing it, ``remove_all(bake=False)``) sees zeros.
    The caller keeps tied tensors (one Parameter under several names) as they are."""
    chain_ = chain(module, tensor_name)
    if not chain_ or not isinstance(chain_[-1], Codebook):
        raise ValueError(f"{type(module).__name__}.{tensor_name}: the latent can be dropped only under a Codebook "
                         "(the last parametrization must ignore its input)")
    plist = module.parametrizations[tensor_name]
    orig = plist.original
    stand_in = torch.zeros((), dtype=orig.dtype, device=orig.device).expand(orig.shape)
    plist._parameters["original"] = nn.Parameter(stand_in, requires_grad=False)


def remove_all(module: nn.Module, tensor_name: str, bake: bool = True) -> None:
    """Remove the chain; with ``bake`` the tensor keeps its parametrized value."""
    if P.is_parametrized(module, tensor_name):
        P.remove_parametrizations(module, tensor_name, leave_parametrized=bake)


def parametrized_tensors(model: nn.Module) -> Iterator[tuple[str, nn.Module, str]]:
    """Yield ``(module_name, module, tensor_name)`` for every parametrized tensor."""
    for mname, mod in model.named_modules():
        if P.is_parametrized(mod):
            for tname in list(mod.parametrizations.keys()):
                yield mname, mod, tname


def parametrization_spec(model: nn.Module) -> dict[str, list[dict[str, Any]]]:
    """A weights-only-loadable description of every chain: ``{"mod.weight": [{kind, args, shapes}]}``."""
    spec: dict[str, list[dict[str, Any]]] = {}
    for mname, mod, tname in parametrized_tensors(model):
        items = []
        for p in chain(mod, tname):
            if not isinstance(p, WzParametrization):
                raise TypeError(f"{mname}.{tname}: parametrization {type(p).__name__} is not a weightzip one")
            shapes = {n: list(t.shape) for n, t in list(p.named_parameters(recurse=False)) + list(p.named_buffers(recurse=False))}
            items.append({"kind": p.kind, "args": p.init_args(), "shapes": shapes})
        spec[f"{mname}.{tname}" if mname else tname] = items
    return spec


def restore_parametrizations(model: nn.Module, spec: dict[str, list[dict[str, Any]]]) -> None:
    """Re-register the chains described by :func:`parametrization_spec` (before load_state_dict)."""
    modules = dict(model.named_modules())
    for key, items in spec.items():
        mname, _, tname = key.rpartition(".")
        mod = modules[mname]
        for item in items:
            if item["kind"] not in _PARAMETRIZATIONS:
                from .registry import import_plugins  # method-specific kinds register at import

                import_plugins()
            if item["kind"] not in _PARAMETRIZATIONS:
                raise KeyError(f"unknown parametrization kind {item['kind']!r} on {key}; "
                               f"known: {sorted(_PARAMETRIZATIONS)} (import the method that defines it)")
            cls = _PARAMETRIZATIONS[item["kind"]]
            shapes = {k: tuple(v) for k, v in item["shapes"].items()}
            # original tensor shape must be kept: registering needs a forward pass on it
            attach(mod, tname, cls.from_spec(dict(item["args"]), shapes))


def storage_hints(model: nn.Module) -> dict[str, dict[str, Any]]:
    """Per parametrized tensor, the merged ``storage_hint`` of its chain (outer ones win)."""
    hints: dict[str, dict[str, Any]] = {}
    for mname, mod, tname in parametrized_tensors(model):
        merged: dict[str, Any] = {}
        for p in chain(mod, tname):
            merged.update(p.storage_hint())
        hints[f"{mname}.{tname}" if mname else tname] = merged
    return hints


class EffectiveState(Mapping):
    """:func:`effective_state` computed on access: ``state[name]`` makes that one tensor (a
    parametrized tensor's value is computed then), so a walk over the names holds one tensor at a
    time (``save`` encodes the model this way). Names in the order of :func:`effective_state`;
    ``shape(name)`` / ``dtype(name)`` / ``numel(name)`` without computing the value."""

    def __init__(self, model: nn.Module):
        self._where: dict[str, tuple[nn.Module, str, bool]] = {}   # name -> (module, attribute, parametrized)
        for mname, mod in model.named_modules(remove_duplicate=False):
            prefix = f"{mname}." if mname else ""
            if ".parametrizations." in f".{prefix}":   # the containers' own tensors are no state
                continue
            buffers = [n for n, _ in mod.named_buffers(recurse=False)
                       if n not in mod._non_persistent_buffers_set]   # not state: never stored
            for tname in [n for n, _ in mod.named_parameters(recurse=False, remove_duplicate=False)] + buffers:
                self._where[prefix + tname] = (mod, tname, False)
            if P.is_parametrized(mod):
                for tname in mod.parametrizations.keys():
                    self._where[prefix + tname] = (mod, tname, True)

    def __iter__(self) -> Iterator[str]:
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, name: object) -> bool:
        return name in self._where

    @torch.no_grad()
    def __getitem__(self, name: str) -> Tensor:
        mod, tname, parametrized = self._where[name]
        t = getattr(mod, tname).detach()
        if parametrized and t.device.type == "cpu":
            chain_tensors = mod.parametrizations[tname]
            held = {x.untyped_storage().data_ptr() for x in [*chain_tensors.parameters(), *chain_tensors.buffers()]}
            if t.untyped_storage().data_ptr() not in held:
                return t            # a fresh tensor computed by the chain: no second copy
        return t.cpu().clone()

    def _meta(self, name: str) -> Tensor:
        mod, tname, parametrized = self._where[name]
        return mod.parametrizations[tname].original if parametrized else getattr(mod, tname)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._meta(name).shape)

    def numel(self, name: str) -> int:
        return self._meta(name).numel()

    def dtype(self, name: str) -> torch.dtype:
        """The stored dtype (a parametrization keeps its tensor's dtype: the chains here do)."""
        return self._meta(name).dtype


@torch.no_grad()
def effective_state(model: nn.Module) -> dict[str, Tensor]:
    """The state_dict a plain (unparametrized) copy of ``model`` would have.

    Parametrized tensors are replaced by their parametrized values under their plain names
    (``fc1.weight`` instead of ``fc1.parametrizations.weight.original``); parametrization
    buffers are dropped. Everything is detached and on the CPU, and owns its memory (a copy).
    :class:`EffectiveState` gives the same tensors one at a time.
    """
    return dict(EffectiveState(model).items())


def _leaf_parameters(model: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
    """``(plain name, underlying Parameter)`` for every parameter name of ``model``, tied names
    included; a parametrized tensor's underlying Parameter is its ``original``."""
    for mname, mod in model.named_modules(remove_duplicate=False):
        prefix = f"{mname}." if mname else ""
        if ".parametrizations." in f".{prefix}":
            continue
        for tname, p in mod.named_parameters(recurse=False, remove_duplicate=False):
            yield prefix + tname, p
        if P.is_parametrized(mod):
            for tname in mod.parametrizations.keys():
                yield prefix + tname, mod.parametrizations[tname].original


def tied_parameters(model: nn.Module, state: Mapping[str, Tensor] | None = None) -> dict[str, str]:
    """Names that are the same Parameter as an earlier name: ``{alias: canonical}``.

    Hugging Face ties the LM head to the token embedding (``lm_head.weight`` IS
    ``transformer.wte.weight``); a file stores such a tensor once and the loader re-ties it.
    With ``state`` (the :func:`effective_state`), a name counts as tied only where its effective
    value equals the canonical one bit for bit: two stages that compressed the two names of
    one Parameter differently broke the tie, and both values are kept.
    """
    groups: dict[int, list[str]] = {}
    for name, p in _leaf_parameters(model):
        if name not in groups.setdefault(id(p), []):
            groups[id(p)].append(name)
    order = {n: i for i, n in enumerate(state)} if state is not None else {}
    ties: dict[str, str] = {}
    for names in groups.values():
        if len(names) < 2:
            continue
        if state is not None:
            names = sorted((n for n in names if n in state), key=order.__getitem__)
        for alias in names[1:]:
            if state is None or torch.equal(state[alias], state[names[0]]):
                ties[alias] = names[0]
    return ties


# ---------------------------------------------------------------------------------------------
# Activation quantization (recorded in the model, re-installed by the runtime from the manifest)


def _act_quant_hook(bits: int, clip: float):
    levels = 2 ** int(bits) - 1

    def hook(module, args):
        x = args[0]
        xc = torch.clamp(x, 0.0, clip) / clip
        xq = torch.round(xc * levels) / levels * clip
        return (ste(xc * clip, xq),) + tuple(args[1:])

    return hook


def install_activation_quant(model: nn.Module, spec: list[dict[str, Any]]) -> None:
    """Quantize the INPUT of modules to k bits: ``a_q = round(clip(a, 0, c)/c (2^k-1)) / (2^k-1) c``.

    ``spec`` items: ``{"module": name, "bits": k, "clip": c}``. The spec is stored in
    ``model.wz_runtime["activation_quant"]`` so ``save`` writes it to the manifest and the
    runtime re-installs the same quantizers (eval from the file = the trained accuracy).
    Installing again replaces earlier hooks.
    """
    modules = dict(model.named_modules())
    handles = getattr(model, "_wz_act_handles", [])
    for h in handles:
        h.remove()
    handles = []
    for item in spec:
        if item["module"] not in modules:
            raise KeyError(f"activation quantizer on unknown module {item['module']!r}")
        handles.append(modules[item["module"]].register_forward_pre_hook(
            _act_quant_hook(int(item["bits"]), float(item.get("clip", 1.0)))))
    model._wz_act_handles = handles
    runtime = dict(getattr(model, "wz_runtime", {}) or {})
    runtime["activation_quant"] = [dict(i) for i in spec]
    model.wz_runtime = runtime
