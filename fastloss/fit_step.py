"""One step of curve fitting, and the learning-rate schedules and optimizers around it.

`fit_step` runs S points ``t`` of a curve through the batched model in one pass and updates
the bends; `fastloss.fit.fit_curve` calls it for every mini-batch, and
``bench/bench_curve.py`` times it against dnn-mode-connectivity's step.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from fastloss import ops
from fastloss.batched import BatchedModel

SCHEDULES = ("garipov", "cosine", "constant")
OPTIMIZERS = ("sgd", "adam")


def lr_factor(schedule: str, progress: float) -> float:
    """LR multiplier at ``progress`` ∈ [0, 1] of the fit. ``"garipov"`` is
    dnn-mode-connectivity's: 1 for the first half, then linearly down to 0.01 at 90 %, then
    0.01 (applied per step here rather than per epoch)."""
    if schedule == "garipov":
        if progress <= 0.5:
            return 1.0
        if progress <= 0.9:
            return 1.0 - (progress - 0.5) / 0.4 * 0.99
        return 0.01
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * progress))
    return 1.0


class StepLoss(NamedTuple):
    """One step's cross-entropy at its S points (detached)."""

    cross_entropy: Tensor  # [S] mean over the batch
    correct: Tensor  # [S] int64


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
) -> StepLoss:
    """One optimizer step on the bends at S points ``t`` in one batched pass.

    ``ends`` ``{param: [2, ...]}`` (w1, w2; fixed), ``bends`` ``{param: [n, ...]}`` (the
    optimizer's parameters), ``coords [S, J]`` (the curve's coordinates at the S values of
    t), ``x [B, ...]``, ``y [B]``. The objective is the mean over the S points of the
    cross-entropy plus ``0.5·wd·‖w(t)‖²``. The basis ``[w1, θ, w2]`` is built from the bends
    and installed with `BatchedModel.load_basis`, so autograd through the compiled ops
    brings the cross-entropy's gradient to the bends; weight decay's is added in closed
    form (`_add_weight_decay`). A non-finite loss leaves the bends as they were. After the
    step the bends' ``.grad`` hold the gradient that was applied."""
    basis = {k: torch.cat([ends[k][:1], bends[k], ends[k][1:]]) for k in bends}
    batched.load_basis(basis)
    S = coords.shape[0]
    logits = batched(x, coords)
    loss_sum, correct = ops.point_loss(logits.reshape(S, x.shape[0], -1), y)
    ce = loss_sum / x.shape[0]
    mean_ce = ce.mean()
    if torch.isfinite(mean_ce):
        opt.zero_grad(set_to_none=True)
        mean_ce.backward()
        if wd:
            _add_weight_decay(basis, coords, bends, wd)
        opt.step()
    return StepLoss(ce.detach(), correct)


def make_optimizer(name: str, params: list[Tensor], lr: float) -> torch.optim.Optimizer:
    """SGD with momentum 0.9 (``"sgd"``) or Adam (``"adam"``) over the bends, without weight
    decay: `fit_step` applies it to the curve's points instead."""
    # The fused kernels update every bend in one pass: twice as fast on the CPU as the loop.
    fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, fused=fused)
    return torch.optim.Adam(params, lr=lr, fused=fused)
