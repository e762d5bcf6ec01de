"""Per-sample losses, and their sums over the samples of each point: one interface for the
evaluation engine, the training loop and curve fitting.

A `Loss` turns outputs ``[K, B, ...]`` (K points, B samples) and targets ``[B, ...]`` into
per-point sums of its metrics (`Loss.point_sums`); the engine divides by the sample count.
Built in:

- ``"cross_entropy"``: classification; targets are class indices ``[B]``; metrics ``loss``
  (mean cross-entropy) and ``acc`` (percent). It runs the fused `point_loss` op, which never
  writes a softmax tensor.
- ``"mse"``: regression; targets ``[B]`` or ``[B, d]`` shaped like one output; metric
  ``loss``, the squared error averaged over the output's elements.
- ``"gaussian_nll"``: regression with a predicted variance; the output's last axis holds
  (mean, raw variance), the variance is ``softplus(raw) + 1e-6``; metrics ``loss`` (the
  Gaussian negative log-likelihood, constant included) and ``mse`` (of the mean).

Any callable ``fn(outputs [N, ...], targets [N, ...]) -> [N]`` (per-sample losses, as
``torch.nn.functional.*_loss(..., reduction="none")`` gives after a mean over the other
axes) is a loss too, with the single metric ``loss``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

from fastloss.errors import ArgumentError, ArgumentTypeError
from fastloss.ops.dispatch import point_loss
from fastloss.ops.reference import opmath

PerSample = Callable[[Tensor, Tensor], Tensor]
# Metrics reported in percent: their per-point sums are counts.
PERCENT = frozenset({"acc"})


@dataclass(frozen=True)
class Loss:
    """A per-sample loss and the metrics reported with it (``"loss"`` first)."""

    name: str
    per_sample: PerSample | None  # None: cross-entropy through the fused op
    metrics: tuple[str, ...] = ("loss",)
    classification: bool = False

    def point_sums(self, outputs: Tensor, target: Tensor) -> dict[str, Tensor]:
        """``outputs [K, B, ...]``, ``target [B, ...]`` -> each metric's sum over the B
        samples, ``[K]`` (the loss in float, ``acc`` as a count of correct samples).
        Differentiable in ``outputs`` (the loss; counts are not)."""
        K, B = outputs.shape[:2]
        if self.per_sample is None:
            loss, correct = point_loss(outputs.reshape(K, B, -1), target)
            return {"loss": loss, "acc": correct}
        flat = outputs.reshape(K * B, *outputs.shape[2:]).to(opmath(outputs.dtype))
        targets = target.to(flat.dtype if target.is_floating_point() else target.dtype)
        targets = targets.unsqueeze(0).expand(K, *target.shape).reshape(K * B, *target.shape[1:])
        sums = {"loss": self._checked(self.per_sample(flat, targets), K * B).view(K, B).sum(1)}
        if "mse" in self.metrics:
            sums["mse"] = squared_error(_mean_of(flat), targets).view(K, B).sum(1)
        return sums

    def sums(self, outputs: Tensor, target: Tensor) -> dict[str, Tensor]:
        """One network's ``outputs [N, ...]`` -> each metric's sum over the N samples (the
        plain torch functions, as a training loop computes them)."""
        if self.per_sample is None:
            correct = (outputs.argmax(dim=1) == target).sum()
            return {"loss": F.cross_entropy(outputs, target, reduction="sum"), "acc": correct}
        targets = target.to(outputs.dtype) if target.is_floating_point() else target
        sums = {"loss": self._checked(self.per_sample(outputs, targets), len(outputs)).sum()}
        if "mse" in self.metrics:
            sums["mse"] = squared_error(_mean_of(outputs), targets).sum()
        return sums

    def mean(self, outputs: Tensor, target: Tensor) -> Tensor:
        """The mean loss over a batch of one network's ``outputs [N, ...]`` (training)."""
        if self.per_sample is None:
            return F.cross_entropy(outputs, target)
        targets = target.to(outputs.dtype) if target.is_floating_point() else target
        return self._checked(self.per_sample(outputs, targets), outputs.shape[0]).mean()

    def _checked(self, losses: Tensor, n: int) -> Tensor:
        if losses.shape != (n,):
            raise ArgumentError(
                f"loss {self.name!r} must return one value per sample, [{n}], got "
                f"{list(losses.shape)}"
            )
        return losses


def squared_error(outputs: Tensor, targets: Tensor) -> Tensor:
    """``[N, ...]`` outputs and targets of one output's shape (or ``[N]`` for ``[N, 1]``
    outputs) -> ``[N]`` squared errors averaged over the output's elements."""
    targets = targets.reshape(outputs.shape)
    return (outputs - targets).square().reshape(outputs.shape[0], -1).mean(1)


def _mean_of(outputs: Tensor) -> Tensor:
    """The predicted mean of a (mean, raw variance) output."""
    return outputs[..., 0]


def gaussian_nll(outputs: Tensor, targets: Tensor) -> Tensor:
    """``[N, ..., 2]`` (mean, raw variance) outputs -> ``[N]`` Gaussian NLL with the
    constant, averaged over the other output elements."""
    var = F.softplus(outputs[..., 1]) + 1e-6
    nll = F.gaussian_nll_loss(
        _mean_of(outputs), targets.reshape(var.shape), var, full=True, reduction="none"
    )
    return nll.reshape(outputs.shape[0], -1).mean(1)


BUILTIN: dict[str, Loss] = {
    "cross_entropy": Loss("cross_entropy", None, ("loss", "acc"), classification=True),
    "mse": Loss("mse", squared_error),
    "gaussian_nll": Loss("gaussian_nll", gaussian_nll, ("loss", "mse")),
}


def resolve_loss(loss: str | PerSample | Loss) -> Loss:
    """A `Loss` from a built-in name, a per-sample callable or a `Loss`."""
    if isinstance(loss, Loss):
        return loss
    if isinstance(loss, str):
        if loss not in BUILTIN:
            raise ArgumentError(
                f"unknown loss {loss!r}; the built-in losses are {', '.join(BUILTIN)}, or give "
                "a callable fn(outputs [N, ...], targets [N, ...]) -> [N]"
            )
        return BUILTIN[loss]
    if callable(loss):
        name = getattr(loss, "__qualname__", None) or type(loss).__name__
        return Loss(f"{getattr(loss, '__module__', '')}.{name}".lstrip("."), loss)
    raise ArgumentTypeError(
        f"loss must be a name ({', '.join(BUILTIN)}), a callable or a Loss, got "
        f"{type(loss).__name__}"
    )


def metric_means(sums: dict[str, Tensor], n: int) -> dict[str, Tensor]:
    """Per-point sums over ``n`` samples -> means in float64 (``acc`` in percent)."""
    return {
        name: s.double() * ((100.0 if name in PERCENT else 1.0) / n) for name, s in sums.items()
    }


__all__ = ["BUILTIN", "Loss", "gaussian_nll", "metric_means", "resolve_loss", "squared_error"]
