"""Variational versions of ordinary models, and the plain networks their posteriors give.

`variational(model, kind)` copies a model built from Linear, Conv1d and Conv2d layers,
normalisation layers (BatchNorm, LayerNorm, GroupNorm: kept deterministic) and
parameter-free modules (activations, pooling, reshapes), and swaps each Linear and Conv for
its `VariationalLayer`, the means initialised from the model's weights. The posterior's
networks are plain ``nn.Module``s again: `plain_model` is the original architecture and
`mean_state` / `sample_states` are its state dicts at the mean weights and at weight samples
(what the deterministic, stochastic and ensemble predictions evaluate).
"""

from __future__ import annotations

import copy
import fnmatch
import math
from collections.abc import Sequence
from typing import cast

import torch
from torch import Tensor, nn

from fastloss.core import Subspace, split_state
from fastloss.errors import ArgumentError
from fastloss.variational.layers import (
    DROPOUT_KINDS,
    KINDS,
    VariationalConv,
    VariationalLayer,
    VariationalLinear,
)

_SWAPPED = (nn.Linear, nn.Conv1d, nn.Conv2d)
# Kept deterministic: normalisation layers (variance networks train with BatchNorm after
# their noisy layers, Neklyudov et al. 2018).
_DETERMINISTIC = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)
META_KEY = "variational"  # the checkpoint metadata entry of a variational model


def _initial_log(module: nn.Module, kind: str, alpha: float, log_alpha: float) -> float | Tensor:
    """The starting log α or log σ² of ``module``'s variational form (a variance layer
    starts at σ_ij = |w_ij| of the module's random weights, so its units differ: with one
    σ per layer they would start alike, and alike they would stay, their means being 0)."""
    weight = cast(Tensor, module.weight).detach()
    if kind == "dropout":
        return math.log(alpha)
    if kind in DROPOUT_KINDS:
        return log_alpha
    if kind == "additive":  # the same noise as weight-wise dropout at log α
        return log_alpha + torch.log(weight.square() + 1e-12)
    return 0.0


def variational(
    model: nn.Module,
    kind: str = "weight",
    *,
    layers: Sequence[str] | None = None,
    alpha: float = 1.0,
    log_alpha: float = -4.0,
) -> nn.Module:
    """A copy of ``model`` whose Linear, Conv1d and Conv2d layers are variational layers of
    ``kind`` (see `fastloss.variational.layers`): all of them, or those whose names match
    one of the glob patterns ``layers`` (the others stay deterministic; `hidden_layers`
    names those a variance network makes variance layers). ``alpha``: the fixed rate of
    ``"dropout"`` (1 is binary dropout's p = 0.5); ``log_alpha``: the starting log α of
    the learned dropout kinds, and the starting noise of ``"additive"`` (σ² = α·μ²);
    variance layers start at σ = |w| of the model's weights. Refuses other parametrised
    modules, by name."""
    if kind not in KINDS:
        raise ArgumentError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if kind == "dropout" and not alpha > 0:
        raise ArgumentError(f"the dropout rate alpha must be > 0, got {alpha}")
    for name, module in model.named_modules():
        if isinstance(module, VariationalLayer):
            raise ArgumentError(f"module {name or '<root>'} is variational already")
        kept = isinstance(module, _SWAPPED + _DETERMINISTIC)
        if not kept and any(True for _ in module.parameters(False)):
            raise ArgumentError(
                f"module {name or '<root>'} ({type(module).__name__}) has parameters but no "
                "variational form; variational models take Linear, Conv1d and Conv2d layers "
                "(made variational), normalisation layers (kept) and parameter-free modules"
            )
    chosen = [
        name
        for name, module in model.named_modules()
        if isinstance(module, _SWAPPED)
        and (layers is None or any(fnmatch.fnmatchcase(name, p) for p in layers))
    ]
    if not chosen:
        raise ArgumentError(
            "the model has no Linear or Conv layer to make variational"
            + ("" if layers is None else f" matching {list(layers)}")
        )
    net = copy.deepcopy(model)
    for name, module in list(net.named_modules()):
        if name in chosen:
            init = _initial_log(module, kind, alpha, log_alpha)
            twin: VariationalLayer = (
                VariationalLinear(module, kind, init)
                if isinstance(module, nn.Linear)
                else VariationalConv(module, kind, init)
            )
            _set_submodule(net, name, twin)
    net.__dict__["fastloss_variational"] = {  # a plain attribute, as models' fastloss_spec
        "kind": kind,
        "layers": chosen,
        "alpha": alpha,
        "log_alpha": log_alpha,
    }
    return net


def output_layer(model: nn.Module) -> str:
    """The name of the model's last Linear or Conv layer (in module order)."""
    names = [n for n, m in model.named_modules() if isinstance(m, _SWAPPED + (VariationalLayer,))]
    if not names:
        raise ArgumentError("the model has no Linear or Conv layer")
    return names[-1]


