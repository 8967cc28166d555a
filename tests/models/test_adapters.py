"""Any model in: Hugging Face transformers models built from a config (no download) through every
method stage, saved with their graph, loaded without their class, compressed and evaluated by the
CLI, exported to ONNX and run in onnxruntime. Tiny sizes only."""
import warnings

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset
from typer.testing import CliRunner

import weightzip as wz

transformers = pytest.importorskip("transformers")
from weightzip.models.adapters import CausalLM, Classifier  # noqa: E402

transformers.logging.set_verbosity_error()


def tiny_gpt2(vocab=50):
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=vocab, n_positions=40,
                                  tie_word_embeddings=False, bos_token_id=0, eos_token_id=0)
    return CausalLM(transformers.GPT2LMHeadModel(cfg))


def tiny_vit():
    torch.manual_seed(0)
    cfg = transformers.ViTConfig(image_size=8, patch_size=4, num_channels=1, hidden_size=16, num_hidden_layers=1,
                                 num_attention_heads=2, intermediate_size=32, num_labels=10)
    return Classifier(transformers.ViTForImageClassification(cfg))


class _L:
    def __init__(self, train, task):
        self.train = self.val = self.test = train
        self.task, self.info = task, {}


def _lm_loaders():
    g = torch.Generator().manual_seed(0)
    return _L([(torch.randint(0, 50, (8, 4), generator=g), torch.randint(0, 50, (8, 4), generator=g))
               for _ in range(3)], "lm")


def _image_loaders():
    x, y = torch.randn(32, 1, 8, 8), torch.randint(0, 10, (32,))
    return _L(DataLoader(TensorDataset(x, y), batch_size=16), "classify")


T = "{epochs: 1, max_steps_per_epoch: 2, lr: 0.001, optimizer: adam}"
SEL = "select: {types: [Linear, Conv2d, Conv1D, Embedding]}"
STAGES = {
    "prune_magnitude": f"[{{method: prune_magnitude, sparsity: 0.5, {SEL}}}]",
    "prune_gradual": f"[{{method: prune_gradual, sparsity: 0.5, frequency: 1, train: {T}, {SEL}}}]",
    "kmeans_share": f"[{{method: kmeans_share, bits: 3, {SEL}}}]",
    "pq_share": f"[{{method: pq_share, d: 4, k: 16, pad: true, {SEL}}}]",
    "quantize_uniform": f"[{{method: quantize_uniform, bits: 4, {SEL}}}]",
    "grad_ptq": f"[{{method: train_tracked, train: {T}, {SEL}}}, {{method: grad_ptq, {SEL}}}]",
    "loss_aware": f"[{{method: loss_aware, mode: laq, bits: 3, train: {T}, {SEL}}}]",
}


@pytest.mark.parametrize("method", list(STAGES))
@pytest.mark.parametrize("which", ["gpt2", "vit"])
def test_method_stages_run_on_transformers(which, method):
    make, loaders = (tiny_gpt2, _lm_loaders()) if which == "gpt2" else (tiny_vit, _image_loaders())
    m = make()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    recipe = wz.Recipe.from_yaml(f"name: t\nstages: {STAGES[method]}\n")
    wz.compress(m, recipe, loaders=loaders, log=lambda *_: None)
    from weightzip.core.parametrize import effective_state

    after = effective_state(m)
    layer = "c_attn" if which == "gpt2" else "q_proj"  # transformers' own layers (Conv1D / Linear)
    changed = [k for k in before if layer in k and not torch.equal(after[k], before[k])]
    assert changed or method == "pq_share"  # PQ may skip layers its cost model finds too small
    assert any(not torch.equal(after[k], before[k]) for k in before if k.endswith("weight"))


