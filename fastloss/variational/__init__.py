"""Variational dropout and variance networks (Kingma et al. 2015; Molchanov et al. 2017;
Neklyudov et al. 2018) for ordinary models built from Linear and Conv layers.

- `layers`: `VariationalLinear`, `VariationalConv`: Gaussian dropout, variational dropout
  with α per layer, neuron or weight, the additive parametrisation and variance layers; the
  local reparametrisation trick and the KL terms.
- `model`: `variational(model, kind)` swaps them in; `kl`, `plain_model`, `mean_state`,
  `sample_states`, `snr`.
- `train`: `train_vnet` (SGVLB with Adam) and `elbo`.
- `predict`: `predict_modes`, the deterministic, stochastic and ensemble predictions, the
  ensemble in one batched pass.
- `checkpoint`: `save_vnet`, `load_vnet`.
- `experiment`: Neklyudov et al.'s tables on built-in data (imported on its own).
"""

from fastloss.variational.checkpoint import load_vnet, save_vnet
from fastloss.variational.layers import KINDS, VariationalConv, VariationalLayer, VariationalLinear
from fastloss.variational.model import (
    kl,
    mean_state,
    plain_model,
    sample_states,
    sample_subspace,
    sample_weights,
    snr,
    variational,
    variational_layers,
)
from fastloss.variational.predict import PredictionModes, predict_modes
from fastloss.variational.train import elbo, train_vnet

__all__ = [
    "KINDS",
    "PredictionModes",
    "VariationalConv",
    "VariationalLayer",
    "VariationalLinear",
    "elbo",
    "kl",
    "load_vnet",
    "mean_state",
    "plain_model",
    "predict_modes",
    "sample_states",
    "sample_subspace",
    "sample_weights",
    "save_vnet",
    "snr",
    "train_vnet",
    "variational",
    "variational_layers",
]
