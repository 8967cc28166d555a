"""benchmarks/_common.py: atomic result files, cached runs, tables, shared flags."""
import importlib.util
import json
import os
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "_common.py"
_spec = importlib.util.spec_from_file_location("benchmarks_common", _PATH)
C = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(C)


def test_write_text_is_atomic_and_leaves_no_temporary_file(tmp_path):
    p = tmp_path / "sub" / "page.md"
    C.write_text(p, "a ± b\n")
    assert p.read_text(encoding="utf-8") == "a ± b\n"
    assert os.listdir(p.parent) == ["page.md"]
    with pytest.raises(TypeError):
        C.write_text(p, None)                          # a failing write keeps the old file, no temp left
    assert p.read_text(encoding="utf-8") == "a ± b\n" and os.listdir(p.parent) == ["page.md"]


def test_write_json_default_and_exact_dumps(tmp_path):
    C.write_json(tmp_path / "a.json", {"x": Path("p"), "y": 1})
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": "p", "y": 1}
    C.write_json(tmp_path / "b.json", {"b": 1, "a": 2}, indent=1, sort_keys=True)
    assert (tmp_path / "b.json").read_text() == json.dumps({"b": 1, "a": 2}, indent=1, sort_keys=True)


def test_read_json_cached_and_complete_from_cache(tmp_path):
    assert C.read_json(tmp_path / "none.json") == {}
    assert C.read_json(tmp_path / "none.json", {"k": []}) == {"k": []}
    (tmp_path / "r1.json").write_text('{"v": 1}')
    assert C.cached(tmp_path / "r1.json") == {"v": 1}
    assert C.cached(tmp_path / "r1.json", force=True) is None
    assert C.cached(tmp_path / "r2.json") is None
    rows = {"r2": {"v": 2}}
    C.complete_from_cache(rows, ["r1", "r2", "r3"], lambda k: tmp_path / f"{k}.json")
    assert rows == {"r2": {"v": 2}, "r1": {"v": 1}}


def test_tables_and_records():
    assert C.md_header(["a", "b"]) == ["| a | b |", "|---|---|"]
    assert C.md_row([1, "x"]) == "| 1 | x |"
    assert [C.fmt(None), C.fmt(True), C.fmt(False), C.fmt(0.5, ".2f"), C.fmt(3)] == ["-", "yes", "NO", "0.50", "3"]
    assert C.without_keys({"a": [{"h": 1, "k": 2}], "h": 3}, ("h",)) == {"a": [{"k": 2}]}
    assert C.data_options({"data_args": {"val_size": 5}}, {"data": {"val_size": 1, "split_seed": 2}},
                          ("val_size", "split_seed")) == {"val_size": 5, "split_seed": 2}


def test_shared_flags_keep_defaults_and_take_overrides():
    ap = C.parser("First line.\n\nMore.")
    assert ap.description == "First line."
    C.add_args(ap, "device", "threads", "seed")
    C.add_arg(ap, "runs", default=Path("r"), help="cache")
    args = ap.parse_args(["--threads", "2"])
    assert (args.device, args.threads, args.seed, args.runs) == ("cpu", 2, 0, Path("r"))


def test_repo_relative_paths():
    from pathlib import Path

    root = C.ROOT
    obj = {"a": str(root / "runs" / "x.wz"), "b": [root / "benchmarks", ("keep", 3)], "c": "/elsewhere/y"}
    out = C.repo_relative(obj)
    assert out == {"a": str(Path("runs") / "x.wz"), "b": ["benchmarks", ("keep", 3)], "c": "/elsewhere/y"}
    assert C.repo_relative(f"file `{root}/benchmarks/results/a.wz`") == "file `benchmarks/results/a.wz`"
