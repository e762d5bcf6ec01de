"""The snapshots of a curve as it trains, and the plane each one is drawn in.

`fastloss curve fit` writes ``DIR/steps/step-0000000.pt`` (the initial curve), then one
snapshot every few steps; each is a curve checkpoint (`fastloss.curves.save_curve`) whose
metadata has ``step`` and how to build the model. `load_snapshots` checks that they belong
together (one architecture, one kind of curve, the same endpoints) and computes where each
curve lies in its own plane (`curve_plane`), without keeping the weights in memory.

A straight curve (the usual initial one: bends on the segment w1–w2) spans no plane. Its frame
uses the plane of the nearest snapshot that does span one; the segment lies in every plane
through w1 and w2, so the curve is still drawn exactly (on the line from w1 to w2).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fastloss.core import Grid, Plane
from fastloss.curves.checkpoint import load_curve
from fastloss.curves.curve import Curve
from fastloss.curves.plane import StraightCurveError, curve_plane, frame_curves
from fastloss.errors import ArgumentError, NotFoundError
from fastloss.io.hashing import tensor_digest
from fastloss.models import model_spec

SnapshotsLike = str | os.PathLike | Sequence[str | os.PathLike]
# Bends closer to the segment than this (relative to ‖w2 − w1‖) span no plane: the
# threshold of Plane.through, below which float32 rounding would pick the direction.
STRAIGHT_TOLERANCE = 1e-6
_SUFFIXES = (".pt", ".safetensors")


@dataclass
class Snapshot:
    """Where one snapshot's curve lies: ``xy`` ``[S, 2]``, ``bends_xy`` ``[n, 2]`` and
    ``markers`` in the plane of snapshot ``plane_source`` (its own unless ``straight``)."""

    path: str
    step: int
    digest: str
    straight: bool
    xy: np.ndarray
    bends_xy: np.ndarray
    markers: dict[str, tuple[float, float]]
    plane_source: int = -1
    meta: dict[str, Any] = field(default_factory=dict)  # how to build the model
    data: str | None = None  # the data set the curve was fitted on, when recorded

    def plane(self, snapshots: Sequence[Snapshot]) -> Plane:
        """The plane this snapshot's frame shows (reloads the source snapshot's weights)."""
        source = snapshots[self.plane_source]
        return curve_plane(load_curve(source.path)[0])[0]


def snapshot_paths(snapshots: SnapshotsLike) -> list[Path]:
    """Curve files from a fit folder (``DIR/steps/*.pt``; a folder without ``steps/`` is
    searched itself), a file, or a list of both."""
    items = [snapshots] if isinstance(snapshots, str | os.PathLike) else list(snapshots)
    paths: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            folder = p / "steps" if (p / "steps").is_dir() else p
            found = sorted(
                q
                for q in folder.iterdir()
                if q.suffix in _SUFFIXES and q.is_file() and not q.name.startswith(".")
            )
            if not found:
                raise NotFoundError(
                    f"no curve snapshots in {folder} (expected {p}/steps/step-*.pt, written "
                    "by `fastloss curve fit`)"
                )
            paths.extend(found)
        elif p.is_file():
            paths.append(p)
        else:
            raise NotFoundError(f"no such snapshot file or folder: {p}")
    if not paths:
        raise ArgumentError("no snapshots given")
    return paths


def _step(meta: dict[str, Any], path: Path, position: int) -> int:
    if "step" in meta:
        return int(meta["step"])
    found = re.search(r"(\d+)$", path.stem)
    return int(found.group(1)) if found else position


def _digest(curve: Curve) -> str:
    return tensor_digest(sorted(curve.basis.items()), prefix=curve.kind)


def _segment_position(curve: Curve) -> tuple[np.ndarray, float]:
    """(each bend's position along w1→w2 ``[n]``, largest distance of a bend from the line
    through w1 and w2 relative to ‖w2 − w1‖), in float64 without concatenating parameters."""
    n = curve.bends
    uu, du, dd = 0.0, np.zeros(n), np.zeros(n)
    for b in curve.basis.values():
        b = b.double().reshape(curve.J, -1)
        u, d = b[-1] - b[0], b[1:-1] - b[0]
        uu += float(u @ u)
        du += (d @ u).numpy()
        dd += (d * d).sum(1).numpy()
    if uu == 0:
        raise ArgumentError("the curve's endpoints are identical: no plane to draw")
    along = du / uu
    off = np.sqrt(np.clip(dd / uu - along**2, 0, None))
    return along, float(off.max()) if n else 0.0


def _check_same_curve(first: Curve, curve: Curve, path: Path, first_path: Path) -> None:
    if curve.kind != first.kind or curve.names != first.names:
        raise ArgumentError(
            f"{path} is a {curve.kind} curve with points {curve.names}, but {first_path} is a "
            f"{first.kind} curve with {first.names}: the snapshots are of different curves"
        )
    if curve.basis.keys() != first.basis.keys() or any(
        curve.basis[n].shape != b.shape for n, b in first.basis.items()
    ):
        raise ArgumentError(
            f"{path} has other parameters than {first_path}: snapshots of different "
            "architectures cannot share a video"
        )
    for j, end in ((0, "w1"), (-1, "w2")):
        if any(not torch.equal(curve.basis[n][j], b[j]) for n, b in first.basis.items()):
            raise ArgumentError(
                f"{path} has another {end} than {first_path}: the snapshots must be of one "
                "curve, whose endpoints stay fixed while it trains"
            )


def load_snapshots(snapshots: SnapshotsLike, samples: int = 101) -> list[Snapshot]:
    """Load, check and place every snapshot, sorted by step (see the module docstring)."""
    paths = snapshot_paths(snapshots)
    found: list[Snapshot] = []
    first: tuple[Curve, Path, dict[str, Any]] | None = None
    along: list[np.ndarray] = []
    for position, path in enumerate(paths):
        curve, meta = load_curve(path)  # ValueError naming the file for non-curves
        if curve.bends == 0:
            raise ArgumentError(f"{path}: a curve without bends is a line; it spans no plane")
        model_meta = model_spec(meta)
        if first is None:
            first = (curve, path, model_meta)
        else:
            _check_same_curve(first[0], curve, path, first[1])
            if model_meta != first[2]:
                raise ArgumentError(
                    f"{path} describes model {model_meta}, {first[1]} {first[2]}: snapshots "
                    "of different architectures cannot share a video"
                )
        position_along, off = _segment_position(curve)
        straight = off <= STRAIGHT_TOLERANCE
        xy, bends_xy, markers = np.zeros((samples, 2)), np.zeros((curve.bends, 2)), {}
        if not straight:
            try:
                plane, info = curve_plane(curve, samples)
                xy, bends_xy = info["xy"].numpy(), info["bends_xy"].numpy()
                markers = dict(plane.info["markers"])  # type: ignore[call-overload]
            except StraightCurveError:  # collinear after all (Plane.through's own test)
                straight = True
        along.append(position_along)
        found.append(
            Snapshot(
                str(path),
                _step(meta, path, position),
                _digest(curve),
                straight,
                xy,
                bends_xy,
                markers,
                meta=model_meta,
                data=meta.get("data") if isinstance(meta.get("data"), str) else None,
            )
        )
    order = sorted(range(len(found)), key=lambda i: found[i].step)
    found, along = [found[i] for i in order], [along[i] for i in order]
    steps = [s.step for s in found]
    if len(set(steps)) != len(steps):
        repeated = sorted({s for s in steps if steps.count(s) > 1})
        raise ArgumentError(f"several snapshots have the same step {repeated}; give each once")
    _place_straight(found, along, samples, first[0] if first else None)
    return found


def _place_straight(found: list[Snapshot], along: list[np.ndarray], samples: int, curve) -> None:
    """Every snapshot gets its plane source; straight ones are drawn in their neighbour's."""
    planar = [i for i, s in enumerate(found) if not s.straight]
    if not planar:
        raise ArgumentError(
            "every snapshot's curve is straight (its bends lie on the segment w1–w2), so "
            "none spans a plane to draw; give snapshots taken after some training steps"
        )
    t = torch.linspace(0, 1, samples, dtype=torch.float64)
    for i, s in enumerate(found):
        if not s.straight:
            s.plane_source = i
            continue
        # Nearest planar snapshot; on a tie the later one (the curve has trained further).
        s.plane_source = min(planar, key=lambda j: (abs(j - i), -j))
        w2 = np.asarray(found[s.plane_source].markers["w2"], dtype=np.float64)
        control = np.concatenate([[[0.0, 0.0]], along[i][:, None] * w2, [w2]])
        s.bends_xy = control[1:-1]
        s.xy = curve.coords(t).numpy() @ control
        names = [n for n in found[s.plane_source].markers if n not in ("w1", "w2")]
        s.markers = {"w1": (0.0, 0.0), "w2": tuple(w2)}
        s.markers.update({n: tuple(p) for n, p in zip(names, s.bends_xy, strict=True)})


def default_grid(
    snapshots: Sequence[Snapshot],
    x: tuple[float, float, int] | None = None,
    y: tuple[float, float, int] | None = None,
    resolution: int = 41,
) -> Grid:
    """The grid that frames every snapshot's curve and bends (`frame_curves`)."""
    points = np.concatenate([np.concatenate([s.xy, s.bends_xy]) for s in snapshots])
    return frame_curves(points, x, y, resolution)
