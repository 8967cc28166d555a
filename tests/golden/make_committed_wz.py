"""Write tests/golden/committed_wz.json: sha256 of every decoded tensor of every committed .wz.

The reference was made with the codec as it stood before the issue-12 restructuring (commit
c3d735b, codec/formats.py in one file); files committed later (the issue-15 records) were added
with the codec of their commit, old entries unchanged. Re-run only to add files or for a deliberate
format change:
    python tests/golden/make_committed_wz.py
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from weightzip.codec import container, decode

ROOT = Path(__file__).resolve().parents[2]


def tensor_hashes(path: Path) -> dict[str, str]:
    _, formats = container.read(path)
    out = {}
    for name in sorted(formats):
        a = np.ascontiguousarray(decode(formats[name]).numpy())
        out[name] = f"{a.dtype}{list(a.shape)}:" + hashlib.sha256(a.tobytes()).hexdigest()
    return out


def main() -> None:
    files = sorted((ROOT / "benchmarks" / "results").rglob("*.wz"))
    golden = {str(f.relative_to(ROOT)): tensor_hashes(f) for f in files}
    (Path(__file__).parent / "committed_wz.json").write_text(json.dumps(golden, indent=1, sort_keys=True) + "\n")
    print(f"{len(golden)} files")


if __name__ == "__main__":
    main()
