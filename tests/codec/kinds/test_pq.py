"""pq kind: exact with and without masks, wins over codebook on PQ weights."""
import numpy as np
import torch
from hypothesis import given
from hypothesis import strategies as st

from weightzip.codec import decode_parts, encode

from ..helpers import FAST, assert_exact, canonical


@FAST
@given(st.integers(1, 12), st.integers(1, 4), st.integers(1, 4), st.integers(1, 20), st.booleans(),
       st.floats(0, 1), st.integers(0, 3), st.booleans(), st.integers(0, 10**6))
def test_pq_exact(rows, m, d, k, shared, density, cut, conv, seed):
    g = torch.Generator().manual_seed(seed)
    cols = max(1, m * d - min(cut, d - 1))
    cbs = torch.randn((1 if shared else m), k, d, generator=g)
    codes = torch.randint(0, k, (rows, m), generator=g)
    full = (cbs[0][codes] if shared else cbs[torch.arange(m)[None, :], codes]).reshape(rows, m * d)[:, :cols]
    mask = torch.rand(rows, cols, generator=g) < density if density < 1 else None
    w = full if mask is None else full * mask
    shape = (rows, cols)
    if conv and cols % 2 == 0:
        shape = (rows, cols // 2, 2, 1)
        w = w.reshape(shape)
    hint = {"kind": "pq", "codes": codes, "codebooks": cbs, "matrix_shape": (rows, cols)}
    if mask is not None:
        hint["mask"] = mask.reshape(shape)
    fmt = encode(w, hint)
    assert_exact(w, fmt)
    assert not fmt.meta["hint"]["status"]["pq"].startswith("invalid"), fmt.meta["hint"]
    forced = encode(w, hint, options={"kinds": ["pq"], "sparse": False})
    assert_exact(w, forced)
    if forced.kind == "pq":
        parts = decode_parts(forced)
        recon = parts["codebooks"][0 if shared else np.arange(m)[None, :], parts["codes"]].reshape(rows, -1)[:, :cols]
        if parts["mask"] is not None:
            recon = np.where(parts["mask"], recon, 0)
        assert np.array_equal(recon + 0.0, canonical(w).reshape(rows, cols).numpy())


def test_pq_wins_over_codebook_on_pq_weights():
    g = torch.Generator().manual_seed(1)
    rows, m, d, k = 64, 8, 4, 16
    cbs = torch.randn(m, k, d, generator=g)
    codes = torch.randint(0, k, (rows, m), generator=g)
    w = cbs[torch.arange(m)[None, :], codes].reshape(rows, m * d)
    mask = torch.rand(rows, m * d, generator=g) < 0.7
    hint = {"kind": "pq", "codes": codes, "codebooks": cbs, "mask": mask, "matrix_shape": (rows, m * d)}
    fmt = encode(w * mask, hint)
    assert fmt.kind == "pq" and fmt.meta["mask"] in ("bitmap", "relative")
    assert_exact(w * mask, fmt)
    wrong = dict(hint, codes=(codes + 1) % k)
    fmt2 = encode(w * mask, wrong)
    assert fmt2.kind != "pq" and fmt2.meta["hint"]["status"]["pq"].startswith("invalid")

