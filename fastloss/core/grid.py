"""Evaluation points: regular grids on a plane or a line, as subspace coordinates."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from fastloss.errors import ArgumentError


def check_axis(name: str, axis: tuple[float, float, int]) -> None:
    """An axis ``(lo, hi, n)`` has finite ends and ``n >= 1`` points."""
    lo, hi, n = axis
    if not all(math.isfinite(v) for v in (lo, hi)):
        raise ArgumentError(
            f"the {name} axis runs from {lo} to {hi}; give finite ends (lo:hi:n, e.g. -1:1:21)"
        )
    if int(n) != n or n < 1:
        raise ArgumentError(
            f"the {name} axis has {n} points; give a whole number n >= 1 (lo:hi:n, e.g. -1:1:21)"
        )


@dataclass(frozen=True)
class Grid:
    """Evaluation points: ``Grid(x=(lo, hi, n), y=(lo, hi, n))``, or ``y=None`` for a line."""

    x: tuple[float, float, int]
    y: tuple[float, float, int] | None = None

    def __post_init__(self) -> None:
        check_axis("x", self.x)
        if self.y is not None:
            check_axis("y", self.y)

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


class GridPoints:
    """A grid's points as subspace coordinates ``[K, 1 + d]`` (origin first, row-major over
    ``[ny, nx]``, as ``affine_coords(grid.coords())``), made a chunk at a time: ``points[idx]``
    is ``[len(idx), 1 + d]`` float64, so a million-point grid is never held whole."""

    dtype = torch.float64

    def __init__(self, grid: Grid):
        self.xs, self.ys = grid.axes()
        rows = 1 if self.ys is None else len(self.ys)
        self.shape = (len(self.xs) * rows, 2 if self.ys is None else 3)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, idx: Tensor | slice) -> Tensor:
        idx = (
            torch.arange(*idx.indices(len(self)))
            if isinstance(idx, slice)
            else torch.as_tensor(idx)
        )
        idx = idx.reshape(-1)
        columns = [torch.ones(len(idx), dtype=self.dtype), self.xs[idx % len(self.xs)]]
        if self.ys is not None:
            columns.append(self.ys[idx // len(self.xs)])
        return torch.stack(columns, dim=1)


def affine_coords(points: Tensor) -> Tensor:
    """Plane/line coordinates ``[K, d]`` -> subspace coordinates ``[K, 1 + d]`` (origin first)."""
    return torch.cat([torch.ones(points.shape[0], 1, dtype=points.dtype), points], dim=1)
