"""Weight sharing by product quantization (PQ), with codebook fine-tuning.

``pq_share`` splits each selected weight matrix (conv: ``C_out x C_in*kh*kw``) into sub-vectors
of ``d`` consecutive entries of a row, clusters them with faiss into ``k`` centroids per
sub-space (classic PQ) or per layer (``shared_codebook``, "And the bit goes down"), and
attaches a :class:`PQCodebook` after the tensor's pruning Mask::

    W_eff[r, m*d:(m+1)*d] = C_{m or 0}[codes[r, m]] * mask      C trainable, codes/mask buffers

(math in :mod:`weightzip.primitives.pq`). Pruned weights stay exactly zero ("masked PQ"):
clustering sees only the kept entries and the mask is applied after reconstruction. Training
afterwards (``finetune`` in this stage or a following ``finetune`` stage) moves only the
centroids: autograd through the gather sums, per centroid, the gradients of the sub-vectors
that use it (Deep Compression's rule); ``centroid_grad: mean`` divides that sum by the number of
sub-vectors using the centroid (the average gradient) [reconstructed: METHODS.md C says "as
above", i.e. the summed gradient; averaging is the issue's variant].

Defaults per layer type (``d``: sub-vector length; ``k``: centroids, 8-bit codes):

=========== ========================= =====================================================
layer       default ``d``             why
=========== ========================= =====================================================
Linear      4                         a short run of one row; ``C_in`` is almost always a
                                      multiple of 4 (LeNet: 784, 300, 100, 800, 500)
Conv2d      ``kernel`` = kh*kw        one whole kernel (9 for 3x3, 25 for 5x5), as in the
                                      Quantized-CNN / "bit goes down" conv setting
other       4
=========== ========================= =====================================================

``k = 256`` (8-bit codes) is capped at the number of sub-vectors a codebook is trained on.
Per-layer values use the pattern mappings of pruning (module name / glob / ``re:`` /
``type:Class`` / ``default``), e.g. ``d: {"type:Linear": 8, "type:Conv2d": kernel}``.
"""
from __future__ import annotations

import math
from typing import Any, Literal

import torch
from pydantic import Field, field_validator
from torch import Tensor, nn

from ..core import parametrize
from ..errors import RecipeError
from ..core.parametrize import WzParametrization, register_parametrization
from ..primitives.pq import (PQResult, centroid_counts, num_subspaces, pq_quantize, pq_reconstruct,
                             pq_storage_bits, to_subvectors)
from ..core.registry import register_method
from ..core.select import layer_matches, per_layer_value, qualified, select, type_name
from .base import Method, MethodConfig, StageContext, map_bounded
from .prune import current_mask

__all__ = ["PQCodebook", "PQShare", "attach_pq", "DEFAULT_D", "layer_value"]

DEFAULT_D: dict[str, int | str] = {"Linear": 4, "Conv2d": "kernel"}
DEFAULT_D_OTHER = 4


