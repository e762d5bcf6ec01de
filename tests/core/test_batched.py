"""batch(model, subspace) against torch.func.functional_call at each point."""

import warnings

import pytest
import torch
from torch import nn
from torch.func import functional_call

import fastloss.core.twins as twins_module
from fastloss.core import Line, Plane, Subspace, batch, used_rows
from fastloss.models import build_model


class Scale(nn.Module):
    """A parametrised module fastloss has no twin for: it must go through vmap."""

    def __init__(self, n):
        super().__init__()
        self.gain = nn.Parameter(torch.randn(n))

    def forward(self, x):
        return x * self.gain


class Residual(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)
        self.bn = nn.BatchNorm2d(c)

    def forward(self, x):
        return torch.relu(x + self.bn(self.conv(x)))


def small_models():
    return {
        "mlp": lambda: nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 5)),
        "conv-bn-residual": lambda: nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1),
            nn.BatchNorm2d(4),
            nn.ReLU(),
            Residual(4),
            nn.MaxPool2d(2),
            nn.Conv2d(4, 6, 3, padding="same"),
            nn.GroupNorm(2, 6),
            nn.Flatten(),
            nn.Linear(6 * 16, 8),
            nn.LayerNorm(8),
            nn.ReLU(),
            nn.Linear(8, 5),
        ),
        "conv1d": lambda: nn.Sequential(
            nn.Flatten(),
            nn.Unflatten(1, (1, 64)),
            nn.Conv1d(1, 3, 5, stride=2),
            nn.BatchNorm1d(3),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(3 * 30, 5),
        ),
        "custom": lambda: nn.Sequential(
            nn.Flatten(), nn.Linear(64, 16), Scale(16), nn.ReLU(), nn.Linear(16, 5)
        ),
    }


def _trained_like(make, seed):
    torch.manual_seed(seed)
    model = make()
    model.train()
    with torch.no_grad():
        model(torch.randn(32, 1, 8, 8))  # give BN layers non-trivial running statistics
    return model.eval()


def _reference(model, subspace, coords, x, train):
    outs = []
    for c in coords:
        state = {
            **subspace.point(c),
            **{k: v.clone() for k, v in subspace.reference_buffers.items()},
        }
        model.train(train)
        outs.append(functional_call(model, state, (x,)))
    return torch.stack(outs)


