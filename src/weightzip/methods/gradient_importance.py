"""Accumulated-gradient importance and mixed-bit fixed point with pruning (METHODS.md, A).

The importance of a parameter is the total absolute gradient it received over training::

    A[p] = 0 for every weight AND bias tensor
    every minibatch (after backward, before the optimizer step):  A[p] += |p.grad|

:class:`ImportanceTracker` (a Trainer callback) does this and keeps ``A`` in
``ctx.state["importance"]`` (``{"fc1.weight": Tensor, "fc1.bias": Tensor, ...}``, keyed by the
plain state_dict name also for parametrized tensors, whose latent
``module.parametrizations.<t>.original`` is what receives the gradient), so it goes on
accumulating through later stages and is saved with the pipeline's stage checkpoints (and, via
``state_dict``, with trainer checkpoints).

Parameters are then stored in signed fixed point (:mod:`weightzip.primitives.fixed_point`)::

    fxp(x, b, f) = clamp(round(x 2^f), -2^(b-1), 2^(b-1) - 1) 2^-f ,   f = b - i_layer
    i_layer = 1 + max(0, ceil(log2 max|x_layer|))     ("thesis" rule; "tight" drops the max)

and values that round to zero are pruned. Stages (registered methods):

* ``train_tracked``: train (from the current weights, or ``from_scratch``) with the tracker.
  The thesis accumulates from the first epoch of the baseline; a pre-trained baseline without
  its history gets its importance from this stage only.
* ``grad_ptq`` (post-training): cluster ``log(A + eps)`` of the FULL selected parameter set (all
  tensors together) into K clusters (1-D k-means, or quantile bins), ordered by importance;
  cluster j gets ``bits[j]`` (``bits`` non-increasing: the most important cluster gets the most
  bits); quantize every parameter with its cluster's format.
* ``grad_itq`` (in-training): train; after epoch e, ``threshold = quantile(all A, q_e)`` and the
  low group ``A <= threshold`` is projected to ``b_low`` bits. Variant ``reproject`` (V1,
  default): re-project every epoch, keep training everything; variant ``freeze`` (V2, INQ-like):
  the low group is frozen (zero gradient, values restored after each optimizer step) and grows
  with the schedule. At the end the high group is stored with ``b_high`` bits [reconstructed].
  Optional ``recovery_epochs`` [reconstructed] train on after the last projection with the low
  group frozen and the final formats attached (the high group learns through its fake
  quantization), so the last projection is trained through.
* combined = ``grad_itq`` then ``grad_ptq`` (a recipe of two stages; A keeps accumulating).

Every stage takes ``importance: gradient | magnitude`` (``|w|``, for the ablation).

The result is one :class:`MixedFixedPoint` parametrization per tensor: per-element cluster ids
(int8), per-cluster ``bits`` and ``frac_bits``; its storage hint
``{"kind": "mixed_fixed", "cluster", "bits", "frac_bits"}`` lets the codec write one sparse
stream per (tensor, cluster), with no per-value tag.

Thesis-style accounting (spec of ``thesis_csr_bits``; the implementation lives in
``analysis/size.py`` as ``gradient_importance_csr_ratio``, the only place ratios are computed)::

    matrix view of a tensor: Linear W (out, in) -> rows = out, cols = in;
        Conv W (out, in, kh, kw) -> rows = out, cols = in*kh*kw; bias (n,) -> rows = 1, cols = n;
        other -> rows = shape[0], cols = numel / rows; 0-d -> 1 x 1
    thesis_csr_bits(rows, cols, nnz_c, b_c, meta_bits=16)      # one CSR per (layer, cluster)
        = nnz_c * b_c                                  # the values, b_c bits each
        + nnz_c * ceil(log2 cols)                       # column index of every nonzero
        + (rows + 1) * ceil(log2(nnz_c + 1))            # row pointers
        + meta_bits                                     # (b_c, f_c): 8 bits each
        and 0 when nnz_c = 0 (no CSR written)
    tensor bits = sum over its clusters; a tensor without a mixed_fixed hint costs 32 * numel
    ratio = 32 * (every floating-point element of the state_dict) / sum of tensor bits

Reconstructed choices (configurable, never claimed as the thesis's): the integer-bits rule,
``b_high`` of ITQ, the quantile schedule, k-means initialisation (quantiles of log A) and
``eps``, the ``freeze`` variant restoring frozen values after the optimizer step (momentum and
weight decay would move them otherwise), ITQ's ``recovery_epochs``, ``bits = 0`` meaning
"cluster pruned".
"""
from __future__ import annotations

