"""Hostile manifests (issue 24, item 4): forged with valid checksums, semantic fields rather than
bytes. Each is refused by ``load`` / ``verify`` / ``inspect`` with a WeightzipFormatError naming the
field, fast and before anything the field declares is allocated."""
import json
import math
import time
import tracemalloc
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import weightzip
from weightzip.analysis.size import size_report
from weightzip.codec import container, forge
from weightzip.core.parametrize import install_activation_quant
from weightzip.core.registry import create_model
from weightzip.errors import WeightzipFormatError

MAX_SECONDS = 2.0
MAX_PEAK_BYTES = 100 << 20   # traced (Python + numpy) and resident (VmHWM over VmRSS) peak of a refusal


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("manifests")
    torch.manual_seed(0)
    zoo = create_model("lenet5_tiny")
    install_activation_quant(zoo, [{"module": "classifier.2", "bits": 4, "clip": 2.0}])
    weightzip.save(zoo, d / "zoo.wz")
    user = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    weightzip.save(user, d / "user.wz", example_inputs=(torch.randn(2, 6),))
    return {"zoo": forge.load(d / "zoo.wz"), "user": forge.load(d / "user.wz")}


def forged(raw, tmp_path, change):
    r = raw.copy()
    change(r.doc)
    out = tmp_path / "forged.wz"
    out.write_bytes(forge.dump(r))
    return out


