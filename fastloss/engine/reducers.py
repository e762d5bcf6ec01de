"""Reducers: what the engine computes per point from the batched model's outputs.

The engine runs each batch of a split through the model once and hands the outputs
``[K, B, ...]`` to every reducer that reads that split; a reducer accumulates per-point
values and returns them at the end of the chunk as ``{name: [K, ...]}``. A new workflow adds
a small reducer class here or in its own package, never a copy of the loop.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from fastloss.errors import ArgumentError
from fastloss.ops.losses import Loss, metric_means


class Reducer:
    """Base: per-point values from the outputs of the splits named in ``splits`` (all splits
    when None)."""

    splits: tuple[str, ...] | None = None

    def begin(self, K: int, device: torch.device) -> None:
        """Start a chunk of K points."""

    def update(self, split: str, outputs: Tensor, target: Tensor, offset: int) -> None:
        """Take one batch: ``outputs [K, B, ...]``, ``target [B, ...]``, the batch starting at
        sample ``offset`` of the split."""
        raise NotImplementedError

    def finish(self, sizes: Mapping[str, int]) -> dict[str, Tensor]:
        """The chunk's values, ``{name: [K, ...]}``; ``sizes`` are the splits' sample counts."""
        raise NotImplementedError

    def reads(self, split: str) -> bool:
        return self.splits is None or split in self.splits


def check_metrics(metrics: Sequence[str] | None, loss: Loss) -> list[str]:
    """``metrics`` (default: all of the loss's), each one the loss reports."""
    if metrics is None:
        return list(loss.metrics)
    unknown = [m for m in metrics if m not in loss.metrics]
    if unknown:
        raise ArgumentError(
            f"unknown metrics {sorted(unknown)} for loss {loss.name!r}; available: "
            f"{', '.join(repr(m) for m in loss.metrics)}"
        )
    return list(metrics)


class LossMetrics(Reducer):
    """``<split>_<metric>`` per point: the mean loss and the loss's other metrics (accuracy in
    percent for cross-entropy, through the fused `point_loss` op)."""

    def __init__(
        self,
        loss: Loss,
        metrics: Sequence[str] | None = None,
        splits: Sequence[str] | None = None,
    ):
        self.loss = loss
        self.metrics = check_metrics(metrics, loss)
        self.splits = None if splits is None else tuple(splits)
        self.sums: dict[str, dict[str, Tensor]] = {}

    def begin(self, K: int, device: torch.device) -> None:
        self.sums = {}

    def update(self, split: str, outputs: Tensor, target: Tensor, offset: int) -> None:
        sums = self.sums.setdefault(split, {})
        for name, value in self.loss.point_sums(outputs, target).items():
            value = value.double() if value.is_floating_point() else value
            sums[name] = value if name not in sums else sums[name] + value

    def finish(self, sizes: Mapping[str, int]) -> dict[str, Tensor]:
        values = {}
        for split, sums in self.sums.items():
            means = metric_means(sums, sizes[split])
            values.update({f"{split}_{m}": means[m] for m in self.metrics})
        return values


class Probabilities(Reducer):
    """``probs [K, N, C]``: the softmax outputs on one split (float32)."""

    def __init__(self, split: str):
        self.splits = (split,)
        self.parts: list[Tensor] = []

    def begin(self, K: int, device: torch.device) -> None:
        self.parts = []

    def update(self, split: str, outputs: Tensor, target: Tensor, offset: int) -> None:
        self.parts.append(torch.softmax(outputs.double(), dim=-1).float())

    def finish(self, sizes: Mapping[str, int]) -> dict[str, Tensor]:
        return {"probs": torch.cat(self.parts, dim=1)}


class EnsembleWithReference(Reducer):
    """The ensemble of each point with a fixed reference network, whose probabilities on the
    split are ``reference [N, C]``: the two softmax outputs averaged (Garipov et al. 2018,
    Fig. 8). ``ensemble_nll`` (mean) and ``ensemble_acc`` (percent) per point."""

    def __init__(self, reference: Tensor, split: str):
        self.reference = reference
        self.splits = (split,)
        self.nll = self.correct = torch.zeros(0)

    def begin(self, K: int, device: torch.device) -> None:
        self.nll = torch.zeros(K, dtype=torch.float64, device=device)
        self.correct = torch.zeros(K, dtype=torch.int64, device=device)

    def update(self, split: str, outputs: Tensor, target: Tensor, offset: int) -> None:
        K, B = outputs.shape[:2]
        probs = torch.softmax(outputs.reshape(K, B, -1).double(), dim=-1)
        probs = 0.5 * (probs + self.reference[offset : offset + B].double())
        index = target.expand(K, B)[..., None]
        self.nll -= probs.gather(2, index)[..., 0].clamp_min(1e-300).log().sum(1)
        self.correct += (probs.argmax(-1) == target).sum(1)

    def finish(self, sizes: Mapping[str, int]) -> dict[str, Tensor]:
        (split,) = self.splits or ("",)
        n = sizes[split]
        return {"ensemble_nll": self.nll / n, "ensemble_acc": self.correct.double() * (100.0 / n)}


class Predictions(Reducer):
    """``predictions [K, P, ...]``: the outputs on the samples of one split (e.g. a probe set
    of inputs), in float."""

    def __init__(self, split: str = "probe"):
        self.splits = (split,)
        self.parts: list[Tensor] = []

    def begin(self, K: int, device: torch.device) -> None:
        self.parts = []

    def update(self, split: str, outputs: Tensor, target: Tensor, offset: int) -> None:
        self.parts.append(outputs.double())

    def finish(self, sizes: Mapping[str, int]) -> dict[str, Tensor]:
        return {"predictions": torch.cat(self.parts, dim=1)}
