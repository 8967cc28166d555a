import torch
from torch import nn

from weightzip.models import create_model

torch.set_num_threads(1)


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def test_vgg16_cifar_layout_and_512_to_10_head():
    model = create_model("vgg16_cifar")
    convs = [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert convs == [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 13
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == 5
    assert isinstance(model.classifier, nn.Linear)
    assert tuple(model.classifier.weight.shape) == (10, 512)
    assert n_params(model) == 14_728_266


def test_vgg_small_layout():
    model = create_model("vgg_small")
    convs = [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert convs == [128, 128, 256, 256, 512, 512]
    fcs = [tuple(m.weight.shape) for m in model.classifier if isinstance(m, nn.Linear)]
    assert fcs == [(1024, 512 * 4 * 4), (1024, 1024), (10, 1024)]
    assert sum(isinstance(m, nn.BatchNorm1d) for m in model.classifier) == 2
    assert n_params(model) == 14_033_546


def test_width_multiplier():
    model = create_model("vgg_small", width=0.5)
    convs = [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert convs == [64, 64, 128, 128, 256, 256]
    assert model.classifier[0].out_features == 512
    v16 = create_model("vgg16_cifar", width=0.25)
    assert v16.classifier.in_features == 128


def test_vgg_small_on_mnist_sized_input():
    model = create_model("vgg_small_tiny", in_channels=1, image_size=28)
    # 28 -> 14 -> 7 -> 3 after three floor-mode pools
    assert model.classifier[0].in_features == model.features[-4].out_channels * 3 * 3
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
