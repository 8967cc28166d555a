"""The thesis-style accounting of the mixed-bit fixed-point methods (analysis/size.py, last section)."""
import math

import torch
from torch import nn

from weightzip.core import parametrize as P
from weightzip.analysis.size import csr_matrix_view, gradient_importance_csr_ratio, thesis_csr_bits
from weightzip.methods.gradient_importance import MixedFixedPoint


def brute_csr_bits(mat: torch.Tensor, bits: int, meta: int) -> int:
    """Count by building the CSR arrays explicitly."""
    rows, cols = mat.shape
    vals, col_idx, row_ptr = [], [], [0]
    for r in range(rows):
        for c in range(cols):
            if mat[r, c] != 0:
                vals.append(mat[r, c])
                col_idx.append(c)
        row_ptr.append(len(vals))
    nnz = len(vals)
    if nnz == 0:
        return 0
    idx_bits = math.ceil(math.log2(cols)) if cols > 1 else 0
    ptr_bits = math.ceil(math.log2(nnz + 1))
    assert max(col_idx) < 2 ** idx_bits or idx_bits == 0 and max(col_idx) == 0
    assert max(row_ptr) < 2 ** ptr_bits
    return nnz * bits + len(col_idx) * idx_bits + len(row_ptr) * ptr_bits + meta


def test_thesis_csr_bits_matches_explicit_csr():
    torch.manual_seed(0)
    for shape in [(5, 7), (1, 9), (3, 1), (8, 16)]:
        m = (torch.rand(shape) > 0.6).float()
        assert thesis_csr_bits(*shape, int(m.sum()), 4, 16) == brute_csr_bits(m, 4, 16)
    assert thesis_csr_bits(4, 4, 0, 8) == 0


def test_matrix_views():
    assert csr_matrix_view((300, 784)) == (300, 784)
    assert csr_matrix_view((20, 6, 5, 5)) == (20, 150)
    assert csr_matrix_view((10,)) == (1, 10)
    assert csr_matrix_view(()) == (1, 1)


def test_ratio_one_csr_per_layer_cluster():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 2))
    cl = torch.randint(0, 3, (6, 8))
    P.attach(m[0], "weight", MixedFixedPoint(cl, [8, 4, 0], [7, 3, 0]))
    out = gradient_importance_csr_ratio(m)
    w = m[0].weight.detach()
    want = sum(brute_csr_bits(w * (cl == c), b, 16) for c, b in enumerate([8, 4, 0]))
    assert out["tensors"]["0.weight"]["bits"] == want
    assert out["tensors"]["0.weight"]["clusters"][2]["nnz"] == 0
    dense = 32 * (6 + 2 * 6 + 2)
    assert out["total_bits"] == want + dense
    assert out["baseline_bits"] == 32 * (48 + 6 + 12 + 2)
    assert math.isclose(out["ratio"], out["baseline_bits"] / out["total_bits"])
