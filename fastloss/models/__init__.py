"""The papers' architectures by name, user models as ``"module:callable"``, and the spec that
rebuilds a model from checkpoint metadata (see `registry` for the table of models)."""

from fastloss.models.convnets import VGG16, LeNet5, MPOConvNet
from fastloss.models.mlp import MLP
from fastloss.models.registry import MODELS, build_model, count_parameters
from fastloss.models.resnet import CifarResNet
from fastloss.models.spec import (
    SPEC_KEYS,
    architecture_difference,
    build_from_checkpoint,
    build_from_spec,
    model_spec,
)

__all__ = [
    "MLP",
    "MODELS",
    "SPEC_KEYS",
    "VGG16",
    "CifarResNet",
    "LeNet5",
    "MPOConvNet",
    "architecture_difference",
    "build_from_checkpoint",
    "build_from_spec",
    "build_model",
    "count_parameters",
    "model_spec",
]
