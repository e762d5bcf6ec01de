"""The papers' architectures by name, and user models as ``"module:callable"``.

``build_model(name, in_shape, num_classes, **kwargs)`` where ``in_shape`` is one sample's
shape (``x.shape[1:]``). Which inputs each model takes:

| name | inputs | options (defaults) |
|---|---|---|
| ``mlp``, ``mlp-bn`` | any shape (flattened) | ``widths=(256, 256)`` |
| ``lenet5``, ``lenet5-bn`` | ``[L]``, ``[C, L]``, ``[C, H, W]`` | ``channels=(6, 16)``, |
| | | ``widths=(120, 84)`` |
| ``mpo-cnn``, ``mpo-cnn-bn`` | same | MPO paper: ``channels=(8, 32, 64)``, ``hidden=128`` |
| ``mpo-cnn6``, ``mpo-cnn6-bn`` | same | MPO BN experiment: 8/8/32/32/64/64 channels |
| ``resnet20``, ``resnet20-noskip`` | same | ``depth=20`` (any 6n + 2), ``width=16`` |
| ``preresnet20`` | same | ``depth=20`` (any 6n + 2), ``width=16`` |
| ``vgg16``, ``vgg16-bn`` | same | ``width=0.25`` |

``[L]`` vectors (MNIST-1D ``[N, 40]``) are read as one-channel signals ``[N, 1, L]`` by a
leading ``nn.Unflatten``; conv models then use Conv1d/BatchNorm1d, and Conv2d/BatchNorm2d on
images. Every model is a plain ``nn.Module`` of Linear, Conv1d/2d, BatchNorm1d/2d, ReLU,
pooling, Flatten/Unflatten and residual adds — no in-place activations and no data-dependent
control flow, so `fastloss.batch` can run it on ``[K·B, ...]`` activations.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import inspect
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from fastloss.errors import ArgumentError, ArgumentTypeError, DependencyError
from fastloss.io.settings import jsonable
from fastloss.models.convnets import VGG16, LeNet5, MPOConvNet
from fastloss.models.mlp import MLP
from fastloss.models.resnet import CifarResNet

_p = functools.partial

# name -> builder(in_shape, num_classes, **kwargs)
MODELS: dict[str, Callable[..., nn.Module]] = {
    "mlp": MLP,
    "mlp-bn": _p(MLP, bn=True),
    "lenet5": LeNet5,
    "lenet5-bn": _p(LeNet5, bn=True),
    "mpo-cnn": MPOConvNet,
    "mpo-cnn-bn": _p(MPOConvNet, bn=True),
    "mpo-cnn6": _p(MPOConvNet, channels=(8, 8, 32, 32, 64, 64)),
    "mpo-cnn6-bn": _p(MPOConvNet, channels=(8, 8, 32, 32, 64, 64), bn=True),
    # depth=20 by default; other 6n + 2 depths (32, 56, 110) give the deeper CIFAR ResNets.
    "resnet20": CifarResNet,
    "resnet20-noskip": _p(CifarResNet, skip=False),
    "preresnet20": _p(CifarResNet, preact=True),
    "vgg16": VGG16,
    "vgg16-bn": _p(VGG16, bn=True),
}


def build_model(name: str, in_shape: Sequence[int], num_classes: int, **kwargs: Any) -> nn.Module:
    """A fresh model: a registered ``name`` (see `MODELS`) or ``"module:callable"``.

    ``in_shape`` is one sample's shape, e.g. ``(40,)`` for MNIST-1D or ``(1, 8, 8)`` for
    digits. Parameters are initialised from torch's global generator: call
    ``torch.manual_seed`` first for a reproducible model. The model remembers how it was
    built in ``model.fastloss_spec``, which `fastloss.io.save_checkpoint` stores.
    """
    try:
        shape = tuple(int(s) for s in in_shape)
    except (TypeError, ValueError) as e:
        raise ArgumentError(f"in_shape must be a sequence of ints, got {in_shape!r}") from e
    if not shape or any(s < 1 for s in shape):
        raise ArgumentError(f"in_shape must be one sample's positive sizes, got {list(shape)}")
    if int(num_classes) < 1:
        raise ArgumentError(f"num_classes must be >= 1, got {num_classes}")
    num_classes = int(num_classes)
    if name in MODELS:
        builder = MODELS[name]
        _check_kwargs(name, builder, kwargs)
        model = builder(shape, num_classes, **kwargs)
    elif ":" in name:
        model = _build_user_model(name, shape, num_classes, kwargs)
    else:
        raise ArgumentError(
            f"unknown model {name!r}; the built-in models are {', '.join(MODELS)}, or give "
            "'module:callable' (e.g. 'mypackage.nets:Net' or 'nets.py:make_net')"
        )
    # A plain attribute (what Module.__setattr__ does for non-tensors): not in the state_dict.
    model.__dict__["fastloss_spec"] = {
        "model": name,
        "in_shape": list(shape),
        "num_classes": num_classes,
        "kwargs": jsonable(kwargs),
    }
    return model


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameter values."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _check_kwargs(name: str, builder: Callable[..., nn.Module], kwargs: dict[str, Any]) -> None:
    params = inspect.signature(builder).parameters
    fixed = builder.keywords if isinstance(builder, functools.partial) else {}
    allowed = [p for p in params if p not in ("in_shape", "num_classes") and p not in fixed]
    unknown = [k for k in kwargs if k not in allowed]
    if unknown:
        raise ArgumentError(
            f"model {name!r} does not take {', '.join(map(repr, unknown))}; it takes "
            f"{', '.join(allowed) or 'no options'}"
        )


def _import_module(module: str, spec: str):
    if module.endswith(".py"):
        path = Path(module).expanduser()
        if not path.is_file():
            raise DependencyError(f"model {spec!r}: no such file {path}")
        digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8]
        mod_name = f"fastloss_user_model_{path.stem}_{digest}"
        if mod_name in sys.modules:
            return sys.modules[mod_name]
        file_spec = importlib.util.spec_from_file_location(mod_name, path)
        if file_spec is None or file_spec.loader is None:
            raise DependencyError(f"model {spec!r}: cannot load {path} as a Python module")
        mod = importlib.util.module_from_spec(file_spec)
        sys.modules[mod_name] = mod
        try:
            file_spec.loader.exec_module(mod)
        except BaseException:
            del sys.modules[mod_name]
            raise
        return mod
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        # The `fastloss` script does not put the working directory on sys.path as
        # `python -m` does; a model file next to the user is the common case.
        top = module.split(".")[0]
        cwd = os.getcwd()
        if e.name != top or cwd in sys.path or "" in sys.path:
            raise DependencyError(f"model {spec!r}: cannot import {module!r}: {e}") from e
        sys.path.insert(0, cwd)
        try:
            return importlib.import_module(module)
        except ModuleNotFoundError as e2:
            raise DependencyError(
                f"model {spec!r}: cannot import {module!r} ({e2}); install it or run from the "
                "folder that holds it"
            ) from e2
        finally:
            sys.path.remove(cwd)


def _build_user_model(
    spec: str, in_shape: tuple[int, ...], num_classes: int, kwargs: dict[str, Any]
) -> nn.Module:
    module, _, attr = spec.rpartition(":")
    if not module or not attr:
        raise ArgumentError(f"user model must be 'module:callable', got {spec!r}")
    obj: Any = _import_module(module, spec)
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as e:
            raise ArgumentError(f"model {spec!r}: {module!r} has no attribute {attr!r}") from e
    if not callable(obj):
        raise ArgumentTypeError(f"model {spec!r}: {attr!r} is not callable")
    params: Mapping[str, inspect.Parameter]
    try:
        params = inspect.signature(obj).parameters
    except (TypeError, ValueError):  # some builtins and C types have no signature
        params = {}
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    call = dict(kwargs)
    if takes_any or "in_shape" in params:
        call["in_shape"] = in_shape
    if takes_any or "num_classes" in params:
        call["num_classes"] = num_classes
    model = obj(**call)
    if not isinstance(model, nn.Module):
        raise ArgumentTypeError(
            f"model {spec!r}: calling {attr}({', '.join(call)}) gave a "
            f"{type(model).__name__}, not a torch.nn.Module"
        )
    return model
