"""Neklyudov et al. 2018's two tables on built-in data: the classification table (dropout
against a variance network, three prediction schemes) and the parametrisation table
(variational dropout with α per layer, per neuron, per weight, and the additive form: ELBO,
deterministic and ensemble accuracy).

Networks and data: LeNet-5 with BatchNorm after every hidden layer (``lenet5-bn``) at the
paper's widths (convs of 20 and 50 channels, one hidden layer of 500) on scikit-learn's
digits, and an MLP 40-256-256-10 with BatchNorm (``mlp-bn``) on MNIST-1D; the
parametrisation table's test uses the LeNet-5 at its default 6-16 / 120-84, which trains in
half the time. Every network trains by the SGVLB with Adam at a constant rate (200 epochs on
digits, 100 on MNIST-1D, batches of 128) and predicts with the BatchNorm statistics of
training (`predict_modes`' ``bn="fixed"``) and with statistics of its own recomputed on
the train data (``bn="recompute"``), from K = 100 samples. The two differ: Gaussian noise in
every layer shifts the activations' variance between training and the deterministic pass
(the dropout–BatchNorm "variance shift" of Li et al. 2019), which the recomputed statistics
undo; a network trained to carry its signal in the noise is at chance with them undone.

Classification rows (`CLASSIFICATION`):

- ``dropout``: Gaussian dropout, α = 1 (binary dropout's p = 0.5) in every layer;
- ``neuron``: variational dropout with one α per neuron from log α = −4, in every layer.
  Its KL term pulls α up until the means carry little signal: the paper's "variational
  dropout converges to a variance network" (also a row of the parametrisation table);
- ``variance``: variance layers (zero means, σ learned) in the hidden layers
  (`hidden_layers`: the first and the output layer stay deterministic), trained from
  scratch at Adam's 3e-3.

`claims` tests the paper's pattern on these runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from fastloss.data import Dataset, load_data, num_classes
from fastloss.models import build_model
from fastloss.variational.model import hidden_layers, variational
from fastloss.variational.predict import predict_modes
from fastloss.variational.train import train_vnet

CLASSIFICATION = ("dropout", "neuron", "variance")
PARAMETRISATIONS = ("layer", "neuron", "weight", "additive")


@dataclass(frozen=True)
class Setting:
    """How one data set's networks are built and trained."""

    model: str
    epochs: int
    model_kwargs: dict[str, Any] = field(default_factory=dict)


PAPER_LENET5 = {"channels": (20, 50), "widths": (500,)}
SETTINGS = {
    "digits": Setting("lenet5-bn", 200, PAPER_LENET5),
    "mnist1d": Setting("mlp-bn", 100),
}
LR = {"variance": 3e-3}  # every other row: 1e-2


def train_row(
    row: str,
    setting: Setting,
    train_data: Dataset,
    test_data: Dataset,
    seed: int = 0,
    samples: int = 100,
) -> dict[str, Any]:
    """Train one table row's network (a classification row or a parametrisation kind) and
    return its ``elbo``, the three schemes' accuracies (%) ``det``, ``stoch``, ``ens`` with
    the statistics of training and ``det_bn``, ``stoch_bn``, ``ens_bn`` with recomputed
    ones, the ensemble accuracy after k = 1 … K samples ``acc_by_k`` (statistics of
    training), and the network ``model``."""
    classes = num_classes(train_data, test_data)
    torch.manual_seed(seed)
    shape = tuple(train_data[0].shape[1:])
    net = build_model(setting.model, shape, classes, **setting.model_kwargs)
    layers = hidden_layers(net) if row == "variance" else None
    model = variational(net, row, layers=layers)
    history = train_vnet(model, train_data, epochs=setting.epochs, lr=LR.get(row, 1e-2), seed=seed)
    out: dict[str, Any] = {"row": row, "seed": seed, "elbo": history["elbo"]["elbo"]}
    for bn, suffix in (("fixed", ""), ("recompute", "_bn")):
        modes = predict_modes(model, test_data, samples, train=train_data, bn=bn, seed=seed)
        acc = modes.accuracies()
        out["det" + suffix] = acc["deterministic"]
        out["stoch" + suffix] = acc["stochastic"]
        out["ens" + suffix] = acc["ensemble"]
        if bn == "fixed":
            out["acc_by_k"] = [100 * c["acc"] for c in modes.samples.cumulative]
    out["model"] = model
    return out


def chance(test_data: Dataset) -> float:
    """The accuracy (%) of always predicting the test set's most frequent class."""
    return 100 * float(np.bincount(test_data[1].numpy()).max()) / len(test_data[1])


def reproduce(
    data: str = "digits",
    rows: Sequence[str] = CLASSIFICATION,
    seeds: Sequence[int] = (0, 1),
    samples: int = 100,
    model_kwargs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train ``rows`` (of `CLASSIFICATION` and `PARAMETRISATIONS`) on ``data`` for each
    seed: ``{"runs": {row: [one train_row result per seed]}, "mean": {row: {"elbo",
    "det", …, "ens_bn"}}, "chance": %, "claims": claims(...)}``. ``model_kwargs`` replace
    the setting's (``{}``: the built-in model's defaults)."""
    train_data, test_data = load_data(data)
    setting = SETTINGS[data]
    if model_kwargs is not None:
        setting = replace(setting, model_kwargs=model_kwargs)
    runs = {
        row: [train_row(row, setting, train_data, test_data, seed, samples) for seed in seeds]
        for row in rows
    }
    keys = ("elbo", "det", "stoch", "ens", "det_bn", "stoch_bn", "ens_bn")
    mean = {row: {k: float(np.mean([r[k] for r in rs])) for k in keys} for row, rs in runs.items()}
    level = chance(test_data)
    return {"runs": runs, "mean": mean, "chance": level, "claims": claims(runs, level)}


def claims(runs: dict[str, list[dict[str, Any]]], level: float) -> dict[str, bool]:
    """The paper's pattern on these runs, for the rows present (each in every seed):

    - ``dropout_modes_close``: dropout's deterministic accuracy within 5 points of its
      ensemble's (both with recomputed BN statistics, dropout's usual test-time network);
    - ``neuron_det_at_chance``, ``layer_…``, ``variance_…``: the deterministic accuracy
      (statistics of training) within 5 points of ``level`` (chance);
    - ``neuron_ensemble_near_dropout``, ``variance_ensemble_near_dropout``: the ensemble
      (statistics of training) within 5 points of dropout's (recomputed), mean over seeds;
    - ``weight_det_above_neuron``, ``additive_det_above_neuron``: the posteriors that keep
      their means predict from them, at least 50 points above the neuron-wise one.
    """
    out: dict[str, bool] = {}

    def every(row: str, test) -> bool:
        return all(test(r) for r in runs[row])

    def mean(row: str, key: str) -> float:
        return float(np.mean([r[key] for r in runs[row]]))

    if "dropout" in runs:
        close = every("dropout", lambda r: abs(r["det_bn"] - r["ens_bn"]) <= 5)
        out["dropout_modes_close"] = close
    for row in ("neuron", "layer", "variance"):
        if row in runs:
            out[f"{row}_det_at_chance"] = every(row, lambda r: r["det"] <= level + 5)
    for row in ("neuron", "variance"):
        if row in runs and "dropout" in runs:
            near = mean(row, "ens") >= mean("dropout", "ens_bn") - 5
            out[f"{row}_ensemble_near_dropout"] = near
    if "neuron" in runs:
        for row in ("weight", "additive"):
            if row in runs:
                out[f"{row}_det_above_neuron"] = mean(row, "det") >= mean("neuron", "det") + 50
    return out
