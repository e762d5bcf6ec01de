"""Evaluation points: regular grids on a plane or a line, as subspace coordinates."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Grid:
    """Evaluation points: ``Grid(x=(lo, hi, n), y=(lo, hi, n))``, or ``y=None`` for a line."""

    x: tuple[float, float, int]
    y: tuple[float, float, int] | None = None

    def axes(self) -> tuple[Tensor, Tensor | None]:
        xs = torch.linspace(self.x[0], self.x[1], int(self.x[2]), dtype=torch.float64)
        ys = (
            None
            if self.y is None
            else torch.linspace(self.y[0], self.y[1], int(self.y[2]), dtype=torch.float64)
        )
        return xs, ys

    def coords(self) -> Tensor:
        """``[K, 2]`` (α, β) in row-major order over ``[ny, nx]``, or ``[K, 1]`` for a line."""
        xs, ys = self.axes()
        if ys is None:
            return xs[:, None]
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        return torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1)


def affine_coords(points: Tensor) -> Tensor:
    """Plane/line coordinates ``[K, d]`` -> subspace coordinates ``[K, 1 + d]`` (origin first)."""
    return torch.cat([torch.ones(points.shape[0], 1, dtype=points.dtype), points], dim=1)
