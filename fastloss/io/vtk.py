"""`export_vtk`: a surface as a VTK mesh for ParaView (the ``fastloss export`` command), the
counterpart of loss-landscape's ``h52vtp.py``.

The mesh is the grid itself: one point per grid point at ``(x, y, z)`` with z the exported
metric (optionally clipped at ``zmax``, then log10), so ParaView shows the surface as it is
opened; quads between neighbouring points (line segments for a 1D surface, at y = 0); every
stored metric as point data, beside ``z``. Points whose height is not a number (not
computed yet, or infinite) are left out with the cells that touch them.

Two maintained writers, one per kind of mesh: a structured grid (.vts, the grid as it is:
every point, z included, so every point must have a value) is written by pyevtk; an
unstructured grid (.vtu, zlib-compressed binary XML, or a legacy .vtk file), which can leave
out the points not computed yet, by meshio (meshio 5 has no structured-grid writer). Neither
writes polydata (.vtp, what ``h52vtp.py`` writes by hand); ParaView opens all three the same
way, as a surface.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np

from fastloss.errors import ArgumentError, DependencyError
from fastloss.io.atomic import atomic_output, check_output_path
from fastloss.io.foreign import imported_note
from fastloss.io.frames import Frames
from fastloss.io.kinds import result_kind
from fastloss.io.surface import Surface

__all__ = ["FORMATS", "STRUCTURED", "export_vtk", "heights", "surface_mesh"]

FORMATS = {".vtu": "vtu", ".vtk": "vtk"}  # suffix -> meshio's file format
STRUCTURED = ".vts"  # pyevtk's structured grid


def export_vtk(
    path: str | os.PathLike,
    out: str | os.PathLike,
    metric: str = "train_loss",
    log: bool = False,
    zmax: float | None = None,
    frame: int | None = None,
    on_note: Callable[[str], None] | None = None,
) -> str:
    """Write the surface in ``path`` as a VTK mesh ``out`` (.vts: XML structured grid, every
    point; .vtu: XML unstructured grid; .vtk: legacy) whose points' z is ``metric`` (values
    above ``zmax`` clipped to it, then ``log``: log10, for positive values), with every
    metric as point data (`surface_mesh`, `heights`).

    ``path`` is any surface `Surface.load` reads (fastloss's, loss-landscape's,
    dnn-mode-connectivity's plane.npz), or a video's frames file with ``frame`` (the index
    of the frame; each frame lies in its own plane, so they are exported one at a time).
    ``on_note`` is called with what was converted from another tool's format and with the
    points left out. Like ``fastloss plot``'s figures, the output is a derived file: an
    existing one is replaced (atomically). Returns the path written."""
    out = os.fspath(out)
    suffix = os.path.splitext(out)[1].lower()
    if suffix not in (*FORMATS, STRUCTURED):
        raise ArgumentError(
            f"{out}: a VTK output ends in .vts (XML structured grid), .vtu (XML unstructured "
            "grid, which leaves out points not computed yet) or .vtk (legacy); ParaView opens "
            "each as a surface (no maintained writer of .vtp polydata is used)"
        )
    if zmax is not None and not np.isfinite(zmax):
        raise ArgumentError(f"zmax={zmax} must be a finite number")
    check_output_path(out, overwrite=True)
    surface = _read_surface(os.fspath(path), frame, on_note)
    if suffix == STRUCTURED:
        _write_structured(out, surface, metric, log, zmax)
        return out
    meshio = _meshio()
    mesh = surface_mesh(surface, metric=metric, log=log, zmax=zmax)
    left_out = surface.x.size * (1 if surface.y is None else surface.y.size) - len(mesh.points)
    if left_out and on_note is not None:
        on_note(
            f"{left_out} points where {metric} is not a finite number (not computed yet) left "
            "out, with their cells"
        )
    with atomic_output(out, overwrite=True, keep_suffix=True) as tmp:
        meshio.write(tmp, mesh, file_format=FORMATS[suffix])
    return out


def surface_mesh(
    surface: Surface, metric: str = "train_loss", log: bool = False, zmax: float | None = None
) -> Any:
    """The `meshio.Mesh` `export_vtk` writes: points ``[P, 3]`` at ``(x, y, z)`` in the
    surface's row-major order (row = y) less those whose z is NaN, ``quad`` cells (``line``
    for 1D) counter-clockwise in the plane, and point data: every metric and ``z``."""
    meshio = _meshio()
    z = heights(surface, metric, log, zmax)
    keep = np.isfinite(z).reshape(-1)
    if not keep.any():
        raise ArgumentError(f"{metric} has no computed value in this surface: nothing to export")
    if surface.y is None:
        X, Y = surface.x, np.zeros_like(surface.x)
        first = np.arange(len(surface.x) - 1)
        cells = np.stack([first, first + 1], axis=1)
        cell_type = "line"
    else:
        X, Y = np.meshgrid(surface.x, surface.y)  # [ny, nx]: the values' layout
        ny, nx = z.shape
        corner = (np.arange(ny - 1)[:, None] * nx + np.arange(nx - 1)[None, :]).reshape(-1)
        cells = np.stack([corner, corner + 1, corner + nx + 1, corner + nx], axis=1)
        cell_type = "quad"
    cells = cells[keep[cells].all(axis=1)]
    if len(cells) == 0:
        raise ArgumentError(
            f"{metric} has no two neighbouring computed points (a {cell_type} needs them): "
            "nothing to draw"
        )
    new_index = np.cumsum(keep) - 1  # old point index -> index among the kept points
    points = np.stack([X.reshape(-1), Y.reshape(-1), z.reshape(-1)], axis=1)[keep]
    point_data: dict[str, np.ndarray] = {
        name: np.asarray(v, dtype=np.float64).reshape(-1)[keep]
        for name, v in surface.values.items()
    }
    point_data["z"] = points[:, 2].copy()
    return meshio.Mesh(points, [(cell_type, new_index[cells])], point_data=point_data)


def heights(surface: Surface, metric: str, log: bool, zmax: float | None) -> np.ndarray:
    """The points' z: ``metric``'s values (the surface's layout), clipped at ``zmax``, then
    log10 if ``log``; NaN where not computed."""
    z = np.array(surface.metric(metric), dtype=np.float64)  # MetricError lists the metrics
    if zmax is not None:
        z = np.minimum(z, zmax)  # NaN stays NaN
    if log:
        finite = z[np.isfinite(z)]
        if finite.size and finite.min() <= 0:
            raise ArgumentError(
                f"log=True takes log10 of {metric}, which reaches {finite.min():.4g}: "
                "export it without log=True"
            )
        z = np.log10(z)
    return z


def _write_structured(
    out: str, surface: Surface, metric: str, log: bool, zmax: float | None
) -> None:
    """``out`` (.vts) by pyevtk: the grid's nx × ny × 1 points at (x, y, z), every metric and
    ``z`` as point data (x varies fastest, as VTK's structured grids store points)."""
    z = heights(surface, metric, log, zmax)
    missing = int((~np.isfinite(z)).sum())
    if missing:
        raise ArgumentError(
            f"{missing} points of {metric} are not computed (or infinite), and a structured "
            "grid (.vts) has every point: export to .vtu, which leaves them out"
        )
    y = np.zeros(1) if surface.y is None else surface.y
    X, Y = np.meshgrid(surface.x, y)  # [ny, nx], the values' layout

    def grid(a: np.ndarray) -> np.ndarray:  # [ny, nx] -> [nx, ny, 1], x fastest in memory
        return np.asfortranarray(np.asarray(a, dtype=np.float64).reshape(X.shape).T[:, :, None])

    data = {name: grid(v) for name, v in surface.values.items()}
    data["z"] = grid(z)
    hl = _pyevtk()
    with atomic_output(out, overwrite=True, keep_suffix=True) as tmp:
        hl.gridToVTK(tmp[: -len(STRUCTURED)], grid(X), grid(Y), grid(z), pointData=data)


def _read_surface(path: str, frame: int | None, on_note: Callable[[str], None] | None) -> Surface:
    kind = result_kind(path)
    if kind == "frames":
        return _frame_surface(path, frame)
    if frame is not None:
        raise ArgumentError(
            f"frame={frame} picks a frame of a video's frames file; {path} is not one"
        )
    if kind != "surface":
        what = {"curve": "a curve evaluation", "ensemble": "an ensemble evaluation"}[kind]
        raise ArgumentError(f"{path} holds {what}, not a surface: nothing to export as a mesh")
    surface = Surface.load(path)
    note = imported_note(surface.attrs)
    if note is not None and on_note is not None:
        on_note(note)
    return surface


def _frame_surface(path: str, frame: int | None) -> Surface:
    frames = Frames.load(path)
    if frame is None or not 0 <= frame < frames.count:
        raise ArgumentError(
            f"{path} holds a video's {frames.count} frames, each in its own plane: pass "
            f"frame=N with N from 0 to {frames.count - 1}"
            + ("" if frame is None else f" (got frame={frame})")
        )
    if not frames.done[frame]:
        raise ArgumentError(
            f"frame {frame} of {path} is not evaluated yet: rerun the video command, or pick "
            f"one of the frames done ({int(frames.done.sum())} of {frames.count})"
        )
    return frames.surface(frame)


def _pyevtk() -> Any:
    try:
        from pyevtk import hl
    except ImportError as e:
        raise DependencyError(
            f"a .vts export needs pyevtk ({e}): pip install pyevtk, a dependency of fastloss"
        ) from None
    return hl


def _meshio() -> Any:
    try:
        import meshio
    except ImportError as e:
        raise DependencyError(
            f"VTK export needs meshio ({e}): pip install meshio, a dependency of fastloss"
        ) from None
    return meshio
