"""Variational Linear and Conv layers: a factorised Gaussian posterior over each weight.

Five parametrisations (Neklyudov et al. 2018, "Different parameterizations"), all with a
deterministic bias:

| kind | q(w_ij) | parameters |
|---|---|---|
| ``dropout`` | N(μ_ij, α μ_ij²), α fixed | ``weight`` (μ); ``log_alpha [1]`` a buffer |
| ``layer`` | N(μ_ij, α μ_ij²), one α per layer | ``weight`` (μ), ``log_alpha [1]`` |
| ``neuron`` | N(μ_ij, α_i μ_ij²), one α per output unit / channel | ``weight``, ``log_alpha [O]`` |
| ``weight`` | N(μ_ij, α_ij μ_ij²) | ``weight``, ``log_alpha`` like the weight |
| ``additive`` | N(μ_ij, σ_ij²) | ``weight``, ``log_sigma2`` like the weight |
| ``variance`` | N(0, σ_ij²) | ``sigma`` (σ) like the weight |

``dropout`` is Gaussian dropout (Srivastava et al. 2014; α = p / (1 − p), so α = 1 is binary
dropout's p = 0.5 in its first two moments), whose KL term is a constant; the next three are
variational dropout (Kingma et al. 2015), α learned; ``additive`` is its additive
reparametrisation (Molchanov et al. 2017); ``variance`` is a variance layer, whose weights
have zero mean, parametrised by σ itself as in Neklyudov et al.'s code: an Adam step on log
σ² moves σ by a fixed fraction, and measured on a LeNet-5 (20-50 / 500) on digits, 60
epochs, the log σ² form stayed at chance (10.0 %) where the σ form reached 63.9 %. In train
mode a layer samples its pre-activations by the local reparametrisation trick (Kingma et al.
2015): ``y = x·μᵀ + b + √(x²·σ²ᵀ) ⊙ ε``, fresh noise per sample. In eval mode it uses the
mean weights (the deterministic prediction). `kl` is the KL divergence to the log-uniform
prior: the approximation of Molchanov et al. 2017 for the dropout kinds and the additive one
(with α = σ²/μ²), and zero (a constant) for variance layers.
"""

from __future__ import annotations

import math
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import skip_init

from fastloss.errors import ArgumentError

KINDS = ("dropout", "layer", "neuron", "weight", "additive", "variance")
DROPOUT_KINDS = ("dropout", "layer", "neuron", "weight")  # σ² = α μ²
# Molchanov et al. 2017, eq. 14: −KL ≈ k1·sigmoid(k2 + k3·log α) − ½·log(1 + 1/α) − k1
_K1, _K2, _K3 = 0.63576, 1.87320, 1.48695
_EPS = 1e-8  # keeps the square root of the pre-activation variance differentiable at 0


def kl_log_uniform(log_alpha: Tensor) -> Tensor:
    """KL(N(μ, αμ²) ‖ log-uniform) per weight, Molchanov et al. 2017's approximation (to
    within 0.01 of the exact value; → 0 as α → ∞)."""
    return _K1 - _K1 * torch.sigmoid(_K2 + _K3 * log_alpha) + 0.5 * F.softplus(-log_alpha)