@pytest.mark.parametrize("name", list(small_models()))
@pytest.mark.parametrize("train", [False, True])
def test_batched_matches_functional_call(name, train):
    make = small_models()[name]
    models = [_trained_like(make, s) for s in range(3)]
    plane = Plane.through(*models)
    coords = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [1.0, -0.4, 0.7], [1.0, 0.5, 1.5]])
    x = torch.randn(6, 1, 8, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batched = batch(models[0], plane)
    batched.train(train)
    batched.set_bn_statistics(len(coords), "fixed")
    out = batched(x, coords)
    ref = _reference(models[0], plane, coords, x, train)
    assert out.shape == (4, 6, 5)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    # The plane passes through the networks: (0, 0) is w1 and (1, 0) is w2.
    if name == "mlp":
        torch.testing.assert_close(out[1], models[1](x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", list(small_models()))
@pytest.mark.parametrize("train", [False, True])
def test_a_pass_over_some_basis_rows_equals_the_pass_over_all(name, train):
    make = small_models()[name]
    members = [_trained_like(make, s) for s in range(4)]
    ensemble = Subspace.from_points(members)
    x = torch.randn(6, 1, 8, 8)
    one_hot = torch.eye(4)[[3, 1]]  # two members: as many rows as points, input expanded
    mixed = torch.tensor([[0.5, 0.0, 0.5, 0.0], [1.0, 0.0, 0.0, 0.0], [0.2, 0.0, 0.9, 0.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batched = batch(members[0], ensemble)
    batched.train(train)
    for coords, rows in [(one_hot, [1, 3]), (mixed, [0, 2])]:
        assert used_rows(coords)[1].tolist() == rows
        batched.set_bn_statistics(len(coords), "fixed")
        full = batched(x, coords)
        batched.set_bn_statistics(len(coords), "fixed")
        with torch.no_grad(), batched.caching_products():  # rows bypass the products cache
            some = batched(x, *used_rows(coords))
        torch.testing.assert_close(some, full, rtol=1e-5, atol=1e-6)
    if not train:
        torch.testing.assert_close(some, _reference(members[0], ensemble, mixed, x, False))
    assert used_rows(torch.ones(2, 4))[1] is None  # every row used: the plain pass


@pytest.mark.parametrize(
    "name,shape",
    [
        ("mlp", (40,)),
        ("lenet5", (1, 28, 28)),
        ("mpo-cnn", (1, 28, 28)),
        ("mpo-cnn-bn", (1, 28, 28)),
        ("resnet20", (3, 32, 32)),
        ("resnet20-noskip", (3, 32, 32)),
    ],
)
def test_papers_models_match_functional_call(name, shape):
    nets = []
    for seed in range(3):
        torch.manual_seed(seed)
        net = build_model(name, shape, 10).train()
        with torch.no_grad():
            net(torch.randn(8, *shape))  # non-trivial BN running statistics
        nets.append(net.eval())
    plane = Plane.through(*nets)
    coords = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.7, -0.3], [1.0, 0.2, 1.1]])
    x = torch.randn(4, *shape)
    batched = batch(nets[0], plane).eval()
    batched.set_bn_statistics(len(coords), "fixed")
    ref = _reference(nets[0], plane, coords, x, train=False)
    torch.testing.assert_close(batched(x, coords), ref, rtol=1e-4, atol=1e-5)


def test_custom_module_warns_once(monkeypatch):
    monkeypatch.setattr(twins_module, "_warned_fallback", set())
    make = small_models()["custom"]
    models = [_trained_like(make, s) for s in range(2)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        batch(models[0], Line(models[0], models[1]))
        batch(models[1], Line(models[0], models[1]))
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "Scale (2) has no compiled twin" in messages[0]


def test_refuses_modules_that_mix_the_batch_axis():
    model = nn.Sequential(nn.Linear(4, 4), nn.LSTM(4, 4))
    sub = Subspace.from_points([model, model])
    with pytest.raises(ValueError, match=r"module 1 \(LSTM\).*batch axis is not the first"):
        batch(model, sub)


def test_subspace_must_cover_the_model():
    a, b = nn.Linear(3, 2), nn.Linear(4, 2)
    with pytest.raises(ValueError, match=r"basis for 'weight' is \[2, 3\] but the model's "):
        batch(b, Subspace.from_points([a, a]))
    with pytest.raises(ValueError, match="no basis for parameters"):
        batch(nn.Sequential(a), Subspace.from_points([a, a]))


def test_user_model_is_not_modified():
    make = small_models()["conv-bn-residual"]
    models = [_trained_like(make, s) for s in range(3)]
    before = {k: v.clone() for k, v in models[0].state_dict().items()}
    batched = batch(models[0], Plane.through(*models))
    batched.set_bn_statistics(2, "recompute")
    batched.train()
    batched(torch.randn(4, 1, 8, 8), torch.tensor([[1.0, 0.2, 0.3], [1.0, 0.5, 0.5]]))
    for k, v in models[0].state_dict().items():
        assert torch.equal(v, before[k]), k


def test_relu_after_a_layer_works_in_place_only_in_plain_sequentials():
    class Chain(nn.Sequential):  # a Sequential with its own forward: left alone
        def forward(self, x):
            y = self[0](x)
            return self[1](y) + y

    shared = nn.ReLU()
    models = [
        nn.Sequential(
            nn.Linear(4, 3), shared, nn.Linear(3, 3), shared, Chain(nn.Linear(3, 2), nn.ReLU())
        )
        for _ in range(3)
    ]
    plane = Plane.through(*models)
    batched = batch(models[0], plane)
    net = batched.net
    assert net[1].inplace and net[3].inplace and net[1] is not shared
    assert not net[4][1].inplace
    assert not shared.inplace  # the user's modules keep their settings
    coords = torch.tensor([[1.0, 0.0, 0.0], [1.0, -0.5, 0.8]])
    x = torch.randn(5, 4)
    torch.testing.assert_close(batched(x, coords), _reference(models[0], plane, coords, x, False))


def test_shared_products_are_reused_only_for_the_same_unchanged_input():
    models = [nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 3)) for _ in range(3)]
    plane = Plane.through(*models)
    batched = batch(models[0], plane)
    coords = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.3, -0.2]])
    data = torch.randn(8, 6)
    with torch.no_grad(), batched.caching_products():
        first = batched(data[:4], coords)
        again = batched(data[:4], coords[[1, 0]])  # a hit: other points, same products
        cache = batched.ctx.products
        assert cache is not None and len(cache.entries) == 1
        other = batched(data[4:], coords)  # another batch: a miss
        data.mul_(2.0)  # modified in place: a miss
        doubled = batched(data[:4], coords)
    assert batched.ctx.products is None
    with torch.no_grad():
        torch.testing.assert_close(first, batched(data[:4] / 2, coords))
        torch.testing.assert_close(again, first[[1, 0]])
        torch.testing.assert_close(other, batched(data[4:] / 2, coords))
        torch.testing.assert_close(doubled, batched(data[:4], coords))


class _GradLayout(torch.autograd.Function):
    """Identity that records whether the gradient reaching it is channels-last."""

    seen: list[bool] = []

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        _GradLayout.seen.append(grad.is_contiguous(memory_format=torch.channels_last))
        return grad


class _Probe(nn.Module):
    def forward(self, x):
        return _GradLayout.apply(x)


def test_layers_between_twins_get_gradients_in_their_output_layout():
    # On the CPU a twin convolution's output is channels-last; Flatten sends its gradient
    # back as [N, C, H, W], which torch's CPU pooling and ReLU backward run several times
    # slower on. The batched model hands each layer's backward its output's layout.
    models = [
        nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), _Probe(), nn.Flatten(), nn.Linear(64, 3)
        )
        for _ in range(3)
    ]
    plane = Plane.through(*models)
    batched = batch(models[0], plane)
    coords = torch.tensor([[1.0, 0.0, 0.0], [1.0, -0.5, 0.8]], requires_grad=True)
    x = torch.randn(5, 1, 4, 4)
    _GradLayout.seen.clear()
    out = batched(x, coords)
    out.square().sum().backward()
    assert _GradLayout.seen == [True]
    expected = _reference(models[0], plane, coords.detach(), x, False)
    torch.testing.assert_close(out.detach(), expected)
