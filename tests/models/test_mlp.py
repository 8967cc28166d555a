import pytest
import torch
from torch import nn

from weightzip.errors import UnknownNameError
from weightzip.models import create_model

torch.set_num_threads(1)


def linear_shapes(model):
    return [tuple(m.weight.shape) for m in model.modules() if isinstance(m, nn.Linear)]


def test_width_and_depth_equal_explicit_widths():
    a = create_model("mlp", width=32, depth=3)
    b = create_model("mlp", widths=[32, 32, 32])
    assert linear_shapes(a) == linear_shapes(b) == [(32, 784), (32, 32), (32, 32), (10, 32)]


def test_default_mlp_and_depth_zero():
    assert linear_shapes(create_model("mlp")) == [(256, 784), (256, 256), (10, 256)]
    assert linear_shapes(create_model("mlp", depth=0)) == [(10, 784)]


def test_batch_norm_dropout_and_activation_are_placed_per_hidden_layer():
    model = create_model("mlp", widths=[16, 8], batch_norm=True, dropout=0.25, activation="tanh")
    for block in model.layers:
        assert [type(m) for m in block] == [nn.Linear, nn.BatchNorm1d, nn.Tanh, nn.Dropout]
    assert model.layers[1].drop.p == 0.25
    plain = create_model("mlp", widths=[16])
    assert [type(m) for m in plain.layers[0]] == [nn.Linear, nn.ReLU]


def test_mlp_input_is_channels_times_size_squared():
    model = create_model("mlp", in_channels=3, image_size=32, widths=[8])
    assert model.layers[0].fc.in_features == 3 * 32 * 32
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_unknown_activation_lists_valid_ones():
    with pytest.raises(UnknownNameError, match="relu"):
        create_model("mlp", activation="swishy")
