"""One step of multi-point optimization: every chosen cell in one batched pass.

The objective (Skorokhodov & Burtsev 2019, eq. 3 and appendix B) on one data batch shared by
all cells: the mean cross-entropy of the good cells minus the mean of the bad cells'
cross-entropies, each clamped at ``bad_clamp`` (2.5) so that the bad cells cannot win by
growing without bound. `fastloss.mpo.fit_pattern` calls `mpo_step` for every batch;
``bench/bench_mpo.py`` times it against the reference code's loop over cells.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from fastloss.core import BatchedModel
from fastloss.mpo.plane import MPOPlane
from fastloss.ops.losses import BUILTIN


class StepStats(NamedTuple):
    """One step's values at its K cells (detached)."""

    loss: Tensor  # [K] mean cross-entropy over the batch
    acc: Tensor  # [K] fraction of the batch classified correctly
    objective: float  # the objective before the update


def mpo_objective(
    loss: Tensor,
    good: Tensor,
    bad_clamp: float = 2.5,
    n_good: int | None = None,
    n_bad: int | None = None,
) -> Tensor:
    """``mean(loss[good]) − mean(min(loss[bad], bad_clamp))`` over cells ``loss [K]``. Give
    the step's counts ``n_good`` and ``n_bad`` when ``loss`` holds only some of its cells:
    the parts of a step then sum to its objective. A class with no cell contributes 0."""
    n_good = int(good.sum()) if n_good is None else n_good
    n_bad = int((~good).sum()) if n_bad is None else n_bad
    good_part = loss[good].sum() / max(n_good, 1)
    bad_part = loss[~good].clamp(max=bad_clamp).sum() / max(n_bad, 1)
    return good_part - bad_part


def cell_losses(
    batched: BatchedModel, plane: MPOPlane, positions: Tensor, x: Tensor, y: Tensor
) -> tuple[Tensor, Tensor]:
    """(mean cross-entropy ``[K]``, accuracy ``[K]``) of the cells at ``positions [K, 2]``
    on the batch ``x [B, ...]``, ``y [B]``, in one batched pass whose graph reaches θ."""
    batched.load_basis(plane.basis())
    sums = BUILTIN["cross_entropy"].point_sums(batched(x, plane.coords(positions)), y)
    B = x.shape[0]
    return sums["loss"] / B, sums["acc"].to(sums["loss"].dtype) / B


def mpo_step(
    batched: BatchedModel,
    plane: MPOPlane,
    opt: torch.optim.Optimizer,
    positions: Tensor,
    good: Tensor,
    x: Tensor,
    y: Tensor,
    bad_clamp: float = 2.5,
    clip: float | None = 100.0,
    cells_per_pass: int | None = None,
) -> StepStats:
    """One update of θ (``plane``, whose tensors ``opt`` trains) from the cells at
    ``positions [K, 2]`` (``good [K]`` marks the good ones) on one batch: all K cells in one
    forward and one backward, or, with ``cells_per_pass``, in passes of that many cells
    whose gradients add up to the same (for a step too large for memory). The gradient's
    norm over θ is clipped to ``clip``. A non-finite objective leaves θ as it was.
    Afterwards θ's ``.grad`` hold the (clipped) gradient that was applied."""
    K = positions.shape[0]
    chunk = K if cells_per_pass is None else max(1, cells_per_pass)
    n_good = int(good.sum())
    opt.zero_grad(set_to_none=True)
    losses, accs, objective = [], [], 0.0
    for start in range(0, K, chunk):
        part = slice(start, start + chunk)
        loss, acc = cell_losses(batched, plane, positions[part], x, y)
        value = mpo_objective(loss, good[part], bad_clamp, n_good, K - n_good)
        objective += float(value.detach())
        if math.isfinite(objective):
            value.backward()
        losses.append(loss.detach())
        accs.append(acc.detach())
    if math.isfinite(objective):
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(plane.parameters(), clip)
        opt.step()
    return StepStats(torch.cat(losses), torch.cat(accs), objective)
