"""The format-kind registry: every kind registered once, in the documented order."""
import pytest

from weightzip.codec import KINDS
from weightzip.codec.kinds import Kind, get_kind, register_kind, registered


def test_kinds_are_registered_in_candidate_order():
    assert KINDS == ("raw", "dense", "codebook", "uniform", "pq", "mixed_fixed")
    assert tuple(k.name for k in registered()) == KINDS
    for name in KINDS:
        k = get_kind(name)
        assert k.name == name and all(callable(f) for f in (k.decode, k.parts, k.summary, k.plan))
    # layout kinds give value coders, whole-tensor kinds give candidates, raw neither
    assert [k.name for k in registered() if k.coders] == ["dense", "codebook", "uniform"]
    assert [k.name for k in registered() if k.candidates] == ["pq", "mixed_fixed"]


def test_unknown_names_and_duplicates():
    assert get_kind("nope") is None and get_kind(["raw"]) is None and get_kind(None) is None
    with pytest.raises(ValueError, match="already registered"):
        register_kind(Kind("dense", (), decode=None, parts=None, summary=None, plan=None))


def test_hint_kinds():
    assert get_kind("uniform").implements("fixed_point") and get_kind("uniform").implements("uniform")
    assert not get_kind("codebook").implements("uniform")
    assert [k.name for k in registered() if k.hint_driven] == ["uniform", "pq", "mixed_fixed"]
