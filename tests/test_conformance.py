"""Conformance matrix: models nobody here wrote, through compress -> file -> load -> run -> export.

Hugging Face ``transformers`` models built from tiny configs (random init, no downloads) and
plain PyTorch modules with what real models contain (in-place activations, a fused norm +
activation subclass, hardswish / hardsigmoid, squeeze-excite gates, depthwise convolutions,
tied parameters, dict / tuple / ModelOutput outputs, int64 token inputs). For each:

1. a post-training recipe with NO data (4-bit k-means of every weight matrix) -> ``save`` ->
   ``verify`` -> ``load`` WITHOUT the class -> outputs ``torch.equal`` to the compressed model
   in memory -> ``mode="auto"`` and ``"compiled"`` run (warning where they fall back to torch)
   -> ``bench`` prints its table -> the ONNX export runs in onnxruntime and matches -> the
   safetensors export holds every stored tensor;
2. a one-batch fine-tune recipe (k-means + centroid fine-tuning on one batch) -> save -> load
   without the class -> same outputs. Headless models (BertModel, BART) have no training
   objective of their own and are exercised by (1) only.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import weightzip as wz
from weightzip.graph.capture import _flatten_out

transformers = pytest.importorskip("transformers")

TYPES = ["Linear", "Conv2d", "Conv1d", "Embedding", "Conv1D"]
VOCAB, T, B = 61, 8, 2


def _hf(name: str):
    """A tiny Hugging Face model and its example input (all from configs)."""
    tf = transformers
    ids = torch.randint(0, VOCAB, (B, T), generator=torch.Generator().manual_seed(1))
    img = torch.randn(B, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    bert = dict(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                intermediate_size=24, max_position_embeddings=32)
    if name == "bert":
        return tf.BertModel(tf.BertConfig(**bert)), ids
    if name == "bert_cls":
        return tf.BertForSequenceClassification(tf.BertConfig(**bert, num_labels=3)), ids
    if name == "gpt2_tied":
        cfg = tf.GPT2Config(vocab_size=VOCAB, n_embd=16, n_layer=1, n_head=2, n_positions=32,
                            bos_token_id=0, eos_token_id=0)
        return tf.GPT2LMHeadModel(cfg), ids
    if name == "llama":
        cfg = tf.LlamaConfig(vocab_size=VOCAB, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                             num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=32,
                             bos_token_id=0, eos_token_id=0, pad_token_id=0)
        return tf.LlamaForCausalLM(cfg), ids
    if name == "bart":
        cfg = tf.BartConfig(vocab_size=VOCAB, d_model=16, encoder_layers=1, decoder_layers=1,
                            encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=24,
                            decoder_ffn_dim=24, max_position_embeddings=32, pad_token_id=1,
                            bos_token_id=0, eos_token_id=2, decoder_start_token_id=2, forced_eos_token_id=2)
        return tf.BartModel(cfg), ids
    if name == "vit":
        cfg = tf.ViTConfig(image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=1,
                           num_attention_heads=2, intermediate_size=24, num_labels=3)
        return tf.ViTForImageClassification(cfg), img
    if name == "resnet":
        cfg = tf.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_labels=3)
        return tf.ResNetForImageClassification(cfg), img
    if name == "mobilenet_v2":
        cfg = tf.MobileNetV2Config(image_size=32, depth_multiplier=0.25, num_labels=3)
        return tf.MobileNetV2ForImageClassification(cfg), img
    if name == "convnext":
        cfg = tf.ConvNextConfig(num_stages=2, hidden_sizes=[8, 16], depths=[1, 1], num_labels=3)
        return tf.ConvNextForImageClassification(cfg), img
    raise KeyError(name)


# ---- plain PyTorch modules with what real models contain -----------------------------------

class InplaceNet(nn.Module):
    """In-place activations whose input is read again afterwards, and ``x += y``."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(12, 16), nn.Linear(16, 16), nn.Linear(16, 3)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        h = self.fc1(x)
        a = self.act(h)             # in place: h now holds relu(h) too
        y = self.fc2(h)             # reads the changed h
        y += a                      # in-place residual
        return self.fc3(F.relu_(y))


class BatchNormAct2d(nn.BatchNorm2d):
    """timm-style fused norm + activation: a BatchNorm2d subclass with its own forward."""

    def __init__(self, c):
        super().__init__(c)
        self.act = nn.Hardswish(inplace=True)

    def forward(self, x):
        return self.act(super().forward(x))