import math
from typing import Any, Callable, Literal, Sequence

import numpy as np
import torch
from pydantic import field_validator, model_validator
from torch import Tensor, nn

from ..core import parametrize
from ..errors import WeightzipError
from ..core.parametrize import WzParametrization, register_parametrization
from ..primitives.fixed_point import MAX_FXP_BITS, IntBitsRule, frac_bits_for, fxp_apply, fxp_format, fxp_quantize
from ..core.registry import register_method
from ..core.select import Selection, qualified, select
from .base import Method, MethodConfig, StageContext

__all__ = [
    "MixedFixedPoint",
    "ImportanceTracker",
    "ITQCallback",
    "named_latent_parameters",
    "importance_tensors",
    "kmeans_1d",
    "cluster_importance",
    "quantile_threshold",
    "TrainTracked",
    "GradPTQ",
    "GradITQ",
]

ImportanceKind = Literal["gradient", "magnitude"]
STATE_KEY = "importance"
ALL_TENSORS = Selection(tensors=["*"], types=["Linear", "Conv2d"])


# ---------------------------------------------------------------------------------------------
# The parametrization


@register_parametrization
class MixedFixedPoint(WzParametrization):
    """Per-element fixed point: element ``e`` of cluster ``c = cluster[e]`` is stored as
    ``fxp(W[e], bits[c], frac_bits[c])``; gradients pass straight through (STE).

    ``cluster``: int8 tensor of W's shape (values ``0..K-1``, 0 = most important);
    ``bits``, ``frac_bits``: int32 tensors ``(K,)``. ``bits[c] = 0`` prunes the cluster.
    """

    kind = "mixed_fixed"

    def __init__(self, cluster: Tensor, bits: Tensor | Sequence[int], frac_bits: Tensor | Sequence[int]):
        super().__init__()
        bits_t = torch.as_tensor(bits, dtype=torch.int32).reshape(-1).clone()
        frac_t = torch.as_tensor(frac_bits, dtype=torch.int32).reshape(-1).clone()
        if bits_t.shape != frac_t.shape:
            raise ValueError(f"MixedFixedPoint: bits {bits_t.tolist()} and frac_bits {frac_t.tolist()} differ in length")
        if bits_t.numel() > 127:
            raise ValueError(f"MixedFixedPoint: at most 127 clusters (int8 ids), got {bits_t.numel()}")
        if bits_t.numel() and (int(bits_t.min()) < 0 or int(bits_t.max()) > MAX_FXP_BITS):
            raise ValueError(f"MixedFixedPoint: bits must be in [0, {MAX_FXP_BITS}], got {bits_t.tolist()}")
        cl = torch.as_tensor(cluster).detach()
        if cl.numel() and (int(cl.min()) < 0 or int(cl.max()) >= max(1, bits_t.numel())):
            raise ValueError(f"MixedFixedPoint: cluster ids must be in [0, {bits_t.numel() - 1}]")
        self.register_buffer("cluster", cl.to(torch.int8).clone())
        self.register_buffer("bits", bits_t)
        self.register_buffer("frac_bits", frac_t)

    @classmethod
    def from_spec(cls, args, shapes):
        k = shapes["bits"][0]
        return cls(torch.zeros(shapes["cluster"], dtype=torch.int8), [0] * k, [0] * k)

    def element_formats(self) -> tuple[Tensor, Tensor]:
        """Per-element ``(bits, frac_bits)`` as int64 tensors of W's shape."""
        c = self.cluster.long()
        return self.bits.long()[c], self.frac_bits.long()[c]

    def _element_format(self, w: Tensor):
        """Per-element ``(2^f, lo, hi)``, cached until a buffer changes (version counters)."""
        key = (self.cluster._version, self.bits._version, self.frac_bits._version, self.cluster.data_ptr(),
               self.bits.data_ptr(), self.frac_bits.data_ptr(), w.dtype, w.device)
        cache = getattr(self, "_fmt_cache", None)
        if cache is None or cache[0] != key:
            b, f = self.element_formats()
            cache = (key, fxp_format(w, b, f))
            self._fmt_cache = cache
        return cache[1]

    def forward(self, w: Tensor) -> Tensor:
        wq = fxp_apply(w, self._element_format(w))
        return w + (wq - w).detach()                              # STE, as fxp_ste

    def storage_hint(self) -> dict[str, Any]:
        """``{"kind": "mixed_fixed", "cluster", "bits", "frac_bits"}``; a pruned (0-bit) cluster
        is reported as 1 bit with ``f = 0``: it holds no non-zero, so nothing of it is stored."""
        bits = [max(1, int(v)) for v in self.bits]
        frac = [int(f) if int(b) > 0 else 0 for b, f in zip(self.bits, self.frac_bits)]
        return {"kind": "mixed_fixed", "cluster": self.cluster.detach().cpu().clone(), "bits": bits,
                "frac_bits": frac}


