"""Degree distributions of sparse networks and power-law fits (Hou & Kwok, arXiv 1805.01891).

A sparse network is a graph: its units (neurons; channels of a convolution) are the nodes and
its nonzero weights the edges. For a weight layer:

* fully connected ``W (n_out, n_in)``: the in-degree of output unit ``j`` is
  ``sum_i [W[j, i] != 0]`` (row count), the out-degree of input unit ``i`` is
  ``sum_j [W[j, i] != 0]`` (column count);
* convolution ``W (c_out, c_in / groups, kh, kw)``, one node per channel, two ways of counting
  (``conv_mode``):

  - ``"weight"`` (default): every nonzero kernel weight is one connection, so the in-degree
    of output channel ``o`` is ``nnz(W[o])`` and the out-degree of input channel ``c`` is the
    number of nonzeros of all kernel slices that read ``c``;
  - ``"kernel"``: channels ``c -> o`` are connected once when their ``kh x kw`` kernel slice
    has any nonzero (so degrees count channels, at most ``c_in / groups`` and ``c_out``).

The whole network chains the weight layers in the order the model registers them (a
feed-forward network: MLPs, LeNets, VGG-style nets): the output units of layer ``l`` are the
input units of layer ``l + 1`` and a unit's total degree is its in-degree from ``l`` plus its
out-degree into ``l + 1``. A convolution followed by a fully connected layer is joined through
the channel-major flatten: the ``n_in / c_out`` consecutive columns of the FC weight that read
channel ``o`` add to channel ``o``'s out-degree. Where consecutive unit counts disagree
(residual or recurrent nets) the chain is cut there. Units of degree 0 (pruned away, e.g.
border pixels of MNIST) are counted as ``isolated`` and left out of the fits.

Fits use the ``powerlaw`` package (Alstott et al. 2014, following Clauset, Shalizi & Newman
2009) on the integer degrees (``discrete=True``): the power law ``p(d) ~ d^-alpha`` for
``d >= xmin`` (``alpha`` searched in :data:`ALPHA_RANGE`) with ``xmin`` chosen by the smallest
Kolmogorov-Smirnov distance (searched only among the degrees that leave at least ``min_tail``
units in the tail - this bounds the search and avoids fits to a handful of points; or fixed
with ``xmin=``), the truncated power law ``p(d) ~ d^-alpha e^(-lambda
d)`` (the package's exponential cutoff; Hou & Kwok's "truncated" power law bounds the range
instead - both model the fall-off of the largest degrees), and log-likelihood-ratio tests
``(R, p)`` of the power law against the exponential, the log-normal and the truncated power
law (``R > 0``: the power law is the likelier one; ``p``: significance of the sign of ``R``),
and of the truncated power law against the exponential.

Verdict (on the tail ``d >= xmin``; ``p_threshold`` = 0.1 as in Clauset et al.; "narrow" means
the tail spans less than ``min_decades``, i.e. ``log10(max / xmin) < 1`` by default)::

    truncated power law beats the power law AND the exponential (both significant)
                                                          -> "truncated power law" ("narrow tail" if narrow)
    else power law vs exponential significantly negative  -> "exponential"
    not significant either way                            -> "inconclusive"
    significantly positive (heavy tail), then:
        narrow                                            -> "narrow tail"
        log-normal beats the power law (significant)      -> "lognormal"
        else                                              -> "power law"

The "narrow tail" rule guards against the classic failure of the xmin search: on a
binomial (Erdos-Renyi) degree distribution it may pick the last few degrees above the mean,
where a steep power law (alpha ~ 10) beats the exponential over a range of a factor 1.5 -
which says nothing about scale-free structure (Stumpf & Porter 2012 ask for two decades).
The same comparisons over ALL units (``xmin`` = the smallest positive degree) are reported
under ``"full"``, for reference; they do not enter the verdict.

``power_law_like`` is true for "power law" and "truncated power law". Fewer than
``min_units`` units with positive degree, or fewer than 3 distinct degrees, give no fit
(verdict "too few units" / "too few distinct degrees").

Entry points: :func:`analyze_file` (a ``.wz``, a ``.pt`` checkpoint, a checkpoint dict, a
state_dict or an ``nn.Module``; writes plots when ``out_dir`` is given) and
:func:`format_report` (text for the CLI). The discrete truncated-power-law fit is slow (the
package normalises it with mpmath's Lerch function, seconds per fit), so by default it is done
for the whole-network distribution only (``truncated="network"``).

Modules: ``degrees`` (the graph), ``fit`` (fits and verdict), ``analyze`` (models and files),
``plots`` (CCDF figures), ``report`` (text); every name below is importable from this package.
"""
from __future__ import annotations

from .analyze import analyze_file, analyze_model
from .degrees import ConvMode, LayerDegrees, layer_degrees, network_degrees, weight_layers
from .fit import fit_degrees, verdict
from .plots import plot_ccdf_fits, plot_ccdfs
from .report import format_report

# importable from here as before the split (not part of __all__)
from .analyze import TruncatedWhere  # noqa: F401, E402
from .degrees import CONV_TYPES, LINEAR_TYPES  # noqa: F401, E402
from .fit import ALPHA_RANGE, COMPARED, POWER_LAW_LIKE  # noqa: F401, E402

__all__ = [
    "ConvMode",
    "LayerDegrees",
    "layer_degrees",
    "weight_layers",
    "network_degrees",
    "fit_degrees",
    "verdict",
    "analyze_model",
    "analyze_file",
    "format_report",
    "plot_ccdf_fits",
    "plot_ccdfs",
]
