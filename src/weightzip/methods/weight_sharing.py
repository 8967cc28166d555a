"""Weight sharing: scalar k-means (Deep Compression), with centroid fine-tuning.

``kmeans_share`` clusters the kept (unpruned) weights of each selected tensor into ``k = 2^b``
centroids (math in :mod:`weightzip.primitives.cluster`) and attaches a
:class:`~weightzip.core.parametrize.Codebook` after the tensor's Mask::

    W_eff = C[codes] * m          C (k,) trainable, codes (shape) int64, m = the current Mask

Pruned weights stay exactly zero (they are not clustered and ``m`` zeroes them). Training the
model afterwards (``finetune`` inside this stage, or a following ``finetune`` stage) moves only
the centroids (and the unshared tensors such as biases); autograd through the indexing gives
Deep Compression's centroid gradient ``dL/dC_j = sum_{i: codes_i = j} dL/dW_eff_i``.

Per-layer bits use the same patterns as pruning (see :func:`weightzip.methods.prune.per_layer_value`),
e.g. ``bits: {"type:Conv2d": 8, "type:Linear": 5}`` for LeNet-5 as in Deep Compression.
Product quantization is a separate method in this file family (added separately).
"""
from __future__ import annotations

import time
from typing import Any, Literal

import torch
from pydantic import Field, field_validator
from torch import nn

from ..core import parametrize
from ..core.heap import large_blocks_mapped, release_free_memory
from ..errors import RecipeError
from ..primitives.cluster import share_weights
from ..core.registry import register_method
from ..core.select import qualified, select
from .base import Method, MethodConfig, StageContext, map_bounded
from .prune import check_layer_patterns, current_mask, per_layer_value

__all__ = ["KMeansShare", "attach_codebook", "cluster_tensor", "attach_shared"]


def attach_codebook(module: nn.Module, tname: str, bits: int, *, init: str = "linear",
                    engine: str = "torch", max_iter: int = 300, tol: float = 1e-4,
                    seed: int = 0) -> dict[str, Any]:
    """Cluster ``module.<tname>`` (kept weights only) and attach a Codebook; returns stats.

    The mask of the Codebook is the tensor's current Mask (none when it is not pruned).
    Stats: ``bits``, ``k`` (centroids actually used), ``n`` (clustered weights), ``iterations``,
    ``mse`` (mean squared error of the shared weights over the clustered ones), ``seconds``.
    """
    shared = cluster_tensor(module, tname, bits, init=init, engine=engine, max_iter=max_iter, tol=tol, seed=seed)
    return attach_shared(module, tname, shared)


def cluster_tensor(module: nn.Module, tname: str, bits: int, *, init: str = "linear", engine: str = "torch",
                   max_iter: int = 300, tol: float = 1e-4, seed: int = 0) -> dict[str, Any]:
    """The k-means of ``module.<tname>`` (its kept weights), without changing the module:
    ``{"centroids", "codes" (the Codebook's dtype), "mask" (None when not pruned), "bits", "k",
    "n", "iterations", "mse", "seconds"}``; :func:`attach_shared` attaches it. Safe to run for
    several tensors at once in threads (it reads the module only)."""
    if parametrize.find(module, tname, parametrize.Codebook) is not None:
        raise RecipeError(f"{type(module).__name__}.{tname} is already shared by a Codebook; "
                          "run kmeans_share once per tensor")
    w = getattr(module, tname).detach()  # (shape): effective weights (after the Mask)
    mask = current_mask(module, tname)
    t0 = time.perf_counter()
    centroids, codes, m, res = share_weights(w, bits, mask, init=init, engine=engine, max_iter=max_iter, tol=tol,
                                             seed=seed, codes_dtype=parametrize.Codebook.codes_dtype(2 ** int(bits)))
    codes = codes.to(parametrize.Codebook.codes_dtype(centroids.numel()))  # 1 byte per weight (k <= 256)
    n = w.numel() if mask is None else int((m != 0).sum())
    return {"centroids": centroids.to(w.device), "codes": codes.to(w.device),
            "mask": None if mask is None else m.to(w.device), "bits": int(bits), "k": int(centroids.numel()),
            "n": n, "iterations": res.n_iter_, "mse": res.inertia_ / max(1, n),
            "seconds": time.perf_counter() - t0}


