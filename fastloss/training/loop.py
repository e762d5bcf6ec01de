"""A small, seeded training loop to make the networks the loss-surface tools start from.

On the CPU a run is deterministic: the same seed gives the same shuffles and, from the same
initial weights, the same trained weights.
"""

from __future__ import annotations

import itertools
import math
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from fastloss.data import Dataset
from fastloss.errors import ArgumentError, ArgumentTypeError, DataError, DivergedError
from fastloss.ops.losses import Loss, PerSample, resolve_loss
from fastloss.training.schedules import TRAIN_SCHEDULES, check_schedule, lr_factor

__all__ = ["evaluate_model", "train"]

LossLike = str | PerSample | Loss
StepSchedule = Callable[[int, int], float]  # (step from 0, total steps) -> lr multiplier
StepCallback = Callable[[int, nn.Module], None]  # (steps done, model) after every step


def _check_data(data: Dataset, name: str, loss: Loss) -> None:
    if not (isinstance(data, (tuple, list)) and len(data) == 2):
        raise ArgumentTypeError(f"{name} must be an (x, y) pair of tensors")
    x, y = data
    if not isinstance(x, Tensor) or not isinstance(y, Tensor):
        raise ArgumentTypeError(f"{name} must be an (x, y) pair of tensors")
    labels_ok = y.dim() == 1 or not loss.classification
    if not labels_ok or y.dim() == 0 or len(x) != len(y) or len(y) == 0:
        raise DataError(
            f"{name}: expected x [N, ...] and y [N] with N > 0, got {list(x.shape)} and "
            f"{list(y.shape)}"
        )


def _device_of(model: nn.Module) -> torch.device:
    first = next(itertools.chain(model.parameters(), model.buffers()), None)
    return torch.device("cpu") if first is None else first.device


@torch.no_grad()
def evaluate_model(
    model: nn.Module, data: Dataset, batch_size: int = 1000, loss: LossLike = "cross_entropy"
) -> tuple[float, float | None]:
    """``(mean loss, accuracy in %)`` of ``model`` on ``data = (x, y)`` in eval mode (BN
    running statistics; accuracy None for a regression ``loss``); the model's train/eval mode
    is restored afterwards."""
    spec = resolve_loss(loss)
    _check_data(data, "data", spec)
    x, y = data
    device = _device_of(model)
    was_training = model.training
    model.eval()
    sums: dict[str, float] = {}
    try:
        for i in range(0, len(y), batch_size):
            xb, yb = x[i : i + batch_size].to(device), y[i : i + batch_size].to(device)
            for name, value in spec.sums(model(xb), yb).items():
                sums[name] = sums.get(name, 0.0) + float(value)
    finally:
        model.train(was_training)
    accuracy = 100.0 * sums["acc"] / len(y) if "acc" in sums else None
    return sums["loss"] / len(y), accuracy


