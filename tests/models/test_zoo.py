"""Registry-level properties of the zoo: names, keyword-only constructors, shapes, wz_config."""
import inspect
import json

import pytest
import torch

import weightzip.models as zoo
from weightzip.errors import UnknownNameError
from weightzip.core.registry import _MODELS

torch.set_num_threads(1)

FAMILIES = ["lenet300_100", "lenet5", "mlp", "alexnet_cifar", "vgg16_cifar", "vgg_small",
            "resnet20", "resnet32", "resnet56", "lstm_lm"]
TINY = ["lenet300_100_tiny", "lenet5_tiny", "mlp_tiny", "alexnet_cifar_tiny",
        "vgg16_cifar_tiny", "vgg_small_tiny", "resnet_tiny", "lstm_lm_tiny"]
MNIST_NETS = {"lenet300_100", "lenet5", "mlp"}
IMAGE_MODELS = [n for n in FAMILIES + TINY if not n.startswith("lstm")]


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def default_input_size(name):
    return (1, 28) if name.replace("_tiny", "") in MNIST_NETS else (3, 32)


def test_every_family_and_tiny_variant_is_registered():
    names = zoo.list_models()
    assert set(FAMILIES + TINY) <= set(names)
    assert zoo.list_models("resnet*") == ["resnet20", "resnet32", "resnet56", "resnet_tiny"]
    assert zoo.list_models("*_tiny") == sorted(TINY)


def test_reexports_are_the_registry_functions():
    from weightzip.core import registry
    assert zoo.create_model is registry.create_model
    assert zoo.list_models is registry.list_models


@pytest.mark.parametrize("name", FAMILIES + TINY)
def test_constructors_take_keyword_arguments_only(name):
    params = inspect.signature(_MODELS[name]).parameters.values()
    assert all(p.kind in (p.KEYWORD_ONLY, p.VAR_KEYWORD) for p in params)
    with pytest.raises(TypeError):
        _MODELS[name](10)


def test_unknown_name_lists_valid_names():
    with pytest.raises(UnknownNameError) as err:
        zoo.create_model("nope")
    msg = str(err.value)
    assert "'nope'" in msg
    for name in ("lenet5", "resnet20", "lstm_lm", "vgg_small_tiny"):
        assert name in msg


def test_create_model_records_wz_config_and_rebuilds_from_it():
    kwargs = {"num_classes": 7, "in_channels": 3, "image_size": 32, "width": 0.5}
    model = zoo.create_model("resnet20", **kwargs)
    assert model.wz_config == {"name": "resnet20", "kwargs": kwargs}
    # the config survives JSON (as in a .wz manifest) and rebuilds an identical architecture
    cfg = json.loads(json.dumps(model.wz_config))
    again = zoo.create_model(cfg["name"], **cfg["kwargs"])
    a, b = model.state_dict(), again.state_dict()
    assert list(a) == list(b)
    assert all(a[k].shape == b[k].shape for k in a)


@pytest.mark.parametrize("name", TINY)
def test_tiny_variants_are_tiny(name):
    assert 1_000 <= n_params(zoo.create_model(name)) <= 16_000


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_image_model_forward_shape_at_default_size(name):
    c, s = default_input_size(name)
    model = zoo.create_model(name).eval()
    with torch.no_grad():
        y = model(torch.randn(2, c, s, s))
    assert y.shape == (2, 10)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", [n for n in IMAGE_MODELS if n.endswith("_tiny")])
@pytest.mark.parametrize("c,s", [(1, 28), (3, 32)])
def test_tiny_image_models_run_at_both_sizes_and_train(name, c, s):
    model = zoo.create_model(name, num_classes=5, in_channels=c, image_size=s)
    y = model(torch.randn(4, c, s, s))  # train mode: BN statistics, dropout
    assert y.shape == (4, 5)
    y.square().mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("name,c,s", [("lenet5", 3, 32), ("lenet300_100", 3, 32),
                                      ("mlp", 3, 32), ("vgg16_cifar", 1, 28),
                                      ("vgg_small", 1, 28), ("resnet20", 1, 28),
                                      ("alexnet_cifar", 1, 28)])
def test_cross_size_default_models(name, c, s):
    model = zoo.create_model(name, in_channels=c, image_size=s).eval()
    with torch.no_grad():
        assert model(torch.randn(2, c, s, s)).shape == (2, 10)


@pytest.mark.parametrize("name", ["lstm_lm", "lstm_lm_tiny"])
def test_lstm_lm_forward_shape(name):
    model = zoo.create_model(name).eval()
    V = model.vocab_size
    x = torch.randint(0, V, (5, 2))
    logits, (h, c) = model(x)
    assert logits.shape == (5, 2, V)
    assert h.shape == c.shape == (model.num_layers, 2, model.hidden_size)


@pytest.mark.parametrize("name,kwargs,msg", [
    ("lenet5", {"image_size": 8}, "image_size=8 is too small"),
    ("vgg_small", {"image_size": 4}, "too small"),
    ("mlp", {"num_classes": 0}, "num_classes must be a positive int"),
    ("resnet20", {"width": 0}, "width must be > 0"),
    ("alexnet_cifar", {"dropout": 1.5}, "dropout must be in [0, 1)"),
])
def test_bad_arguments_are_refused_with_the_reason(name, kwargs, msg):
    from weightzip.errors import InvalidModelError
    with pytest.raises(InvalidModelError, match=msg.replace("[", r"\[").replace(")", r"\)")):
        zoo.create_model(name, **kwargs)
