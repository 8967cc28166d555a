import torch
from torch import nn

from weightzip.models import create_model

torch.set_num_threads(1)


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def test_lenet300_100_has_exactly_266610_parameters():
    model = create_model("lenet300_100")
    assert n_params(model) == 266_610
    shapes = [tuple(m.weight.shape) for m in model.modules() if isinstance(m, nn.Linear)]
    assert shapes == [(300, 784), (100, 300), (10, 100)]


def test_lenet5_has_exactly_431080_parameters_in_caffe_layout():
    model = create_model("lenet5")
    assert n_params(model) == 431_080
    convs = [tuple(m.weight.shape) for m in model.modules() if isinstance(m, nn.Conv2d)]
    fcs = [tuple(m.weight.shape) for m in model.modules() if isinstance(m, nn.Linear)]
    assert convs == [(20, 1, 5, 5), (50, 20, 5, 5)]
    assert fcs == [(500, 800), (10, 500)]
    # Caffe LeNet: no nonlinearity in the conv part, one ReLU between the two FC layers
    assert not any(isinstance(m, nn.ReLU) for m in model.features)
    assert sum(isinstance(m, nn.ReLU) for m in model.classifier) == 1


def test_lenet5_on_cifar_sized_input_flattens_1250_features():
    model = create_model("lenet5", in_channels=3, image_size=32)
    assert model.classifier[0].in_features == 50 * 5 * 5
    assert model(torch.randn(3, 3, 32, 32)).shape == (3, 10)


def test_lenet300_100_flattens_any_image_size_and_accepts_flat_input():
    model = create_model("lenet300_100", in_channels=3, image_size=32, num_classes=4)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(model(x), model(x.reshape(2, -1)))
    assert model(x).shape == (2, 4)
