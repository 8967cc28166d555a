"""Gaussian-mixture prior of soft weight-sharing (Ullrich, Meeds & Welling, ICLR 2017).

Pure tensor functions (no module state). The prior over every weight ``w_i`` is a mixture of
``J + 1`` Gaussians whose component 0 is pinned at zero::

    p(w) = sum_{j=0..J} pi_j N(w | mu_j, sigma_j^2),       mu_0 = 0,  pi_0 fixed (e.g. 0.99)

    log N(w | mu, s2) = -0.5 log(2 pi) - 0.5 log s2 - 0.5 (w - mu)^2 / s2

Parameters (shapes, ``K = J + 1``):

* ``means`` (K,) with ``means[0] == 0`` (kept at zero by the caller);
* ``log_vars`` (K,): ``log sigma_j^2``;
* ``log_pi`` (K,): log mixing proportions, ``logsumexp(log_pi) == 0``; built from free
  logits (J,) and the fixed ``pi_0`` by :func:`mixing_log_proportions`:
  ``pi = [pi_0, (1 - pi_0) softmax(logits)]``.

The complexity term of the soft weight-sharing loss is the negative log prior of the weights
plus the negative log hyper-prior of the precisions ``lambda_j = 1 / sigma_j^2`` (Gamma(alpha,
beta), density ``prop. lambda^(alpha-1) exp(-beta lambda)``)::

    C(w, theta) = - sum_i log p(w_i) - sum_j [(alpha_j - 1) log lambda_j - beta_j lambda_j]

Quantization after training: each weight is replaced by the mean of its most responsible
component, ``argmax_j pi_j N(w_i | mu_j, sigma_j^2)`` (component 0 -> exactly 0, i.e. pruned).
Components whose means are closer than a tolerance are merged first (means averaged with the
mixing proportions as weights), as in the paper's post-processing.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["mixing_log_proportions", "component_log_densities", "log_mixture_density",
           "gamma_precision_nll", "complexity", "responsibilities", "assign_components",
           "merge_components", "init_means"]

_LOG_2PI = math.log(2.0 * math.pi)


def mixing_log_proportions(logits: Tensor, pi_zero: float) -> Tensor:
    """``log pi`` (J+1,) from free ``logits`` (J,) and the fixed zero-component weight ``pi_zero``:
    ``log pi_0 = log pi_zero``, ``log pi_j = log(1 - pi_zero) + log_softmax(logits)_j``."""
    if not 0.0 < pi_zero < 1.0:
        raise ValueError(f"pi_zero must be in (0, 1), got {pi_zero}")
    rest = math.log1p(-pi_zero) + torch.log_softmax(logits, dim=0)
    return torch.cat([rest.new_full((1,), math.log(pi_zero)), rest])


def component_log_densities(w: Tensor, means: Tensor, log_vars: Tensor, log_pi: Tensor) -> Tensor:
    """``log pi_j + log N(w_i | mu_j, exp(log_vars_j))`` for every weight and component: (n, K).

    ``w`` of any shape is flattened to (n,)."""
    x = w.reshape(-1, 1)
    return (log_pi - 0.5 * (_LOG_2PI + log_vars)) - 0.5 * (x - means) ** 2 * torch.exp(-log_vars)


def log_mixture_density(w: Tensor, means: Tensor, log_vars: Tensor, log_pi: Tensor,
                        chunk: int = 1 << 18) -> Tensor:
    """``sum_i log p(w_i)`` (a scalar) under the mixture, computed in chunks of ``chunk`` weights
    (memory stays ``chunk x K``)."""
    flat = w.reshape(-1)
    total = flat.new_zeros(())
    for s in range(0, flat.numel(), chunk):
        part = component_log_densities(flat[s:s + chunk], means, log_vars, log_pi)
        total = total + torch.logsumexp(part, dim=1).sum()
    return total


def gamma_precision_nll(log_vars: Tensor, alpha: Tensor, beta: Tensor) -> Tensor:
    """``- sum_j [(alpha_j - 1) log lambda_j - beta_j lambda_j]`` with ``lambda_j = exp(-log_vars_j)``
    (Gamma hyper-prior on the precisions, up to its normalizer)."""
    lam_log = -log_vars
    return -((alpha - 1.0) * lam_log - beta * torch.exp(lam_log)).sum()


def complexity(weights: list[Tensor], means: Tensor, log_vars: Tensor, log_pi: Tensor,
               alpha: Tensor, beta: Tensor) -> Tensor:
    """The complexity term ``C(w, theta)`` above over a list of weight tensors (scalar)."""
    nll = -sum(log_mixture_density(w, means, log_vars, log_pi) for w in weights)
    return nll + gamma_precision_nll(log_vars, alpha, beta)


@torch.no_grad()
def responsibilities(w: Tensor, means: Tensor, log_vars: Tensor, log_pi: Tensor) -> Tensor:
    """Posterior component probabilities ``r_ij = pi_j N_j(w_i) / sum_k pi_k N_k(w_i)``: (n, K)."""
    return torch.softmax(component_log_densities(w, means, log_vars, log_pi), dim=1)


@torch.no_grad()
def assign_components(w: Tensor, means: Tensor, log_vars: Tensor, log_pi: Tensor,
                      chunk: int = 1 << 18) -> Tensor:
    """Index (w.shape, int64) of the most responsible component of every weight."""
    flat = w.reshape(-1)
    out = torch.empty(flat.numel(), dtype=torch.int64, device=w.device)
    for s in range(0, flat.numel(), chunk):
        out[s:s + chunk] = component_log_densities(flat[s:s + chunk], means, log_vars, log_pi).argmax(dim=1)
    return out.reshape(w.shape)


@torch.no_grad()
def merge_components(means: Tensor, log_pi: Tensor, tol: float) -> tuple[Tensor, Tensor]:
    """Merge components whose means are within ``tol`` of each other (single linkage on the
    sorted means; the zero component 0 absorbs every mean within ``tol`` of 0 and stays at 0).

    Returns ``(group (K,) int64, merged_means (G,))``: component ``j`` maps to group
    ``group[j]``, group 0 is the zero component (mean exactly 0); the other groups' means are
    the ``pi``-weighted averages of their members' means.
    """
    k = means.numel()
    mu = means.detach().double().cpu()
    pi = torch.exp(log_pi.detach().double().cpu())
    group = torch.full((k,), -1, dtype=torch.int64)
    group[0] = 0
    for j in range(1, k):
        if abs(float(mu[j])) < tol:
            group[j] = 0
    rest = [j for j in torch.argsort(mu).tolist() if group[j] < 0]
    merged = [0.0]
    cur: list[int] = []
    for j in rest:
        if cur and float(mu[j]) - float(mu[cur[-1]]) >= tol:
            merged.append(float((mu[cur] * pi[cur]).sum() / pi[cur].sum()))
            group[cur] = len(merged) - 1
            cur = []
        cur.append(j)
    if cur:
        merged.append(float((mu[cur] * pi[cur]).sum() / pi[cur].sum()))
        group[cur] = len(merged) - 1
    return group, torch.tensor(merged, dtype=torch.float32)


def init_means(weights: list[Tensor], n_nonzero: int) -> Tensor:
    """Initial means (n_nonzero + 1,): 0, then ``n_nonzero`` values spaced evenly over
    ``[-max|w|, 0)`` and ``(0, max|w|]`` (``ceil(n/2)`` negative, ``floor(n/2)`` positive; the
    paper's equidistant initialization over the range of the pretrained weights)."""
    if n_nonzero < 1:
        raise ValueError(f"need at least one non-zero component, got {n_nonzero}")
    m = max(float(w.detach().abs().max()) for w in weights)
    m = m if m > 0 else 1.0
    n_pos = n_nonzero // 2
    n_neg = n_nonzero - n_pos
    pos = torch.linspace(0.0, m, n_pos + 1)[1:]
    neg = -torch.linspace(0.0, m, n_neg + 1)[1:].flip(0)
    grid = torch.cat([neg, pos])
    return torch.cat([torch.zeros(1), grid.to(torch.float32)])


class _MixtureNLL(torch.autograd.Function):
    """``-sum_i log p(w_i)`` with a hand-written backward (one pass over the (n, K) matrix).

    With ``z_ij = (w_i - mu_j)^2 / s2_j`` and responsibilities ``r_ij``:
    ``d/dw_i = sum_j r_ij (w_i - mu_j) / s2_j``, ``d/dmu_j = -sum_i r_ij (w_i - mu_j) / s2_j``,
    ``d/dlog s2_j = 0.5 sum_i r_ij (1 - z_ij)``, ``d/dlog pi_j = -sum_i r_ij``.
    """

    @staticmethod
    def forward(ctx, x, means, log_vars, log_pi, chunk):
        prec = torch.exp(-log_vars)
        base = log_pi - 0.5 * (_LOG_2PI + log_vars)
        nll = x.new_zeros(())
        gx = torch.empty_like(x)
        rd = torch.zeros_like(means)         # sum_i r_ij (x_i - mu_j)
        rsum = torch.zeros_like(means)       # sum_i r_ij
        rz = torch.zeros_like(means)         # sum_i r_ij z_ij
        for s in range(0, x.numel(), chunk):
            d = x[s:s + chunk].unsqueeze(1) - means                  # (c, K)
            z = d.square().mul_(prec)
            lg = z.mul(-0.5).add_(base)
            lse = torch.logsumexp(lg, dim=1, keepdim=True)
            nll -= lse.sum()
            r = lg.sub_(lse).exp_()
            rsum += r.sum(0)
            rz += z.mul_(r).sum(0)
            rdm = r.mul_(d)
            gx[s:s + chunk] = rdm @ prec
            rd += rdm.sum(0)
        ctx.save_for_backward(gx, rd, rsum, rz, prec)
        return nll

    @staticmethod
    def backward(ctx, g):
        gx, rd, rsum, rz, prec = ctx.saved_tensors
        return g * gx, -g * prec * rd, 0.5 * g * (rsum - rz), -g * rsum, None


def mixture_nll(w: Tensor, means: Tensor, log_vars: Tensor, log_pi: Tensor, chunk: int = 1 << 16) -> Tensor:
    """``-sum_i log p(w_i)`` (scalar), equal to ``-log_mixture_density`` (the slow reference)
    but with an analytic backward; differentiable in ``w``, ``means``, ``log_vars``, ``log_pi``."""
    return _MixtureNLL.apply(w.reshape(-1), means, log_vars, log_pi, chunk)


def fast_complexity(weights: list[Tensor], means: Tensor, log_vars: Tensor, log_pi: Tensor,
                    alpha: Tensor, beta: Tensor) -> Tensor:
    """:func:`complexity` through :func:`mixture_nll` (same value, faster backward)."""
    w = torch.cat([t.reshape(-1) for t in weights])
    return mixture_nll(w, means, log_vars, log_pi) + gamma_precision_nll(log_vars, alpha, beta)