def attach_shared(module: nn.Module, tname: str, shared: dict[str, Any]) -> dict[str, Any]:
    """Attach the Codebook of :func:`cluster_tensor`'s result; returns its stats (no tensors)."""
    if parametrize.find(module, tname, parametrize.Codebook) is not None:
        raise RecipeError(f"{type(module).__name__}.{tname} is already shared by a Codebook; "
                          "run kmeans_share once per tensor")
    cb = parametrize.Codebook(shared.pop("centroids"), shared.pop("codes"), shared.pop("mask"))
    with torch.no_grad():   # registering runs the Codebook once: its lookup then needs no int32 index
        parametrize.attach(module, tname, cb)
    return shared


@register_method("kmeans_share")
class KMeansShare(Method):
    """Scalar k-means weight sharing per tensor (Han et al. 2016), then optional fine-tuning.

    Per selected tensor: ``k = 2^bits`` centroids initialized by ``init`` (``linear`` over
    [min, max] of the kept weights - Deep Compression's choice; ``density``; ``random``),
    Lloyd iterations by ``engine`` (``torch`` exact 1-D, ``faiss``, ``sklearn``) until the
    assignments stop changing, the centre shift is below ``tol * var`` or ``max_iter``.
    ``finetune`` (a TrainConfig, e.g. ``{epochs: 2, lr: 1e-4, optimizer: adam}``) then trains
    the centroids with the summed per-centroid gradients.
    """

    class Config(MethodConfig):
        bits: int | dict[str, int] = Field(..., description="code bits per layer: k = 2^bits centroids")
        init: Literal["linear", "density", "random"] = "linear"
        engine: Literal["torch", "faiss", "sklearn"] = "torch"
        max_iter: int = Field(300, ge=1)
        tol: float = Field(1e-4, ge=0)
        finetune: dict[str, Any] | None = Field(None, description="train the centroids after sharing")
        drop_latent: bool = Field(False, description="free each shared tensor's latent weight (the Codebook "
                                  "ignores it): a post-training recipe then holds 1 byte per weight instead of "
                                  "5; later stages that read latents (uniform, prune) would see zeros")

        @field_validator("bits")
        @classmethod
        def _bits(cls, v):
            for b in (v.values() if isinstance(v, dict) else [v]):
                if not isinstance(b, int) or isinstance(b, bool) or not 1 <= b <= 16:
                    raise ValueError(f"bits must be an integer in [1, 16] (k = 2^bits centroids), got {b!r}")
            return v

    def apply(self, model: nn.Module, ctx: StageContext) -> dict[str, Any]:
        c = self.config
        sel = select(model, c.select)
        check_layer_patterns(c.bits, sel, "bits", f"stage {self.name}")
        jobs = [(mname, mod, t, int(per_layer_value(c.bits, mname, mod, "bits"))) for mname, mod, t in sel]

        def cluster(job):
            _, mod, t, bits = job
            return cluster_tensor(mod, t, bits, init=c.init, engine=c.engine, max_iter=c.max_iter, tol=c.tol,
                                  seed=ctx.seed)

        # one Parameter under several names (an LM head tied to the token embedding), unparametrized
        # and at the same bits: clustered once (the k-means is deterministic), the result attached
        # to every name
        followers: dict[int, list[int]] = {}   # job -> the later jobs that reuse its k-means
        first_of: dict[tuple[int, int], int] = {}
        for i, (_, mod, t, bits) in enumerate(jobs):
            if parametrize.chain(mod, t):
                continue
            j = first_of.setdefault((id(getattr(mod, t)), bits), i)
            if j != i:
                followers.setdefault(j, []).append(i)
        reused = {i for f in followers.values() for i in f}
        todo = [i for i in range(len(jobs)) if i not in reused]
        # tensors clustered side by side on every core (sort and k-means release the GIL), no more
        # at once than the largest tensor's size; each Codebook attached here as its k-means ends
        # the smallest first: with drop_latent the largest tensor then runs when the others' latents are freed
        order = sorted(todo, key=lambda i: parametrize.original(jobs[i][1], jobs[i][2]).numel())
        tied = parametrize.tied_parameters(model) if c.drop_latent else {}
        groups: dict[str, set[str]] = {}    # canonical name -> every name of that Parameter
        for alias, canon in tied.items():
            groups.setdefault(canon, {canon}).add(alias)
        names = {qualified(mname, t): i for i, (mname, _, t, _) in enumerate(jobs)}
        done: dict[int, Any] = {}
        # blocks of 16 MB and more (latents, sorted copies of large tensors) go back to the OS when
        # freed; the k-means chunks (8 MB) stay in the heap: with 1 MB, their fresh mappings' page
        # faults made the stage about 1.7x slower (BERT-base 11 -> 20 s), for 25-40 MB less RSS after it
        with large_blocks_mapped(16 << 20):
            self._cluster_all(jobs, order, followers, cluster, tied, groups, names, done, ctx)
        layers: dict[str, Any] = {qualified(mname, t): done[i] for i, (mname, _, t, _) in enumerate(jobs)}
        ctx.log("  shared: " + ", ".join(f"{k} {v['bits']}b (k={v['k']}, {v['iterations']} it)"
                                         for k, v in layers.items()))
        metrics: dict[str, Any] = {"layers": layers}
        if c.finetune is not None:
            metrics["val_shared"] = ctx.evaluate(model)
            hist = ctx.fit(model, c.finetune, tag="centroid fine-tuning")
            metrics["train_history"] = hist.get("history", []) if isinstance(hist, dict) else []
        metrics["val"] = ctx.evaluate(model)
        return metrics

    def _cluster_all(self, jobs, order, followers, cluster, tied, groups, names, done, ctx) -> None:
        """Run the k-means of ``jobs[order]`` side by side; attach each result as it ends (and to
        the jobs that reuse it), free dropped latents, fill ``done``."""
        c = self.config
        for i, shared in map_bounded([jobs[i] for i in order], cluster,
                                     lambda j: parametrize.original(j[1], j[2]).numel(), ctx.n_workers):
            lead_i = order[i]
            for k in [lead_i, *followers.get(lead_i, [])]:
                mname, mod, t, _ = jobs[k]
                done[k] = attach_shared(mod, t, dict(shared))
                if k != lead_i:   # the names of one Parameter read one codes tensor (never written)
                    parametrize.find(mod, t, parametrize.Codebook).codes = \
                        parametrize.find(jobs[lead_i][1], jobs[lead_i][2], parametrize.Codebook).codes
            if c.drop_latent:
                for k in [lead_i, *followers.get(lead_i, [])]:
                    name = qualified(jobs[k][0], jobs[k][2])
                    if name not in tied and name not in groups:
                        parametrize.drop_latent(jobs[k][1], jobs[k][2])
                self._drop_tied(jobs, names, groups, done)
            del shared
            release_free_memory()   # the k-means copies of this tensor, before a larger one's

    @staticmethod
    def _drop_tied(jobs, names: dict[str, int], groups: dict[str, set[str]], done: dict[int, Any]) -> None:
        """Free the latent of a Parameter tied under several names once every name is shared by a
        Codebook of this stage (a name outside the stage still reads it: then it is kept). The
        names keep one stand-in Parameter, so the tie is still seen (saved once, re-tied by load)."""
        for canon, members in list(groups.items()):
            idx = [names.get(n) for n in members]
            if any(i is None or i not in done for i in idx):
                continue
            first = jobs[idx[0]]
            parametrize.drop_latent(first[1], first[2])
            stand_in = first[1].parametrizations[first[2]].original
            for i in idx[1:]:
                _, mod, t, _ = jobs[i]
                if not isinstance(parametrize.chain(mod, t)[-1], parametrize.Codebook):
                    raise RuntimeError(f"{qualified(jobs[i][0], t)}: tied latent without a Codebook")
                mod.parametrizations[t]._parameters["original"] = stand_in
            del groups[canon]