def _pop_mixed(module: nn.Module, tname: str) -> None:
    """Remove a MixedFixedPoint at the end of the tensor's chain (latent weights stay latent)."""
    ch = parametrize.chain(module, tname)
    if not ch or not isinstance(ch[-1], MixedFixedPoint):
        if any(isinstance(p, MixedFixedPoint) for p in ch):
            raise WeightzipError(f"{tname}: a MixedFixedPoint sits inside a chain of parametrizations; "
                                 "mixed fixed point must be the last one - re-order the recipe stages")
        return
    if len(ch) == 1:
        parametrize.remove_all(module, tname, bake=False)
    else:
        del module.parametrizations[tname][len(ch) - 1]


def _attach_mixed(module: nn.Module, tname: str, cluster: Tensor, bits: Sequence[int],
                  frac_bits: Sequence[int]) -> MixedFixedPoint:
    _pop_mixed(module, tname)
    p = MixedFixedPoint(cluster, bits, frac_bits).to(parametrize.original(module, tname).device)
    parametrize.attach(module, tname, p)
    return p


# ---------------------------------------------------------------------------------------------
# Importance tracking


def named_latent_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """Every model Parameter under its plain state_dict-style name.

    ``fc1.parametrizations.weight.original`` -> ``"fc1.weight"``; parameters owned by the
    parametrizations themselves (e.g. codebook centroids) are not model tensors and are left out.
    """
    out: dict[str, nn.Parameter] = {}
    for name, p in model.named_parameters():
        if ".parametrizations." in f".{name}":
            head, _, rest = name.partition("parametrizations.")
            tname, _, leaf = rest.partition(".")
            if leaf != "original":
                continue
            name = head + tname
        out[name] = p
    return out


