"""The compiled LSTM cell: one native call runs a whole :class:`~weightzip.models.lstm.LSTMLayer`
(all T steps) from the compressed gate weights.

``W_ih (4H, I)`` and ``W_hh (4H, H)`` are packed as two FC ops of :mod:`.kernels` (CSR / dense,
codebook codes, int8 levels + row scale, PQ), so every weight format the FC kernels take runs
here too. Per layer norm (``LSTMLayer.norm``):

* ``none``:   ``gates = W_ih x_t + W_hh h + (b_ih + b_hh)`` (the bias in the W_ih epilogue);
* ``weight``: ``W = diag(g / ||V||_row) V`` - the gain over the decoded row norm is folded into
  the ops' per-row ``alpha`` (the weight stays compressed as V);
* ``batch`` (one BN shared over time, eval statistics): ``BN(W v) = a (W v) + c`` folded into
  ``alpha`` / ``beta`` of both ops, then ``+ (b_ih + b_hh)`` in the cell;
* ``layer``:  ``gates = LN_ih(W_ih x_t) + LN_hh(W_hh h) + b``, LN over each gate's H units
  (``(v - mean) / sqrt(var + eps) * w + b``, biased variance, float64 statistics).

Then ``c = sigmoid(f) c + sigmoid(i) tanh(g)``, ``h = sigmoid(o) tanh(c)`` with the gate
blocks ``i, f, g, o`` of ``gates (B, 4H)``. The input products of all T*B samples run first as
one batch FC (each weight decoded once per 64 samples), the recurrent product once per step at
batch B. Per-step BN (``bn_per_step=True``) is not compiled: :func:`compile_lstm_layers` keeps
that layer in torch and says why.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from . import kernels as K
# the kernels live in kernels.py: numba's cache of a function is invalidated only by its own
# file, so a kernel compiled here would keep calling stale copies of the FC kernels
from .kernels import LSTM_CHUNK, N_LAYER, N_NONE, lstm_forward
from .plan import _epilogue, _fmt_parts, _new_op, _pack_weight, _Packer, pq_lut
from .weights import weight_rep

class CompiledLSTMLayer(nn.Module):
    """Inference-only stand-in for an ``LSTMLayer``: same ``forward(x [T, B, I], state)`` ->
    ``(out [T, B, H], (h, c))``, weights packed from the file's formats (see the module doc)."""

    def __init__(self, layer: nn.Module, formats: dict, name: str):
        super().__init__()
        if layer.norm == "batch" and layer.bn_per_step:
            raise ValueError("per-step BatchNorm (bn_per_step=True) is not compiled")
        self.input_size, self.hidden_size, self.norm = layer.input_size, layer.hidden_size, layer.norm
        self.eps = float(layer.eps)
        G = 4 * layer.hidden_size
        pk = _Packer()
        ops, reps = [], []
        bias = (layer.bias_ih + layer.bias_hh).detach().double()
        for which in ("ih", "hh"):
            w = getattr(layer, f"weight_{which}").detach().float().numpy()
            rep = weight_rep(_fmt_parts(formats, name, f"weight_{which}"), w, f"{name}.weight_{which}")
            op = _new_op(K.K_PQFC if pq_lut(rep) else K.K_FC, w.shape[1], G)
            _pack_weight(op, rep, pk, False)
            scale = rep.rowscale
            if layer.norm == "weight":
                gain = getattr(layer, f"wn_gain_{which}").detach().double().numpy()
                norm = np.sqrt((w.astype(np.float64) ** 2).sum(1)).clip(1e-12)
                scale = gain / norm if scale is None else np.asarray(scale, np.float64) * gain / norm
            # BN (eval) folds into each op's alpha / beta: BN(W v) = a (W v) + c; without a norm
            # the gate bias rides in the W_ih epilogue, after a norm it is added in the cell
            bn = getattr(layer, f"norm_{which}") if layer.norm == "batch" else None
            b = bias if which == "ih" and layer.norm in ("none", "weight") else None
            _epilogue(op, pk, G, scale, b, bn, None)
            ops.append(op)
            reps.append(rep)
        self._B, self._F = pk.arrays()
        self._ops = [np.ascontiguousarray(o) for o in ops]
        self._bias = np.ascontiguousarray(bias.float().numpy())
        if layer.norm == "layer":
            self._ln = np.stack([layer.norm_ih.weight.detach().float().numpy(), layer.norm_ih.bias.detach().float().numpy(),
                                 layer.norm_hh.weight.detach().float().numpy(), layer.norm_hh.bias.detach().float().numpy()])
        else:
            self._ln = np.zeros((4, G), np.float32)
        self.reps = [r.name for r in reps]
        I, kmax = layer.input_size, max([r.pq["codebooks"].shape[1] for r in reps if r.vfmt == K.V_PQ] or [0])
        mk = max([r.pq["codes"].shape[1] * r.pq["codebooks"].shape[1] for r in reps if r.vfmt == K.V_PQ] or [0])
        self._scr = np.zeros((max(I, layer.hidden_size) + G + kmax + 1) * LSTM_CHUNK + mk + G + 64, np.float32)

    def resident_bytes(self) -> int:
        return int(self._B.nbytes + self._F.nbytes + self._ln.nbytes + self._bias.nbytes)

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None):
        if x.dim() != 3 or x.shape[-1] != self.input_size:
            raise ValueError(f"LSTMLayer expects x of shape [T, B, {self.input_size}] (time-major), got {tuple(x.shape)}")
        if x.requires_grad and torch.is_grad_enabled():
            raise RuntimeError("a compiled LSTM layer runs inference only; load the file with mode='dense' to train")
        T, nb, _ = x.shape
        H, G = self.hidden_size, 4 * self.hidden_size
        if state is None:
            h = np.zeros(nb * H, np.float32)
            c = np.zeros(nb * H, np.float32)
        else:
            h = np.array(state[0].detach().float().reshape(-1).numpy(), np.float32)   # copies: updated in place
            c = np.array(state[1].detach().float().reshape(-1).numpy(), np.float32)
        xn = np.ascontiguousarray(x.detach().float().reshape(-1).numpy())
        out = np.empty(T * nb * H, np.float32)
        gx = np.empty(T * nb * G, np.float32)
        gh = np.empty(nb * G, np.float32)
        lstm_forward(self._ops[0], self._ops[1], self._B, self._F, xn, T, nb, h, c, out, gx, gh, self._scr,
                     N_LAYER if self.norm == "layer" else N_NONE, self._ln, self._bias,
                     self.norm in ("layer", "batch"), self.eps)
        return (torch.from_numpy(out).view(T, nb, H),
                (torch.from_numpy(h).view(nb, H), torch.from_numpy(c).view(nb, H)))

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, norm={self.norm!r}, compiled: W_ih {self.reps[0]}, W_hh {self.reps[1]}"


def compile_lstm_layers(model: nn.Module, formats: dict) -> tuple[list[str], list[tuple[str, str]]]:
    """Replace every ``LSTMLayer`` of ``model`` in place by a :class:`CompiledLSTMLayer`;
    returns (compiled layer names, [(name, reason)] of the layers kept in torch)."""
    from ...models.lstm import LSTMLayer

    done, kept = [], []
    for name, mod in list(model.named_modules()):
        if not isinstance(mod, LSTMLayer):
            continue
        try:
            new = CompiledLSTMLayer(mod.eval(), formats, name)
        except ValueError as e:
            kept.append((name, str(e)))
            continue
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, new)
        done.append(name)
    return done, kept
