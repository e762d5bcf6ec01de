"""A synthetic 1D regression set whose inputs come in separated clusters: networks that fit
the clusters equally well may still disagree between and beyond them (the experiment of
Garipov et al. 2018, Figure 7, after Izmailov et al. 2019)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from fastloss.data.checks import Split
from fastloss.errors import DataError

CLUSTERS = ((-1.0, -0.6), (-0.1, 0.1), (0.6, 1.0))


def target_function(x: Tensor) -> Tensor:
    """The noiseless target ``sin(3x) + 0.3·x``."""
    return torch.sin(3 * x) + 0.3 * x


def regression_clusters(
    samples_per_cluster: int = 40,
    clusters: Sequence[tuple[float, float]] = CLUSTERS,
    noise: float = 0.05,
    seed: int = 0,
) -> Split:
    """``(train, test)`` with ``x [N, 1]`` drawn uniformly in each interval of ``clusters``
    and ``y [N] = sin(3x) + 0.3·x + noise·ε``; the test set is an independent draw of the same
    size. Deterministic for a given ``seed``."""
    if samples_per_cluster < 1 or not clusters or noise < 0:
        raise DataError(
            "need samples_per_cluster >= 1, at least one cluster and noise >= 0; got "
            f"{samples_per_cluster}, {list(clusters)} and {noise}"
        )
    if any(not lo < hi for lo, hi in clusters):
        raise DataError(f"each cluster is an interval (lo, hi) with lo < hi, got {list(clusters)}")
    g = torch.Generator().manual_seed(seed)

    def draw() -> tuple[Tensor, Tensor]:
        x = torch.cat(
            [
                lo + (hi - lo) * torch.rand(samples_per_cluster, 1, generator=g)
                for lo, hi in clusters
            ]
        )
        y = target_function(x[:, 0]) + noise * torch.randn(x.shape[0], generator=g)
        return x, y

    return draw(), draw()


def distance_to_clusters(x: Tensor, clusters: Sequence[tuple[float, float]] = CLUSTERS) -> Tensor:
    """``[P]`` distance of each input ``x [P]`` to the nearest cluster interval (0 inside)."""
    gaps = [(lo - x).clamp_min(0) + (x - hi).clamp_min(0) for lo, hi in clusters]
    return torch.stack(gaps).min(0).values
