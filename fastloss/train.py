"""A small, seeded training loop to make the networks the loss-surface tools start from.

On the CPU a run is deterministic: the same seed gives the same shuffles and, from the same
initial weights, the same trained weights.
"""

from __future__ import annotations

import itertools
import math
import sys
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fastloss.data import Dataset

__all__ = ["evaluate_model", "train"]


def _check_data(data: Dataset, name: str) -> None:
    if not (isinstance(data, (tuple, list)) and len(data) == 2):
        raise TypeError(f"{name} must be an (x, y) pair of tensors")
    x, y = data
    if not isinstance(x, Tensor) or not isinstance(y, Tensor):
        raise TypeError(f"{name} must be an (x, y) pair of tensors")
    if y.dim() != 1 or len(x) != len(y) or len(y) == 0:
        raise ValueError(
            f"{name}: expected x [N, ...] and y [N] with N > 0, got {list(x.shape)} and "
            f"{list(y.shape)}"
        )


def _device_of(model: nn.Module) -> torch.device:
    first = next(itertools.chain(model.parameters(), model.buffers()), None)
    return torch.device("cpu") if first is None else first.device


@torch.no_grad()
def evaluate_model(model: nn.Module, data: Dataset, batch_size: int = 1000) -> tuple[float, float]:
    """``(mean cross-entropy, accuracy in %)`` of ``model`` on ``data = (x, y)`` in eval mode
    (BN running statistics); the model's train/eval mode is restored afterwards."""
    _check_data(data, "data")
    x, y = data
    device = _device_of(model)
    was_training = model.training
    model.eval()
    loss_sum, correct = 0.0, 0
    try:
        for i in range(0, len(y), batch_size):
            xb, yb = x[i : i + batch_size].to(device), y[i : i + batch_size].to(device)
            logits = model(xb)
            loss_sum += float(F.cross_entropy(logits, yb, reduction="sum"))
            correct += int((logits.argmax(dim=1) == yb).sum())
    finally:
        model.train(was_training)
    return loss_sum / len(y), 100.0 * correct / len(y)


def _lr_factor(schedule: str, progress: float) -> float:
    """LR multiplier at ``progress`` in [0, 1) of the run."""
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * progress))
    if schedule == "step":  # ×0.1 at half and at three quarters of the run
        return 1.0 if progress < 0.5 else 0.1 if progress < 0.75 else 0.01
    return 1.0


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
    schedule: str = "cosine",
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> dict[str, Any]:
    """Train ``model`` in place with cross-entropy on ``train = (x, y)``; return its history.

    SGD with Nesterov momentum (or ``optimizer="adam"``), the learning rate following
    ``schedule`` per step: ``"cosine"`` to zero, ``"step"`` (÷10 at 50 % and 75 %) or
    ``"constant"``. The defaults train an MLP on MNIST-1D and small conv nets on digits in
    seconds on a CPU (see the README). Shuffling uses its own generator seeded with ``seed``,
    and ``torch.manual_seed(seed)`` is set for the run (the caller's global RNG state is
    restored afterwards). Batches of one sample are skipped (BatchNorm cannot use them).

    Returns ``{"epochs": [per-epoch dicts], "train_loss", "train_acc", "test_loss",
    "test_acc", "seconds"}``; the final losses/accuracies are measured in eval mode after
    training (the test ones are ``None`` without ``test``). The model is left in eval mode on
    ``device``. Raises ``FloatingPointError`` if the loss becomes NaN/inf.
    """
    _check_data(train, "train")
    if test is not None:
        _check_data(test, "test")
    if epochs < 1 or batch_size < 1 or lr <= 0:
        raise ValueError(
            f"need epochs >= 1, batch_size >= 1, lr > 0; got {epochs}, {batch_size}, {lr}"
        )
    if schedule not in ("cosine", "step", "constant"):
        raise ValueError(f"schedule must be 'cosine', 'step' or 'constant', got {schedule!r}")
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
        raise ValueError(f"optimizer must be 'sgd' or 'adam', got {optimizer!r}")

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
                    continue
                for group in opt.param_groups:
                    group["lr"] = lr * _lr_factor(schedule, (step - 1) / total_steps)
                logits = model(x[idx])
                loss = F.cross_entropy(logits, y[idx])
                if not torch.isfinite(loss):
                    raise FloatingPointError(
                        f"training diverged: loss {float(loss.detach())} at epoch {epoch + 1}, "
                        f"step {step}; lower lr (now {lr})"
                    )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                loss_sum += float(loss.detach()) * len(idx)
                correct += int((logits.argmax(dim=1) == y[idx]).sum())
                seen += len(idx)
            record: dict[str, Any] = {
                "epoch": epoch + 1,
                "lr": opt.param_groups[0]["lr"],
                "train_loss": loss_sum / max(seen, 1),  # running, in train mode
                "train_acc": 100.0 * correct / max(seen, 1),
                "seconds": time.perf_counter() - start,
            }
            if test is not None:
                record["test_loss"], record["test_acc"] = evaluate_model(model, test, 1000)
            history.append(record)
            if progress:
                test_part = (
                    f", test loss {record['test_loss']:.4f} acc {record['test_acc']:.2f}%"
                    if test is not None
                    else ""
                )
                print(
                    f"epoch {epoch + 1}/{epochs}: train loss {record['train_loss']:.4f} "
                    f"acc {record['train_acc']:.2f}%{test_part} ({record['seconds']:.1f} s)",
                    file=sys.stderr,
                    flush=True,
                )
    model.eval()
    train_loss, train_acc = evaluate_model(model, (x, y))
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
