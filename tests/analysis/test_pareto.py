import math

import pytest
from hypothesis import given, settings, strategies as st

from weightzip.analysis.pareto import (dominates, non_dominated, non_dominated_indices, plot_front,
                                       plot_memory_breakdown)


def brute_force(points, directions):
    s = [1 if d == "minimize" else -1 for d in directions]
    out = []
    for i, p in enumerate(points):
        if any(v is None or math.isnan(v) for v in p):
            continue
        dominated = False
        for j, q in enumerate(points):
            if j == i or any(v is None or math.isnan(v) for v in q):
                continue
            if all(a * k <= b * k for a, b, k in zip(q, p, s)) and any(a * k < b * k for a, b, k in zip(q, p, s)):
                dominated = True
        if not dominated:
            out.append(i)
    return out


values = st.one_of(st.integers(0, 6).map(float), st.just(float("nan")))


@settings(max_examples=200, deadline=None)
@given(st.integers(2, 3).flatmap(lambda m: st.tuples(
    st.lists(st.lists(values, min_size=m, max_size=m), max_size=25),
    st.lists(st.sampled_from(["minimize", "maximize"]), min_size=m, max_size=m))))
def test_non_dominated_matches_brute_force(case):
    points, directions = case
    objectives = list(range(len(directions)))
    assert non_dominated_indices(points, objectives, directions) == brute_force(points, directions)


def test_dicts_missing_values_and_duplicates():
    pts = [{"e": 0.1, "m": 10}, {"e": 0.2, "m": 5}, {"e": 0.2, "m": 20}, {"e": 0.05, "m": None},
           {"e": 0.1, "m": 10}, {"e": 0.3, "m": 5}]
    front = non_dominated(pts, ["e", "m"], ["minimize", "minimize"])
    assert front == [pts[0], pts[1], pts[4]]
    assert dominates([1, 1], [1, 2]) and not dominates([1, 1], [1, 1])
    assert dominates([0.9, 1], [0.8, 1], ["maximize", "minimize"])
    with pytest.raises(ValueError, match="directions"):
        non_dominated(pts, ["e", "m"], ["min", "minimize"])


def test_plots_write_pngs(tmp_path):
    pts = [{"error": 0.1 * i, "total_memory_bits": 1000 * (5 - i), "topology": "a" if i % 2 else "b",
            "design": f"d{i}", "kept_weight_bits": 100, "block_mask_bits": 3, "float_param_bits": 50,
            "activation_memory_bits": 70} for i in range(5)]
    front = non_dominated(pts, ["error", "total_memory_bits"])
    p1 = plot_front(pts, "total_memory_bits", "error", tmp_path / "f.png", front=front, label="design",
                    group="topology")
    p2 = plot_memory_breakdown(front, tmp_path / "m.png")
    for p in (p1, p2):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