def _rss(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def assert_refused(fn, match):
    """``fn()`` raises a WeightzipFormatError matching ``match``, within MAX_SECONDS, with traced
    and resident peaks under MAX_PEAK_BYTES."""
    before, per_case = _rss("VmRSS"), _reset_peak_rss()
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(WeightzipFormatError, match=match):
            fn()
    finally:
        seconds = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert seconds < MAX_SECONDS, f"refusal took {seconds:.2f}s"
    assert peak < MAX_PEAK_BYTES, f"refusal allocated {peak / 2**20:.0f} MiB (traced)"
    if per_case:
        added = _rss("VmHWM") - before
        assert added < MAX_PEAK_BYTES, f"refusal added {added / 2**20:.0f} MiB resident"


def test_unchanged_files_load(files, tmp_path):
    m = weightzip.load(forged(files["zoo"], tmp_path, lambda d: None))
    assert m.wz_runtime["activation_quant"][0]["bits"] == 4
    m = weightzip.load(forged(files["user"], tmp_path, lambda d: None))
    assert m(torch.randn(4, 6)).shape == (4, 3)


# ---- the cases ---------------------------------------------------------------------------

def test_num_classes_1e9_refused_before_building(files, tmp_path):
    path = forged(files["zoo"], tmp_path, lambda d: d["model"]["kwargs"].update(num_classes=10**9))
    assert_refused(lambda: weightzip.load(path), r"model\.kwargs.*num_classes.*max_decoded_bytes")


def test_num_classes_under_the_limit_but_not_the_file_is_refused_on_the_meta_device(files, tmp_path):
    # 32 x 200k float32 = 25.6 MB: under the limit, so only the meta model's shapes refuse it
    path = forged(files["zoo"], tmp_path, lambda d: d["model"]["kwargs"].update(num_classes=200_000))
    assert_refused(lambda: weightzip.load(path), r"model\.kwargs.*'classifier\.2\.weight' has shape \(10, 32\)")


def test_kwargs_over_a_lowered_limit(files, tmp_path):
    path = forged(files["zoo"], tmp_path, lambda d: d["model"]["kwargs"].update(num_classes=100))
    assert_refused(lambda: weightzip.load(path, max_decoded_bytes="24K"), r"model\.kwargs.*max_decoded_bytes=24576")


def test_image_size_1e5_refused(files, tmp_path):
    path = forged(files["zoo"], tmp_path, lambda d: d["model"]["kwargs"].update(image_size=10**5))
    for fn in (lambda: weightzip.load(path), lambda: weightzip.load(path, mode="compiled"),
               lambda: container.read_manifest(path), lambda: size_report(path)):
        assert_refused(fn, r"model\.kwargs\.image_size.*per input sample")
    assert "model.kwargs.image_size" in weightzip.verify(path)["errors"][0]


def test_depth_1e6_stopped_while_building(files, tmp_path):
    def change(d):
        d["model"] = {"name": "mlp", "kwargs": {"depth": 10**6, "width": 4}}
    assert_refused(lambda: weightzip.load(forged(files["zoo"], tmp_path, change)), r"model\.kwargs.*tensors and modules")


@pytest.mark.parametrize("model, match", [
    ("lenet5_tiny", r"'model': must be an object"),
    (["lenet5_tiny", {}], r"'model': must be an object"),
    (7, r"'model': must be an object"),
    ({"name": 7}, r"'model\.name': must be a string"),
    ({"name": ["lenet5"]}, r"'model\.name': must be a string"),
    ({"name": "lenet5_tiny", "kwargs": "num_classes=10"}, r"'model\.kwargs': must be an object"),
    ({"name": "lenet5_tiny", "kwargs": [10]}, r"'model\.kwargs': must be an object"),
    ({"name": "lenet5_tiny", "kwargs": {"num_classes": {"a": 1}}}, r"'model\.kwargs\.num_classes': must be a plain"),
    ({"name": "lenet5_tiny", "kwargs": {"num_classes": float("nan")}}, r"'model\.kwargs\.num_classes': must be a plain"),
    ({"name": "lenet5_tiny", "kwargs": {"num_classes": 10**30}}, r"'model\.kwargs\.num_classes': must be a plain"),
    ({"name": "lenet5_tiny", "kwargs": {"hidden": [[1]]}}, r"'model\.kwargs\.hidden': must be a list"),
    ({"name": "lenet5_tiny", "kwargs": {"hidden": [1] * 1000}}, r"'model\.kwargs\.hidden': must be a list"),
    ({"name": "lenet5_tiny", "kwargs": {"not an identifier": 1}}, r"'model\.kwargs': argument name"),
    ({"name": "lenet5_tiny", "kwargs": {"num_classes": "ten"}}, r"'model\.kwargs': lenet5_tiny.*cannot be built"),
    ({"name": "lenet5_tiny", "kwargs": {"num_classes": -3}}, r"'model\.kwargs': lenet5_tiny.*cannot be built"),
    ({"name": "lenet5_tiny", "kwargs": {"bogus": 1}}, r"'model\.kwargs': lenet5_tiny.*unexpected keyword"),
    ({"name": "no_such_model"}, r"'model\.name': unknown zoo model 'no_such_model'; allowed: .*lenet5"),
], ids=["string", "list", "int", "name_int", "name_list", "kwargs_string", "kwargs_list", "value_object",
        "value_nan", "value_huge", "nested_list", "long_list", "key", "value_string", "negative", "unknown_arg",
        "unknown_model"])
def test_model_field_of_the_wrong_type(files, tmp_path, model, match):
    path = forged(files["zoo"], tmp_path, lambda d: d.update(model=model))
    assert_refused(lambda: weightzip.load(path), match)


@pytest.mark.parametrize("aq, match", [
    (7, r"'runtime\.activation_quant': must be a list"),
    ("head", r"'runtime\.activation_quant': must be a list"),
    ({"module": "classifier.2"}, r"'runtime\.activation_quant': must be a list"),
    ([7], r"'runtime\.activation_quant\[0\]': must be an object"),
    ([{"bits": 2}], r"'runtime\.activation_quant\[0\]\.module': must be a module name"),
    ([{"module": ["classifier.2"], "bits": 2}], r"\[0\]\.module': must be a module name"),
    ([{"module": "classifier.2", "bits": 0}], r"\[0\]\.bits': must be an integer in \[1, 16\]"),
    ([{"module": "classifier.2", "bits": 17}], r"\[0\]\.bits'"),
    ([{"module": "classifier.2", "bits": 2.5}], r"\[0\]\.bits'"),
    ([{"module": "classifier.2", "bits": True}], r"\[0\]\.bits'"),
    ([{"module": "classifier.2", "bits": "2"}], r"\[0\]\.bits'"),
    ([{"module": "classifier.2", "bits": 2, "clip": 0}], r"\[0\]\.clip': must be a finite number > 0"),
    ([{"module": "classifier.2", "bits": 2, "clip": -1.0}], r"\[0\]\.clip'"),
    ([{"module": "classifier.2", "bits": 2, "clip": float("inf")}], r"\[0\]\.clip'"),
    ([{"module": "classifier.2", "bits": 2, "clip": float("nan")}], r"\[0\]\.clip'"),
    ([{"module": "classifier.2", "bits": 2, "clip": "1"}], r"\[0\]\.clip'"),
    ([{"module": "classifier.2", "bits": 2}] * 5000, r"'runtime\.activation_quant': must be a list of at most"),
    ([{"module": "no.such.layer", "bits": 2}], r"\[0\]\.module': the model has no module 'no\.such\.layer'"),
])
def test_activation_quant_garbage(files, tmp_path, aq, match):
    path = forged(files["zoo"], tmp_path, lambda d: d["runtime"].update(activation_quant=aq))
    assert_refused(lambda: weightzip.load(path), match)


def test_runtime_of_the_wrong_type(files, tmp_path):
    path = forged(files["zoo"], tmp_path, lambda d: d.update(runtime=[{"module": "classifier.2", "bits": 2}]))
    assert_refused(lambda: weightzip.load(path), r"'runtime': must be an object")


@pytest.mark.parametrize("value", [-1, 1.5, "1066440", True, [1], 2**64])
def test_baseline_bytes_refused_by_inspect_and_verify(files, tmp_path, value):
    path = forged(files["zoo"], tmp_path, lambda d: d.update(baseline_bytes=value))
    assert_refused(lambda: size_report(path), r"'baseline_bytes': must be an integer in \[0, 2\^63\)")
    res = weightzip.verify(path)
    assert not res["ok"] and "baseline_bytes" in res["errors"][0]


@pytest.mark.parametrize("key", ["metrics", "recipe", "extra", "tied"])
@pytest.mark.parametrize("value", [[1, 2], "x", 3, 1.5, True])
def test_display_fields_of_the_wrong_type(files, tmp_path, key, value):
    path = forged(files["zoo"], tmp_path, lambda d: d.update({key: value}))
    res = weightzip.verify(path)
    assert not res["ok"] and f"'{key}': must be an object" in res["errors"][0]
    assert_refused(lambda: size_report(path), f"'{key}': must be an object")


def test_inspect_cli_refuses_with_the_field(files, tmp_path):
    from typer.testing import CliRunner

    from weightzip.cli import app

    path = forged(files["zoo"], tmp_path, lambda d: d.update(recipe=["x"]))
    res = CliRunner().invoke(app, ["inspect", str(path)])
    assert res.exit_code != 0 and "'recipe': must be an object" in res.output
    assert not isinstance(res.exception, (TypeError, AttributeError))


def test_deep_nesting_inside_extra(files, tmp_path):
    # 500 deep: under the JSON parser's recursion limit, over the manifest's nesting limit
    path = forged(files["zoo"], tmp_path, lambda d: d.update(extra={"deep": json.loads("[" * 500 + "]" * 500)}))
    assert_refused(lambda: weightzip.load(path), r"'extra\.deep.*nested more than 64")


def test_2_28_codebook_refused_with_a_low_peak(tmp_path):
    raw = forge.load(Path(__file__).resolve().parents[2] / "benchmarks/results/lenet5-kmeans.wz")

    def change(d):
        name, e = next((n, e) for n, e in d["tensors"].items() if e["kind"] == "codebook")
        m = e["meta"]
        m["codebook_size"] = 2**28
        m["stream_info"]["codebook"]["count"] = 2**28
        m["stream_info"]["codes"]["alphabet"] = 2**28
    path = forged(raw, tmp_path, change)
    for fn in (lambda: weightzip.load(path), lambda: size_report(path)):
        assert_refused(fn, r"stream 'codebook'.*bytes for 268435456 float32 values")


# ---- graphs ---------------------------------------------------------------------------------------

def test_graph_module_larger_than_its_tensors_refused_before_allocation(files, tmp_path):
    def change(d):
        spec = d["graph"]["modules"]["0"]
        spec["args"].update(in_features=20_000, out_features=20_000)   # 1.6 GB if allocated
    assert_refused(lambda: weightzip.load(forged(files["user"], tmp_path, change)),
                   r"'graph\.modules': module '0' holds '0\.weight' of shape \(20000, 20000\)")


@pytest.mark.parametrize("change, match", [
    (lambda g: g.update(params=5), r"'graph\.params': must be a list"),
    (lambda g: g.update(params=[["x"]]), r"'graph\.params': must be a list"),
    (lambda g: g.update(nodes={"a": 1}), r"'graph\.nodes': must be a list"),
    (lambda g: g.update(modules=[1]), r"'graph\.modules': must be an object"),
    (lambda g: g.update(example_inputs=[{"shape": [2, 10**6, 10**6], "dtype": "float32"}]),
     r"'graph\.example_inputs\[0\]\.shape'.*max_decoded_bytes"),
    (lambda g: g.update(example_inputs=7), r"'graph\.example_inputs'"),
    (lambda g: g["nodes"].__setitem__(1, {"name": 7}), r"graph"),
], ids=["params_int", "params_nested", "nodes_object", "modules_list", "example_huge", "example_int", "node"])
def test_graph_fields(files, tmp_path, change, match):
    path = forged(files["user"], tmp_path, lambda d: change(d["graph"]))
    assert_refused(lambda: weightzip.load(path), match)


def test_graph_of_the_wrong_type(files, tmp_path):
    path = forged(files["user"], tmp_path, lambda d: d.update(graph=[1, 2]))
    assert_refused(lambda: weightzip.load(path), r"'graph': must be an object")


# ---- random field replacements ----------------------------------------------------------------------

FIELDS = [("model",), ("model", "name"), ("model", "kwargs"), ("model", "kwargs", "num_classes"),
          ("model", "kwargs", "image_size"), ("model", "kwargs", "in_channels"), ("model", "kwargs", "hidden"),
          ("runtime",), ("runtime", "activation_quant"), ("runtime", "activation_quant", 0),
          ("runtime", "activation_quant", 0, "bits"), ("runtime", "activation_quant", 0, "clip"),
          ("runtime", "activation_quant", 0, "module"), ("metrics",), ("recipe",), ("extra",), ("tied",),
          ("baseline_bytes",), ("weightzip_version",)]
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
                    st.sampled_from([0, 1, -1, 16, 17, 10**5, 10**9, 2**31, 2**63]),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
                    st.sampled_from(["classifier.2", "lenet5", "lenet5_tiny", "mlp", "user model", ""]))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=6), inner, max_size=4)),
                      max_leaves=12)


def _set(doc, path, value):
    node = doc
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(field=st.sampled_from(FIELDS), value=VALUES)
def test_random_field_replacements_are_loaded_or_refused(files, tmp_path, field, value):
    path = forged(files["zoo"], tmp_path, lambda d: _set(d, field, value))
    for fn in (weightzip.load, size_report):
        try:
            fn(path)
        except WeightzipFormatError:
            pass
    assert isinstance(weightzip.verify(path)["ok"], bool)


def test_every_zoo_model_builds_on_the_meta_device():
    """The meta build that guards load must accept every registered model at its defaults."""
    from weightzip.core.registry import list_models
    from weightzip.runtime.load import _meta_zoo_model, _model_bytes

    for name in list_models():
        if name in ("lstm_lm",):  # 1.6 s of construction; lstm_lm_tiny is the same class
            continue
        with torch.device("meta"):
            ref = create_model(name)
        n = len(ref.state_dict())
        m = _meta_zoo_model(name, {}, "x", 2 << 30, 8 * (n + 32))
        assert _model_bytes(m) == _model_bytes(ref) and not math.isnan(_model_bytes(m))