def hidden_layers(model: nn.Module) -> list[str]:
    """Every Linear and Conv layer's name but the first's and `output_layer`'s: where a
    variance network's zero-mean layers go (for ``layers=``). Zero-mean logits cannot be
    trained by a one-sample likelihood, and a zero-mean first layer passes on only the
    weighted energy of its raw input: measured on a LeNet-5 (20-50 / 500) on digits,
    variance layers there too gave ensembles of 54 and 60 % (two seeds), against 97.5 and
    98.1 % with them in the hidden layers only."""
    names = [n for n, m in model.named_modules() if isinstance(m, _SWAPPED)]
    if len(names) < 3:
        raise ArgumentError(
            f"the model has {len(names)} Linear or Conv layer(s), so none between its first "
            "and its output layer to make variance layers; name the layers with layers= "
            "(--layers)"
        )
    return names[1:-1]


def _set_submodule(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, module)


def variational_layers(model: nn.Module) -> list[tuple[str, VariationalLayer]]:
    """``(name, layer)`` of every variational layer, in order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, VariationalLayer)]


def check_variational(model: nn.Module) -> None:
    if not variational_layers(model):
        raise ArgumentError(
            "the model has no variational layers; make one with "
            "fastloss.variational.variational(model, kind)"
        )


def kl(model: nn.Module) -> Tensor:
    """The KL term of the ELBO: the sum of every variational layer's."""
    check_variational(model)
    return torch.stack([layer.kl() for _, layer in variational_layers(model)]).sum()


def plain_model(model: nn.Module) -> nn.Module:
    """The original architecture (Linear / Conv layers back in place) at the mean weights."""
    check_variational(model)
    net = copy.deepcopy(model)
    for name, layer in variational_layers(net):
        _set_submodule(net, name, layer.plain())
    if hasattr(net, "fastloss_variational"):
        del net.fastloss_variational
    return net


def _states(model: nn.Module, weights: dict[str, Tensor]) -> dict[str, Tensor]:
    """The plain model's state dict with the variational layers' weights ``weights``."""
    out: dict[str, Tensor] = {}
    layers = dict(variational_layers(model))
    for name, t in model.state_dict().items():
        owner, _, leaf = name.rpartition(".")
        if owner in layers and leaf in ("weight", "log_alpha", "log_sigma2", "sigma"):
            continue
        out[name] = t.detach()
    for name in layers:
        out[f"{name}.weight" if name else "weight"] = weights[name]
    return out


@torch.no_grad()
def mean_state(model: nn.Module) -> dict[str, Tensor]:
    """`plain_model`'s state dict at the mean weights (the deterministic prediction)."""
    check_variational(model)
    return _states(model, {n: layer.mean().detach() for n, layer in variational_layers(model)})


@torch.no_grad()
def sample_weights(model: nn.Module, count: int, seed: int = 0) -> dict[str, Tensor]:
    """``count`` weight samples of every variational layer, ``{layer: [count, *shape]}``,
    drawn layer by layer from one generator seeded with ``seed``."""
    check_variational(model)
    if count < 1:
        raise ArgumentError(f"the number of samples K must be >= 1, got {count}")
    generator = torch.Generator().manual_seed(seed)
    return {n: layer.sample(count, generator) for n, layer in variational_layers(model)}


@torch.no_grad()
def sample_states(model: nn.Module, count: int, seed: int = 0) -> list[dict[str, Tensor]]:
    """``count`` weight samples from the posterior, each as `plain_model`'s state dict (the
    samples of `sample_weights` with the same seed)."""
    weights = sample_weights(model, count, seed)
    return [_states(model, {n: w[k] for n, w in weights.items()}) for k in range(count)]


@torch.no_grad()
def sample_subspace(
    model: nn.Module, count: int, seed: int = 0, with_mean: bool = False
) -> tuple[Subspace, Tensor]:
    """The weight samples of `sample_weights` (after the mean weights, ``with_mean``) as the
    one-hot subspace of `plain_model` and their coordinates (the identity): every sample
    drawn in one call per layer straight into the stacked basis, without a state dict per
    sample; the deterministic parameters are shared by all points (an expanded view)."""
    weights = sample_weights(model, count, seed)
    layers = dict(variational_layers(model))
    if with_mean:
        weights = {n: torch.cat([layers[n].mean()[None], w]) for n, w in weights.items()}
    points = count + with_mean
    basis: dict[str, Tensor] = {}
    params, buffers = split_state(_states(model, {n: w[0] for n, w in weights.items()}))
    for name, value in params.items():
        owner, _, leaf = name.rpartition(".")
        if leaf == "weight" and owner in weights:
            basis[name] = weights[owner]
        else:
            basis[name] = value.expand(points, *value.shape)
    names = (["mean"] if with_mean else []) + [f"sample{k + 1}" for k in range(count)]
    return Subspace(basis, names, "ensemble", buffers), torch.eye(points, dtype=torch.float64)


@torch.no_grad()
def snr(model: nn.Module) -> dict[str, Tensor]:
    """μ²/σ² of every weight, per variational layer (0 for a variance layer's)."""
    check_variational(model)
    return {
        name: (layer.mean().square() / layer.variance()).flatten().cpu()
        for name, layer in variational_layers(model)
    }
