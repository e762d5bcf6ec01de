"""Stochastic weight averaging (Izmailov et al. 2018), with SWAG collection on the same run.

`train_swa` runs `fastloss.training.train` with the SWA schedule (`SWASchedule`): SGD for
a budget of ``swa_start`` epochs, then a constant or cyclic SWA rate, averaging the weights
every ``every`` epochs with `torch.optim.swa_utils.AveragedModel`; at the end
`torch.optim.swa_utils.update_bn` recomputes the average's BatchNorm statistics on the
training data. A `SWAG` given as ``swag`` collects the same models.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, update_bn

from fastloss.data import Dataset
from fastloss.engine import check_batch_size, has_batch_norm
from fastloss.ensembles.schedules import SWASchedule
from fastloss.ensembles.swag import SWAG
from fastloss.errors import ArgumentError
from fastloss.training import evaluate_model, train


@dataclass
class SWAResult:
    """``swa``: the averaged network (BN statistics updated); ``sgd``: the last SGD iterate
    (the model passed in, trained in place); ``averaged``: how many models the average
    holds; ``history``: the training loop's; ``scores``: test ``loss``/``acc`` of both."""

    swa: nn.Module
    sgd: nn.Module
    averaged: int
    history: dict[str, Any]
    scores: dict[str, float | None] = field(default_factory=dict)


def train_swa(
    model: nn.Module,
    train_data: Dataset,
    test_data: Dataset | None = None,
    *,
    epochs: int,
    swa_start: int,
    lr: float = 0.05,
    swa_lr: float = 0.05,
    every: int = 1,
    rate: str = "constant",
    batch_size: int = 64,
    weight_decay: float = 5e-4,
    momentum: float = 0.9,
    seed: int = 0,
    device: str | torch.device = "cpu",
    swag: SWAG | None = None,
    progress: bool = False,
) -> SWAResult:
    """Train ``model`` (in place) for ``epochs`` epochs with the SWA schedule and return the
    average of the models at the end of epoch ``swa_start`` and every ``every`` epochs
    after it (`SWASchedule`; ``swa_start=0`` starts averaging a trained network at once).
    ``swag`` collects the same models. SGD with Nesterov momentum and ``weight_decay``, as
    `fastloss.training.train`, which runs the steps."""
    if not 0 <= swa_start < epochs:
        raise ArgumentError(f"need 0 <= swa_start < epochs, got {swa_start} and {epochs}")
    check_batch_size(batch_size)
    n = len(train_data[1])
    schedule = SWASchedule(lr, swa_lr, swa_start, every, math.ceil(n / batch_size), rate)
    averaged = AveragedModel(model, device=torch.device(device))

    def take(steps_done: int, net: nn.Module) -> None:
        if schedule.takes_model(steps_done):
            averaged.update_parameters(net)
            if swag is not None:
                swag.collect(net)

    history = train(
        model,
        train_data,
        test_data,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        weight_decay=weight_decay,
        momentum=momentum,
        schedule=schedule,
        seed=seed,
        device=device,
        progress=progress,
        on_step=take,
    )
    count = int(averaged.n_averaged)
    if count == 0:
        raise ArgumentError(
            f"no model was averaged: epochs {epochs}, swa_start {swa_start}, every {every}"
        )
    swa = copy.deepcopy(averaged.module)
    if has_batch_norm(swa):
        x = train_data[0].to(device)
        loader = [x[i : i + batch_size] for i in range(0, len(x), batch_size)]
        update_bn(loader, swa, device=torch.device(device))
    swa.eval()
    scores: dict[str, float | None] = {}
    if test_data is not None:
        scores["sgd_loss"], scores["sgd_acc"] = history["test_loss"], history["test_acc"]
        scores["swa_loss"], scores["swa_acc"] = evaluate_model(swa, test_data)
    return SWAResult(swa, model, count, history, scores)
