"""``mixed_fixed``: per-element fixed-point formats from a few clusters (gradient importance).

Cluster c (``meta["clusters"][c]``: ``bits`` b_c, ``frac_bits`` f_c) stores its nonzero elements
as integers q with value ``q * 2^-f_c``, |q| < 2^(b_c - 1): its own sparse positions (stream
``c{c}.index`` relative index with fillers of q = 0, or ``c{c}.bitmap``, whichever is smaller)
and stream ``c{c}.codes`` = ``q - q_offset``. No per-value cluster tag is stored. Only tried with
a hint ``{"kind": "mixed_fixed", "cluster": ids (tensor shape), "bits": [b_c], "frac_bits": [f_c]}``.
"""
from __future__ import annotations

import numpy as np

from ...errors import WeightzipFormatError
from ..bitpack import bits_for_alphabet
from ..format import FLOAT_DTYPES, Format, Reject, bad, bits_range, is_int, meta_int, to_numpy
from ..layout import choose_bits
from ..sparse import csr_from_positions, matrix_shape, relative_index_decode, relative_index_encode
from ..streams import StreamReader, StreamWriter
from .registry import Candidate, EncodeContext, Kind, register_kind

MAX_CLUSTERS = 4096
MAX_FRAC_BITS = 60


# =============================================================================================
# encode


def _write_positions_values(st: StreamWriter, prefix: str, pos: np.ndarray, q: np.ndarray, numel: int,
                            opts) -> dict:
    """One sparse stream of signed integers ``q`` at flat ``pos``: the smaller of a relative
    index (fillers have q = 0) and a bitmap. Codes are ``q - q_offset``."""
    best = None
    lo, hi = (int(q.min()), int(q.max())) if q.size else (0, 0)
    for scheme in [s for s in ("relative", "bitmap") if s in opts.layouts] or ["relative"]:
        s = st.sub()
        if scheme == "relative":
            b = choose_bits(pos, bits_range(lo, hi), bits_range(min(lo, 0), max(hi, 0)), opts)
            ri = relative_index_encode(pos, b)
            qe = np.zeros(ri.n_entries, dtype=np.int64)
            qe[ri.real] = q
            s.symbols(f"{prefix}index", ri.gaps, 1 << b)
            meta = {"sparse": "relative", "index_bits": b, "n_entries": ri.n_entries, "n_fillers": ri.n_fillers}
        else:
            bits = np.zeros(numel, dtype=np.int64)
            bits[pos] = 1
            qe = q
            s.symbols(f"{prefix}bitmap", bits, 2)
            meta = {"sparse": "bitmap", "n_entries": int(pos.size)}
        elo, ehi = (int(qe.min()), int(qe.max())) if qe.size else (0, 0)
        s.symbols(f"{prefix}codes", qe - elo, ehi - elo + 1)
        meta["q_offset"] = elo
        if best is None or s.nbytes < best[0].nbytes:
            best = (s, meta)
    st.merge(best[0])
    return best[1]


def _hint_clusters(w: np.ndarray, h: dict) -> tuple[np.ndarray, list[int], list[int]]:
    """``(cluster ids (numel,), bits [C], frac_bits [C])`` of the hint, checked."""
    cluster = to_numpy(h["cluster"]).astype(np.int64).ravel()
    if cluster.size != w.size:
        raise Reject(f"cluster map has {cluster.size} elements, tensor has {w.size}")
    bits = [int(b) for b in np.asarray(to_numpy(h["bits"])).ravel()]
    frac = [int(f) for f in np.asarray(to_numpy(h["frac_bits"])).ravel()]
    if len(bits) != len(frac) or not bits:
        raise Reject("mixed_fixed needs one bit width and one frac_bits per cluster")
    if any(not 1 <= b <= 32 for b in bits) or any(abs(f) > MAX_FRAC_BITS for f in frac):
        raise Reject(f"mixed_fixed bits must be in 1..32 and |frac_bits| <= {MAX_FRAC_BITS}")
    return cluster, bits, frac