@register_parametrization
class PQCodebook(WzParametrization):
    """Product-quantized weight: ``W' = reshape(C[codes]) * mask`` (the incoming W is ignored).

    ``codebooks`` (n_cb, k, d) trainable (``n_cb`` = M sub-spaces, or 1 when shared);
    ``codes`` (rows, M) int64 buffer; ``mask`` (the weight's shape) float {0,1} buffer. The
    weight's matrix view is (rows, cols) = (shape[0], numel / shape[0]); sub-space ``m`` covers
    columns ``m*d:(m+1)*d`` (the last one cut at ``cols`` when padded).

    ``centroid_grad``: ``sum`` (autograd's sum over the sub-vectors coded ``j``) or ``mean``
    (that sum divided by their count ``n_j``: ``dL/dC_j = (1/n_j) sum_{(r,m): codes=j} dL/dW'_{r,m}``).
    """

    kind = "pq"

    def __init__(self, codebooks: Tensor, codes: Tensor, mask: Tensor, centroid_grad: str = "sum"):
        super().__init__()
        if centroid_grad not in ("sum", "mean"):
            raise ValueError(f"centroid_grad must be 'sum' or 'mean', got {centroid_grad!r}")
        if codebooks.dim() != 3 or codes.dim() != 2:
            raise ValueError(f"PQCodebook needs codebooks (n_cb, k, d) and codes (rows, M), got "
                             f"{tuple(codebooks.shape)} and {tuple(codes.shape)}")
        self.centroid_grad = centroid_grad
        self.codebooks = nn.Parameter(codebooks.detach().to(torch.float32).clone())
        self.register_buffer("codes", codes.detach().to(torch.int64).clone())
        self.register_buffer("mask", mask.detach().to(torch.float32).clone())

    @classmethod
    def from_spec(cls, args, shapes):
        return cls(torch.zeros(shapes["codebooks"]), torch.zeros(shapes["codes"], dtype=torch.int64),
                   torch.zeros(shapes["mask"]), **args)

    def init_args(self) -> dict[str, Any]:
        return {"centroid_grad": self.centroid_grad}

    @property
    def matrix_shape(self) -> tuple[int, int]:
        rows = int(self.mask.shape[0])
        return rows, int(self.mask.numel() // max(1, rows))

    def used(self) -> Tensor:
        """(rows, M) bool: sub-vectors with at least one kept entry."""
        rows, cols = self.matrix_shape
        d = int(self.codebooks.shape[2])
        msub = to_subvectors(self.mask.reshape(rows, cols), d, pad=True)  # (rows, M, d)
        return msub.amax(-1) > 0

    def forward(self, w: Tensor) -> Tensor:
        cb = self.codebooks
        if self.centroid_grad == "mean" and cb.requires_grad and torch.is_grad_enabled():
            counts = centroid_counts(self.codes, cb.shape[0], cb.shape[1], self.used())  # (n_cb, k)
            scale = (1.0 / counts.clamp_min(1.0)).unsqueeze(-1).to(cb.device)             # (n_cb, k, 1)
            cb = cb.clone()
            cb.register_hook(lambda g, s=scale: g * s)
        rows, cols = self.matrix_shape
        rec = pq_reconstruct(self.codes, cb, cols)                        # (rows, cols)
        return rec.reshape(self.mask.shape) * self.mask

    def storage_hint(self) -> dict[str, Any]:
        return {"kind": "pq", "codes": self.codes.detach().cpu(), "codebooks": self.codebooks.detach().cpu(),
                "mask": self.mask.detach().cpu().bool(), "matrix_shape": self.matrix_shape}

    def extra_repr(self) -> str:
        ncb, k, d = self.codebooks.shape
        return f"M={self.codes.shape[1]}, k={k}, d={d}, codebooks={ncb}, centroid_grad={self.centroid_grad}"


# ---------------------------------------------------------------------------------------------
# Per-layer values


_key_matches = layer_matches  # the per-layer key rule lives in select.py


def layer_value(value: Any, mname: str, module: nn.Module, field: str, where: str) -> Any:
    """:func:`weightzip.core.select.per_layer_value` with the stage named in errors."""
    return per_layer_value(value, mname, module, field, where)


def _check_patterns(value: Any, selected, field: str, where: str) -> None:
    if not isinstance(value, dict):
        return
    for key in value:
        if key == "default" or key.startswith("type:"):  # type keys are generic defaults (a model may lack the type)
            continue
        if not any(_key_matches(key, m, mod) for m, mod, _ in selected):
            names = ", ".join(dict.fromkeys(m for m, _, _ in selected))
            raise RecipeError(f"{where}: field '{field}': layer pattern {key!r} matches no selected layer; "
                              f"selected layers: {names}")


def resolve_d(value: Any, mname: str, module: nn.Module, weight_shape: tuple[int, ...], where: str) -> int:
    """Sub-vector length for one layer: the configured value, ``kernel`` = kh*kw, or the default."""
    d = DEFAULT_D.get(type_name(module), DEFAULT_D_OTHER) if value is None else \
        layer_value(value, mname, module, "d", where)
    if d is None:
        d = DEFAULT_D.get(type_name(module), DEFAULT_D_OTHER)
    if d == "kernel":
        if len(weight_shape) < 3:
            raise RecipeError(f"{where}: layer {mname!r}: field 'd': 'kernel' (d = kh*kw) needs a conv "
                              f"weight, {mname} has shape {tuple(weight_shape)}; give a number")
        d = math.prod(weight_shape[2:])
    if isinstance(d, bool) or not isinstance(d, int) or d < 1:
        raise RecipeError(f"{where}: layer {mname!r}: field 'd': must be a positive integer or 'kernel', got {d!r}")
    return int(d)


# ---------------------------------------------------------------------------------------------
# The method


def attach_pq(module: nn.Module, tname: str, d: int, k: int, *, shared: bool = False,
              mask_mode: str = "element", niter: int = 25, refine_iters: int = 0, pad: bool = False,
              centroid_grad: str = "sum", seed: int = 0) -> dict[str, Any]:
    """Product-quantize ``module.<tname>`` (kept weights only) and attach a :class:`PQCodebook`.

    The mask is the tensor's current pruning Mask (none: all ones). Returns per-layer stats:
    ``d, M, k, k_eff, codebooks, mse`` (mean squared error over kept entries), ``seconds``
    (clustering wall time), ``kept`` (entries of the effective mask) and the raw storage bits.
    Raises ``ValueError`` for a ``d`` that does not divide ``C_in'`` (without ``pad``) or ``k < 2``.
    """
    _check_unshared(module, tname)
    res = pq_quantize(getattr(module, tname).detach(), d, k, mask=current_mask(module, tname), shared=shared,
                      mask_mode=mask_mode, niter=niter, refine_iters=refine_iters, seed=seed, pad=pad)
    return attach_pq_result(module, tname, res, centroid_grad=centroid_grad)


def _check_unshared(module: nn.Module, tname: str) -> None:
    for cls in (PQCodebook, parametrize.Codebook):
        if parametrize.find(module, tname, cls) is not None:
            raise RecipeError(f"{type_name(module)}.{tname} is already shared ({cls.__name__}); "
                              "run one weight-sharing stage per tensor")


def attach_pq_result(module: nn.Module, tname: str, res: PQResult, centroid_grad: str = "sum") -> dict[str, Any]:
    """Attach the :class:`PQCodebook` of ``res`` (from :func:`pq_quantize` on ``module.<tname>``
    and its current mask) and return the per-layer stats of :func:`attach_pq`."""
    w = getattr(module, tname).detach()
    eff_mask = res.mask if res.mask is not None else torch.ones_like(w, device="cpu")
    p = PQCodebook(res.codebooks.to(w.device), res.codes.to(w.device), eff_mask.to(w.device),
                   centroid_grad=centroid_grad)
    parametrize.attach(module, tname, p)
    kept = int((eff_mask != 0).sum())
    rows, cols = res.matrix_shape
    bits = pq_storage_bits(rows, cols, res.d, res.k_eff, res.shared)
    return {"d": res.d, "M": res.M, "k": res.k, "k_eff": res.k_eff, "codebooks": int(res.codebooks.shape[0]),
            "mse": res.inertia / max(1, kept), "kept": kept, "numel": int(w.numel()),
            "seconds": res.seconds, "code_bits": bits["codes"], "codebook_bits": bits["codebooks"],
            "zero_code": res.zero_code}


@register_method("pq_share")
class PQShare(Method):
    """Product-quantization weight sharing per tensor, then optional codebook fine-tuning.

    Fields: ``d`` (sub-vector length per layer; default Linear 4, Conv2d ``kernel`` = kh*kw),
    ``k`` (centroids per codebook, default 256 = 8-bit codes, capped for tiny layers, >= 2),
    ``shared_codebook`` (one codebook per layer instead of one per sub-space), ``mask_mode``
    (``element``: exact pruning mask; ``subvector``: whole sub-vectors kept/dropped, no mask
    stream, lookup-table friendly), ``niter`` (Lloyd iterations), ``engine`` (``faiss``,
    ``lloyd`` or ``auto``: see :func:`weightzip.primitives.pq.pq_quantize`), ``sample_per_centroid``
    (lloyd engine: Lloyd iterations on at most that many sub-vectors per centroid, then one
    update on all; 0 or null: all), ``refine_iters``
    (masked Lloyd steps on kept entries only), ``pad`` (allow ``d`` not dividing ``C_in'``),
    ``centroid_grad`` (``sum`` | ``mean``), ``finetune`` (a TrainConfig dict to train the
    codebooks right away, e.g. ``{epochs: 2, lr: 1e-4, optimizer: adam}``).
    """

    class Config(MethodConfig):
        d: int | str | dict[str, int | str] | None = Field(
            None, description="sub-vector length per layer; default Linear 4, Conv2d 'kernel' (kh*kw)")
        k: int | dict[str, int] = Field(256, description="centroids per codebook (256 = 8-bit codes)")
        shared_codebook: bool = Field(False, description="one codebook for all sub-spaces of a layer")
        mask_mode: Literal["element", "subvector"] = "element"
        niter: int = Field(25, ge=1, description="k-means (Lloyd) iterations")
        engine: Literal["auto", "faiss", "lloyd"] = Field(
            "auto", description="k-means engine: faiss, lloyd (batched exact Lloyd, weightzip.primitives.lloyd) "
                                "or auto (lloyd for one codebook per sub-space, faiss for a shared one)")
        sample_per_centroid: int | None = Field(
            64, description="lloyd engine: a codebook of more than this many sub-vectors per centroid runs its "
                            "Lloyd iterations on a seeded sample of that many, then one update on all of them "
                            "(0 or null: every iteration on all points)")
        refine_iters: int = Field(0, ge=0, description="masked Lloyd steps after faiss (pruned layers)")
        pad: bool = Field(False, description="zero-pad C_in' up to a multiple of d")
        centroid_grad: Literal["sum", "mean"] = "sum"
        seed: int | None = Field(None, description="faiss seed (default: the run's seed)")
        finetune: dict[str, Any] | None = Field(None, description="train the codebooks after sharing")

        @field_validator("k")
        @classmethod
        def _k(cls, v):
            for x in (v.values() if isinstance(v, dict) else [v]):
                if isinstance(x, bool) or not isinstance(x, int) or x < 2:
                    raise ValueError(f"k must be an integer >= 2 centroids per codebook (k = 256 gives 8-bit "
                                     f"codes), got {x!r}")
            return v

        @field_validator("sample_per_centroid", mode="before")
        @classmethod
        def _sample(cls, v):
            from weightzip.primitives.lloyd import check_sample_per_centroid

            return check_sample_per_centroid(v) if v is not None else None

        @field_validator("d")
        @classmethod
        def _d(cls, v):
            for x in (v.values() if isinstance(v, dict) else [v]):
                if x is not None and x != "kernel" and (isinstance(x, bool) or not isinstance(x, int) or x < 1):
                    raise ValueError(f"d must be a positive integer or 'kernel' (kh*kw), got {x!r}")
            return v

    def apply(self, model: nn.Module, ctx: StageContext) -> dict[str, Any]:
        c = self.config
        where = f"stage {self.name}" + (f" ({c.label})" if c.label else "")
        sel = select(model, c.select)
        _check_patterns(c.d, sel, "d", where)
        _check_patterns(c.k, sel, "k", where)
        seed = ctx.seed if c.seed is None else c.seed
        jobs = []
        for mname, mod, t in sel:
            name = qualified(mname, t)
            shape = tuple(getattr(mod, t).shape)
            d = resolve_d(c.d, mname, mod, shape, where)
            k = int(layer_value(c.k, mname, mod, "k", where))
            cols = math.prod(shape[1:])
            try:
                num_subspaces(cols, d, c.pad)
            except ValueError as e:
                raise RecipeError(f"{where}: layer {name!r} (shape {list(shape)}): field 'd': {e}") from None
            _check_unshared(mod, t)
            jobs.append((name, mod, t, d, k))

        def cluster(job):  # in a worker thread: reads the weight and its mask, changes nothing
            name, mod, t, d, k = job
            try:
                return pq_quantize(getattr(mod, t).detach(), d, k, mask=current_mask(mod, t),
                                   shared=c.shared_codebook, mask_mode=c.mask_mode, niter=c.niter,
                                   refine_iters=c.refine_iters, seed=seed, pad=c.pad, engine=c.engine,
                                   sample_per_centroid=c.sample_per_centroid)
            except ValueError as e:
                raise RecipeError(f"{where}: layer {name!r}: {e}") from None

        # tensors side by side on every core (faiss and torch release the GIL), the largest alone
        # (map_bounded); each result is attached here, in this thread, as it arrives
        done: dict[int, dict[str, Any]] = {}
        for i, res in map_bounded(jobs, cluster, lambda j: getattr(j[1], j[2]).numel(), ctx.n_workers):
            name, mod, t, _, _ = jobs[i]
            done[i] = attach_pq_result(mod, t, res, centroid_grad=c.centroid_grad)
            del res
        layers: dict[str, Any] = {jobs[i][0]: done[i] for i in range(len(jobs))}
        ctx.log("  PQ: " + ", ".join(f"{n} d={v['d']} M={v['M']} k={v['k_eff']}" for n, v in layers.items()))
        metrics: dict[str, Any] = {"layers": layers,
                                   "cluster_seconds": sum(v["seconds"] for v in layers.values())}
        if c.finetune is not None:
            metrics["val_shared"] = ctx.evaluate(model)
            hist = ctx.fit(model, c.finetune, tag="codebook fine-tuning")
            metrics["train_history"] = hist.get("history", []) if isinstance(hist, dict) else []
        metrics["val"] = ctx.evaluate(model)
        return metrics