@pytest.mark.parametrize("which", ["gpt2", "vit"])
def test_compressed_transformer_loads_without_class(tmp_path, which):
    make, loaders = (tiny_gpt2, _lm_loaders()) if which == "gpt2" else (tiny_vit, _image_loaders())
    m = make()
    recipe = wz.Recipe.from_yaml(f"name: t\nstages: [{{method: prune_magnitude, sparsity: 0.5, {SEL}}}, "
                                 f"{{method: kmeans_share, bits: 3, {SEL}}}]\n")
    wz.compress(m, recipe, loaders=loaders, log=lambda *_: None)
    x = next(iter(loaders.test))[0]
    path = tmp_path / "m.wz"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the graph must be recorded
        wz.save(m, path, recipe=recipe, example_inputs=(x,))
    m.eval()
    loaded = wz.load(path)
    assert loaded.wz_manifest["graph"]["level"] == "aten"
    with torch.no_grad():
        a, b, c = m(x), loaded(x), wz.load(path, model=make())(x)
    a, b, c = (a[0], b[0], c[0]) if which == "gpt2" else (a, b, c)
    assert torch.equal(a, b) and torch.equal(b, c)


def test_structured_qat_activation_quantizers_are_in_the_aten_graph(tmp_path):
    m = tiny_vit()
    recipe = wz.Recipe.from_yaml(f"name: t\nstages: [{{method: structured_qat, block: 4, compression: 2, train: {T}}}]\n")
    wz.compress(m, recipe, loaders=_image_loaders(), log=lambda *_: None)
    x = torch.randn(4, 1, 8, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        wz.save(m, tmp_path / "s.wz", example_inputs=(x,))
    m.eval()
    loaded = wz.load(tmp_path / "s.wz")
    ops = {n["target"] for n in loaded.wz_manifest["graph"]["nodes"] if n["op"] == "call_function"}
    assert "aten.round.default" in ops  # the quantizers' arithmetic is part of the recorded graph
    with torch.no_grad():
        assert torch.equal(loaded(x), m(x))
        assert torch.equal(wz.load(tmp_path / "s.wz", model=tiny_vit())(x), m(x))


def test_readme_flow_cli_compress_eval_export_on_ptb(tmp_path, data_root):
    ort = pytest.importorskip("onnxruntime")
    from weightzip.cli import app
    from weightzip.data import get_loaders

    loaders = get_loaders("ptb", 20, bptt=35, root=data_root, eval_batch_size=10)
    model = tiny_gpt2(vocab=loaders.info["vocab_size"])
    model.eval()
    src = tmp_path / "gpt2.wz"
    wz.save(model, src, example_inputs=next(iter(loaders.test))[0])
    (tmp_path / "r.yaml").write_text("name: k\ndata_args: {subset: 2000, eval_subset: 700}\nstages:\n"
                                     "  - method: kmeans_share\n    bits: 4\n"
                                     "    select: {types: [Conv1D, Linear, Embedding]}\n")
    r = CliRunner()
    res = r.invoke(app, ["compress", str(src), "-r", str(tmp_path / "r.yaml"), "--data", "ptb",
                         "-o", str(tmp_path / "c.wz")])
    assert res.exit_code == 0, res.output
    res = r.invoke(app, ["eval", str(tmp_path / "c.wz"), "--data", "ptb", "--json", "--max-steps", "2"])
    assert res.exit_code == 0, res.output
    import json

    ppl = json.loads(res.stdout)["perplexity"]
    assert 1 < ppl < 2 * loaders.info["vocab_size"]
    res = r.invoke(app, ["export", str(tmp_path / "c.wz"), "--to", "onnx", "-o", str(tmp_path / "c.onnx")])
    assert res.exit_code == 0, res.output
    s = ort.InferenceSession(str(tmp_path / "c.onnx"), providers=["CPUExecutionProvider"])
    x = next(iter(loaders.test))[0][:17, :3]  # another shape than the example: dynamic dims
    y = s.run(None, {s.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        ref = wz.load(tmp_path / "c.wz")(x)[0].numpy()
    np.testing.assert_allclose(y, ref, atol=1e-4, rtol=1e-4)
