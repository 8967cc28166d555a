import torch
from torch import nn

from weightzip.models import create_model

torch.set_num_threads(1)


def test_alexnet_cifar_convs_and_default_head():
    model = create_model("alexnet_cifar")
    convs = [m.out_channels for m in model.features if isinstance(m, nn.Conv2d)]
    assert convs == [64, 192, 384, 256, 256]
    fcs = [tuple(m.weight.shape) for m in model.classifier if isinstance(m, nn.Linear)]
    assert fcs == [(1024, 256 * 4 * 4), (1024, 1024), (10, 1024)]
    assert sum(p.numel() for p in model.parameters()) == 7_706_442


def test_alexnet_full_head_and_width():
    model = create_model("alexnet_cifar", fc_sizes=[4096, 4096])
    fcs = [tuple(m.weight.shape) for m in model.classifier if isinstance(m, nn.Linear)]
    assert fcs == [(4096, 4096), (4096, 4096), (10, 4096)]
    slim = create_model("alexnet_cifar", width=0.5, fc_sizes=[])
    convs = [m.out_channels for m in slim.features if isinstance(m, nn.Conv2d)]
    assert convs == [32, 96, 192, 128, 128]
    assert tuple(slim.classifier[-1].weight.shape) == (10, 128 * 4 * 4)
    assert slim(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_dropout_only_in_training():
    model = create_model("alexnet_cifar_tiny").eval()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(model(x), model(x))
