"""``finetune``: train the model as it is (masks, codebooks and quantizers stay in place)."""
from __future__ import annotations

from typing import Any

from ..core.registry import register_method
from .base import Method, MethodConfig, StageContext


@register_method("finetune")
class Finetune(Method):
    """Retrain every trainable tensor (latent weights, centroids) for ``train.epochs`` epochs.

    Pruned weights stay zero because the :class:`~weightzip.core.parametrize.Mask` zeroes their
    gradient; shared weights move only through their centroids.
    """

    class Config(MethodConfig):
        train: dict[str, Any] = {"epochs": 1, "lr": 1e-3, "optimizer": "adam"}

    def apply(self, model, ctx: StageContext) -> dict[str, Any]:
        hist = ctx.fit(model, self.config.train, tag="finetune")
        return {"val": ctx.evaluate(model), "train_history": hist.get("history", []) if isinstance(hist, dict) else []}
