"""The plane a curve is drawn in (Garipov et al. 2018, Fig. 2, middle and right), and the
axes that frame curves in it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from fastloss.core import CollinearPointsError, Grid, Plane
from fastloss.core.grid import check_axis
from fastloss.curves.curve import Curve
from fastloss.errors import ArgumentError


class StraightCurveError(ArgumentError):
    """The curve lies on the segment w1–w2 and spans no plane."""


def curve_plane(curve: Curve, samples: int = 101) -> tuple[Plane, dict[str, Any]]:
    """The plane a curve is drawn in, and where the curve lies in it.

    With one bend (or none) the curve lies in the plane through w1, w2 and the bend:
    `Plane.through(w1, w2, θ)`, w1 at (0, 0) and w2 at (1, 0), and the projection is exact.
    With more bends the curve leaves every plane, so this is the plane through w1 spanned
    by the two leading principal directions of the curve's points (``samples`` values of t,
    the best 2D PCA fit), turned so that w2 lies on the +x axis, in units of ‖w2 − w1‖;
    ``info["residual"]`` is the fraction of the points' squared distance from w1 that lies
    outside the plane. ``info`` also has ``t``, ``xy`` (the curve, ``[samples, 2]``) and
    ``bends_xy`` (the control points, ``[n, 2]``).
    """
    t = torch.linspace(0, 1, samples, dtype=torch.float64)
    if curve.bends <= 1:
        if curve.bends == 0:
            raise ArgumentError("a curve without bends is a straight line: use fastloss.Line")
        (third,) = curve.bend_points().values()
        state1 = {**{n: b[0] for n, b in curve.basis.items()}, **curve.reference_buffers}
        w2 = {n: b[-1] for n, b in curve.basis.items()}
        try:
            plane = Plane.through(state1, w2, third)
        except CollinearPointsError:
            raise StraightCurveError(
                "the curve is straight (its bend lies on the segment w1–w2), so no plane "
                "contains it alone: fit it first, or draw it in the plane of a fitted curve"
            ) from None
        markers: dict[str, tuple[float, float]] = plane.info["markers"]  # type: ignore[assignment]
        bend_xy = torch.tensor([markers["w3"]], dtype=torch.float64)
        control = torch.cat([torch.tensor([[0.0, 0.0]]), bend_xy, torch.tensor([[1.0, 0.0]])])
        xy = curve.coords(t) @ control.double()
        plane.info["markers"] = {
            "w1": (0.0, 0.0),
            "w2": (1.0, 0.0),
            "bend": tuple(bend_xy[0].tolist()),
        }
        return plane, {"t": t, "xy": xy, "bends_xy": bend_xy, "residual": 0.0}
    # More bends: principal directions of the curve's points about w1 (Gram trick: [T, T]).
    J = curve.J
    flat = torch.cat([b.reshape(J, -1).double() for b in curve.basis.values()], dim=1)
    points = curve.coords(t) @ flat - flat[0]  # [T, D], relative to w1
    centred = points - points.mean(0)
    gram = centred @ centred.T
    evals, evecs = torch.linalg.eigh(gram)
    if evals[-2] <= 1e-12 * evals[-1].clamp_min(1e-300):
        raise StraightCurveError(
            "the curve is straight (its bends lie on the segment w1–w2), so no plane "
            "contains it alone: fit it first, or draw it in the plane of a fitted curve"
        )
    top = evecs[:, -2:].flip(1) / evals[-2:].flip(0).clamp_min(1e-30).sqrt()
    directions = (centred.T @ top).T  # [2, D], orthonormal
    w2_xy = points[-1] @ directions.T  # turn the plane so that w2 lies on the +x axis
    cos, sin = (w2_xy / w2_xy.norm().clamp_min(1e-30)).tolist()
    directions = torch.stack(
        [cos * directions[0] + sin * directions[1], -sin * directions[0] + cos * directions[1]]
    )
    unit = float((flat[-1] - flat[0]).norm())
    xy = points @ directions.T / unit
    total = float(points.square().sum())
    residual = float((points - (xy * unit) @ directions).square().sum()) / max(total, 1e-30)
    basis, offset = {}, 0
    for n, b in curve.basis.items():
        size = b[0].numel()
        pc = directions[:, offset : offset + size].reshape(2, *b.shape[1:]) * unit
        basis[n] = torch.stack([b[0], pc[0].to(b.dtype), pc[1].to(b.dtype)])
        offset += size
    bend_xy = (flat[1:-1] - flat[0]) @ directions.T / unit
    markers = {"w1": (0.0, 0.0), "w2": tuple(xy[-1].tolist())}
    markers.update({f"bend{i + 1}": tuple(p.tolist()) for i, p in enumerate(bend_xy)})
    plane = Plane(
        basis,
        ["w1", "pc1", "pc2"],
        "curve_pca",
        dict(curve.reference_buffers),
        {"markers": markers, "residual": residual},
    )
    return plane, {"t": t, "xy": xy, "bends_xy": bend_xy, "residual": residual}


def frame_curves(
    points: np.ndarray,
    x: tuple[float, float, int] | None = None,
    y: tuple[float, float, int] | None = None,
    resolution: int = 41,
) -> Grid:
    """The default grid of a curve's plane: it frames ``points`` ``[P, 2]`` (the curves, their
    bends) and w1 at (0, 0) with a margin. x runs at least from -0.3 to 1.3 (w1 at 0, w2 at
    1) with ``resolution`` points; y covers the points with a margin, in cells about as tall
    as wide (the plane's units are equal). Given axes are kept."""
    for name, axis in (("x", x), ("y", y)):
        if axis is not None:
            check_axis(name, axis)
    pts = np.concatenate([np.asarray(points, dtype=np.float64).reshape(-1, 2), [[0.0, 0.0]]])
    if x is None:
        span = float(np.ptp(pts[:, 0]))
        lo, hi = pts[:, 0].min() - 0.2 * span, pts[:, 0].max() + 0.2 * span
        x = (float(min(-0.3, lo)), float(max(1.3, hi)), resolution)
    if y is None:
        lo, hi = float(pts[:, 1].min()), float(pts[:, 1].max())
        margin = max(0.3 * (hi - lo), 0.2 * (x[1] - x[0]) / 1.6)
        lo, hi = lo - margin, hi + margin
        y = (lo, hi, max(11, round(x[2] * (hi - lo) / (x[1] - x[0]))))
    return Grid(x=x, y=y)


def curve_points(info: Mapping[str, Any]) -> np.ndarray:
    """``[P, 2]``: a projected curve and its bends, from `curve_plane`'s ``info``."""
    return np.concatenate(
        [np.asarray(info["xy"]).reshape(-1, 2), np.asarray(info["bends_xy"]).reshape(-1, 2)]
    )
