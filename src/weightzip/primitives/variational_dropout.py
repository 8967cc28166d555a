"""Sparse variational dropout (Molchanov, Ashukha & Vetrov, ICML 2017): the math.

Every weight has a Gaussian posterior ``q(w) = N(theta, sigma^2)`` (additive
reparametrization: ``theta`` and ``log sigma^2`` are the free parameters) and the dropout rate
``alpha = sigma^2 / theta^2``. Under the log-uniform prior the KL term has no closed form; the
paper's approximation (their eq. 14, accurate to ~0.01 everywhere) is::

    -KL(q || p) ~= k1 sigmoid(k2 + k3 log alpha) - 0.5 log(1 + 1/alpha) - k1
    k1 = 0.63576, k2 = 1.87320, k3 = 1.48695

A weight with ``log alpha > threshold`` (3: alpha > 20, i.e. noise 4.5x the signal) is pruned.
"""
from __future__ import annotations

import torch
from torch import Tensor

K1, K2, K3 = 0.63576, 1.87320, 1.48695
EPS = 1e-8

__all__ = ["log_alpha", "kl_approx", "keep_mask", "K1", "K2", "K3"]


def log_alpha(theta: Tensor, log_sigma2: Tensor, clip: float = 8.0) -> Tensor:
    """``log alpha = log sigma^2 - log(theta^2 + eps)``, clipped to ``[-clip, clip]`` (shape of theta)."""
    return torch.clamp(log_sigma2 - torch.log(theta * theta + EPS), -clip, clip)


def kl_approx(la: Tensor) -> Tensor:
    """``sum KL(q || p)`` over the weights from their ``log alpha`` (scalar, >= 0 up to ~0.01 per weight)."""
    neg_kl = K1 * torch.sigmoid(K2 + K3 * la) - 0.5 * torch.nn.functional.softplus(-la) - K1
    return -neg_kl.sum()


def keep_mask(theta: Tensor, log_sigma2: Tensor, threshold: float = 3.0) -> Tensor:
    """{0,1} float mask of the weights kept: ``log alpha < threshold``."""
    return (log_alpha(theta, log_sigma2) < threshold).to(theta.dtype)
