"""The converter registry: one stated order, custom converters, no import circle in runtime/."""
import ast
from pathlib import Path

import torch
from torch import nn

import weightzip.runtime as runtime
from weightzip.runtime import convert as conv_mod
from weightzip.runtime.convert import BUILTIN, alternatives, convert, converter_names, register_converter
from weightzip.runtime.sparse import FusedSparseMLP, SparseLinear


def _sparse_linear(i, o, density, seed):
    g = torch.Generator().manual_seed(seed)
    lin = nn.Linear(i, o)
    with torch.no_grad():
        lin.weight.mul_((torch.rand(o, i, generator=g) < density).float())
    return lin


def test_builtin_order_is_stated_once_and_pq_lut_runs_first():
    assert [n for n, _ in BUILTIN] == ["pq_lut", "fused_sparse_mlp", "sparse_linear"]
    assert converter_names()[:3] == ["pq_lut", "fused_sparse_mlp", "sparse_linear"]


def test_convert_swaps_sparse_stack_and_keeps_dense_layers():
    model = nn.Sequential(nn.Flatten(), nn.Sequential(_sparse_linear(12, 8, 0.1, 0), nn.ReLU(),
                                                      _sparse_linear(8, 3, 0.1, 1)), nn.Linear(3, 2)).eval()
    x = torch.randn(1, 3, 4)
    with torch.inference_mode():
        ref = model(x)
        convert(model, {}, "sparse")
        assert isinstance(model[1], FusedSparseMLP)
        assert type(model[2]) is nn.Linear  # dense layer: left alone
        assert torch.allclose(model(x), ref, atol=1e-5)


def test_alternatives_lists_what_the_other_converters_offer():
    lin = _sparse_linear(6, 4, 0.2, 3)
    alts = alternatives(lin, "fc", {}, "auto", exclude=("pq_lut",))
    assert list(alts) == ["sparse_linear"] and isinstance(alts["sparse_linear"], SparseLinear)
    assert alternatives(lin, "fc", {}, "dense") == {}


def test_a_registered_converter_comes_after_the_builtins(monkeypatch):
    monkeypatch.setattr(conv_mod, "_CONVERTERS", dict(conv_mod._CONVERTERS))   # leave the registry as it was

    @register_converter("tanh_to_relu")
    def _swap(module, name, formats, mode):
        return nn.ReLU() if type(module) is nn.Tanh else None

    assert converter_names()[-1] == "tanh_to_relu"
    model = nn.Sequential(nn.Linear(3, 3), nn.Tanh())
    convert(model, {}, "sparse")
    assert type(model[1]) is nn.ReLU and type(model[0]) is nn.Linear


def _runtime_imports(path: Path) -> set[str]:
    """Sibling modules of runtime/ that ``path`` imports (at any level, lazy imports included)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                out.add(node.module.split(".")[0])
            else:
                out.update(a.name for a in node.names)
    return out


def test_runtime_modules_import_each_other_without_a_circle():
    pkg = Path(runtime.__file__).parent
    graph = {p.stem: _runtime_imports(p) for p in pkg.glob("*.py") if p.stem != "__init__"}
    done, active = set(), []

    def visit(mod):
        assert mod not in active, f"import circle: {' -> '.join(active + [mod])}"
        if mod in done or mod not in graph:
            return
        active.append(mod)
        for dep in sorted(graph[mod]):
            visit(dep)
        active.pop()
        done.add(mod)

    for mod in sorted(graph):
        visit(mod)
    assert graph["convert"] >= {"lut", "sparse"} and "convert" not in graph["lut"] | graph["sparse"]
