"""Training by the stochastic gradient variational lower bound (Kingma et al. 2015):
maximise ``ELBO = E_q log p(y | x, w) − KL(q ‖ p)``, i.e. minimise ``N · mean CE + KL`` on
minibatches, here divided by N (the per-sample scale of the usual loss) and with Adam.
The expectation is estimated by the local reparametrisation trick in the layers' train-mode
forward; `fastloss.training.train` runs the loop, with the KL term as its ``penalty``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from fastloss.data import Dataset
from fastloss.engine import check_batch_size
from fastloss.errors import ArgumentError
from fastloss.training import train
from fastloss.variational.model import check_variational, kl


def train_vnet(
    model: nn.Module,
    train_data: Dataset,
    test_data: Dataset | None = None,
    *,
    epochs: int = 100,
    lr: float = 1e-3,
    batch_size: int = 128,
    kl_weight: float = 1.0,
    warmup_epochs: int = 0,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> dict[str, Any]:
    """Train the variational ``model`` in place by the SGVLB with Adam at a constant rate
    ``lr``; the KL term's weight rises linearly from 0 to ``kl_weight`` over the first
    ``warmup_epochs``. Returns `fastloss.training.train`'s history (its test numbers are the
    deterministic prediction's: eval mode uses the mean weights) plus ``"elbo"``
    (`elbo` on the train data at the end)."""
    check_variational(model)
    if kl_weight < 0 or warmup_epochs < 0:
        raise ArgumentError(
            f"need kl_weight >= 0 and warmup_epochs >= 0, got {kl_weight}, {warmup_epochs}"
        )
    check_batch_size(batch_size)
    n = len(train_data[1])
    steps_per_epoch = -(-n // batch_size)
    warmup_steps = warmup_epochs * steps_per_epoch
    weight = [kl_weight if warmup_steps == 0 else 0.0]

    def warm_up(step: int, _model: nn.Module) -> None:
        if warmup_steps:
            weight[0] = kl_weight * min(1.0, step / warmup_steps)

    history = train(
        model,
        train_data,
        test_data,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        weight_decay=0.0,
        optimizer="adam",
        schedule="constant",
        seed=seed,
        device=device,
        progress=progress,
        on_step=warm_up,
        penalty=lambda: weight[0] * kl(model) / n,
    )
    history["elbo"] = elbo(model, train_data, seed=seed)
    return history


@torch.no_grad()
def elbo(model: nn.Module, data: Dataset, batch_size: int = 1000, seed: int = 0) -> dict:
    """``{"elbo", "expected_log_likelihood", "kl"}`` on ``data``: the expected
    log-likelihood (summed over the samples) estimated with one local-reparametrisation
    sample per input, and the KL term."""
    check_variational(model)
    x, y = data
    device = next(model.parameters()).device
    was_training = model.training
    model.train()
    nll = 0.0
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for i in range(0, len(y), batch_size):
            xb, yb = x[i : i + batch_size].to(device), y[i : i + batch_size].to(device)
            nll += float(nn.functional.cross_entropy(model(xb), yb, reduction="sum"))
    model.train(was_training)
    divergence = float(kl(model))
    return {"elbo": -nll - divergence, "expected_log_likelihood": -nll, "kl": divergence}
