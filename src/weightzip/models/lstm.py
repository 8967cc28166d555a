"""LSTM language model with a hand-written LSTM layer that supports per-gate normalization.

:class:`LSTMLayer` holds its parameters exactly like one layer of ``torch.nn.LSTM``::

    weight_ih [4H, I], weight_hh [4H, H], bias_ih [4H], bias_hh [4H]    gate order i, f, g, o

and computes, for every time step t (``norm="none"`` gives exactly ``nn.LSTM``)::

    gates_t = norm_x(x_t W_ih^T) + norm_h(h_{t-1} W_hh^T) + b_ih + b_hh      # [B, 4H]
    i, f, g, o = sigmoid(gates[0:H]), sigmoid(gates[H:2H]), tanh(gates[2H:3H]), sigmoid(gates[3H:])
    c_t = f * c_{t-1} + i * g ;  h_t = o * tanh(c_t)

``norm`` selects norm_x / norm_h (Hou et al., "Normalization helps training of quantized
LSTM", NeurIPS 2019):

* ``"none"``: identity.
* ``"layer"``: a LayerNorm (gain and bias) applied separately to each of the 4 gate blocks
  of ``x W_ih^T`` and of ``h W_hh^T`` (:class:`GateLayerNorm`).
* ``"batch"``: ``BatchNorm1d(4H)`` on each product. BatchNorm's statistics are per feature,
  so this is one BatchNorm per gate block. ``bn_per_step=True`` keeps a separate BatchNorm
  per time step ``t < bn_max_steps`` and uses the last one for later steps; otherwise the
  statistics are shared across time.
* ``"weight"``: weight normalization of each weight matrix, row-wise
  ``W = g * V / ||V||_row`` with gains ``wn_gain_ih`` / ``wn_gain_hh`` [4H] (initialized to the
  row norms, so that at initialization W = V). ``V`` is read as ``self.weight_ih`` /
  ``self.weight_hh`` in ``forward``: a quantization parametrization registered on them is
  applied first and weight normalization AFTER it.

Time loop: ``x W_ih^T`` is computed for all steps in one matrix product (the normalization of
that product too, unless batch norm is per step); only ``h W_hh^T`` runs step by step.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InvalidModelError, UnknownNameError
from ..core.registry import register_model
from .common import check_dropout, check_positive

NORMS = ("none", "layer", "batch", "weight")
NUM_GATES = 4  # i, f, g, o


class GateLayerNorm(nn.Module):
    """LayerNorm over each of the ``num_gates`` blocks of a ``[..., num_gates * H]`` tensor.

    ``y[..., k, :] = (x[..., k, :] - mean_k) / sqrt(var_k + eps) * weight_k + bias_k`` where the
    mean and (biased) variance are taken over the H units of gate block k only.
    """

    def __init__(self, hidden_size: int, num_gates: int = NUM_GATES, eps: float = 1e-5):
        super().__init__()
        self.hidden_size, self.num_gates, self.eps = hidden_size, num_gates, eps
        self.weight = nn.Parameter(torch.ones(num_gates * hidden_size))
        self.bias = nn.Parameter(torch.zeros(num_gates * hidden_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape                                              # [..., G*H]
        y = x.reshape(*shape[:-1], self.num_gates, self.hidden_size)  # [..., G, H]
        y = F.layer_norm(y, (self.hidden_size,), eps=self.eps)        # per gate block
        return y.reshape(shape) * self.weight + self.bias             # [..., G*H]

    def extra_repr(self) -> str:
        return f"{self.num_gates} x {self.hidden_size}, eps={self.eps}"


def _row_norm(w: torch.Tensor) -> torch.Tensor:
    """``||w[r, :]||_2`` as a column [rows, 1], floored at 1e-12 so a zero row stays zero."""
    return w.norm(dim=1, keepdim=True).clamp_min(1e-12)


class LSTMLayer(nn.Module):
    """One LSTM layer, time-major: ``forward(x [T, B, I], state=None) -> (out [T, B, H], (h, c))``.

    ``state`` and the returned ``(h, c)`` are ``[B, H]`` each (zeros when ``state`` is None).
    With ``norm="none"`` and the same weights the result equals ``torch.nn.LSTM`` (one layer).

    Statistics hook: when ``self.record_stats`` is True, each step appends to ``self.stats`` a
    tensor [4] = mean |gate pre-activation| of gates i, f, g, o (over batch and units, taken on
    ``gates_t`` before the nonlinearities). Nothing is stored otherwise.
    """

    def __init__(self, input_size: int, hidden_size: int, *, norm: str = "none",
                 bn_per_step: bool = False, bn_max_steps: int = 35, eps: float = 1e-5):
        super().__init__()
        if norm not in NORMS:
            raise UnknownNameError(f"unknown LSTM norm {norm!r}; valid norms: {', '.join(NORMS)}")
        if bn_per_step and norm != "batch":
            raise InvalidModelError(f"LSTMLayer: bn_per_step=True needs norm='batch', "
                                    f"got norm={norm!r}; drop bn_per_step or set norm='batch'")
        check_positive("LSTMLayer", input_size=input_size, hidden_size=hidden_size,
                       bn_max_steps=bn_max_steps)
        self.input_size, self.hidden_size = input_size, hidden_size
        self.norm, self.bn_per_step, self.eps = norm, bool(bn_per_step), eps
        G = NUM_GATES * hidden_size
        self.weight_ih = nn.Parameter(torch.empty(G, input_size))
        self.weight_hh = nn.Parameter(torch.empty(G, hidden_size))
        self.bias_ih = nn.Parameter(torch.empty(G))
        self.bias_hh = nn.Parameter(torch.empty(G))
        if norm == "layer":
            self.norm_ih: nn.Module = GateLayerNorm(hidden_size, eps=eps)
            self.norm_hh: nn.Module = GateLayerNorm(hidden_size, eps=eps)
        elif norm == "batch" and bn_per_step:
            self.norm_ih = nn.ModuleList(nn.BatchNorm1d(G, eps=eps) for _ in range(bn_max_steps))
            self.norm_hh = nn.ModuleList(nn.BatchNorm1d(G, eps=eps) for _ in range(bn_max_steps))
        elif norm == "batch":
            self.norm_ih = nn.BatchNorm1d(G, eps=eps)
            self.norm_hh = nn.BatchNorm1d(G, eps=eps)
        elif norm == "weight":
            self.wn_gain_ih = nn.Parameter(torch.empty(G))
            self.wn_gain_hh = nn.Parameter(torch.empty(G))
        self.record_stats = False
        self.stats: list[torch.Tensor] = []
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """``nn.LSTM`` init: weights, biases ~ U(-1/sqrt(H), 1/sqrt(H)); WN gains = row norms."""
        k = 1.0 / math.sqrt(self.hidden_size)
        for p in (self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh):
            p.uniform_(-k, k)
        if self.norm == "weight":
            self.wn_gain_ih.copy_(self.weight_ih.norm(dim=1))
            self.wn_gain_hh.copy_(self.weight_hh.norm(dim=1))

    def effective_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(W_ih [4H, I], W_hh [4H, H])`` as used in the products.

        Reads ``self.weight_ih`` / ``self.weight_hh`` (so any parametrization runs first), then
        for ``norm="weight"`` applies ``g * V / ||V||_row`` (a zero row stays zero).
        """
        w_ih, w_hh = self.weight_ih, self.weight_hh
        if self.norm == "weight":
            w_ih = self.wn_gain_ih.unsqueeze(1) * w_ih / _row_norm(w_ih)  # [4H, I]
            w_hh = self.wn_gain_hh.unsqueeze(1) * w_hh / _row_norm(w_hh)  # [4H, H]
        return w_ih, w_hh

    def _step_norm(self, norms: nn.Module, t: int) -> nn.Module:
        return norms[min(t, len(norms) - 1)]  # per-step BN; the last one beyond bn_max_steps

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        if x.dim() != 3 or x.shape[-1] != self.input_size:
            raise ValueError(f"LSTMLayer expects x of shape [T, B, {self.input_size}] "
                             f"(time-major), got {tuple(x.shape)}")
        T, B, _ = x.shape
        H = self.hidden_size
        if state is None:
            h = x.new_zeros(B, H)
            c = x.new_zeros(B, H)
        else:
            h, c = state                                           # [B, H] each
        w_ih, w_hh = self.effective_weights()
        bias = self.bias_ih + self.bias_hh                         # [4H]
        per_step_bn = self.norm == "batch" and self.bn_per_step
        if self.norm in ("none", "weight"):
            xw = F.linear(x, w_ih, bias)                           # [T, B, 4H], bias fused
        else:
            xw = F.linear(x, w_ih)                                 # [T, B, 4H]
            if not per_step_bn:                                    # LN, or BN shared across time
                xw = self.norm_ih(xw.reshape(T * B, -1)).reshape(T, B, -1)
        outputs = []
        for t in range(T):
            gx = xw[t]                                             # [B, 4H]
            gh = F.linear(h, w_hh)                                 # [B, 4H]
            if per_step_bn:
                gx = self._step_norm(self.norm_ih, t)(gx)
                gh = self._step_norm(self.norm_hh, t)(gh)
            elif self.norm in ("layer", "batch"):
                gh = self.norm_hh(gh)
            gates = gx + gh if self.norm in ("none", "weight") else gx + gh + bias  # [B, 4H]
            if self.record_stats:
                scale = gates.detach().abs().reshape(B, NUM_GATES, H).mean(dim=(0, 2))  # [4]
                self.stats.append(scale.cpu())
            i, f, g, o = gates.chunk(NUM_GATES, dim=1)             # [B, H] each
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            outputs.append(h)
        out = torch.stack(outputs) if outputs else x.new_zeros(0, B, H)  # [T, B, H]
        return out, (h, c)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}, norm={self.norm!r}"
        return s + (", bn_per_step=True" if self.bn_per_step else "")


