"""Multi-layer perceptron on flattened inputs."""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import nn

from fastloss.errors import ArgumentError


class MLP(nn.Sequential):
    """``x [N, *in_shape]`` flattened, then Linear + ReLU per hidden width (Linear +
    BatchNorm1d + ReLU with ``bn``), then a Linear to ``num_classes`` logits. Works on every
    data set."""

    def __init__(
        self,
        in_shape: Sequence[int],
        num_classes: int,
        widths: Sequence[int] = (256, 256),
        bn: bool = False,
    ):
        sizes = [math.prod(in_shape), *(int(w) for w in widths)]
        if any(s < 1 for s in sizes):
            raise ArgumentError(f"mlp: widths must be positive, got {list(widths)}")
        layers: list[nn.Module] = [nn.Flatten()]
        for a, b in zip(sizes[:-1], sizes[1:], strict=True):
            layers += [nn.Linear(a, b), *([nn.BatchNorm1d(b)] if bn else []), nn.ReLU()]
        layers.append(nn.Linear(sizes[-1], num_classes))
        super().__init__(*layers)