class VariationalLayer(nn.Module):
    """Base of `VariationalLinear` and `VariationalConv`: the posterior's parameters and the
    local reparametrisation; subclasses give the layer's map ``linear_map(x, weight, bias)``."""

    bias: Tensor | None

    def __init__(self, weight: Tensor, bias: Tensor | None, kind: str, init_log: float | Tensor):
        super().__init__()
        if kind not in KINDS:
            raise ArgumentError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
        self.kind = kind
        self.weight_shape = tuple(weight.shape)
        if kind == "variance":
            self.register_parameter("weight", None)
        else:
            self.weight = nn.Parameter(weight.detach().clone())
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone())
        if kind == "dropout":
            self.register_buffer("log_alpha", torch.full((1,), float(init_log)))
        elif kind in DROPOUT_KINDS:
            shape = {"layer": (1,), "neuron": (weight.shape[0],), "weight": weight.shape}[kind]
            self.log_alpha = nn.Parameter(torch.full(shape, float(init_log)))
        elif kind == "additive":
            start = torch.as_tensor(init_log, dtype=weight.dtype, device=weight.device)
            self.log_sigma2 = nn.Parameter(start.expand(weight.shape).clone())
        else:  # variance: σ starts at the (random) weights' magnitudes, units unalike
            self.sigma = nn.Parameter(weight.detach().abs().clone())

    def linear_map(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        raise NotImplementedError

    def plain(self) -> nn.Module:
        """The plain layer this one was made from, at the mean weights."""
        raise NotImplementedError

    def _fill_plain(self, layer: nn.Linear | nn.Conv1d | nn.Conv2d) -> nn.Module:
        with torch.no_grad():
            layer.weight.copy_(self.mean())
            if self.bias is not None:
                cast(Tensor, layer.bias).copy_(self.bias)
        return layer.to(self.mean().device, self.mean().dtype)

    def mean(self) -> Tensor:
        """E[w]: μ, or zeros for a variance layer."""
        if self.weight is None:
            return self.sigma.new_zeros(self.weight_shape)
        return self.weight

    def _alpha_shape(self, log_alpha: Tensor) -> Tensor:
        if self.kind == "neuron":
            return log_alpha.reshape(-1, *([1] * (len(self.weight_shape) - 1)))
        return log_alpha

    def log_alpha_full(self) -> Tensor:
        """log α = log(σ²/μ²) for every weight (+inf for a variance layer's)."""
        if self.kind in DROPOUT_KINDS:
            return self._alpha_shape(self.log_alpha).expand(self.weight_shape)
        if self.weight is None:
            return torch.full_like(self.sigma, math.inf)
        return self.log_sigma2 - torch.log(self.weight.square() + _EPS)

    def variance(self) -> Tensor:
        """σ² of every weight."""
        if self.kind in DROPOUT_KINDS:
            return torch.exp(self._alpha_shape(self.log_alpha)) * self.weight.square()
        if self.weight is None:
            return self.sigma.square()
        return torch.exp(self.log_sigma2)

    def kl(self) -> Tensor:
        """KL(q ‖ log-uniform prior) summed over the layer's weights (zero for the kinds
        where it is a constant: fixed-rate dropout and variance layers)."""
        if self.kind in ("dropout", "variance"):
            return self.variance().new_zeros(())
        return kl_log_uniform(self.log_alpha_full()).sum()

    def sample(self, count: int, generator: torch.Generator | None = None) -> Tensor:
        """``count`` weight samples ``μ + σ ⊙ ε``, ``[count, *weight.shape]``; the noise is
        drawn on the CPU (from ``generator``), so a seed gives the same samples anywhere."""
        std = self.variance().sqrt()
        noise = torch.randn((count, *self.weight_shape), generator=generator)
        return self.mean() + std * noise.to(std.device, std.dtype)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            return self.linear_map(x, self.mean(), self.bias)
        mean = self.linear_map(x, self.mean(), self.bias)
        var = self.linear_map(x.square(), self.variance(), None)
        return mean + torch.sqrt(var + _EPS) * torch.randn_like(mean)

    def extra_repr(self) -> str:
        return f"kind={self.kind}, weight={list(self.weight_shape)}"


class VariationalLinear(VariationalLayer):
    """`VariationalLayer` of an ``nn.Linear``."""

    def __init__(self, linear: nn.Linear, kind: str, init_log: float | Tensor):
        super().__init__(linear.weight, linear.bias, kind, init_log)
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def plain(self) -> nn.Module:
        bias = self.bias is not None
        return self._fill_plain(skip_init(nn.Linear, self.in_features, self.out_features, bias))

    def linear_map(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        return F.linear(x, weight, bias)


class VariationalConv(VariationalLayer):
    """`VariationalLayer` of an ``nn.Conv1d`` or ``nn.Conv2d`` (zero padding)."""

    def __init__(self, conv: nn.Conv1d | nn.Conv2d, kind: str, init_log: float | Tensor):
        if conv.padding_mode != "zeros":
            raise ArgumentError(
                f"variational convolutions take padding_mode='zeros', got {conv.padding_mode!r}"
            )
        super().__init__(conv.weight, conv.bias, kind, init_log)
        self.spatial = 1 if isinstance(conv, nn.Conv1d) else 2
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.kernel_size, self.stride, self.padding = conv.kernel_size, conv.stride, conv.padding
        self.dilation, self.groups = conv.dilation, conv.groups

    def plain(self) -> nn.Module:
        conv = nn.Conv1d if self.spatial == 1 else nn.Conv2d
        layer = skip_init(
            conv,
            self.in_channels,
            self.out_channels,
            self.kernel_size,  # type: ignore[arg-type]
            self.stride,  # type: ignore[arg-type]
            self.padding,  # type: ignore[arg-type]
            self.dilation,  # type: ignore[arg-type]
            self.groups,
            self.bias is not None,
        )
        return self._fill_plain(layer)

    def linear_map(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        conv = F.conv1d if self.spatial == 1 else F.conv2d
        return conv(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)
