"""Video frames on disk: one HDF5 file, written frame by frame, that a killed run resumes.

Layout (F frames, S curve samples, n bends, M markers)::

    /xcoordinates        float64 [nx]
    /ycoordinates        float64 [ny]
    /<metric>            float64 [F, ny, nx]  train_loss, train_acc, ...; NaN until done
    /steps               int64   [F]          training step of each frame's snapshot
    /curve_xy            float64 [F, S, 2]    the curve in the frame's plane
    /bends_xy            float64 [F, n, 2]    its control points
    /markers             float64 [F, M, 2]    w1, w2, bends (names: attribute marker_names)
    /plane_source        int64   [F]          the frame whose curve spans the plane shown
    /plane_norms         float64 [F, 3]       norms of the plane's basis (w1, e_x, e_y)
    /seconds             float64 [F]          evaluation time of each frame
    /fastloss/done       uint8   [F]          1 once every array of the frame is final
    attributes of /fastloss  format, layout, metrics, marker_names, settings, attrs (JSON)

``values[f, i, j]`` is frame f at ``(xcoordinates[j], ycoordinates[i])``, the surface layout
of `fastloss.io.surface` with a frame axis in front. Crash safety follows it: the file is
created complete (every dataset allocated) in a temporary file and renamed into place; after
that only raw data is written, a frame's arrays first, then its done flag, each flushed and
fsynced. A frame marked done is never written again.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import h5py
import numpy as np

from fastloss.errors import ArgumentError, FileFormatError, MetricError, OutputExistsError
from fastloss.io.atomic import remove_stale_temporaries, write_errors
from fastloss.io.hdf5 import LAYOUT, check_replaceable, get_json, open_h5, put_json
from fastloss.io.settings import first_difference, json_roundtrip
from fastloss.io.surface import Surface, atomic_h5_create

FORMAT = "fastloss-video-frames/1"
_GROUP = "fastloss"
_STATIC = ("steps", "curve_xy", "bends_xy", "markers", "plane_source")
_PER_FRAME = ("plane_norms", "seconds")  # written with the frame's values


@dataclass
class Frames:
    """The content of a frames file. ``values[m]`` is ``[F, ny, nx]``; ``done`` ``[F]``;
    ``markers[name]`` is ``[F, 2]``; the other per-frame arrays are as in the file."""

    x: np.ndarray
    y: np.ndarray
    values: dict[str, np.ndarray]
    done: np.ndarray
    steps: np.ndarray
    curve_xy: np.ndarray
    bends_xy: np.ndarray
    markers: dict[str, np.ndarray]
    plane_source: np.ndarray
    plane_norms: np.ndarray
    seconds: np.ndarray
    settings: dict[str, Any] = field(default_factory=dict)
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return int(self.done.shape[0])

    @classmethod
    def load(cls, path: str | os.PathLike, metrics: Sequence[str] | None = None) -> Frames:
        """Read a frames file (only ``metrics``, if given: each is ``F·ny·nx`` doubles); safe
        beside a running writer, since done is read before the values."""
        path = os.fspath(path)
        with open_h5(path, "r") as f:
            group = f.get(_GROUP)
            if group is None or group.attrs.get("format") != FORMAT:
                raise FileFormatError(f"{path} is not a fastloss video frames file ({FORMAT})")
            done = np.asarray(group["done"][()]).astype(bool)
            stored = get_json(group, "metrics", [])
            unknown = [m for m in metrics or () if m not in stored]
            if unknown:
                raise MetricError(f"no metrics {unknown} in {path}; it has {stored}")
            metrics = stored if metrics is None else list(metrics)
            names = get_json(group, "marker_names", [])
            marker_xy = np.asarray(f["markers"][()])
            arrays = {k: np.asarray(f[k][()]) for k in (*_STATIC, *_PER_FRAME) if k != "markers"}
            return cls(
                x=np.asarray(f["xcoordinates"][()]),
                y=np.asarray(f["ycoordinates"][()]),
                values={m: np.asarray(f[m][()]) for m in metrics},
                done=done,
                markers={n: marker_xy[:, k] for k, n in enumerate(names)},
                settings=get_json(group, "settings", {}),
                attrs=get_json(group, "attrs", {}),
                **arrays,
            )

    def metric(self, name: str) -> np.ndarray:
        """``[F, ny, nx]`` values of ``name`` (``*_err`` derived from ``*_acc``)."""
        if name in self.values:
            return self.values[name]
        if name.endswith("_err") and name[: -len("_err")] + "_acc" in self.values:
            return 100.0 - self.values[name[: -len("_err")] + "_acc"]
        raise MetricError(f"no metric {name!r} in these frames; they have {sorted(self.values)}")

    def frame_markers(self, frame: int) -> dict[str, tuple[float, float]]:
        """Where w1, w2 and the bends lie in frame ``frame``'s plane."""
        return {n: (float(p[frame][0]), float(p[frame][1])) for n, p in self.markers.items()}

    def surface(self, frame: int, metric: str | None = None) -> Surface:
        """Frame ``frame`` as a `Surface` of ``metric`` (None: every metric), with its w1/w2
        markers (for plotting)."""
        if metric is None:
            values = {name: v[frame] for name, v in self.values.items()}
        else:
            values = {metric: self.metric(metric)[frame]}
        shape = (len(self.y), len(self.x))
        markers = {n: p for n, p in self.frame_markers(frame).items() if n in ("w1", "w2")}
        return Surface(
            self.x,
            self.y,
            values,
            np.full(shape, bool(self.done[frame])),
            attrs={"xlabel": "x (units of ‖w2 − w1‖)", "ylabel": "y"},
            markers=markers,
        )


