"""Surfaces on disk: HDF5 files that loss-landscape's plotting scripts read, written so that a
run killed at any moment (SIGKILL included) leaves a file that reopens and resumes.

File layout (2D; a 1D surface has no ``ycoordinates`` and ``[nx]`` arrays)::

    /xcoordinates        float64 [nx]
    /ycoordinates        float64 [ny]
    /<metric>            float64 [ny, nx]   train_loss, train_acc (percent), test_loss, ...;
                                            NaN where not computed yet
    /fastloss/done       uint8   [ny, nx]   1 where every metric of the point is final
    /fastloss/live       uint8   [2, 65536] two checksummed slots with the latest attrs/markers
    attributes of /          format, format_version, fastloss_version, layout, and the
                             scalar entries of ``attrs``
    attributes of /fastloss  layout, metrics, settings, attrs, markers (JSON strings)

``values[i, j]`` is the point ``(xcoordinates[j], ycoordinates[i])`` (row = y index), the layout
loss-landscape's ``plot_2D.py`` draws correctly.

Crash safety. HDF5 is not journaled: a process killed while HDF5 rewrites metadata (object
headers, attributes, the superblock) can leave a file that no longer opens. So every file is
created complete in a temporary file and renamed into place, and after that a resumable
writer changes only raw data: the value arrays and ``done`` are contiguous datasets allocated
at creation, so writing them never touches metadata. Values are written and flushed before
``done`` marks them, so a point marked done always has its final values. ``update_attrs``
goes to whichever of the two ``live`` slots is older, with a checksum, so a torn write leaves
the previous slot valid; ``close`` folds the slots into attributes by an atomic rewrite. The
file keeps the oldest superblock version (h5py's default): ``libver="latest"`` would add
file-consistency flags that a killed writer leaves set, and the file would then refuse to
reopen for writing until cleared with ``h5clear``.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import h5py
import numpy as np

from fastloss.errors import (
    ArgumentError,
    FileFormatError,
    MetricError,
    OutputExistsError,
    SurfaceFileError,
)
from fastloss.io.atomic import atomic_output, remove_stale_temporaries, write_errors
from fastloss.io.hdf5 import (
    LAYOUT,
    LAYOUT_1D,
    check_replaceable,
    get_json,
    open_h5,
    put_json,
)
from fastloss.io.settings import canonical_json, first_difference, json_roundtrip, jsonable
from fastloss.version import __version__

__all__ = ["Surface", "SurfaceWriter", "atomic_h5_create"]

FORMAT = "fastloss-surface"
FORMAT_VERSION = 1

_GROUP = "fastloss"
_RESERVED = {"xcoordinates", "ycoordinates", _GROUP}
_SLOT_BYTES = 65536
_SLOT_HEADER = struct.Struct("<4sQII")  # magic, generation, payload length, crc32
_SLOT_MAGIC = b"FLv1"
_RESUMES = "; the points finished so far are kept, and the same command resumes"


# --------------------------------------------------------------------------- Surface


def _coordinates(a: Any, name: str) -> np.ndarray:
    out = np.array(a, dtype=np.float64).reshape(-1)
    if out.size == 0 or not np.all(np.isfinite(out)):
        raise ArgumentError(f"{name} must be a non-empty 1D array of finite numbers")
    return out


def _point(p: Any) -> tuple[float, float]:
    """``(x, y)`` from a pair, or ``(t, 0)`` from a number (1D)."""
    a = np.asarray(p, dtype=np.float64).reshape(-1)
    if a.size not in (1, 2):
        raise ArgumentError(f"a marker is a number t (1D) or a pair (x, y), got {p!r}")
    return float(a[0]), float(a[1]) if a.size == 2 else 0.0


def _check_metric_name(name: str) -> None:
    if not isinstance(name, str) or not name or "/" in name or name in _RESERVED:
        raise ArgumentError(
            f"invalid metric name {name!r}: must be a non-empty string without '/', "
            f"and not one of {sorted(_RESERVED)}"
        )


@dataclass
class Surface:
    """Values of some metrics on a 1D or 2D grid of points.

    ``values[name]`` is ``[ny, nx]`` (``[nx]`` for 1D, ``y is None``) with ``values[i, j]`` at
    ``(x[j], y[i])``; NaN where not computed yet. ``done`` (bool, same shape) marks finished
    points; it defaults to "every metric is finite". ``markers`` are named points to draw,
    e.g. ``{"w1": (0, 0), "w2": (1, 0)}`` (``(t, 0)`` in 1D). ``attrs`` is JSON metadata
    (basis, data, model, versions, timings); ``settings`` are the run settings a resume
    must match.
    """

    x: np.ndarray
    y: np.ndarray | None
    values: dict[str, np.ndarray]
    done: np.ndarray | None = None
    attrs: dict[str, Any] = field(default_factory=dict)
    markers: dict[str, tuple[float, float]] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.x = _coordinates(self.x, "x")
        self.y = None if self.y is None else _coordinates(self.y, "y")
        shape = self.shape
        values = {}
        for name, v in self.values.items():
            _check_metric_name(name)
            arr = np.array(v, dtype=np.float64)
            if arr.shape != shape:
                raise ArgumentError(
                    f"values[{name!r}] has shape {arr.shape}, expected {shape} "
                    f"({'[ny, nx]' if self.y is not None else '[nx]'}, row = y index)"
                )
            values[name] = arr
        self.values = values
        if self.done is None:
            done = np.ones(shape, dtype=bool)
            for arr in values.values():
                done &= np.isfinite(arr)
            self.done = done
        else:
            self.done = np.array(self.done, dtype=bool)
            if self.done.shape != shape:
                raise ArgumentError(f"done has shape {self.done.shape}, expected {shape}")
        self.attrs = jsonable(dict(self.attrs))
        self.settings = jsonable(dict(self.settings))
        self.markers = {str(k): _point(p) for k, p in self.markers.items()}

    @property
    def shape(self) -> tuple[int, ...]:
        """``(ny, nx)``, or ``(nx,)`` for a 1D surface."""
        return (len(self.x),) if self.y is None else (len(self.y), len(self.x))

    @property
    def ndim(self) -> int:
        return 1 if self.y is None else 2

    @property
    def is_complete(self) -> bool:
        assert self.done is not None
        return bool(self.done.all())

    @property
    def metrics(self) -> list[str]:
        return list(self.values)

    def metric(self, name: str) -> np.ndarray:
        """The values of ``name``; ``train_err``/``test_err`` (percent) are derived from the
        matching accuracy when not stored."""
        if name in self.values:
            return self.values[name]
        if name.endswith("_err") and name[: -len("_err")] + "_acc" in self.values:
            return 100.0 - self.values[name[: -len("_err")] + "_acc"]
        raise MetricError(f"no metric {name!r} in this surface; it has {sorted(self.values)}")

    @classmethod
    def load(cls, path: str | os.PathLike) -> Surface:
        """Read a surface written by fastloss, or another tool's (`fastloss.io.foreign`:
        loss-landscape's surface files, dnn-mode-connectivity's plane.npz; ``done`` is then
        "all finite" and ``attrs["imported_from"]`` says what was converted). While a writer
        has the file open, this returns a consistent snapshot: points marked done have final
        values."""
        path = os.fspath(path)
        from fastloss.io import foreign  # it builds Surfaces: imported here, not at the top

        if foreign.is_npz(path):
            return foreign.plane_npz_surface(path)
        surface, _ = _read(path)
        return surface

    def save(self, path: str | os.PathLike, overwrite: bool = False) -> None:
        """Write atomically (temporary file in the same folder, then rename). An existing file
        is replaced only with ``overwrite=True``."""
        _atomic_create(os.fspath(path), self, overwrite=overwrite)


# --------------------------------------------------------------------------- reading


def _parse_slot(raw: np.ndarray) -> tuple[int, dict[str, Any]] | None:
    data = raw.tobytes()
    magic, gen, length, crc = _SLOT_HEADER.unpack_from(data)
    if magic != _SLOT_MAGIC or length > _SLOT_BYTES - _SLOT_HEADER.size:
        return None
    payload = data[_SLOT_HEADER.size : _SLOT_HEADER.size + length]
    if zlib.crc32(data[: _SLOT_HEADER.size - 4] + payload) != crc:
        return None  # torn write: the other slot holds the previous state
    try:
        return gen, json.loads(payload)
    except ValueError:
        return None


def _read_live(group: h5py.Group) -> tuple[int, dict[str, Any] | None]:
    if "live" not in group:
        return 0, None
    live = group["live"][()]
    best: tuple[int, dict[str, Any]] | None = None
    for row in live:
        slot = _parse_slot(row)
        if slot is not None and (best is None or slot[0] > best[0]):
            best = slot
    return (0, None) if best is None else best


def _read(path: str) -> tuple[Surface, int]:
    """The surface and the generation of its live attrs slot."""
    with open_h5(path, "r") as f:
        try:
            return _read_open(f)
        except (SurfaceFileError, FileFormatError):
            raise
        except (OSError, KeyError, ValueError, TypeError, RuntimeError, IndexError) as e:
            raise SurfaceFileError(
                f"cannot read {path} as a surface ({type(e).__name__}: {e}); the file may be "
                "corrupt or not a surface file. It was left untouched."
            ) from e


def _read_open(f: h5py.File) -> tuple[Surface, int]:
    name = f.filename
    from fastloss.io import foreign  # it builds Surfaces: imported here, not at the top

    if "xcoordinates" not in f:
        raise FileFormatError(
            f"{name} is not a surface file (no 'xcoordinates' dataset); {foreign.SURFACE_LAYOUTS}"
        )
    if foreign.is_loss_landscape(f):
        return foreign.loss_landscape_surface(f), 0
    if _GROUP not in f:
        raise SurfaceFileError(f"{name} has no '{_GROUP}' group: damaged, or not a surface file")
    x = np.asarray(f["xcoordinates"][()], dtype=np.float64)
    y = np.asarray(f["ycoordinates"][()], dtype=np.float64) if "ycoordinates" in f else None
    group = f[_GROUP]
    layout = group.attrs.get("layout", LAYOUT if y is not None else LAYOUT_1D)
    if isinstance(layout, bytes):
        layout = layout.decode()
    expected = LAYOUT if y is not None else LAYOUT_1D
    if layout != expected:
        raise SurfaceFileError(f"{name} has layout {layout!r}; this fastloss reads {expected!r}")
    metrics = get_json(group, "metrics", None)
    # done before values: a point marked done had its values written before the mark.
    done = np.asarray(group["done"][()]).astype(bool)
    if metrics is None:
        metrics = [k for k in f if k not in _RESERVED and isinstance(f[k], h5py.Dataset)]
    values = {m: np.asarray(f[m][()], dtype=np.float64) for m in metrics}
    attrs = get_json(group, "attrs", {})
    markers = get_json(group, "markers", {})
    gen, live = _read_live(group)
    if live is not None:
        attrs, markers = live["attrs"], live["markers"]
    settings = get_json(group, "settings", {})
    return Surface(x, y, values, done, attrs, markers, settings), gen


# --------------------------------------------------------------------------- writing


def _write_layout(f: h5py.File, s: Surface) -> None:
    """The whole file, into a fresh h5py.File. Datasets are contiguous (no chunking, no
    compression) and written at creation, so their storage is allocated once and later
    writes touch raw data only."""
    f.create_dataset("xcoordinates", data=s.x)
    if s.y is not None:
        f.create_dataset("ycoordinates", data=s.y)
    for m, v in s.values.items():
        f.create_dataset(m, data=v)
    layout = LAYOUT if s.y is not None else LAYOUT_1D
    f.attrs["format"] = FORMAT
    f.attrs["format_version"] = FORMAT_VERSION
    f.attrs["fastloss_version"] = __version__
    f.attrs["layout"] = layout
    for k, v in s.attrs.items():
        short = not isinstance(v, str) or len(v.encode()) <= 1024
        if k not in f.attrs and isinstance(v, (str, bool, int, float)) and short:
            f.attrs[k] = v
    g = f.create_group(_GROUP)
    assert s.done is not None
    g.create_dataset("done", data=s.done.astype(np.uint8))
    g.create_dataset("live", data=np.zeros((2, _SLOT_BYTES), dtype=np.uint8))
    g.attrs["layout"] = layout
    put_json(g, "metrics", list(s.values))
    put_json(g, "settings", s.settings)
    put_json(g, "attrs", s.attrs)
    put_json(g, "markers", {k: list(v) for k, v in s.markers.items()})


def atomic_h5_create(path: str, fill: Callable[[h5py.File], None], overwrite: bool) -> None:
    """Create the HDF5 file ``path`` whole: ``fill`` writes it in a temporary file that
    `atomic_output` moves into place."""
    with atomic_output(path, overwrite) as tmp, h5py.File(tmp, "x") as f:
        fill(f)


def _atomic_create(path: str, surface: Surface, overwrite: bool) -> None:
    atomic_h5_create(path, lambda f: _write_layout(f, surface), overwrite)


class SurfaceWriter:
    """Incremental, resumable, crash-safe writes of one surface.

    ``SurfaceWriter(path, x, y, metrics, settings, attrs, markers)`` creates ``path`` with
    every value NaN and nothing done, or reopens it to resume when its stored ``settings``
    (and grid and metrics) equal these. An existing file from other settings raises
    `FileExistsError` naming the first difference, unless ``overwrite=True``; an unreadable
    one raises `SurfaceFileError` and is left alone. Each `write` is on disk when it returns
    (``durable=True`` also fsyncs, for power loss); a process killed at any moment loses at
    most the write in flight::

        with SurfaceWriter("plane.h5", x, y, ["train_loss", "train_acc"], settings) as w:
            for chunk in np.array_split(w.pending(), 100):
                w.write(chunk, evaluate(chunk))
    """

    _attrs: dict[str, Any]
    _markers: dict[str, tuple[float, float]]

    def __init__(
        self,
        path: str | os.PathLike,
        x: Any,
        y: Any | None,
        metrics: Sequence[str],
        settings: Mapping[str, Any],
        attrs: Mapping[str, Any] | None = None,
        markers: Mapping[str, Any] | None = None,
        overwrite: bool = False,
        durable: bool = True,
    ) -> None:
        self.path = os.fspath(path)
        self.durable = durable
        metrics = list(metrics)
        for m in metrics:
            _check_metric_name(m)
        if len(set(metrics)) != len(metrics) or not metrics:
            raise ArgumentError(
                f"metrics must be a non-empty list of distinct names, got {metrics}"
            )
        xs = _coordinates(x, "x")
        ys = None if y is None else _coordinates(y, "y")
        shape = (len(xs),) if ys is None else (len(ys), len(xs))
        fresh = Surface(
            xs,
            ys,
            {m: np.full(shape, np.nan) for m in metrics},
            np.zeros(shape, dtype=bool),
            attrs=dict(attrs or {}),
            markers=cast(dict, dict(markers or {})),
            settings=json_roundtrip(settings),
        )
        self.resumed = False
        remove_stale_temporaries(self.path)
        if os.path.exists(self.path):
            if not overwrite:
                stored, _ = _read(self.path)
                self._check_resumable(stored, fresh)
                self.resumed = True
            else:
                check_replaceable(self.path)
        if not self.resumed:
            _atomic_create(self.path, fresh, overwrite=overwrite)
        self._file = open_h5(self.path, "r+")
        try:
            self._load_state()
            if self.resumed and (attrs or markers):
                merged = dict(self._attrs)
                merged.update(fresh.attrs)
                new_markers = fresh.markers or self._markers
                if canonical_json(merged) != canonical_json(self._attrs) or canonical_json(
                    new_markers
                ) != canonical_json(self._markers):
                    self._attrs, self._markers = merged, new_markers
                    self._write_live()
        except BaseException:
            self._file.close()
            raise

    # ----------------------------------------------------------------- state

    def _load_state(self) -> None:
        f = self._file
        surface, self._live_gen = _read_open(f)
        self._surface = surface
        self._attrs = surface.attrs
        self._markers = surface.markers
        self._metrics = list(surface.values)
        self._dsets = {m: f[m] for m in self._metrics}
        self._done_dset = f[_GROUP]["done"]
        self._live_dset = f[_GROUP]["live"]
        self._fd = f.id.get_vfd_handle() if self.durable else None

    def _check_resumable(self, stored: Surface, fresh: Surface) -> None:
        hint = "pass overwrite=True to replace it, or choose another output path"
        found = first_difference(stored.settings, fresh.settings)
        diff = None if found is None else found.describe()
        if diff is None and stored.y is None and fresh.y is not None:
            diff = "the grid (file holds a 1D surface, this run is 2D)"
        if diff is None and stored.y is not None and fresh.y is None:
            diff = "the grid (file holds a 2D surface, this run is 1D)"
        for name, a, b in (
            ("xcoordinates", stored.x, fresh.x),
            ("ycoordinates", stored.y, fresh.y),
        ):
            if diff is None and a is not None and b is not None and not np.array_equal(a, b):
                diff = (
                    f"'{name}' (file has {len(a)} points in [{a[0]:g}, {a[-1]:g}], "
                    f"this run has {len(b)} in [{b[0]:g}, {b[-1]:g}])"
                )
        if diff is None and list(stored.values) != list(fresh.values):
            diff = (
                f"the metrics (file has {list(stored.values)}, this run has {list(fresh.values)})"
            )
        if diff is not None:
            raise OutputExistsError(
                f"{self.path} holds a surface from other settings; first difference: {diff}. "
                f"Its finished results are kept: {hint}."
            )

    # ----------------------------------------------------------------- API

    @property
    def shape(self) -> tuple[int, ...]:
        return self._surface.shape

    def pending(self) -> np.ndarray:
        """Flat indices (row-major over ``[ny, nx]``) of the points not done, ascending."""
        assert self._surface.done is not None
        return np.flatnonzero(~self._surface.done.reshape(-1))

    def write(self, flat_indices: Iterable[int] | np.ndarray, values: Mapping[str, Any]) -> None:
        """Store every metric's values at ``flat_indices`` and mark those points done.

        ``values[m]`` has one number per index. Values go to disk first, then the done mark,
        each followed by a flush (and fsync when durable).
        """
        self._requireopen_h5()
        idx = np.asarray(flat_indices).reshape(-1)
        if idx.size == 0:
            return
        if not np.issubdtype(idx.dtype, np.integer):
            raise TypeError(f"flat_indices must be integers, got {idx.dtype}")
        idx = idx.astype(np.int64)
        n_points = int(np.prod(self.shape))
        if idx.min() < 0 or idx.max() >= n_points:
            raise IndexError(
                f"flat indices must be in [0, {n_points}), got [{idx.min()}, {idx.max()}]"
            )
        if np.unique(idx).size != idx.size:
            raise ValueError("flat_indices contains duplicates")
        missing = [m for m in self._metrics if m not in values]
        extra = [m for m in values if m not in self._metrics]
        if missing or extra:
            raise ArgumentError(
                f"write needs exactly the metrics {self._metrics}: missing {missing}, "
                f"unknown {extra}"
            )
        arrays = {}
        for m in self._metrics:
            v = np.asarray(values[m], dtype=np.float64).reshape(-1)
            if v.size != idx.size:
                raise ValueError(f"values[{m!r}] has {v.size} entries for {idx.size} indices")
            arrays[m] = v
        order = np.argsort(idx)  # HDF5 point selections are fastest in file order
        idx = idx[order]
        coords = np.stack(np.unravel_index(idx, self.shape), axis=1).astype(np.uint64)
        with write_errors(self.path, _RESUMES):
            for m in self._metrics:
                _write_points(self._dsets[m], coords, arrays[m][order])
            self._sync()
            _write_points(self._done_dset, coords, np.ones(idx.size, dtype=np.uint8))
            self._sync()
        assert self._surface.done is not None
        for m in self._metrics:
            self._surface.values[m].reshape(-1)[idx] = arrays[m][order]
        self._surface.done.reshape(-1)[idx] = True

    def update_attrs(self, **kv: Any) -> None:
        """Merge ``kv`` into the surface's attrs (e.g. timings), durably."""
        self._requireopen_h5()
        self._attrs = {**self._attrs, **jsonable(kv)}
        self._write_live()

    def surface(self) -> Surface:
        """A copy of the current state."""
        s = self._surface
        assert s.done is not None
        return Surface(
            s.x.copy(),
            None if s.y is None else s.y.copy(),
            {m: v.copy() for m, v in s.values.items()},
            s.done.copy(),
            json_roundtrip(self._attrs),
            dict(self._markers),
            json_roundtrip(s.settings),
        )

    def close(self) -> None:
        """Close; if attrs or markers changed, fold them into the file's attributes (an
        atomic rewrite, so plain HDF5 readers see them too)."""
        if self._file is None:
            return
        folded = self._live_gen > 0
        snapshot = self.surface() if folded else None
        self._file.close()
        self._file = None
        if snapshot is not None:
            _atomic_create(self.path, snapshot, overwrite=True)

    def __enter__(self) -> SurfaceWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        f = getattr(self, "_file", None)
        if f is not None:
            # No fold here: the live slots already hold the attrs durably.
            with contextlib.suppress(Exception):
                f.close()

    # ----------------------------------------------------------------- internals

    def _requireopen_h5(self) -> None:
        if self._file is None:
            raise ValueError(f"SurfaceWriter for {self.path} is closed")

    def _sync(self) -> None:
        self._file.flush()
        if self._fd is not None:
            os.fsync(self._fd)

    def _write_live(self) -> None:
        payload = canonical_json({"attrs": self._attrs, "markers": self._markers}).encode()
        if len(payload) > _SLOT_BYTES - _SLOT_HEADER.size:
            # Too big for a slot: rewrite the whole file atomically instead.
            snapshot = self.surface()
            self._file.close()
            _atomic_create(self.path, snapshot, overwrite=True)
            self._file = open_h5(self.path, "r+")
            self._load_state()
            return
        gen = self._live_gen + 1
        head = _SLOT_HEADER.pack(_SLOT_MAGIC, gen, len(payload), 0)[:-4]
        crc = zlib.crc32(head + payload)
        record = np.frombuffer(head + struct.pack("<I", crc) + payload, dtype=np.uint8)
        with write_errors(self.path, _RESUMES):
            self._live_dset[gen % 2, : record.size] = record
            self._sync()
        self._live_gen = gen


def _write_points(dset: h5py.Dataset, coords: np.ndarray, values: np.ndarray) -> None:
    space = dset.id.get_space()
    space.select_elements(coords)
    mem = h5py.h5s.create_simple((len(values),))
    dset.id.write(mem, space, np.ascontiguousarray(values, dtype=dset.dtype))
