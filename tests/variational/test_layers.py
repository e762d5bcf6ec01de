"""Variational layers against their definitions: the local reparametrisation's moments, the
KL approximation against the exact integral, the posterior's samples, the swap into a model
and back."""

import math

import numpy as np
import pytest
import torch
from scipy import integrate
from torch import nn

from fastloss.errors import ArgumentError
from fastloss.variational import (
    KINDS,
    kl,
    mean_state,
    plain_model,
    sample_states,
    snr,
    variational,
    variational_layers,
)
from fastloss.variational.layers import kl_log_uniform
from fastloss.variational.model import hidden_layers, output_layer


def _net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Unflatten(1, (1, 6, 6)),
        nn.Conv2d(1, 3, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(108, 5),
    )


def _noisy(kind):
    """A variational net whose noise is far from its start (log α, log σ², σ perturbed)."""
    net = variational(_net(), kind, log_alpha=-1.0)
    torch.manual_seed(1)
    with torch.no_grad():
        for _, layer in variational_layers(net):
            for name in ("log_alpha", "log_sigma2", "sigma"):
                if hasattr(layer, name) and isinstance(getattr(layer, name), nn.Parameter):
                    getattr(layer, name).add_(0.5 * torch.randn_like(getattr(layer, name)))
    return net


@pytest.mark.filterwarnings("ignore::scipy.integrate.IntegrationWarning")  # log|ε| at ε = 0
def test_kl_approximation_is_within_001_of_the_exact_kl():
    """−KL(N(μ, αμ²) ‖ 1/|w|) = ½ log α − E_{ε~N(1, α)} log|ε| + C (Kingma et al. 2015),
    C fixed by KL → 0 as α → ∞; Molchanov et al. 2017 give the approximation to 0.01."""

    def expected_log_abs(alpha):
        s = math.sqrt(alpha)
        pdf = lambda e: math.exp(-0.5 * ((e - 1) / s) ** 2) / (s * math.sqrt(2 * math.pi))  # noqa: E731
        f = lambda e: math.log(abs(e)) * pdf(e) if e != 0 else 0.0  # noqa: E731
        lo, hi = 1 - 12 * s, 1 + 12 * s
        points = [0.0] if lo < 0 < hi else None
        return integrate.quad(f, lo, hi, points=points, limit=400)[0]

    def neg_kl_without_constant(log_alpha):
        return 0.5 * log_alpha - expected_log_abs(math.exp(log_alpha))

    constant = -neg_kl_without_constant(12.0)  # the KL is ~0 this far out (approximation: 2e-8)
    for log_alpha in np.linspace(-4, 6, 21):
        exact = -(neg_kl_without_constant(log_alpha) + constant)
        approx = float(kl_log_uniform(torch.tensor(log_alpha, dtype=torch.float64)))
        assert abs(exact - approx) < 0.01, (log_alpha, exact, approx)


def test_kl_gradcheck_float64():
    x = torch.randn(7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(kl_log_uniform, (x,))


@pytest.mark.parametrize("kind", KINDS)
def test_local_reparametrisation_has_the_weight_samples_moments(kind):
    net = _noisy(kind)
    layer = dict(variational_layers(net))["4"]  # the Linear
    x = torch.rand(3, 108)
    mean = x @ layer.mean().T + layer.bias
    var = x.square() @ layer.variance().T
    layer.train()
    torch.manual_seed(2)
    draws = layer(x.repeat(4000, 1)).view(4000, *mean.shape).double()  # fresh noise per row
    spread = var.sqrt().max().item()  # the mean of n draws is within 4 std / √n
    torch.testing.assert_close(draws.mean(0), mean.double(), atol=4 * spread / 60, rtol=0)
    torch.testing.assert_close(draws.var(0), var.double(), rtol=0.1, atol=1e-6)
    # The same moments from weight samples (what the ensemble evaluates).
    generator = torch.Generator().manual_seed(3)
    weights = layer.sample(2000, generator).detach()
    outs = (x @ weights.transpose(1, 2) + layer.bias.detach()).double()
    torch.testing.assert_close(outs.mean(0), mean.double(), atol=4 * spread / 40, rtol=0)
    torch.testing.assert_close(outs.var(0), var.double(), rtol=0.15, atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_eval_mode_is_the_plain_model_at_the_mean(kind):
    base = _net()
    net = _noisy(kind).eval()
    plain = plain_model(net).eval()
    assert type(plain[1]) is nn.Conv2d and type(plain[4]) is nn.Linear
    x = torch.randn(4, 36)
    torch.testing.assert_close(net(x), plain(x))
    plain.load_state_dict(mean_state(net))  # the same keys as the original model's
    torch.testing.assert_close(net(x), plain(x))
    assert mean_state(net).keys() == base.state_dict().keys()
    if kind == "variance":
        assert all(float(s.abs().max()) == 0 for n, s in mean_state(net).items() if "weight" in n)
        assert all(float(r.max()) == 0 for r in snr(net).values())
    else:  # the means start at the model's weights
        start = variational(base, kind)
        torch.testing.assert_close(mean_state(start)["4.weight"], base[4].weight.detach())


def test_kl_terms_by_kind():
    for kind in ("dropout", "variance"):  # constants: dropped
        assert float(kl(_noisy(kind)).detach()) == 0.0
    for kind in ("layer", "neuron", "weight", "additive"):
        net = _noisy(kind)
        total = sum(
            float(kl_log_uniform(layer.log_alpha_full().detach()).sum())
            for _, layer in variational_layers(net)
        )
        assert float(kl(net).detach()) == pytest.approx(total) and total > 0
    layer = dict(variational_layers(variational(_net(), "neuron")))["4"]
    assert layer.log_alpha.shape == (5,)  # one α per output unit
    assert dict(variational_layers(variational(_net(), "layer")))["1"].log_alpha.shape == (1,)


def test_refusals():
    with pytest.raises(ArgumentError, match="kind must be one of"):
        variational(_net(), "gaussian")
    with pytest.raises(ArgumentError, match=r"module 1 \(PReLU\) has parameters"):
        variational(nn.Sequential(nn.Linear(3, 4), nn.PReLU()))
    with pytest.raises(ArgumentError, match=r"matching \['fc\*'\]"):
        variational(_net(), layers=["fc*"])
    with pytest.raises(ArgumentError, match="no variational layers"):
        sample_states(_net(), 3)
    with pytest.raises(ArgumentError, match="K must be >= 1"):
        sample_states(variational(_net()), 0)
    with pytest.raises(ArgumentError, match="variational already"):
        variational(variational(_net()))


def test_chosen_layers_only():
    with pytest.raises(ArgumentError, match="none between its first and its output layer"):
        hidden_layers(_net())
    deep = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 2))
    assert hidden_layers(deep) == ["2"]
    net = variational(_net(), "variance", layers=["1"])
    assert [n for n, _ in variational_layers(net)] == ["1"] and output_layer(net) == "4"
    assert type(net[4]) is nn.Linear  # the output layer stays deterministic
    assert mean_state(net).keys() == _net().state_dict().keys()
    assert net.fastloss_variational["layers"] == ["1"]