class ImportanceTracker:
    """Trainer callback: ``A[name] += |grad|`` for every parameter, each step, before the update.

    ``store`` is the dict holding ``A`` (pass ``ctx.state.setdefault("importance", {})`` so that
    the accumulation continues across stages). Entries are created as zeros the first time a
    parameter is seen; an existing entry of the wrong shape is an error (the model changed).
    ``steps`` counts the accumulated minibatches.
    """

    def __init__(self, store: dict[str, Tensor] | None = None, names: Sequence[str] | None = None):
        self.store: dict[str, Tensor] = store if store is not None else {}
        self.names = set(names) if names is not None else None
        self.params: dict[str, nn.Parameter] = {}
        self.steps = 0

    def bind(self, model: nn.Module) -> "ImportanceTracker":
        """Resolve the parameters of ``model`` (done by ``on_train_begin``; call it when used alone)."""
        params = named_latent_parameters(model)
        if self.names is not None:
            params = {k: v for k, v in params.items() if k in self.names}
        for k, p in params.items():
            a = self.store.get(k)
            if a is None:
                self.store[k] = torch.zeros_like(p, dtype=torch.float32, memory_format=torch.contiguous_format).detach()
            elif a.shape != p.shape:
                raise WeightzipError(
                    f"importance of {k!r} has shape {tuple(a.shape)} but the parameter is {tuple(p.shape)}; "
                    "the model changed since importance was tracked - clear ctx.state['importance']")
            elif a.device != p.device:
                self.store[k] = a.to(p.device)
        self.params = params
        return self

    def on_train_begin(self, trainer) -> None:
        self.bind(trainer.model)

    @torch.no_grad()
    def accumulate(self) -> None:
        """``A += |grad|`` for every bound parameter that has a gradient."""
        for k, p in self.params.items():
            if p.grad is not None:
                self.store[k].add_(p.grad.detach().abs())
        self.steps += 1

    def on_step(self, trainer, step: int) -> None:
        self.accumulate()

    def state_dict(self) -> dict[str, Any]:
        return {"importance": {k: v.detach().cpu().clone() for k, v in self.store.items()}, "steps": self.steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k, v in (state.get("importance") or {}).items():
            dev = self.params[k].device if k in self.params else v.device
            self.store[k] = v.to(dev).clone()
        self.steps = int(state.get("steps", 0))


def importance_tensors(model: nn.Module, entries, ctx_state: dict[str, Any],
                       kind: ImportanceKind = "gradient") -> list[Tensor]:
    """The importance of each selected tensor: ``A`` from ``ctx.state`` or ``|w|`` (magnitude).

    ``entries`` are ``(module_name, module, tensor_name)`` triples (from :func:`select`).
    Magnitude uses the latent weights (what the method quantizes).
    """
    out = []
    store = ctx_state.get(STATE_KEY) or {}
    missing = []
    for mname, mod, t in entries:
        key = qualified(mname, t)
        w = parametrize.original(mod, t)
        if kind == "magnitude":
            out.append(w.detach().abs().float())
        else:
            a = store.get(key)
            if a is None:
                missing.append(key)
                continue
            if a.shape != w.shape:
                raise WeightzipError(f"importance of {key!r} has shape {tuple(a.shape)}, the tensor {tuple(w.shape)}; "
                                     "the model changed since importance was tracked")
            out.append(a.detach().to(w.device).float())
    if missing:
        raise WeightzipError(
            f"no accumulated-gradient importance for {missing[:5]}{' ...' if len(missing) > 5 else ''}; "
            "add a `train_tracked` stage before this one (it trains with the ImportanceTracker), "
            "or set `importance: magnitude`")
    return out


# ---------------------------------------------------------------------------------------------
# Clustering of the importance


def kmeans_1d(x: Tensor, k: int, *, iters: int = 100, sample: int = 200_000, seed: int = 0) -> Tensor:
    """1-D k-means (Lloyd, scikit-learn) of ``x`` (n,) into ``k`` centroids; returns them sorted ascending.

    Initialisation: the ``(j + 0.5) / k`` quantiles of ``x`` (deterministic) [reconstructed].
    Centroids are fitted on at most ``sample`` points drawn with ``seed`` (all points when
    fewer); assignment is done on all points by the caller with :func:`assign_1d`.
    """
    from sklearn.cluster import KMeans

    x = x.detach().double().reshape(-1).cpu()
    n = x.numel()
    if n == 0:
        raise ValueError("kmeans_1d: nothing to cluster")
    if n > sample:
        g = torch.Generator().manual_seed(seed)
        x = x[torch.randperm(n, generator=g)[:sample]]
    xs = x.numpy()
    uniq = np.unique(xs)
    if uniq.size <= k:  # fewer distinct values than clusters: every value is its own centroid
        c = np.concatenate([uniq, np.full(k - uniq.size, uniq[-1])])
        return torch.from_numpy(np.sort(c))
    init = np.quantile(xs, (np.arange(k) + 0.5) / k).reshape(-1, 1)
    init = np.unique(init, axis=0)
    if init.shape[0] < k:  # heavy ties: spread the start evenly over the range instead
        init = np.linspace(xs.min(), xs.max(), k).reshape(-1, 1)
    km = KMeans(n_clusters=k, init=init, n_init=1, max_iter=iters, algorithm="lloyd", random_state=seed)
    km.fit(xs.reshape(-1, 1))
    return torch.from_numpy(np.sort(km.cluster_centers_.reshape(-1)))


def assign_1d(x: Tensor, centroids_sorted: Tensor) -> Tensor:
    """Index of the nearest centroid (ascending order) for each element (ties to the lower)."""
    c = centroids_sorted.to(x.device, torch.float64)
    mids = (c[1:] + c[:-1]) / 2                                   # (k-1,)
    return torch.bucketize(x.double(), mids, right=False)          # (x.shape) in [0, k-1]


def cluster_importance(values: Sequence[Tensor], k: int, method: Literal["kmeans", "quantile"] = "kmeans",
                       fractions: Sequence[float] | None = None, eps: float = 1e-12,
                       seed: int = 0) -> list[Tensor]:
    """Cluster ids (0 = MOST important) of every element of every tensor, clustered together.

    The score is ``s = log(A + eps)`` over the concatenation of all tensors.

    * ``kmeans``: 1-D k-means of ``s`` (:func:`kmeans_1d`), clusters numbered by decreasing
      centroid.
    * ``quantile``: bins of ``s`` by rank; ``fractions`` (most important first, summing to 1)
      give the share of parameters per cluster (default equal shares).

    Returns one int64 tensor per input (same shapes).
    """
    if k < 1:
        raise ValueError(f"need at least one cluster, got k={k}")
    flat = torch.cat([v.detach().reshape(-1).double().cpu() for v in values])      # (N,)
    s = torch.log(flat + eps)
    n = s.numel()
    if method == "kmeans":
        if fractions is not None:
            raise ValueError("`fractions` applies to clustering: quantile; k-means finds its own cluster sizes")
        cent = kmeans_1d(s, k, seed=seed)                       # ascending
        ids = (k - 1) - assign_1d(s, cent)                      # 0 = highest log-importance
    elif method == "quantile":
        fr = np.full(k, 1.0 / k) if fractions is None else np.asarray(fractions, dtype=np.float64)
        if fr.size != k or np.any(fr < 0) or abs(fr.sum() - 1) > 1e-6:
            raise ValueError(f"fractions must be {k} non-negative shares summing to 1, got {list(fr)}")
        order = torch.argsort(s, descending=True, stable=True)  # most important first
        bounds = np.round(np.cumsum(fr) * n).astype(np.int64)
        bounds[-1] = n
        ids_sorted = torch.bucketize(torch.arange(n, dtype=torch.int64), torch.from_numpy(bounds), right=True)
        ids = torch.empty(n, dtype=torch.int64)
        ids[order] = ids_sorted.clamp_max(k - 1)
    else:
        raise ValueError(f"unknown clustering {method!r}; use 'kmeans' or 'quantile'")
    out, i = [], 0
    for v in values:
        out.append(ids[i:i + v.numel()].reshape(v.shape).to(v.device))
        i += v.numel()
    return out


def quantile_threshold(values: Sequence[Tensor], q: float) -> float:
    """The ``ceil(q n)``-th smallest of all values together (so ``A <= t`` holds >= q n of them)."""
    flat = torch.cat([v.detach().reshape(-1).float().cpu() for v in values])
    k = min(flat.numel(), max(1, math.ceil(q * flat.numel())))
    return float(torch.kthvalue(flat, k).values)


# ---------------------------------------------------------------------------------------------
# Stage helpers


def _layer_frac_bits(w: Tensor, bits: Sequence[int], rule: IntBitsRule) -> list[int]:
    """``f_c = b_c - i_layer`` for every cluster (``0`` for pruned clusters with ``b_c = 0``)."""
    return [frac_bits_for(w, b, rule) if b > 0 else 0 for b in bits]


def _summary(model: nn.Module, entries, bits: Sequence[int]) -> dict[str, Any]:
    """Per-cluster counts / non-zeros and the mean bits per stored non-zero (no ratios here)."""
    k = len(bits)
    count = [0] * k
    nnz = [0] * k
    total = 0
    for mname, mod, t in entries:
        p = parametrize.find(mod, t, MixedFixedPoint)
        w = getattr(mod, t).detach()
        cl = p.cluster.long()
        for c in range(k):
            sel = cl == c
            count[c] += int(sel.sum())
            nnz[c] += int((w[sel] != 0).sum())
        total += w.numel()
    nz = sum(nnz)
    return {"bits": list(bits), "cluster_count": count, "cluster_nnz": nnz, "params": total,
            "nonzero": nz, "sparsity": 1 - nz / max(1, total),
            "mean_value_bits": sum(b * n for b, n in zip(bits, nnz)) / max(1, nz)}


class _BitsConfig(MethodConfig):
    select: Selection = ALL_TENSORS
    importance: ImportanceKind = "gradient"
    int_bits: IntBitsRule = "thesis"


# ---------------------------------------------------------------------------------------------
# train_tracked


@register_method("train_tracked")
class TrainTracked(Method):
    """Train with the :class:`ImportanceTracker` (the thesis accumulates from the first epoch).

    ``from_scratch: true`` re-initialises every layer (``reset_parameters``, seeded with the
    stage seed) and clears the importance, so the baseline itself is trained while tracking.
    Otherwise training continues from the current weights and ``A`` continues to accumulate.
    """

    class Config(MethodConfig):
        train: dict[str, Any] = {"epochs": 10, "lr": 0.01, "optimizer": "sgd", "momentum": 0.9}
        from_scratch: bool = False

    def apply(self, model, ctx: StageContext) -> dict[str, Any]:
        if self.config.from_scratch:
            if any(True for _ in parametrize.parametrized_tensors(model)):
                raise WeightzipError("train_tracked from_scratch: the model already has parametrizations; "
                                     "train from scratch before any compression stage")
            torch.manual_seed(ctx.seed)
            for m in model.modules():
                if hasattr(m, "reset_parameters") and m is not model:
                    m.reset_parameters()
            ctx.state[STATE_KEY] = {}
        tracker = ImportanceTracker(ctx.state.setdefault(STATE_KEY, {}))
        hist = ctx.fit(model, self.config.train, callbacks=[tracker], tag="train_tracked")
        return {"val": ctx.evaluate(model), "tracked_tensors": len(tracker.params),
                "tracked_steps": tracker.steps,
                "train_history": hist.get("history", []) if isinstance(hist, dict) else []}


# ---------------------------------------------------------------------------------------------
# grad_ptq


def ptq_quantize(model: nn.Module, entries, importance: Sequence[Tensor], bits: Sequence[int], *,
                 clustering: Literal["kmeans", "quantile"] = "kmeans", fractions: Sequence[float] | None = None,
                 rule: IntBitsRule = "thesis", eps: float = 1e-12, seed: int = 0) -> list[Tensor]:
    """Cluster ``importance`` (all tensors together) and attach :class:`MixedFixedPoint` to each entry.

    Cluster j gets ``bits[j]``; ``frac_bits`` per (tensor, cluster) from the tensor's latent range.
    Returns the cluster ids per entry.
    """
    ids = cluster_importance(importance, len(bits), clustering, fractions, eps, seed)
    for (mname, mod, t), cl in zip(entries, ids):
        _pop_mixed(mod, t)
        w = parametrize.original(mod, t)
        _attach_mixed(mod, t, cl, bits, _layer_frac_bits(w.detach(), bits, rule))
    return ids


@register_method("grad_ptq")
class GradPTQ(Method):
    """Post-training mixed-bit fixed point by clustered accumulated-gradient importance."""

    class Config(_BitsConfig):
        bits: list[int] = [8, 6, 4, 2]
        clustering: Literal["kmeans", "quantile"] = "kmeans"
        fractions: list[float] | None = None
        eps: float = 1e-12

        @field_validator("bits")
        @classmethod
        def _bits(cls, v):
            if not v or len(v) > 127:
                raise ValueError("bits needs 1 to 127 entries (one per cluster, most important first)")
            if any(b < 0 or b > MAX_FXP_BITS for b in v):
                raise ValueError(f"every bit width must be in [0, {MAX_FXP_BITS}], got {v}")
            if any(a < b for a, b in zip(v, v[1:])):
                raise ValueError(f"bits must be non-increasing (most important cluster first), got {v}")
            return v

        @model_validator(mode="after")
        def _fractions(self):
            if self.fractions is not None:
                if self.clustering != "quantile":
                    raise ValueError("`fractions` needs clustering: quantile")
                if len(self.fractions) != len(self.bits):
                    raise ValueError(f"fractions has {len(self.fractions)} entries but bits has {len(self.bits)}")
                if any(f < 0 for f in self.fractions) or abs(sum(self.fractions) - 1) > 1e-6:
                    raise ValueError(f"fractions must be non-negative and sum to 1, got {self.fractions}")
            return self

    def apply(self, model, ctx: StageContext) -> dict[str, Any]:
        c = self.config
        entries = select(model, c.select)
        imp = importance_tensors(model, entries, ctx.state, c.importance)
        ptq_quantize(model, entries, imp, c.bits, clustering=c.clustering, fractions=c.fractions,
                     rule=c.int_bits, eps=c.eps, seed=ctx.seed)
        out = _summary(model, entries, c.bits)
        out["val"] = ctx.evaluate(model)
        return out


# ---------------------------------------------------------------------------------------------
# grad_itq


class ITQCallback:
    """End of each schedule epoch: project the low-importance group to ``b_low`` bits.

    ``entries``: selected ``(module_name, module, tensor_name)``; ``importance_fn()`` returns the
    current importance per entry. At the end of epoch ``e < len(quantiles)`` the low group
    ``A <= quantile(all A, q_e)`` is projected in place on the latent weights:

    * ``reproject`` (V1): the group is recomputed from scratch and re-projected every epoch,
      everything keeps training in between;
    * ``freeze`` (V2, INQ-like): the group only grows; its elements are frozen: zero gradient in
      ``on_step`` (so their importance stops growing too) and their values restored after every
      optimizer step (momentum and weight decay would move them otherwise).

    Epochs after the schedule (recovery, ``recovery_epochs`` of :class:`GradITQ`) keep the final
    low group frozen and call ``on_recovery()`` once at their start (GradITQ attaches the final
    formats there so the high group trains through its fake quantization).

    After training ``low[i]`` is the bool mask of entry i's low group and ``frac_low[i]`` its
    fraction bits. Put this callback BEFORE the :class:`ImportanceTracker` in the callback list:
    frozen entries get zero gradient before ``A`` accumulates.
    """

    def __init__(self, entries, importance_fn: Callable[[], list[Tensor]], quantiles: Sequence[float],
                 b_low: int, variant: Literal["reproject", "freeze"] = "reproject",
                 rule: IntBitsRule = "thesis", log: Callable[[str], None] | None = None,
                 on_recovery: Callable[["ITQCallback"], None] | None = None):
        self.entries = list(entries)
        self.importance_fn = importance_fn
        self.quantiles = list(quantiles)
        self.b_low = int(b_low)
        self.variant = variant
        self.rule = rule
        self.log = log
        self.on_recovery = on_recovery
        self.low: list[Tensor | None] = [None] * len(self.entries)
        self.frac_low: list[int | None] = [None] * len(self.entries)
        self.frozen_values: list[Tensor | None] = [None] * len(self.entries)
        self.thresholds: list[float] = []
        self.freeze_active = False
        self.recovering = False

    def _latent(self, i: int) -> Tensor:
        _, mod, t = self.entries[i]
        return parametrize.original(mod, t)

    def q_at(self, epoch: int) -> float:
        return self.quantiles[min(epoch, len(self.quantiles) - 1)]

    def _frac(self, w: Tensor) -> int:
        return frac_bits_for(w, self.b_low, self.rule) if self.b_low > 0 else 0

    @torch.no_grad()
    def project(self, epoch: int) -> float:
        """Split at the importance quantile of this epoch and project the low group; returns the threshold."""
        imp = self.importance_fn()
        thr = quantile_threshold(imp, self.q_at(epoch))
        self.thresholds.append(thr)
        for i, a in enumerate(imp):
            w = self._latent(i)
            low = a <= thr                                                     # (W.shape) bool
            if self.variant == "freeze":
                if self.low[i] is not None:
                    low = low | self.low[i]                                    # frozen stays frozen
                if self.frac_low[i] is None:                                   # one grid for all frozen values
                    self.frac_low[i] = self._frac(w)
                new = low & ~self.low[i] if self.low[i] is not None else low
                w[new] = fxp_quantize(w[new], self.b_low, self.frac_low[i])
            else:
                self.frac_low[i] = self._frac(w)
                w[low] = fxp_quantize(w[low], self.b_low, self.frac_low[i])
            self.low[i] = low
            self.frozen_values[i] = w.detach().clone()
        return thr

    @torch.no_grad()
    def on_step(self, trainer, step: int) -> None:
        if not self.freeze_active:
            return
        for i, low in enumerate(self.low):
            g = self._latent(i).grad
            if g is not None:
                g.masked_fill_(low, 0.0)

    @torch.no_grad()
    def on_after_step(self, trainer, step: int) -> None:
        if not self.freeze_active:
            return
        for i, low in enumerate(self.low):  # momentum / weight decay must not move frozen values
            w = self._latent(i)
            w.copy_(torch.where(low, self.frozen_values[i], w))

    def on_epoch_end(self, trainer, epoch: int, metrics: dict[str, float]) -> None:
        if epoch >= len(self.quantiles):
            return
        thr = self.project(epoch)
        n_low = sum(int(l.sum()) for l in self.low)
        n = sum(l.numel() for l in self.low)
        metrics["itq_low_fraction"] = n_low / n
        if self.log:
            self.log(f"  itq epoch {epoch + 1}: q={self.q_at(epoch)} threshold={thr:.4g} low={n_low / n:.3f}")
        if self.variant == "freeze" or epoch + 1 >= len(self.quantiles):
            self.freeze_active = True

    def on_epoch_begin(self, trainer, epoch: int) -> None:
        if epoch >= len(self.quantiles) and not self.recovering:
            self.recovering = True
            if self.on_recovery is not None:
                self.on_recovery(self)

    def state_dict(self) -> dict[str, Any]:
        return {"low": [l.cpu() if l is not None else torch.zeros(0, dtype=torch.bool) for l in self.low],
                "frac_low": [f if f is not None else -999 for f in self.frac_low],
                "frozen": [v.cpu() if v is not None else torch.zeros(0) for v in self.frozen_values],
                "thresholds": list(self.thresholds), "freeze_active": self.freeze_active,
                "recovering": self.recovering}

    def load_state_dict(self, st: dict[str, Any]) -> None:
        for i, (l, f, v) in enumerate(zip(st["low"], st["frac_low"], st["frozen"])):
            dev = self._latent(i).device
            self.low[i] = l.to(dev) if l.numel() else None
            self.frac_low[i] = None if f == -999 else int(f)
            self.frozen_values[i] = v.to(dev) if v.numel() else None
        self.thresholds = list(st.get("thresholds", []))
        self.freeze_active = bool(st.get("freeze_active", False))
        self.recovering = bool(st.get("recovering", False))


@register_method("grad_itq")
class GradITQ(Method):
    """In-training quantization of the low accumulated-gradient group (V1 reproject / V2 freeze).

    Trains ``len(quantiles) + recovery_epochs`` epochs (``train.epochs``, if given, must match).
    After training each tensor gets a :class:`MixedFixedPoint` with two clusters:
    0 = high group (``b_high`` bits [reconstructed]), 1 = low group (``b_low`` bits, the fraction
    bits used by the last projection).

    ``recovery_epochs`` [reconstructed, not in the thesis]: epochs after the last projection in
    which the final formats are already attached (the high group trains through its ``b_high``
    fake quantization with the STE) and the low group stays frozen on its grid - without them
    the last projection and the ``b_high`` rounding are never trained through.
    """

    class Config(_BitsConfig):
        train: dict[str, Any] = {"lr": 0.01, "optimizer": "sgd", "momentum": 0.9}
        quantiles: list[float] = [0.5, 0.75, 0.875]
        b_low: int = 4
        b_high: int = 8
        variant: Literal["reproject", "freeze"] = "reproject"
        recovery_epochs: int = 0

        @field_validator("quantiles")
        @classmethod
        def _q(cls, v):
            if not v or any(not 0 < q < 1 for q in v):
                raise ValueError(f"quantiles must be a non-empty list of numbers in (0, 1), got {v}")
            return v

        @field_validator("b_low", "b_high")
        @classmethod
        def _b(cls, v):
            if not 0 <= v <= MAX_FXP_BITS:
                raise ValueError(f"bits must be in [0, {MAX_FXP_BITS}], got {v}")
            return v

        @field_validator("recovery_epochs")
        @classmethod
        def _r(cls, v):
            if v < 0:
                raise ValueError(f"recovery_epochs must be >= 0, got {v}")
            return v

        @model_validator(mode="after")
        def _epochs(self):
            n = len(self.quantiles) + self.recovery_epochs
            if "epochs" in self.train and self.train["epochs"] != n:
                raise ValueError(f"train.epochs={self.train['epochs']} but the schedule needs "
                                 f"len(quantiles) + recovery_epochs = {n}; leave train.epochs out")
            return self

    def _attach_final(self, entries, itq: ITQCallback) -> None:
        c = self.config
        bits = [c.b_high, c.b_low]
        for i, (_, mod, t) in enumerate(entries):
            w = parametrize.original(mod, t).detach()
            low = itq.low[i] if itq.low[i] is not None else torch.zeros_like(w, dtype=torch.bool)
            f_high = frac_bits_for(w, c.b_high, c.int_bits) if c.b_high > 0 else 0
            f_low = itq.frac_low[i] if itq.frac_low[i] is not None else 0
            _attach_mixed(mod, t, low.to(torch.int8), bits, [f_high, f_low])

    def apply(self, model, ctx: StageContext) -> dict[str, Any]:
        c = self.config
        entries = select(model, c.select)
        for _, mod, t in entries:  # train the latent weights directly (earlier mixed formats dropped)
            _pop_mixed(mod, t)
        store = ctx.state.setdefault(STATE_KEY, {})
        names = [qualified(m, t) for m, _, t in entries]
        if c.importance == "gradient" and not all(n in store for n in names):
            ctx.log("  grad_itq: no importance from earlier stages; accumulating from this stage's first epoch")
        tracker = ImportanceTracker(store)

        def importance_fn():
            return importance_tensors(model, entries, ctx.state, c.importance)

        itq = ITQCallback(entries, importance_fn, c.quantiles, c.b_low, c.variant, c.int_bits, log=ctx.log,
                          on_recovery=lambda cb: self._attach_final(entries, cb))
        train = {**c.train, "epochs": len(c.quantiles) + c.recovery_epochs}
        hist = ctx.fit(model, train, callbacks=[itq, tracker], tag="grad_itq")
        if not itq.recovering:
            self._attach_final(entries, itq)
        bits = [c.b_high, c.b_low]
        out = _summary(model, entries, bits)
        out.update({"thresholds": itq.thresholds, "quantiles": c.quantiles, "variant": c.variant,
                    "recovery_epochs": c.recovery_epochs, "val": ctx.evaluate(model),
                    "train_history": hist.get("history", []) if isinstance(hist, dict) else []})
        return out
