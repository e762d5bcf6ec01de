"""One step of curve fitting, and the optimizers around it.

`fit_step` runs S points ``t`` of a curve through the batched model in one pass and updates
the bends; `fastloss.curves.fit_curve` calls it for every mini-batch, and
``bench/bench_curve.py`` times it against dnn-mode-connectivity's step.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from fastloss.core import BatchedModel
from fastloss.errors import ArgumentError
from fastloss.ops.losses import BUILTIN, Loss

OPTIMIZERS = ("sgd", "adam")


class StepLoss(NamedTuple):
    """One step's loss at its S points (detached)."""

    loss: Tensor  # [S] the mean loss over the batch (cross-entropy by default)
    correct: Tensor | None  # [S] int64 correct samples; None for a regression loss


def _add_weight_decay(
    basis: dict[str, Tensor], coords: Tensor, bends: dict[str, Tensor], wd: float
) -> None:
    """Adds the gradient of ``0.5·wd·mean_s ‖w(t_s)‖²`` to the bends' ``.grad``.

    ``‖w(t)‖² = cᵀGc`` with G the Gram matrix of the basis, so the gradient on basis point i
    is ``wd·Σ_j A_ij P_j`` with ``A = CᵀC / S``: one small product per parameter, for the
    bends' rows only. Autograd through G would cost a forward and two products per
    parameter, and then throw the endpoints' gradients away; the value itself is never
    needed, so it is not computed."""
    S, J = coords.shape
    with torch.no_grad():
        A = (coords.T @ coords)[1:-1] * (wd / S)  # the bends' rows of CᵀC·wd/S
        for k, b in bends.items():
            assert b.grad is not None
            b.grad.view(b.shape[0], -1).addmm_(A, basis[k].detach().reshape(J, -1))


def fit_step(
    batched: BatchedModel,
    ends: dict[str, Tensor],
    bends: dict[str, Tensor],
    opt: torch.optim.Optimizer,
    coords: Tensor,
    x: Tensor,
    y: Tensor,
    wd: float,
    loss: Loss = BUILTIN["cross_entropy"],
) -> StepLoss:
    """One optimizer step on the bends at S points ``t`` in one batched pass.

    ``ends`` ``{param: [2, ...]}`` (w1, w2; fixed), ``bends`` ``{param: [n, ...]}`` (the
    optimizer's parameters), ``coords [S, J]`` (the curve's coordinates at the S values of
    t), ``x [B, ...]``, ``y [B]``. The objective is the mean over the S points of the
    ``loss`` (cross-entropy by default) plus ``0.5·wd·‖w(t)‖²``. The basis ``[w1, θ, w2]``
    is built from the bends and installed with `BatchedModel.load_basis`, so autograd
    through the compiled ops brings the loss's gradient to the bends; weight decay's is
    added in closed form (`_add_weight_decay`). A non-finite loss leaves the bends as they
    were. After the step the bends' ``.grad`` hold the gradient that was applied."""
    basis = {k: torch.cat([ends[k][:1], bends[k], ends[k][1:]]) for k in bends}
    batched.load_basis(basis)
    sums = loss.point_sums(batched(x, coords), y)
    per_point = sums["loss"] / x.shape[0]
    mean = per_point.mean()
    if torch.isfinite(mean):
        opt.zero_grad(set_to_none=True)
        mean.backward()
        if wd:
            _add_weight_decay(basis, coords, bends, wd)
        opt.step()
    return StepLoss(per_point.detach(), sums.get("acc"))


def make_optimizer(name: str, params: list[Tensor], lr: float) -> torch.optim.Optimizer:
    """SGD with momentum 0.9 (``"sgd"``) or Adam (``"adam"``) over the bends, without weight
    decay: `fit_step` applies it to the curve's points instead."""
    # The fused kernels update every bend in one pass: twice as fast on the CPU as the loop.
    fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
    if name not in OPTIMIZERS:
        raise ArgumentError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, fused=fused)
    return torch.optim.Adam(params, lr=lr, fused=fused)
