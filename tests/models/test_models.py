"""The model registry: every model on every input layout it accepts, and user models."""

import sys

import pytest
import torch
from torch import nn

from fastloss.models import MODELS, build_model, count_parameters

SHAPES = {
    "mnist1d": (40,),
    "signal": (2, 24),
    "digits": (1, 8, 8),
    "mnist": (1, 28, 28),
    "cifar": (3, 32, 32),
}
# Modules `fastloss.batch` knows how to run at many points, and parameter-free ones.
ALLOWED = (
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.ReLU,
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.Flatten,
    nn.Unflatten,
    nn.Identity,
)


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("name", MODELS)
def test_forward_shape_and_layers(name, shape):
    torch.manual_seed(0)
    model = build_model(name, shape, num_classes=7)
    out = model(torch.randn(3, *shape))
    assert out.shape == (3, 7) and torch.isfinite(out).all()
    out.sum().backward()
    for m in model.modules():
        assert not getattr(m, "inplace", False), f"{name}: in-place {m}"
        if not list(m.children()):
            assert isinstance(m, ALLOWED), f"{name}: unexpected leaf module {type(m).__name__}"


@pytest.mark.parametrize("name", MODELS)
def test_samples_do_not_mix_in_eval(name):
    # Row i of the output depends on sample i only: the [K·B, ...] layout is safe.
    torch.manual_seed(0)
    model = build_model(name, (1, 8, 8), 5).eval()
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        whole = model(x)
        rows = torch.cat([model(x[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(whole, rows, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "name,shape,expected",
    [
        ("mlp", (40,), 40 * 256 + 256 + 256 * 256 + 256 + 256 * 10 + 10),
        ("lenet5", (1, 28, 28), 61_706),  # the classic LeNet-5 count
        ("mpo-cnn", (1, 28, 28), 80 + 2_336 + 18_496 + 1_024 * 128 + 128 + 1_290),
        ("resnet20-noskip", (3, 32, 32), 269_722),  # ResNet-20 (option A) has these weights
    ],
)
def test_parameter_counts(name, shape, expected):
    assert count_parameters(build_model(name, shape, 10)) == expected


def test_resnet20_size_and_skips():
    resnet = build_model("resnet20", (3, 32, 32), 10)
    assert 0.26e6 < count_parameters(resnet) < 0.28e6  # "0.27M"; option B adds two 1×1 convs
    convs = [m for m in resnet.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 19 + 2  # 1 stem + 18 block convs + 2 projection shortcuts
    plain = build_model("resnet20-noskip", (3, 32, 32), 10)
    assert len([m for m in plain.modules() if isinstance(m, nn.Conv2d)]) == 19
    # With every residual branch silenced, a ResNet still passes its input on; a plain one not.
    for model in (resnet, plain):
        for block in model.blocks:
            nn.init.zeros_(block.bn2.weight)
            nn.init.zeros_(block.bn2.bias)
    x = torch.randn(2, 3, 32, 32)
    assert resnet.eval()(x).std() > 0
    assert plain.eval()(x).std(dim=0).max() == 0  # the same output for every input


def count(name, module_type, shape=(1, 8, 8), **kwargs):
    model = build_model(name, shape, 10, **kwargs)
    return sum(isinstance(m, module_type) for m in model.modules())


def test_bn_variants_and_vgg_pools():
    assert count("mpo-cnn", nn.BatchNorm2d) == 0 and count("mpo-cnn", nn.Conv2d) == 3
    assert count("mpo-cnn-bn", nn.BatchNorm2d) == 3
    assert count("mpo-cnn6-bn", nn.BatchNorm2d) == 6 and count("mpo-cnn6", nn.Conv2d) == 6
    assert count("vgg16", nn.BatchNorm2d) == 0 and count("vgg16-bn", nn.BatchNorm2d) == 13
    # Pools that would shrink the map below 1×1 are left out.
    assert count("vgg16", nn.MaxPool2d, (3, 32, 32)) == 5
    assert count("vgg16", nn.MaxPool2d, (1, 28, 28)) == 4
    assert count("vgg16", nn.MaxPool2d, (1, 8, 8)) == 3
    vgg = build_model("vgg16-bn", (3, 32, 32), 10, width=0.125)
    assert [m.out_channels for m in vgg.modules() if isinstance(m, nn.Conv2d)][-1] == 64


def test_options_and_errors():
    assert build_model("mlp", (1, 8, 8), 4, widths=[32])[1].out_features == 32
    assert build_model("resnet20", (1, 8, 8), 4, depth=32).blocks.__len__() == 15
    with pytest.raises(ValueError, match="unknown model 'resnet18'.*module:callable"):
        build_model("resnet18", (3, 32, 32), 10)
    with pytest.raises(ValueError, match="'mpo-cnn-bn' does not take 'bn', 'depth'; it takes"):
        build_model("mpo-cnn-bn", (1, 8, 8), 10, bn=False, depth=3)
    with pytest.raises(ValueError, match=r"takes signals \[L\] or \[C, L\] or images"):
        build_model("lenet5", (1, 2, 8, 8), 10)
    with pytest.raises(ValueError, match="6n \\+ 2"):
        build_model("resnet20", (3, 32, 32), 10, depth=21)
    with pytest.raises(ValueError, match="in_shape must be"):
        build_model("mlp", (0, 3), 10)


def test_spec_recorded_without_touching_state():
    model = build_model("mlp", torch.Size([40]), 10, widths=(8, 8))
    assert model.fastloss_spec == {
        "model": "mlp",
        "in_shape": [40],
        "num_classes": 10,
        "kwargs": {"widths": [8, 8]},
    }
    assert all(not k.startswith("fastloss") for k in model.state_dict())


USER_MODULE = """
import torch.nn as nn

def make(in_shape, num_classes, hidden=5):
    return nn.Sequential(nn.Flatten(), nn.Linear(int(in_shape[-1]), hidden), nn.ReLU(),
                         nn.Linear(hidden, num_classes))

class Fixed(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(40, 3)

    def forward(self, x):
        return self.fc(x)

def not_a_model(in_shape, num_classes):
    return "oops"

class Holder:
    build = staticmethod(make)
"""


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    name = "fastloss_test_user_nets"
    (tmp_path / f"{name}.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name, tmp_path / f"{name}.py"
    sys.modules.pop(name, None)


def test_user_models(user_module):
    name, path = user_module
    m = build_model(f"{name}:make", (40,), 4, hidden=6)
    assert m(torch.randn(2, 40)).shape == (2, 4) and m[1].out_features == 6
    assert build_model(f"{name}:Fixed", (40,), 3)(torch.randn(2, 40)).shape == (2, 3)
    assert build_model(f"{name}:Holder.build", (40,), 2)(torch.randn(2, 40)).shape == (2, 2)
    assert build_model(f"{path}:make", (40,), 4).fastloss_spec["model"] == f"{path}:make"
    with pytest.raises(TypeError, match="gave a str, not a torch.nn.Module"):
        build_model(f"{name}:not_a_model", (40,), 3)
    with pytest.raises(ValueError, match="has no attribute 'missing'"):
        build_model(f"{name}:missing", (40,), 3)
    with pytest.raises(ImportError, match="cannot import 'no_such_module_xyz'"):
        build_model("no_such_module_xyz:Net", (40,), 3)
    with pytest.raises(ImportError, match="no such file"):
        build_model("/nonexistent/nets.py:Net", (40,), 3)