QLSTMLayer = LSTMLayer  # the name used in the quantized-LSTM papers; one class does both


class LSTMLM(nn.Module):
    """Language model: embedding -> dropout -> LSTM layers (dropout after each) -> decoder.

    ``forward(x [T, B] int64, hidden=None) -> (logits [T, B, vocab_size], (h, c))`` with
    ``h, c`` of shape ``[num_layers, B, hidden_size]`` (the ``nn.LSTM`` convention); pass the
    returned hidden state (detached) to the next window. ``lstm_layers`` is a ``ModuleList``
    of :class:`LSTMLayer`. Dropout placement follows the PyTorch word-language-model example.
    """

    def __init__(self, *, vocab_size: int, embed_size: int, hidden_size: int, num_layers: int,
                 dropout: float, tie_weights: bool, norm: str, bn_per_step: bool,
                 bn_max_steps: int):
        super().__init__()
        self.vocab_size, self.hidden_size, self.num_layers = vocab_size, hidden_size, num_layers
        self.encoder = nn.Embedding(vocab_size, embed_size)
        self.drop = nn.Dropout(dropout)
        self.lstm_layers = nn.ModuleList(
            LSTMLayer(embed_size if k == 0 else hidden_size, hidden_size, norm=norm,
                      bn_per_step=bn_per_step, bn_max_steps=bn_max_steps)
            for k in range(num_layers)
        )
        self.decoder = nn.Linear(hidden_size, vocab_size)
        nn.init.uniform_(self.encoder.weight, -0.1, 0.1)
        nn.init.uniform_(self.decoder.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)
        if tie_weights:
            if embed_size != hidden_size:
                raise InvalidModelError(
                    f"lstm_lm: tie_weights=True needs embed_size == hidden_size, got "
                    f"{embed_size} != {hidden_size}; "
                    f"set embed_size={hidden_size} or tie_weights=False")
            self.decoder.weight = self.encoder.weight

    def init_hidden(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Zero ``(h, c)``, each ``[num_layers, batch_size, hidden_size]``."""
        ref = self.decoder.bias
        shape = (self.num_layers, batch_size, self.hidden_size)
        return ref.new_zeros(shape), ref.new_zeros(shape)

    def record_gate_stats(self, enabled: bool = True) -> None:
        """Turn the per-step gate statistics of every layer on or off (and clear them)."""
        for layer in self.lstm_layers:
            layer.record_stats = enabled
            layer.stats = []

    def forward(self, x: torch.Tensor, hidden: tuple[torch.Tensor, torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        if x.dim() != 2 or x.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"lstm_lm expects token ids x of shape [T, B] (int64, time-major), "
                             f"got {tuple(x.shape)} {x.dtype}")
        if hidden is None:
            hidden = self.init_hidden(x.shape[1])
        h0, c0 = hidden                                  # [L, B, H] each
        out = self.drop(self.encoder(x))                 # [T, B, E]
        hs, cs = [], []
        for k, layer in enumerate(self.lstm_layers):
            out, (h, c) = layer(out, (h0[k], c0[k]))     # [T, B, H]
            out = self.drop(out)
            hs.append(h)
            cs.append(c)
        logits = self.decoder(out)                       # [T, B, V]
        return logits, (torch.stack(hs), torch.stack(cs))


@register_model("lstm_lm")
def lstm_lm(*, vocab_size: int = 10000, embed_size: int | None = None, hidden_size: int = 300,
            num_layers: int = 1, dropout: float = 0.5, tie_weights: bool = False,
            norm: str = "none", bn_per_step: bool = False, bn_max_steps: int = 35) -> LSTMLM:
    """LSTM LM; defaults are the PTB-word setting (10k vocab, 1 x 300). ``embed_size`` defaults
    to ``hidden_size``. 6,732,400 parameters at the defaults. For PTB char use
    ``vocab_size=50, hidden_size=512``.
    """
    embed_size = hidden_size if embed_size is None else embed_size
    for arg, v in (("vocab_size", vocab_size), ("embed_size", embed_size),
                   ("hidden_size", hidden_size), ("num_layers", num_layers),
                   ("bn_max_steps", bn_max_steps)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise InvalidModelError(f"lstm_lm: {arg} must be a positive int, got {v!r}")
    check_dropout("lstm_lm", dropout)
    return LSTMLM(vocab_size=vocab_size, embed_size=embed_size, hidden_size=hidden_size,
                  num_layers=num_layers, dropout=float(dropout), tie_weights=bool(tie_weights),
                  norm=norm, bn_per_step=bool(bn_per_step), bn_max_steps=bn_max_steps)


@register_model("lstm_lm_tiny")
def lstm_lm_tiny(**kwargs) -> LSTMLM:
    """LSTM LM with a 50-word vocabulary and one 16-unit layer: 3,826 parameters, for tests."""
    return lstm_lm(**{"vocab_size": 50, "hidden_size": 16, **kwargs})
