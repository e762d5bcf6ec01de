"""What the model predicts at points of a subspace: its outputs on a set of probe inputs at
each point, in one batched pass per chunk (e.g. the functions along a curve, Garipov et al.
2018, Fig. 7)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from fastloss.core import Subspace
from fastloss.engine import Predictions, collect_splits, prepare, run_in_memory
from fastloss.errors import ArgumentError
from fastloss.ops.losses import resolve_loss


def predict(
    model: nn.Module,
    subspace: Subspace,
    coords: Tensor,
    x: Tensor,
    train=None,
    bn: str = "recompute",
    batch_size: int | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    progress: bool = False,
) -> np.ndarray:
    """``[K, P, ...]``: the model's outputs on the probe inputs ``x [P, ...]`` at the points
    ``coords [K, J]`` of ``subspace``. With BatchNorm, ``bn="recompute"`` computes each
    point's statistics over ``train`` (``(x, y)``; the targets are not used)."""
    coords = torch.as_tensor(coords, dtype=torch.float64)
    if coords.dim() != 2 or coords.shape[1] != subspace.J:
        raise ArgumentError(
            f"coords must be [K, J] with J = {subspace.J}, got {list(coords.shape)}"
        )
    loss = resolve_loss("mse")  # only for the data checks: targets of any shape
    splits = collect_splits(loss, probe=(x, torch.zeros(x.shape[0])), train=train)
    ev = prepare(
        model, subspace, splits, loss=loss, bn=bn, batch_size=batch_size, device=device, dtype=dtype
    )
    return run_in_memory(ev, coords, Predictions("probe"), progress)["predictions"]