def encode_mixed(w: np.ndarray, h: dict, st: StreamWriter, opts) -> dict:
    """Streams of every cluster of the hint ``h`` for the canonical flat ``w`` (Reject if a
    cluster's weights are not its fixed-point values)."""
    cluster, bits, frac = _hint_clusters(w, h)
    nz = np.flatnonzero(w)
    cl = cluster[nz]
    if cl.size and (cl.min() < 0 or cl.max() >= len(bits)):
        raise Reject(f"cluster ids outside [0, {len(bits)})")
    clusters = []
    for c, (b, f) in enumerate(zip(bits, frac)):
        pos = nz[cl == c]
        x = w[pos].astype(np.float64) * 2.0**f
        q = np.rint(x)
        if not np.array_equal(q, x):
            raise Reject(f"cluster {c}: weights are not multiples of 2^-{f}")
        if q.size and (q.min() < -(1 << (b - 1)) or q.max() > (1 << (b - 1)) - 1):
            raise Reject(f"cluster {c}: codes in [{q.min():.0f}, {q.max():.0f}] exceed {b} signed bits")
        d = _write_positions_values(st, f"c{c}.", pos, q.astype(np.int64), w.size, opts)
        d.update(bits=b, frac_bits=f, nnz=int(pos.size))
        clusters.append(d)
    return {"clusters": clusters}


def candidates(ctx: EncodeContext) -> list[Candidate]:
    """With a mixed_fixed hint: one candidate."""
    if ctx.hkind != "mixed_fixed" or "mixed_fixed" not in ctx.opts.kinds:
        return []

    def build(st: StreamWriter) -> dict:
        meta = encode_mixed(ctx.w, ctx.hint, st, ctx.opts)
        meta["nnz"] = int(ctx.nz.size)
        return meta
    return [Candidate("mixed_fixed", "mixed_fixed", build)]


# =============================================================================================
# decode


def _read_positions_values(fmt: Format, rd: StreamReader, prefix: str, d: dict) -> tuple[np.ndarray, np.ndarray]:
    """``(positions (E,), q (E,))`` of one cluster (fillers included, q = 0)."""
    numel = fmt.numel
    where = f"meta cluster {prefix!r}"
    n = meta_int(fmt, d, "n_entries", 0, numel, where)
    off = d.get("q_offset")
    if not is_int(off) or abs(off) >= 2**32:
        raise bad(fmt, f"{where}['q_offset'] must be an integer, got {off!r}")
    if d.get("sparse") == "relative":
        b = meta_int(fmt, d, "index_bits", 1, 32, where)
        try:
            pos = relative_index_decode(rd.symbols(f"{prefix}index", n, 1 << b), numel)
        except WeightzipFormatError as e:
            raise bad(fmt, str(e), f"{prefix}index") from None
    elif d.get("sparse") == "bitmap":
        pos = np.flatnonzero(rd.symbols(f"{prefix}bitmap", numel, 2))
        if pos.size != n:
            raise bad(fmt, f"bitmap has {pos.size} ones, meta says {n}", f"{prefix}bitmap")
    else:
        raise bad(fmt, f"{where}['sparse'] must be relative or bitmap, got {d.get('sparse')!r}")
    q = rd.symbols(f"{prefix}codes", n, rd.alphabet(f"{prefix}codes")) + off
    return pos, q