def _create_datasets(f: h5py.File, shapes: Mapping[str, tuple], static: Mapping[str, Any]):
    """Every dataset contiguous and allocated now (raw writes later never touch metadata)."""
    for name, shape in shapes.items():
        dtype: Any = np.int64 if name in ("steps", "plane_source") else np.float64
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
        if name in static:
            f.create_dataset(name, data=np.asarray(static[name], dtype=dtype), dcpl=dcpl)
        else:
            fill = 0 if name == f"{_GROUP}/done" else np.nan
            dtype = np.uint8 if name == f"{_GROUP}/done" else dtype
            f.create_dataset(name, shape=shape, dtype=dtype, fillvalue=fill, dcpl=dcpl)


class FramesWriter:
    """Creates a frames file, or reopens one made with the same ``settings`` to resume it.

    ``static`` holds the arrays known before evaluation (``steps`` ``[F]``, ``curve_xy``,
    ``bends_xy``, ``markers`` ``[F, M, 2]``, ``plane_source``). A file from other settings
    raises `FileExistsError` naming the first difference, unless ``overwrite=True``.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        x: Sequence[float] | np.ndarray,
        y: Sequence[float] | np.ndarray,
        metrics: Sequence[str],
        static: Mapping[str, Any],
        marker_names: Sequence[str],
        settings: Mapping[str, Any],
        attrs: Mapping[str, Any] | None = None,
        overwrite: bool = False,
    ):
        self.path = os.fspath(path)
        xs, ys = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        F = len(static["steps"])
        settings = {**dict(settings), "metrics": list(metrics)}
        remove_stale_temporaries(self.path)
        self.resumed = False
        if os.path.exists(self.path) and not overwrite:
            self._check_resumable(settings)
            self.resumed = True
        elif os.path.exists(self.path):
            check_replaceable(self.path)
        if not self.resumed:
            shapes = {
                "xcoordinates": xs.shape,
                "ycoordinates": ys.shape,
                **{m: (F, len(ys), len(xs)) for m in metrics},
                **{k: np.shape(static[k]) for k in _STATIC},
                "plane_norms": (F, 3),
                "seconds": (F,),
                f"{_GROUP}/done": (F,),
            }

            def fill(f: h5py.File) -> None:
                group = f.create_group(_GROUP)
                _create_datasets(f, shapes, {"xcoordinates": xs, "ycoordinates": ys, **static})
                group.attrs["format"] = FORMAT
                group.attrs["layout"] = "values[f, i, j]: frame f; " + LAYOUT
                put_json(group, "metrics", list(metrics))
                put_json(group, "marker_names", list(marker_names))
                put_json(group, "settings", settings)
                put_json(group, "attrs", dict(attrs or {}))

            atomic_h5_create(self.path, fill, overwrite)
        self._file = open_h5(self.path, "r+")
        self._fd = self._file.id.get_vfd_handle()
        self._metrics = list(metrics)
        self.done = np.asarray(self._file[_GROUP]["done"][()]).astype(bool)

    def _check_resumable(self, settings: Mapping[str, Any]) -> None:
        with open_h5(self.path, "r") as f:
            group = f.get(_GROUP)
            if group is None or group.attrs.get("format") != FORMAT:
                raise OutputExistsError(
                    f"{self.path} exists and is not a video frames file; pass overwrite=True "
                    "to replace it, or choose another path"
                )
            stored = get_json(group, "settings", {})
        diff = first_difference(stored, json_roundtrip(settings))
        if diff is not None:
            raise OutputExistsError(
                f"{self.path} holds frames from other settings; first difference: "
                f"{diff.describe()}. Its finished frames are kept: pass overwrite=True to start "
                "afresh, or choose another frames path."
            )

    def pending(self) -> np.ndarray:
        """Indices of the frames not done yet, ascending."""
        return np.flatnonzero(~self.done)

    def write(self, frame: int, values: Mapping[str, np.ndarray], **per_frame: Any) -> None:
        """Store frame ``frame``'s ``values[m]`` ``[ny, nx]`` (and ``plane_norms``,
        ``seconds``), then mark it done."""
        if self.done[frame]:
            raise ArgumentError(f"frame {frame} of {self.path} is done; finished frames are kept")
        missing = set(self._metrics) - set(values)
        if missing:
            raise ValueError(f"frame {frame}: missing metrics {sorted(missing)}")
        with write_errors(self.path, "; the frames finished so far are kept, and a rerun resumes"):
            for m in self._metrics:
                self._file[m][frame] = np.asarray(values[m], dtype=np.float64)
            for k, v in per_frame.items():
                if k not in _PER_FRAME:
                    raise ValueError(f"unknown per-frame array {k!r}; known: {_PER_FRAME}")
                self._file[k][frame] = v
            self._sync()
            self._file[_GROUP]["done"][frame] = 1
            self._sync()
        self.done[frame] = True

    def _sync(self) -> None:
        self._file.flush()
        os.fsync(self._fd)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> FramesWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
