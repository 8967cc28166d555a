"""Sizes (the only place ratios are computed), memory models, Pareto fronts, power-law fits."""
