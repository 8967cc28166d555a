import pytest
import torch
from torch import nn

from weightzip.models import PadShortcut, create_model

torch.set_num_threads(1)


def n_params(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name,count,blocks", [("resnet20", 269_722, 3),
                                               ("resnet32", 464_154, 5),
                                               ("resnet56", 853_018, 9)])
def test_resnet_parameter_counts_with_option_a_shortcuts(name, count, blocks):
    model = create_model(name)
    assert n_params(model) == count
    assert [len(s) for s in (model.layer1, model.layer2, model.layer3)] == [blocks] * 3
    shortcuts = [m for m in model.modules() if isinstance(m, PadShortcut)]
    assert len(shortcuts) == 2  # first block of stages 2 and 3
    assert all(n_params(s) == 0 for s in shortcuts)


def test_pad_shortcut_subsamples_and_zero_pads_channels():
    x = torch.randn(2, 4, 6, 6)
    y = PadShortcut(4, 8, stride=2)(x)
    assert y.shape == (2, 8, 3, 3)
    torch.testing.assert_close(y[:, 2:6], x[:, :, ::2, ::2])
    assert y[:, :2].abs().sum() == 0 and y[:, 6:].abs().sum() == 0


def test_resnet_tiny_is_one_block_per_stage_width_4():
    model = create_model("resnet_tiny")
    assert [len(s) for s in (model.layer1, model.layer2, model.layer3)] == [1, 1, 1]
    convs = [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert convs == [4, 4, 4, 8, 8, 16, 16]


def test_width_multiplier_scales_channels():
    model = create_model("resnet20", width=2)
    assert model.conv1.out_channels == 32 and model.fc.in_features == 128


def test_depth_must_be_6n_plus_2():
    from weightzip.errors import InvalidModelError
    from weightzip.models.resnet import resnet_cifar
    with pytest.raises(InvalidModelError, match="6n \\+ 2"):
        resnet_cifar(depth=21)
