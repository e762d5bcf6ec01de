"""The plain loop that `mpo_step` replaces, as the reference code runs it: for every chosen
cell build its weights, run the model, and backward that cell's share of the objective,
accumulating the gradient of θ. Tests check `mpo_step` against it; ``bench/bench_mpo.py``
times the two side by side."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from fastloss.mpo.plane import MPOPlane


def serial_step_grads(
    model: nn.Module,
    plane: MPOPlane,
    positions: Tensor,
    good: Tensor,
    x: Tensor,
    y: Tensor,
    bad_clamp: float = 2.5,
) -> tuple[list[Tensor], Tensor]:
    """(gradient of the MPO objective for each tensor of ``plane.parameters()``, the cells'
    mean cross-entropies ``[K]``), one cell at a time with ``model`` in train mode (each
    cell's own batch statistics). ``plane``'s tensors must require grad; their ``.grad``
    is left holding the result."""
    params = plane.parameters()
    for t in params:
        t.grad = None
    n_good, n_bad = int(good.sum()), int((~good).sum())
    losses = []
    model.train()
    for k in range(positions.shape[0]):
        basis = plane.basis()  # rebuilt per cell, as the reference code does
        c = plane.coords(positions[k : k + 1])[0]
        weights = {n: c[0] * b[0] + c[1] * b[1] + c[2] * b[2] for n, b in basis.items()}
        loss = F.cross_entropy(functional_call(model, weights, (x,)), y)
        losses.append(loss.detach())
        share = loss / n_good if bool(good[k]) else -loss.clamp(max=bad_clamp) / n_bad
        share.backward()
    grads = [t.grad if t.grad is not None else torch.zeros_like(t) for t in params]
    return grads, torch.stack(losses)
