"""Portable parts reproduce every committed .wz tensor bit for bit, and are smaller than fp32."""
from pathlib import Path

import numpy as np
import pytest

from weightzip.codec import container, decode
from weightzip.export.parts import dense_from_parts, gaps_with_fillers, positions_from_gaps, tensor_parts

FILES = sorted((Path(__file__).resolve().parents[2] / "benchmarks" / "results").glob("*.wz"))


def test_gaps_with_fillers_round_trip():
    pos = np.array([0, 3, 300, 301, 5000])
    for bits in (4, 8):
        gaps, real = gaps_with_fillers(pos, bits)
        assert gaps.max() < 2 ** bits
        assert np.array_equal(positions_from_gaps(gaps)[real], pos)


@pytest.mark.parametrize("path", FILES[:12], ids=lambda p: p.name)
def test_parts_decode_exactly(path):
    _, formats = container.read(path)
    for name, fmt in formats.items():
        p = tensor_parts(fmt)
        if p is None:
            continue
        ref = decode(fmt).float().numpy()
        got = dense_from_parts(p)
        assert np.array_equal(ref, got), name
        assert p.nbytes <= 4 * ref.size + 64, name
