"""Model outputs other than a logits tensor: ModelOutput / dict / tuple, for evaluation and training."""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from weightzip.errors import InvalidModelError
from weightzip.training.evaluate import evaluate, logits_of
from weightzip.training.trainer import Trainer


class Wrapped(nn.Module):
    """A classifier whose forward wraps the logits as ``kind`` says."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        z = self.fc(x)  # [B, 3]
        if self.kind == "tuple":
            return (z, torch.zeros(1))
        if self.kind == "dict":
            return {"logits": z, "aux": 0}
        if self.kind == "ordered":  # like transformers' ModelOutput (an OrderedDict subclass)
            return OrderedDict(loss=None, logits=z)
        if self.kind == "attr":
            return _Out(z)
        return {"scores": z}


@dataclass
class _Out:
    logits: torch.Tensor


def _loader(n=48, seed=0, long=False):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 1).long()
    if long:
        x = torch.randint(0, 50, (n, 6), generator=g)
        y = (x[:, 0] % 3)
    return DataLoader(TensorDataset(x, y), batch_size=16)


@pytest.mark.parametrize("kind", ["tuple", "dict", "ordered", "attr"])
def test_wrapped_logits_evaluate_like_the_plain_model(kind):
    torch.manual_seed(0)
    m = Wrapped(kind)
    plain = nn.Sequential(m.fc)
    assert evaluate(m, _loader()) == evaluate(plain, _loader())


@pytest.mark.parametrize("kind", ["dict", "ordered"])
def test_wrapped_logits_train(kind):
    torch.manual_seed(0)
    m = Wrapped(kind)
    before = m.fc.weight.detach().clone()
    out = Trainer(m, {"epochs": 1, "lr": 0.1, "optimizer": "sgd", "progress": False},
                  _Loaders(_loader(), _loader(seed=1))).fit()
    assert not torch.equal(before, m.fc.weight) and "val_accuracy" in out["final"]


@dataclass
class _Loaders:
    train: object
    val: object
    test: object = None
    task: str = "classify"


def test_no_logits_is_a_clear_error():
    with pytest.raises(InvalidModelError, match=r"Wrapped returned dict with keys \['scores'\]: no logits found"):
        evaluate(Wrapped("none"), _loader())
    with pytest.raises(InvalidModelError, match="return one of these from forward"):
        logits_of("text")


def test_lm_output_with_logits_and_no_hidden():
    class LM(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.out = nn.Embedding(50, 8), nn.Linear(8, 50)

        def forward(self, x, hidden=None):
            return {"logits": self.out(self.emb(x))}  # [T, B, V]

    x = torch.randint(0, 50, (8, 5, 3)).reshape(8 * 5, 3)  # 40 windows of 3 tokens
    ld = DataLoader(TensorDataset(x, x.roll(-1, 1)), batch_size=4,
                    collate_fn=lambda b: tuple(torch.stack(t).t() for t in zip(*b)))  # time-major [T, B]
    out = evaluate(LM(), ld, "lm")
    assert set(out) == {"loss", "perplexity"} and out["perplexity"] > 1


def test_hugging_face_classifier_trains_and_compresses_without_an_adapter():
    transformers = pytest.importorskip("transformers")
    import weightzip as wz

    cfg = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=32, max_position_embeddings=16, num_labels=3)
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(cfg)
    recipe = wz.Recipe.from_dict({"name": "bert", "stages": [
        {"method": "kmeans_share", "bits": 4, "select": {"types": ["Linear"]},
         "finetune": {"epochs": 1, "lr": 1e-3, "optimizer": "adam", "progress": False}}]})
    result = wz.compress(model, recipe, _loader(long=True), _loader(seed=1, long=True), log=lambda *_: None)
    assert set(result.baseline["val"]) == {"loss", "accuracy"}
    assert result.stages[0].metrics["train_history"] and "accuracy" in result.stages[0].metrics["val"]
