"""Make the zstd dictionary of format-2 manifests (``weightzip/codec/manifest_dict.py``). Run once:

    python tests/codec/make_manifest_dict.py > /tmp/dict.txt   # prints the literal to paste

The dictionary is a raw-content zstd dictionary: JSON text a manifest is likely to repeat, so
zstd can refer back to it instead of spelling keys and common values out. It is built from
SYNTHETIC content only (no committed result file, so the sizes measured on those files are not
fitted to them): the tensor entries the codec writes for random sparse / codebook / uniform /
dense tensors of the zoo's usual layer shapes, the caller fields ``weightzip.save`` writes for each
zoo model name, and the dicts of a few recipes in ``recipes/``. Once released, the dictionary is
part of the file format and never changes (``test_manifest_dict_is_frozen``); a new one gets a
new dictionary id.
"""
from __future__ import annotations

import base64
import json
import zlib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
LIMIT = 12_000


def _tensor_entries() -> dict:
    from weightzip.codec import container, encode

    rng = np.random.default_rng(0)
    formats = {}
    shapes = {"fc1.weight": (64, 96), "fc1.bias": (64,), "conv1.weight": (8, 3, 3, 3), "conv1.bias": (8,),
              "fc2.weight": (10, 64), "fc2.bias": (10,), "bn.weight": (8,), "bn.running_mean": (8,)}
    for i, (name, shape) in enumerate(shapes.items()):
        w = rng.standard_normal(shape).astype(np.float32)
        if name.endswith("weight") and len(shape) > 1:
            levels = np.sort(rng.standard_normal(2 + 2 * i).astype(np.float32))
            w = levels[rng.integers(0, levels.size, size=shape)]
            w[rng.random(shape) < 0.9] = 0.0
        elif i % 2:
            w = np.round(w * 16) / 16
        formats[name] = encode(w, None, options={"name": name})
    raw, _ = container._manifest_bytes({}, formats)
    tensors = json.loads(raw)["tensors"]
    for e in tensors.values():                  # as format 2 writes them: no offset; CRCs are noise
        for s in e["streams"].values():
            s.pop("offset", None)
            s["crc32"] = 0
    return tensors


def _caller_fields() -> list[dict]:
    from weightzip.core.recipe import Recipe

    out = []
    for r in ("deep-compression.yaml", "records-lenet300_100.yaml", "prune-pq.yaml"):
        out.append(Recipe.from_yaml(ROOT / "recipes" / r).to_dict())
    for name in ("lenet300_100", "lenet5", "mlp", "resnet20", "vgg16_cifar", "alexnet_cifar", "lstm_lm"):
        out.append({"weightzip_version": "0.1.0", "model": {"name": name, "kwargs": {
            "num_classes": 10, "in_channels": 1, "image_size": 28}}, "recipe": None,
            "metrics": {"baseline_test_error": 0.0, "test_error_in_memory": 0.0, "compressed_test": {"loss": 0.0,
                        "accuracy": 0.0}, "data": "mnist"},
            "runtime": {}, "baseline_bytes": 0, "extra": {"recipe": {"path": "recipes/", "name": "", "overrides": {
                "0": {"sparsity": {}, "train": {"epochs": 0, "lr": 0.1, "optimizer": "sgd", "momentum": 0.9,
                                               "nesterov": True, "weight_decay": 0.0005, "schedule": "cosine"}},
                "1": {"bits": {"type:Conv2d": 4, "type:Linear": 3}}}}}})
    return out


def build() -> bytes:
    parts = [json.dumps(x, separators=(",", ":")) for x in _caller_fields()]
    parts.append(json.dumps(_tensor_entries(), separators=(",", ":")))   # most used: last (shortest offsets)
    text = "".join(parts).encode()
    return text[-LIMIT:]


def main() -> None:
    d = build()
    b64 = base64.b64encode(zlib.compress(d, 9)).decode()
    print(f"# {len(d)} bytes")
    for i in range(0, len(b64), 96):
        print(f'    "{b64[i:i + 96]}"')


if __name__ == "__main__":
    main()