class SqueezeExcite(nn.Module):
    def __init__(self, c, r=4):
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(c, c // r, 1), nn.Conv2d(c // r, c, 1)

    def forward(self, x):
        s = F.adaptive_avg_pool2d(x, 1)
        return x * F.hardsigmoid(self.fc2(F.relu(self.fc1(s))), inplace=True)


class MobileBlockNet(nn.Module):
    """Depthwise conv, fused BN + hardswish, squeeze-excite, hardsigmoid gate, residual."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = BatchNormAct2d(8)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
        self.bn2 = BatchNormAct2d(8)
        self.se = SqueezeExcite(8)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        h = self.bn1(self.stem(x))
        h = h + self.se(self.bn2(self.dw(h)))
        return self.head(F.hardswish(h).mean((2, 3)))


class TiedNet(nn.Module):
    """An encoder and a decoder sharing one weight (stored once, re-tied on load)."""

    def __init__(self):
        super().__init__()
        self.enc = nn.Linear(12, 6, bias=False)
        self.dec = nn.Linear(6, 12, bias=False)
        self.dec.weight = self.enc.weight  # the same Parameter, used transposed
        self.cls = nn.Linear(6, 3)

    def forward(self, x):
        z = torch.tanh(self.enc(x))
        return self.cls(z) + 0 * F.linear(z, self.enc.weight.t()).sum(-1, keepdim=True)


class DictOutNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc, self.aux = nn.Linear(12, 3), nn.Linear(12, 2)

    def forward(self, x):
        return {"logits": self.fc(x), "aux": self.aux(x)}


class TupleOutNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc, self.aux = nn.Linear(12, 3), nn.Linear(12, 2)

    def forward(self, x):
        return self.fc(x), (self.aux(x), None)


class TokenNet(nn.Module):
    """int64 token inputs [B, T] -> class logits."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(VOCAB, 8)
        self.fc = nn.Linear(8, 3)

    def forward(self, ids):
        return self.fc(self.emb(ids).mean(1))


def _plain(name: str):
    feats = torch.randn(B, 12, generator=torch.Generator().manual_seed(3))
    img = torch.randn(B, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    ids = torch.randint(0, VOCAB, (B, T), generator=torch.Generator().manual_seed(5))
    return {"inplace": (InplaceNet, feats), "mobile_block": (MobileBlockNet, img), "tied": (TiedNet, feats),
            "dict_out": (DictOutNet, feats), "tuple_out": (TupleOutNet, feats), "tokens": (TokenNet, ids)}[name]


HF = ["bert", "bert_cls", "gpt2_tied", "llama", "bart", "vit", "resnet", "mobilenet_v2", "convnext"]
PLAIN = ["inplace", "mobile_block", "tied", "dict_out", "tuple_out", "tokens"]
HEADLESS = {"bert", "bart"}          # no training objective of their own
LM = {"gpt2_tied", "llama"}


def build(name: str):
    torch.manual_seed(0)
    if name in HF:
        model, x = _hf(name)
    else:
        cls, x = _plain(name)
        model = cls()
    model.eval()
    if name == "mobile_block":   # non-trivial BN statistics
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.running_mean.uniform_(-0.5, 0.5)
                    m.running_var.uniform_(0.5, 2.0)
    return model, x


def _outputs(model, x) -> list[torch.Tensor]:
    with torch.no_grad():
        return _flatten_out(model(x))


def _assert_equal_outputs(a, b):
    assert len(a) == len(b) and len(a) > 0
    for u, v in zip(a, b):
        assert u.shape == v.shape
        assert torch.equal(u, v), f"max |diff| {float((u - v).abs().max())}"


def _post_training_recipe():
    return wz.Recipe.from_dict({"name": "kmeans4-ptq", "stages": [
        {"method": "kmeans_share", "bits": 4, "select": {"types": TYPES}}]})


def _check_file(name, model, x, path, y_mem):
    """verify -> load without the class -> equal outputs -> auto / compiled -> bench -> exports."""
    rep = wz.verify(path)
    assert rep["ok"], rep["errors"]
    loaded = wz.load(path)                                       # no class given
    assert not isinstance(loaded, type(model)), "loaded through the class, not the graph"
    _assert_equal_outputs(_outputs(loaded, x), y_mem)
    for mode in ("auto", "compiled"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            m = wz.load(path, mode=mode)
        fallbacks = [w for w in caught if "not everything runs in the compiled runtime" in str(w.message)]
        assert len(fallbacks) <= 1, "the fallback warning is given once per load"
        if mode == "compiled" and not fallbacks:   # everything native: then it must be so
            assert m.plans and all(p.native_only for p in m.plans.values())
        ys = _outputs(m, x)
        for u, v in zip(ys, y_mem):
            torch.testing.assert_close(u, v, rtol=1e-4, atol=1e-5)
    return loaded


@pytest.mark.parametrize("name", HF + PLAIN)
def test_post_training_without_data(name, tmp_path):
    model, x = build(name)
    y_fp32 = _outputs(model, x)
    result = wz.compress(model, _post_training_recipe())            # no loaders at all
    assert result.stages and result.stages[0].method == "kmeans_share"
    y_mem = _outputs(model, x)
    assert any(not torch.equal(a, b) for a, b in zip(y_mem, y_fp32)), "nothing was compressed"
    path = tmp_path / f"{name}.wz"
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)   # the graph must be recorded (no warning)
        report = wz.save(model, path, example_inputs=(x,))
    assert "graph" in wz.verify(path) or True
    from weightzip.codec.container import read_manifest

    manifest = read_manifest(path)
    assert manifest.get("graph") is not None, "no graph recorded"
    assert report.file_bytes == path.stat().st_size
    _check_file(name, model, x, path, y_mem)

    # bench prints its table (every runtime a row, a reason where one cannot run)
    from weightzip.analysis.speed import bench_text
    from weightzip.jobs.bench import bench

    out = bench(path, batch_sizes=(1,), repeat=1, number=1, threads=1)
    text = bench_text(out)
    assert out["rows"] and "torch" in text

    # ONNX: runs in onnxruntime and matches the file's dense model
    ort = pytest.importorskip("onnxruntime")
    from weightzip.export.onnx import export_onnx
    from weightzip.export.safetensors import export_safetensors

    onnx_path = tmp_path / f"{name}.onnx"
    export_onnx(path, onnx_path)
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    feeds = {sess.get_inputs()[0].name: x.numpy()}
    got = sess.run(None, feeds)
    ref = [t.numpy() for t in y_mem]
    assert len(got) >= 1
    for g, r in zip(got, ref):
        scale = max(1.0, float(np.abs(r).max()))
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-4 * scale)

    st = tmp_path / f"{name}.safetensors"
    export_safetensors(path, st)
    from safetensors.numpy import load_file

    assert len(load_file(str(st))) > 0


def test_tied_parameters_stored_once_and_retied(tmp_path):
    """GPT-2's LM head IS its token embedding: one tensor in the file, one Parameter after load,
    and the ratio counted against the unique parameters (as torch.save stores them)."""
    import io

    model, x = build("gpt2_tied")
    assert model.lm_head.weight is model.transformer.wte.weight
    wz.compress(model, _post_training_recipe())
    path = tmp_path / "gpt2.wz"
    rep = wz.save(model, path, example_inputs=(x,))
    from weightzip.codec.container import read

    manifest, formats = read(path)
    assert manifest["tied"] == {"lm_head.weight": "transformer.wte.weight"}
    assert "lm_head.weight" not in formats and "transformer.wte.weight" in formats
    fresh, _ = build("gpt2_tied")
    buf = io.BytesIO()
    torch.save(fresh.state_dict(), buf)
    assert rep.baseline_bytes <= buf.tell()        # torch.save stores the tied tensor once too
    loaded = wz.load(path)
    assert loaded.get_parameter("lm_head.weight") is loaded.get_parameter("transformer.wte.weight")
    with_class = wz.load(path, model=build("gpt2_tied")[0])
    assert with_class.lm_head.weight is with_class.transformer.wte.weight
    _assert_equal_outputs(_outputs(loaded, x), _outputs(with_class, x))


def test_non_persistent_buffers_not_stored(tmp_path):
    """BERT's position_ids / token_type_ids buffers are not state: the file loads into the class."""
    model, x = build("bert")
    path = tmp_path / "bert.wz"
    wz.save(model, path, example_inputs=(x,))
    fresh, _ = build("bert")
    loaded = wz.load(path, model=fresh)
    _assert_equal_outputs(_outputs(loaded, x), _outputs(model, x))


def test_fused_subclass_is_traced_not_recorded_as_its_base(tmp_path):
    """A BatchNorm2d subclass with its own forward (norm + activation) is not a BatchNorm2d."""
    from weightzip.graph.ops import module_kind

    assert module_kind(BatchNormAct2d(4)) is None
    assert module_kind(nn.BatchNorm2d(4)) == "BatchNorm2d"
    model, x = build("mobile_block")
    path = tmp_path / "m.wz"
    wz.save(model, path, example_inputs=(x,))
    _assert_equal_outputs(_outputs(wz.load(path), x), _outputs(model, x))


def test_model_output_reads_like_hf(tmp_path):
    model, x = build("bert_cls")
    path = tmp_path / "b.wz"
    wz.save(model, path, example_inputs=(x,))
    out = wz.load(path)(x)
    with torch.no_grad():
        ref = model(x)
    assert torch.equal(out.logits, ref.logits) and torch.equal(out["logits"], ref.logits)
    assert torch.equal(out[0], ref[0])


def _one_batch_loaders(name, model, x):
    from types import SimpleNamespace

    from weightzip.models.adapters import CausalLM

    if name in LM:
        tokens = x.t().contiguous()                                 # time-major [T, B]
        batch = (tokens[:-1], tokens[1:])
        return CausalLM(model).eval(), SimpleNamespace(train=[batch], val=[batch], test=[batch], task="lm"), tokens[:-1]
    y = torch.arange(x.shape[0]) % 3
    batch = (x, y)
    return model, SimpleNamespace(train=[batch], val=[batch], test=[batch], task="classify"), x


@pytest.mark.parametrize("name", [n for n in HF + PLAIN if n not in HEADLESS])
def test_one_batch_finetune(name, tmp_path):
    model, x = build(name)
    model, loaders, x_in = _one_batch_loaders(name, model, x)
    recipe = wz.Recipe.from_dict({"name": "kmeans4-ft", "stages": [
        {"method": "kmeans_share", "bits": 4, "select": {"types": TYPES},
         "finetune": {"epochs": 1, "max_steps_per_epoch": 1, "lr": 1e-3, "optimizer": "adam"}}]})
    before = [t.clone() for t in _outputs(model, x_in)]
    result = wz.compress(model, recipe, loaders=loaders)
    assert "accuracy" in result.stages[0].metrics["val"] or "perplexity" in result.stages[0].metrics["val"]
    model.eval()
    y_mem = _outputs(model, x_in)
    assert any(not torch.equal(a, b) for a, b in zip(y_mem, before))
    path = tmp_path / f"{name}-ft.wz"
    wz.save(model, path, example_inputs=(x_in,))
    loaded = wz.load(path)
    _assert_equal_outputs(_outputs(loaded, x_in), y_mem)


def test_bf16_model_compresses_and_loads_in_its_dtype(tmp_path):
    """A bf16 model (as LLM checkpoints are): masks and codebooks keep the weight's dtype, the
    rebuilt graph's layers take the file's dtype."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4)).to(torch.bfloat16).eval()
    recipe = wz.Recipe.from_dict({"name": "p-k", "stages": [
        {"method": "prune_magnitude", "sparsity": 0.5}, {"method": "kmeans_share", "bits": 4}]})
    wz.compress(model, recipe, log=lambda s: None)
    x = torch.randn(2, 32, dtype=torch.bfloat16)
    wz.save(model, tmp_path / "bf16.wz", example_inputs=(x,))
    loaded = wz.load(tmp_path / "bf16.wz")
    assert loaded.get_parameter("0.weight").dtype == torch.bfloat16
    _assert_equal_outputs(_outputs(loaded, x), _outputs(model, x))


def test_onnx_export_compresses_a_tied_weight_under_either_name(tmp_path):
    """torch.onnx may name GPT-2's shared matrix ``lm_head.weight``; the file stores it as
    ``transformer.wte.weight`` (manifest ``tied``): it must still leave the ONNX compressed."""
    pytest.importorskip("onnxruntime")
    from weightzip.export.onnx import export_onnx

    model, x = build("gpt2_tied")
    wz.compress(model, _post_training_recipe(), log=lambda s: None)
    path = tmp_path / "g.wz"
    wz.save(model, path, example_inputs=(x,))
    rep = export_onnx(path, tmp_path / "g.onnx")
    import onnx

    dense_inits = [i.name for i in onnx.load(str(tmp_path / "g.onnx")).graph.initializer
                   if i.data_type == onnx.TensorProto.FLOAT and len(i.dims) == 2 and i.dims[0] == VOCAB]
    assert not dense_inits, f"the tied matrix stayed fp32: {dense_inits}"
    assert {"lm_head.weight", "transformer.wte.weight"} & set(rep["compressed"])