def train(
    model: nn.Module,
    train: Dataset,
    test: Dataset | None = None,
    *,
    epochs: int = 30,
    lr: float = 0.05,
    batch_size: int = 64,
    weight_decay: float = 5e-4,
    optimizer: str = "sgd",
    momentum: float = 0.9,
    schedule: str | StepSchedule = "cosine",
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = False,
    loss: LossLike = "cross_entropy",
    on_step: StepCallback | None = None,
    penalty: Callable[[], Tensor] | None = None,
) -> dict[str, Any]:
    """Train ``model`` in place on ``train = (x, y)``; return its history. ``loss`` is a
    built-in loss name (``"cross_entropy"``, ``"mse"``, ``"gaussian_nll"``), a per-sample
    callable or a `fastloss.ops.losses.Loss`; regression losses report no accuracy.

    SGD with Nesterov momentum (or ``optimizer="adam"``), the learning rate following
    ``schedule`` per step: ``"cosine"`` to zero, ``"step"`` (÷10 at 50 % and 75 %) or
    ``"constant"`` (see `fastloss.training.lr_factor`), or any ``schedule(step, total)``
    giving the multiplier at ``step`` (from 0) of ``total`` (the ensembling methods' cyclic
    rates). ``on_step(steps_done, model)`` runs after every step (weight averaging,
    snapshots). ``penalty()`` is added to every batch's mean loss (a variational model's
    KL term over N; the reported losses leave it out). An epoch has ``ceil(N /
    batch_size)`` steps. The defaults train an MLP on MNIST-1D and small conv nets on
    digits in seconds on a CPU (see the README). Shuffling
    uses its own generator seeded with ``seed``, and ``torch.manual_seed(seed)`` is set for
    the run (the caller's global RNG state is restored afterwards). Batches of one sample are
    skipped (BatchNorm cannot use them).

    Returns ``{"epochs": [per-epoch dicts], "train_loss", "train_acc", "test_loss",
    "test_acc", "seconds"}``; the final losses/accuracies are measured in eval mode after
    training (the test ones are ``None`` without ``test``). The model is left in eval mode on
    ``device``. Raises `fastloss.errors.DivergedError` (a ``FloatingPointError``) if the loss
    becomes NaN/inf.
    """
    spec = resolve_loss(loss)
    _check_data(train, "train", spec)
    if test is not None:
        _check_data(test, "test", spec)
    if epochs < 1 or batch_size < 1 or lr <= 0:
        raise ArgumentError(
            f"need epochs >= 1, batch_size >= 1, lr > 0; got {epochs}, {batch_size}, {lr}"
        )
    if isinstance(schedule, str):
        check_schedule(schedule, TRAIN_SCHEDULES)
    device = torch.device(device)
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    if optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(
            params, lr=lr, momentum=momentum, nesterov=momentum > 0, weight_decay=weight_decay
        )
    elif optimizer == "adam":
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    else:
        raise ArgumentError(f"optimizer must be 'sgd' or 'adam', got {optimizer!r}")

    x, y = train[0].to(device), train[1].to(device)
    n = len(y)
    steps_per_epoch = math.ceil(n / batch_size)
    total_steps = epochs * steps_per_epoch
    history: list[dict[str, Any]] = []
    start = time.perf_counter()
    cuda_devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda_devices):
        torch.manual_seed(seed)
        shuffle = torch.Generator().manual_seed(seed)
        step = 0
        for epoch in range(epochs):
            model.train()
            order = torch.randperm(n, generator=shuffle).to(device)
            loss_sum, correct, seen = 0.0, 0, 0
            for i in range(0, n, batch_size):
                idx = order[i : i + batch_size]
                step += 1
                if len(idx) < 2:
                    if on_step is not None:
                        on_step(step, model)
                    continue
                factor = (
                    lr_factor(schedule, (step - 1) / total_steps)
                    if isinstance(schedule, str)
                    else schedule(step - 1, total_steps)
                )
                for group in opt.param_groups:
                    group["lr"] = lr * factor
                outputs = model(x[idx])
                batch_loss = spec.mean(outputs, y[idx])
                objective = batch_loss if penalty is None else batch_loss + penalty()
                if not torch.isfinite(objective):
                    raise DivergedError(
                        f"training diverged: loss {float(objective.detach())} at epoch "
                        f"{epoch + 1}, step {step}; lower lr (now {lr})"
                    )
                opt.zero_grad(set_to_none=True)
                objective.backward()
                opt.step()
                loss_sum += float(batch_loss.detach()) * len(idx)
                if spec.classification:
                    correct += int((outputs.argmax(dim=1) == y[idx]).sum())
                seen += len(idx)
                if on_step is not None:
                    on_step(step, model)
            record: dict[str, Any] = {
                "epoch": epoch + 1,
                "lr": opt.param_groups[0]["lr"],
                "train_loss": loss_sum / max(seen, 1),  # running, in train mode
                "seconds": time.perf_counter() - start,
            }
            if spec.classification:
                record["train_acc"] = 100.0 * correct / max(seen, 1)
            if test is not None:
                record["test_loss"], record["test_acc"] = evaluate_model(model, test, 1000, spec)
            history.append(record)
            if progress:
                print(_epoch_line(record, epochs), file=sys.stderr, flush=True)
    model.eval()
    train_loss, train_acc = evaluate_model(model, (x, y), loss=spec)
    # The last epoch's test numbers were measured on these final weights already.
    test_loss, test_acc = (
        (history[-1]["test_loss"], history[-1]["test_acc"]) if test else (None, None)
    )
    return {
        "epochs": history,
        "train_loss": train_loss,
        "train_acc": train_acc,
        "test_loss": test_loss,
        "test_acc": test_acc,
        "seconds": time.perf_counter() - start,
    }


def _epoch_line(record: dict[str, Any], epochs: int) -> str:
    def part(split: str) -> str:
        acc = record.get(f"{split}_acc")
        return f"{split} loss {record[f'{split}_loss']:.4f}" + (
            f" acc {acc:.2f}%" if acc is not None else ""
        )

    splits = ["train"] + (["test"] if "test_loss" in record else [])
    return (
        f"epoch {record['epoch']}/{epochs}: {', '.join(part(s) for s in splits)} "
        f"({record['seconds']:.1f} s)"
    )
