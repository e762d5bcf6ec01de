"""Optima width (Izmailov et al. 2018, "SWA and wide optima"; paper 002's figures): the
train loss with its ℓ2 term and the test error along the line from w_SGD through w_SWA,
extended past both ends, and along random filter-normalised rays from each.

Both are points of one subspace each, evaluated in one batched pass by the engine (BatchNorm
statistics recomputed at every point): the line is `fastloss.Line` (t = 0 is w_SGD, t = 1 is
w_SWA); the rays from w are the subspace ``[w, d_1, …, d_R]`` with point ``(1, 0, …, s, …, 0)``
at distance s along d_r, each d_r scaled filter by filter to w's norms (Li et al. 2018). The ℓ2
term ``wd/2·‖w‖²`` comes from the basis' Gram matrix, the norm at point c being ``cᵀGc``.

`basin_centre` reads the line as the paper does: the basin is the interval around the lowest
train loss where the loss stays below half-way up the lower of its two walls (the loss at the
ends of the extended line); the paper finds w_SWA near its centre and w_SGD near its edge.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from fastloss.core import Line, Plane, Subspace
from fastloss.core.subspace import split_state
from fastloss.data import Dataset
from fastloss.errors import ArgumentError
from fastloss.surfaces import evaluate


@dataclass
class WidthResult:
    """``t``: positions on the SGD→SWA line (0 is SGD, 1 is SWA); ``distance``: t times
    ``‖w_SWA − w_SGD‖``; ``line``: ``train_loss`` (NLL + ℓ2), ``train_nll``, ``test_err``
    (percent) along it; ``rays``: for ``"sgd"`` and ``"swa"``, ``s`` (distances in units
    of the filter-normalised direction) and ``train_loss``, ``test_err`` ``[R, S]``;
    ``basin``: `basin_centre` of the line."""

    t: np.ndarray
    distance: np.ndarray
    line: dict[str, np.ndarray]
    rays: dict[str, dict[str, np.ndarray]]
    basin: dict[str, Any]


def _l2(subspace: Subspace, coords: Tensor) -> np.ndarray:
    """``‖w(c)‖²`` over the parameters at each point ``coords [K, J]``."""
    J = subspace.J
    gram = torch.zeros(J, J, dtype=torch.float64)
    for b in subspace.basis.values():
        flat = b.reshape(J, -1).double()
        gram += flat @ flat.T
    c = coords.double()
    return torch.einsum("kj,jl,kl->k", c, gram, c).numpy()


def _curves(model, subspace, coords, train, test, wd, options) -> dict[str, np.ndarray]:
    surface = evaluate(model, subspace, coords, train=train, test=test, **options)
    nll = np.asarray(surface.values["train_loss"], np.float64).reshape(-1)
    return {
        "train_nll": nll,
        "train_loss": nll + 0.5 * wd * _l2(subspace, coords),
        "test_err": 100.0 - np.asarray(surface.values["test_acc"], np.float64).reshape(-1),
    }


def _rays(w: Any, count: int, seed: int) -> Subspace:
    """``[w, d_1, …, d_count]``: d_r the first direction of `Plane.random` (filter-normalised)
    with seed ``seed + r``."""
    directions = [Plane.random(w, seed=seed + r, norm="filter").basis for r in range(count)]
    params, buffers = split_state(w)
    basis = {n: torch.stack([p, *(d[n][1] for d in directions)]) for n, p in params.items()}
    names = ["w", *(f"d{r + 1}" for r in range(count))]
    return Subspace(basis, names, "rays", dict(buffers), {"seed": seed})


def basin_centre(t: np.ndarray, loss: np.ndarray) -> dict[str, Any]:
    """The basin of ``loss`` along ``t`` (see the module notes): its ``edges`` (where the
    loss crosses ``level``, linearly interpolated), ``centre``, ``level``, and each point's
    offset from the centre in units of the half-width (``sgd_offset`` at t = 0,
    ``swa_offset`` at t = 1; 0 is the centre, ±1 an edge). NaN where the lowest loss is
    at an end of the line (extend the line)."""
    lowest = int(np.argmin(loss))
    if lowest in (0, len(t) - 1):  # the line ends inside the basin: no wall on one side
        nan = float("nan")
        return {
            "level": nan,
            "edges": (nan, nan),
            "centre": nan,
            "sgd_offset": nan,
            "swa_offset": nan,
            "swa_nearer_centre": False,
        }
    level = loss[lowest] + 0.5 * (min(loss[0], loss[-1]) - loss[lowest])
    left, right = lowest, lowest
    while left > 0 and loss[left - 1] <= level:
        left -= 1
    while right < len(t) - 1 and loss[right + 1] <= level:
        right += 1

    def crossing(inside: int, outside: int) -> float:
        if outside < 0 or outside >= len(t):
            return float(t[inside])
        a, b = loss[inside], loss[outside]
        return float(t[inside] + (level - a) / (b - a) * (t[outside] - t[inside]))

    edges = (crossing(left, left - 1), crossing(right, right + 1))
    centre = 0.5 * (edges[0] + edges[1])
    half = max(0.5 * (edges[1] - edges[0]), 1e-12)
    return {
        "level": float(level),
        "edges": edges,
        "centre": centre,
        "sgd_offset": (0.0 - centre) / half,
        "swa_offset": (1.0 - centre) / half,
        "swa_nearer_centre": abs(1.0 - centre) < abs(0.0 - centre),
    }


def optima_width(
    model: nn.Module,
    w_sgd: Any,
    w_swa: Any,
    train: Dataset,
    test: Dataset,
    *,
    t_range: tuple[float, float] = (-1.0, 2.0),
    points: int = 61,
    rays: int = 3,
    ray_length: float = 1.0,
    ray_points: int = 21,
    wd: float = 5e-4,
    seed: int = 0,
    bn: str = "recompute",
    batch_size: int | None = None,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> WidthResult:
    """The train loss (NLL + ``wd``/2·‖w‖²) and test error along the SGD→SWA line at
    ``points`` values of t in ``t_range``, and along ``rays`` random filter-normalised rays
    from each of w_SGD and w_SWA out to ``ray_length`` (``ray_points`` values); see the
    module notes. ``model`` gives the architecture; ``w_sgd``/``w_swa`` are modules or
    state dicts."""
    if points < 3 or not t_range[0] < 0 < 1 < t_range[1]:
        raise ArgumentError(
            f"the line needs points >= 3 and t_range around [0, 1], got {points}, {t_range}"
        )
    if rays < 1 or ray_points < 2 or ray_length <= 0:
        raise ArgumentError(
            f"need rays >= 1, ray_points >= 2, ray_length > 0; got {rays}, {ray_points}, "
            f"{ray_length}"
        )
    options = dict(bn=bn, batch_size=batch_size, device=device, progress=progress)
    line = Line(w_sgd, w_swa)
    t = torch.linspace(t_range[0], t_range[1], points, dtype=torch.float64)
    coords = torch.stack([torch.ones_like(t), t], 1)
    along = _curves(model, line, coords, train, test, wd, options)
    length = float(np.sqrt(_l2(line, torch.tensor([[0.0, 1.0]], dtype=torch.float64))[0]))
    s = torch.linspace(0.0, ray_length, ray_points, dtype=torch.float64)
    ray_results = {}
    for name, w in (("sgd", w_sgd), ("swa", w_swa)):
        subspace = _rays(w, rays, seed)
        c = torch.zeros(rays * ray_points, rays + 1, dtype=torch.float64)
        c[:, 0] = 1.0
        for r in range(rays):
            c[r * ray_points : (r + 1) * ray_points, r + 1] = s
        curves = _curves(model, subspace, c, train, test, wd, options)
        by_ray = {k: v.reshape(rays, ray_points) for k, v in curves.items()}
        ray_results[name] = {"s": s.numpy(), **by_ray}
    return WidthResult(
        t=t.numpy(),
        distance=t.numpy() * length,
        line=along,
        rays=ray_results,
        basin=basin_centre(t.numpy(), along["train_loss"]),
    )
