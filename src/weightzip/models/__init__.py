"""The model zoo. Importing this package registers every model with :mod:`weightzip.core.registry`.

    from weightzip.models import create_model, list_models
    list_models()                 # ['alexnet_cifar', 'alexnet_cifar_tiny', 'lenet300_100', ...]
    net = create_model("lenet5")  # net.wz_config == {"name": "lenet5", "kwargs": {}}

Every constructor takes keyword arguments only; image models take ``num_classes``,
``in_channels``, ``image_size``; each family has a ``<family>_tiny`` variant for tests.
See ``docs/models.md`` for the table of models and the choices made.
"""
from ..core.registry import create_model, list_models
from . import alexnet, common, lenet, lstm, mlp, resnet, vgg  # noqa: F401  (registration)
from .alexnet import AlexNetCIFAR
from .lenet import LeNet5, LeNet300100
from .lstm import LSTMLM, GateLayerNorm, LSTMLayer, QLSTMLayer
from .mlp import MLP
from .resnet import BasicBlock, CifarResNet, PadShortcut
from .vgg import VGG16CIFAR, VGGSmall

__all__ = [
    "create_model", "list_models",
    "AlexNetCIFAR", "LeNet5", "LeNet300100", "LSTMLM", "GateLayerNorm", "LSTMLayer",
    "QLSTMLayer", "MLP", "BasicBlock", "CifarResNet", "PadShortcut", "VGG16CIFAR", "VGGSmall",
]
