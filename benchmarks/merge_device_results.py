"""Merge baseline entries produced on a GPU machine (its baselines.json) into ours.

    python benchmarks/merge_device_results.py benchmarks/results/device/baselines-h100.json

The GPU run is the same script (`benchmarks/baselines.py --only resnet20-cifar10 --device cuda
--epochs 40`); this only copies its entries (with their machine records) and re-renders the
Markdown, so every figure still comes from a run of the committed script.
"""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
from baselines import RESULTS, write_markdown  # noqa: E402


def main(src: str) -> None:
    theirs = json.loads(Path(src).read_text())
    path = RESULTS / "baselines.json"
    ours = C.read_json(path, {"baselines": {}, "timing": {}})
    for name, entry in theirs.get("baselines", {}).items():
        if (entry.get("device") or entry.get("train_config", {}).get("device")) == "cuda" or "cuda" in json.dumps(entry.get("machine", {})):
            entry = dict(entry)
            entry.setdefault("machine", theirs.get("machine"))
            ours["baselines"][name] = entry
    C.write_json(path, ours, indent=2, sort_keys=True)
    write_markdown(ours, RESULTS / "baselines.md")
    print(f"merged into {path}")


if __name__ == "__main__":
    main(sys.argv[1])