def read_clusters(fmt: Format, rd: StreamReader) -> list[dict]:
    """Per cluster: ``positions`` (n_c,) int64 and ``q`` (n_c,) of its real (nonzero) entries,
    ``frac_bits``, ``bits``, ``values`` = float32(q * 2^-frac_bits)."""
    cl = fmt.meta.get("clusters")
    if not isinstance(cl, list) or not cl or len(cl) > MAX_CLUSTERS:
        raise bad(fmt, "meta['clusters'] must be a non-empty list")
    out = []
    for c, d in enumerate(cl):
        if not isinstance(d, dict):
            raise bad(fmt, f"meta cluster {c} must be an object")
        f = d.get("frac_bits")
        if not is_int(f) or abs(f) > MAX_FRAC_BITS:
            raise bad(fmt, f"meta cluster {c} frac_bits must be an integer in [-60, 60], got {f!r}")
        pos, q = _read_positions_values(fmt, rd, f"c{c}.", d)
        real = q != 0  # fillers (q = 0) may sit on another cluster's element: never write them
        pos, q = pos[real], q[real]
        out.append({"positions": pos, "q": q, "frac_bits": f, "bits": d.get("bits"),
                    "values": (q.astype(np.float64) * 2.0**-f).astype(np.float32)})
    return out


def decode_mixed(fmt: Format, rd: StreamReader) -> np.ndarray:
    """Flat float32 (numel,): every cluster's values at its positions."""
    out = np.zeros(fmt.numel, dtype=np.float32)
    for c in read_clusters(fmt, rd):
        out[c["positions"]] = c["values"]
    return out


def _parts(fmt: Format, rd: StreamReader) -> dict:
    cl = read_clusters(fmt, rd)
    pos = np.concatenate([c["positions"] for c in cl]) if cl else np.zeros(0, np.int64)
    vals = np.concatenate([c["values"] for c in cl]) if cl else np.zeros(0, np.float32)
    order = np.argsort(pos, kind="stable")
    pos, vals = pos[order], vals[order]
    keep = vals != 0
    pos, vals = pos[keep], vals[keep]
    return {"clusters": cl, "sparse": "mixed", "positions": pos, "values": vals,
            "csr": csr_from_positions(pos, vals, matrix_shape(fmt.shape))}


def _plan(fmt: Format) -> dict:
    cl = fmt.meta.get("clusters")
    if not isinstance(cl, list) or not cl or len(cl) > MAX_CLUSTERS:
        raise bad(fmt, "meta['clusters'] must be a non-empty list")
    numel, rd, plan = fmt.numel, StreamReader(fmt), {}
    for c, d in enumerate(cl):
        if not isinstance(d, dict):
            raise bad(fmt, f"meta cluster {c} must be an object")
        f = d.get("frac_bits")
        if not is_int(f) or abs(f) > MAX_FRAC_BITS:
            raise bad(fmt, f"meta cluster {c} frac_bits must be an integer in [-60, 60], got {f!r}")
        prefix, where = f"c{c}.", f"meta cluster {f'c{c}.'!r}"
        n = meta_int(fmt, d, "n_entries", 0, numel, where)
        off = d.get("q_offset")
        if not is_int(off) or abs(off) >= 2**32:
            raise bad(fmt, f"{where}['q_offset'] must be an integer, got {off!r}")
        if d.get("sparse") == "relative":
            plan[f"{prefix}index"] = (n, 1 << meta_int(fmt, d, "index_bits", 1, 32, where))
        elif d.get("sparse") == "bitmap":
            plan[f"{prefix}bitmap"] = (numel, 2)
        else:
            raise bad(fmt, f"{where}['sparse'] must be relative or bitmap, got {d.get('sparse')!r}")
        plan[f"{prefix}codes"] = (n, rd.alphabet(f"{prefix}codes"))
    return plan


def _summary(fmt: Format) -> dict:
    m = fmt.meta
    info = m.get("stream_info", {})
    cl = m.get("clusters", [])
    return {"value_bits": [bits_for_alphabet(info.get(f"c{c}.codes", {}).get("alphabet", 1)) for c in range(len(cl))],
            "sparse": "/".join(d.get("sparse", "?") for d in cl),
            "index_bits": [d.get("index_bits") for d in cl],
            "n_fillers": sum(d.get("n_fillers", 0) for d in cl)}


MIXED_FIXED = register_kind(Kind("mixed_fixed", FLOAT_DTYPES, decode=decode_mixed, parts=_parts, summary=_summary,
                                 plan=_plan, candidates=candidates, hint_driven=True))
