"""The committed .wz files still decode to the same tensors and re-evaluate to their recorded accuracy.

The golden hashes (tests/golden/committed_wz.json) were made by tests/golden/make_committed_wz.py
with the codec as it stood before the issue-12 restructuring: a refactor of codec/ or runtime/
that changes one decoded bit fails here.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import weightzip as wz
from weightzip.codec import container

from .golden.make_committed_wz import tensor_hashes

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = json.loads((ROOT / "tests" / "golden" / "committed_wz.json").read_text())
FILES = sorted(GOLDEN)


def test_every_committed_file_has_a_golden_entry():
    on_disk = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "benchmarks" / "results").rglob("*.wz"))
    assert set(FILES) <= set(on_disk)


@pytest.mark.parametrize("rel", FILES)
def test_committed_file_decodes_to_the_golden_tensors(rel):
    assert tensor_hashes(ROOT / rel) == GOLDEN[rel]


@pytest.mark.parametrize("rel", FILES)
def test_committed_file_loads_and_runs(rel):
    model = wz.load(ROOT / rel).eval()
    name = model.wz_config["name"]
    kw = model.wz_config.get("kwargs") or {}
    with torch.inference_mode():
        if name.startswith("lstm"):
            y = model(torch.randint(0, kw.get("vocab_size", 10000), (5, 2)))[0]
        else:
            c = kw.get("in_channels", 3 if "cifar" in name or name.startswith(("vgg", "resnet", "alexnet")) else 1)
            s = kw.get("image_size", 32 if c == 3 else 28)
            y = model(torch.randn(2, c, s, s))
    assert torch.isfinite(y).all()


# Files whose manifest records the accuracy of the compressed model on the full MNIST test set
# (`compressed_test`): the same network re-loaded from the file must score the same.
FULL_TEST = [r for r in FILES if (container.read_manifest(ROOT / r).get("metrics") or {}).get("data") == "mnist"]


@pytest.mark.slow
@pytest.mark.parametrize("rel", FULL_TEST)
def test_committed_file_re_evaluates_to_its_recorded_accuracy(rel, data_root):
    from weightzip.jobs.runs import make_loaders
    from weightzip.training.evaluate import evaluate

    recorded = container.read_manifest(ROOT / rel)["metrics"]["compressed_test"]["accuracy"]
    loaders = make_loaders("mnist", 1000, root=data_root, eval_batch_size=1000)
    got = evaluate(wz.load(ROOT / rel), loaders.test, "classify")["accuracy"]
    assert got == pytest.approx(recorded, abs=1e-4)
