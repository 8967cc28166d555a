"""Graph programs run their BLAS GEMMs at the runtime's thread count, and leave BLAS as it was."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from weightzip.runtime.compiled import kernels as K
from weightzip.runtime.compiled import module as M
from weightzip.runtime.compiled.lower import lower_graph


def test_blas_threads_set_inside_and_restored_after():
    libs = M._blas_libs()
    if not libs:
        pytest.skip("no BLAS library visible to threadpoolctl")
    before = [lib.num_threads for lib in libs]
    for n in (1, 2):
        with M._BlasThreads(n):
            assert all(lib.num_threads == n for lib in libs)
        assert [lib.num_threads for lib in libs] == before


def test_a_program_with_gemms_runs_them_single_threaded(monkeypatch):
    """A transformer-like block (FC over GEMM_MIN_ROWS rows: decode + BLAS) records ``uses_blas``
    and each call enters the limit with the runtime's thread count."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 8)).eval()
    T = K.GEMM_MIN_ROWS
    prog = lower_graph(model, None, (T, 16), torch.float32)
    nat = M._GraphNative(prog)
    assert nat.uses_blas
    seen = []

    class Spy(M._BlasThreads):
        def __enter__(self):
            seen.append(self.n)
            return super().__enter__()

    monkeypatch.setattr(M, "_BlasThreads", Spy)
    x = torch.randn(1, T, 16)
    got = nat.run(x, 1)
    torch.testing.assert_close(got, model(x).detach(), rtol=1e-5, atol=1e-5)
    assert seen == [1]
