"""The integer kernels of :mod:`.mixing` (numba, compiled once and cached on disk).

Module-level functions so that numba's on-disk cache applies (nested functions are recompiled in
every process). One kernel per stream kind both encodes and decodes (``decoding`` flag), so the
two can never disagree about a probability. See :mod:`.mixing` for the specification.
"""
from __future__ import annotations

import numba
import numpy as np

njit = numba.njit(cache=True, nogil=True)

@njit
def squash(d, t):
    if d > 2047:
        return 4095
    if d < -2047:
        return 1
    w = d & 127
    j = (d >> 7) + 16
    return (t[j] * (128 - w) + t[j + 1] * w + 64) >> 7

@njit
def kt(n1, n):
    p = ((2 * n1 + 1) * 4096) // (2 * n + 2)
    return 1 if p < 1 else (4095 if p > 4095 else p)

@njit
def code_bit(st, buf, y, p, decoding):
    # st: int64[4] = x1, x2, x (decoder), byte position
    x1 = st[0]
    x2 = st[1]
    xmid = x1 + ((x2 - x1) >> 12) * p
    if decoding:
        y = 1 if st[2] <= xmid else 0
    if y:
        x2 = xmid
    else:
        x1 = xmid + 1
    while ((x1 ^ x2) & 0xFF000000) == 0:
        if decoding:
            b = buf[st[3]] if st[3] < buf.size else 0
            st[2] = ((st[2] << 8) & 0xFFFFFFFF) | b
        else:
            buf[st[3]] = (x2 >> 24) & 255
        st[3] += 1
        x1 = (x1 << 8) & 0xFFFFFFFF
        x2 = ((x2 << 8) & 0xFFFFFFFF) | 255
    st[0] = x1
    st[1] = x2
    return y

@njit
def mix(x, w, ws, n, sq):
    dot = 0
    for i in range(n):
        dot += x[i] * w[ws, i]
    dot >>= 16
    if dot > 2047:
        dot = 2047
    if dot < -2047:
        dot = -2047
    p = squash(dot, sq)
    return 1 if p < 1 else (4095 if p > 4095 else p)

@njit
def train(x, w, ws, n, y, p, shift):
    err = (y << 12) - p
    for i in range(n):
        w[ws, i] += (x[i] * err) >> shift

@njit
def upd(q, n, i, y, lim):
    # counts-based adaptive probability (model 2): rate 1 / (n + 1.5), n capped at lim
    q[i] += (((y << 16) - q[i]) * 2) // (2 * n[i] + 3)
    if n[i] < lim:
        n[i] += 1

@njit
def bucket(n):
    if n < 2:
        return n
    if n < 4:
        return 2
    if n < 8:
        return 3
    if n < 16:
        return 4
    return 5

@njit
def mask_run(m, buf, st, decoding, shift, sq, stt, model):
    R, C = m.shape
    n1c = np.zeros(C, np.int64)
    q_nb = np.full(64, 32768, np.int64)
    q_cb = np.full(24, 32768, np.int64)
    n_nb = np.zeros(64, np.int64)
    n_cb = np.zeros(24, np.int64)
    NIN = 6
    w = np.full((24, NIN), 19661, np.int64)
    x = np.zeros(NIN, np.int64)
    prev_row = 0
    for r in range(R):
        n1r = 0
        for c in range(C):
            left = m[r, c - 1] if c > 0 else 0
            left2 = m[r, c - 2] if c > 1 else 0
            up = m[r - 1, c] if r > 0 else 0
            upl = m[r - 1, c - 1] if (r > 0 and c > 0) else 0
            upr = m[r - 1, c + 1] if (r > 0 and c + 1 < C) else 0
            up2 = m[r - 2, c] if r > 1 else 0
            nb = left | (left2 << 1) | (up << 2) | (upl << 3) | (upr << 4) | (up2 << 5)
            cb = bucket(n1c[c])
            ctx2 = (left | (up << 1)) * 6 + cb
            x[0] = stt[kt(n1c[c], r)]
            x[1] = stt[kt(n1r, c)]
            x[2] = stt[kt(prev_row, C)]
            x[3] = stt[q_nb[nb] >> 4]
            x[4] = stt[q_cb[ctx2] >> 4]
            x[5] = 256
            p = mix(x, w, ctx2, NIN, sq)
            y = code_bit(st, buf, m[r, c], p, decoding)
            m[r, c] = y
            train(x, w, ctx2, NIN, y, p, shift)
            if model == 2:
                upd(q_nb, n_nb, nb, y, 127)
                upd(q_cb, n_cb, ctx2, y, 127)
            else:
                q_nb[nb] += ((y << 16) - q_nb[nb]) >> 4
                q_cb[ctx2] += ((y << 16) - q_cb[ctx2]) >> 4
            n1c[c] += y
            n1r += y
        prev_row = n1r
    return 0

@njit
def codes_run(codes, line, col, ncols, k, depth, buf, st, decoding, shift, sq, stt, model):
    e = codes.size
    nodes = 1 << depth
    cn1 = np.zeros((ncols, nodes), np.int64)
    cn = np.zeros((ncols, nodes), np.int64)
    rn1 = np.zeros(nodes, np.int64)
    rn = np.zeros(nodes, np.int64)
    q_prev = np.full((nodes, k + 1), 32768, np.int64)
    q_node = np.full(nodes, 32768, np.int64)
    q_up = np.full((nodes, k + 1), 32768, np.int64)     # model 2: per (node, last code of the column)
    n_up = np.zeros((nodes, k + 1), np.int64)
    lastc = np.full(ncols, k, np.int64)
    NIN = 6 if model == 2 else 5
    w = np.full((nodes, NIN), 19661, np.int64)
    x = np.zeros(NIN, np.int64)
    prev = k
    for i in range(e):
        if i == 0 or line[i] != line[i - 1]:
            rn1[:] = 0
            rn[:] = 0
            prev = k
        c = col[i]
        node = 1
        lo = 0
        s = codes[i]
        up = lastc[c]
        for dpos in range(depth - 1, -1, -1):
            half = 1 << dpos
            if lo + half >= k:          # the 1-branch holds no valid code
                node = node * 2
                continue
            x[0] = stt[kt(cn1[c, node], cn[c, node])]
            x[1] = stt[kt(rn1[node], rn[node])]
            x[2] = stt[q_prev[node, prev] >> 4]
            x[3] = stt[q_node[node] >> 4]
            x[4] = 256
            if model == 2:
                x[5] = stt[q_up[node, up] >> 4]
            p = mix(x, w, node, NIN, sq)
            y = (s >> dpos) & 1 if not decoding else 0
            y = code_bit(st, buf, y, p, decoding)
            train(x, w, node, NIN, y, p, shift)
            q_prev[node, prev] += ((y << 16) - q_prev[node, prev]) >> 4
            q_node[node] += ((y << 16) - q_node[node]) >> 4
            if model == 2:
                upd(q_up[node], n_up[node], up, y, 1023)
            cn1[c, node] += y
            cn[c, node] += 1
            rn1[node] += y
            rn[node] += 1
            node = node * 2 + y
            lo += y * half
        codes[i] = lo
        prev = lo
        lastc[c] = lo
    return 0

@njit
def flush(st, buf):
    x1 = st[0]
    b = x1 >> 24
    if x1 & 0xFFFFFF:
        b += 1
    buf[st[3]] = b & 255
    st[3] += 1

