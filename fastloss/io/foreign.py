"""Other tools' result files, read as fastloss's own: loss-landscape's surface files (Li et al.
2018) and dnn-mode-connectivity's ``curve.npz`` and ``plane.npz`` (Garipov et al. 2018).

Every result read here carries ``attrs["imported_from"]``, one line saying what was
converted; ``fastloss plot`` and ``fastloss view`` print it as a note.

**loss-landscape** (``plot_surface.py``): HDF5 with ``xcoordinates`` (and ``ycoordinates``
in 2D), a string dataset ``dir_file`` naming the direction file, and per metric
(``train_loss``, ``train_acc`` in percent, ``test_loss``, ``test_acc``; ``max_eig``,
``min_eig`` from ``plot_hessian_eigen.py``) an array created as ``-np.ones((len(x),
len(y)))``. Its scheduler fills the point ``(x[j], y[i])`` at the flat index
``i·len(x) + j`` of that array (the order of ``np.meshgrid(x, y)``), so the values lie in
memory row = y, as fastloss's ``[len(y), len(x)]`` do: they are reshaped, not transposed
(on a square grid, the usual one, the two agree anyway; ``plot_2D.py`` reads the array as
``Z[y, x]``). A cell still -1 was not computed yet and reads as NaN (a loss or an accuracy is
never negative; ``min_eig`` starts at +1, so it is NaN where ``max_eig`` is -1). The
direction groups (``xdirection``, ``ydirection``), which ``plot_surface.py`` may write into
the same file, and other datasets are left out.

**dnn-mode-connectivity** ``eval_curve.py`` → ``curve.npz``: ``ts`` [T], ``dl`` [T] (the
distance from the previous point, 0 first), ``tr_``/``te_`` ``loss`` (NLL plus the
weight-decay term), ``nll``, ``acc``, ``err`` (percent) [T] and scalar ``*_min``, ``*_max``,
``*_avg``, ``*_int``. Read as a `CurveResult` with the ``curve/...`` profiles only (the
file has no segment and no ensembles), ``speed`` estimated from ``dl`` and an unknown
(NaN) ``segment_length``.

``plane.py`` → ``plane.npz``: ``alphas`` [G], ``betas`` [G], ``tr_``/``te_`` ``loss``,
``nll``, ``acc``, ``err`` as ``[len(alphas), len(betas)]`` (row = x: transposed here),
``grid`` [G, G, 2] = ``(α·dx, β·dy)``, ``bend_coordinates`` [n, 2] and
``curve_coordinates`` [S, 2] in absolute units, and ``ts``. The plane goes through the
first three control points w[0], w[1], w[2], with x along w[2] − w[0] (``dx`` its length)
and y through w[1] (at height ``dy``): read in units of ``dx`` on both axes (for a curve
with one bend, units of ‖w2 − w1‖ with w1 at (0, 0) and w2 at (1, 0), as fastloss's curve
planes), with the curve in ``attrs["curve"]`` as `fastloss.curves.evaluate_curve_plane`
stores it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from math import comb
from typing import Any, Literal

import h5py
import numpy as np

from fastloss.errors import FileFormatError
from fastloss.io.curve_result import CurveResult
from fastloss.io.surface import Surface

__all__ = [
    "SURFACE_LAYOUTS",
    "curve_npz_result",
    "is_loss_landscape",
    "is_npz",
    "loss_landscape_surface",
    "npz_kind",
    "plane_npz_surface",
]

SURFACE_LAYOUTS = (
    "fastloss reads fastloss surface files (HDF5 with a 'fastloss' group), loss-landscape "
    "surface files (HDF5 with 'xcoordinates', 'ycoordinates' and 'train_loss', ...) and "
    "dnn-mode-connectivity's plane.npz"
)
CURVE_LAYOUTS = (
    "fastloss reads curve evaluations written by evaluate_curve (HDF5) and "
    "dnn-mode-connectivity's curve.npz"
)

# loss-landscape's metric arrays: what crunch() and plot_hessian_eigen.py create.
_LL_METRIC_SUFFIXES = ("_loss", "_acc", "_err")
_LL_EIGEN = ("max_eig", "min_eig")
_NOT_COMPUTED = -1.0

# dnn-mode-connectivity's keys: <prefix>_<metric>.
_SPLITS = {"tr": "train", "te": "test"}
_METRICS = ("loss", "nll", "acc", "err")
_NPZ_SUMMARIES = ("min", "max", "avg", "int")


def imported_note(attrs: Mapping[str, Any]) -> str | None:
    """What was converted, on one line, when ``attrs`` are those of another tool's file read
    here (their ``imported_from``); None for fastloss's own results."""
    note = attrs.get("imported_from")
    return " ".join(note.split()) if isinstance(note, str) and note.strip() else None


# --------------------------------------------------------------------------- detection


def is_npz(path: str | os.PathLike) -> bool:
    """Whether ``path`` starts as a zip archive does (``np.savez`` writes one)."""
    try:
        with open(path, "rb") as f:
            return f.read(2) == b"PK"
    except OSError:
        return False


def npz_kind(path: str | os.PathLike) -> Literal["surface", "curve"] | None:
    """ "surface" for dnn-mode-connectivity's plane.npz, "curve" for its curve.npz, None for
    another .npz (an unreadable one raises `FileFormatError`)."""
    keys = set(_npz_keys(os.fspath(path)))
    if {"alphas", "betas"} <= keys:
        return "surface"
    if {"ts", "dl"} <= keys:
        return "curve"
    return None


def is_loss_landscape(f: h5py.File) -> bool:
    """An HDF5 file with ``xcoordinates`` and no mark of fastloss (no ``format`` attribute, no
    ``fastloss`` group): what loss-landscape's ``plot_surface.py`` writes."""
    return "xcoordinates" in f and "format" not in f.attrs and "fastloss" not in f


# --------------------------------------------------------------------------- loss-landscape


def loss_landscape_surface(f: h5py.File) -> Surface:
    """The surface in an open loss-landscape file (see the module doc)."""
    name = f.filename
    x = _axis(f, "xcoordinates", name)
    y = _axis(f, "ycoordinates", name) if "ycoordinates" in f else None
    shape = (len(x),) if y is None else (len(y), len(x))
    stored_as: tuple[int, ...] | None = None
    values: dict[str, np.ndarray] = {}
    left_out: list[str] = []
    for key, item in f.items():
        if key in ("xcoordinates", "ycoordinates"):
            continue
        is_metric = key.endswith(_LL_METRIC_SUFFIXES) or key in _LL_EIGEN
        if not isinstance(item, h5py.Dataset) or not _numeric(item) or item.ndim == 0:
            left_out.append(key)
            continue
        accepted = [shape] if y is None else [(len(x), len(y)), shape]
        if item.shape not in accepted:
            if is_metric:
                grid = f"{len(x)} x" + ("" if y is None else f" and {len(y)} y")
                raise FileFormatError(
                    f"{name}: '{key}' has shape {list(item.shape)}, but a loss-landscape "
                    f"surface with {grid} coordinates holds "
                    f"{[len(x)] if y is None else [len(x), len(y)]}"
                )
            left_out.append(key)
            continue
        stored_as = stored_as or item.shape
        # Filled at flat index i·len(x) + j for (x[j], y[i]): a reshape, not a transpose.
        values[key] = np.asarray(item[()], dtype=np.float64).reshape(shape)
    if not values:
        raise FileFormatError(
            f"{name} is a loss-landscape surface file without metric arrays yet "
            "(plot_surface.py adds train_loss, train_acc, ... as it computes them)"
        )
    not_done = np.zeros(shape, dtype=bool)
    for key, v in values.items():
        if key != "min_eig":
            marked = v == _NOT_COMPUTED
            v[marked] = np.nan
            not_done |= marked
    if "min_eig" in values and "max_eig" in values:  # min_eig starts at +1: max_eig tells
        values["min_eig"][np.isnan(values["max_eig"])] = np.nan
    attrs: dict[str, Any] = {"source": "loss-landscape"}
    if "dir_file" in f and isinstance(f["dir_file"], h5py.Dataset) and f["dir_file"].ndim == 0:
        text = f["dir_file"][()]
        attrs["direction_file"] = (
            text.decode(errors="replace") if isinstance(text, bytes) else str(text)
        )
    attrs.update({k: _attr(v) for k, v in f.attrs.items() if _attr(v) is not None})
    assert stored_as is not None
    attrs["imported_from"] = _loss_landscape_note(shape, stored_as, int(not_done.sum()), left_out)
    return Surface(x, y, values, attrs=attrs)


def _loss_landscape_note(
    shape: tuple[int, ...], stored_as: tuple[int, ...], not_done: int, left_out: list[str]
) -> str:
    if len(shape) == 1:
        layout = f"arrays [len(x)] = [{shape[0]}] read as they are"
    elif stored_as != shape:
        layout = (
            f"arrays stored [len(x), len(y)] = {list(stored_as)} hold the points row = y "
            f"(plot_surface.py's flat index over meshgrid(x, y)), so they were reshaped, not "
            f"transposed, to fastloss's [len(y), len(x)] = {list(shape)}"
        )
    elif shape[0] == shape[1]:
        layout = (
            f"arrays [len(x), len(y)] = {list(stored_as)} hold the points row = y "
            "(plot_surface.py's flat index over meshgrid(x, y)): read as fastloss's "
            "[len(y), len(x)] unchanged"
        )
    else:
        layout = f"arrays stored [len(y), len(x)] = {list(shape)} read as they are"
    parts = [f"loss-landscape surface file: {layout}"]
    if not_done:
        total = int(np.prod(shape))
        parts.append(f"{not_done} of {total} cells marked -1 (not computed) read as NaN")
    if left_out:
        parts.append(f"not metrics, left out: {', '.join(sorted(left_out))}")
    return "; ".join(parts)


def _axis(f: h5py.File, key: str, name: str) -> np.ndarray:
    item = f[key]
    if not isinstance(item, h5py.Dataset) or not _numeric(item):
        raise FileFormatError(f"{name}: '{key}' is not an array of numbers")
    a = np.asarray(item[()], dtype=np.float64)
    if a.ndim != 1 or a.size == 0 or not np.all(np.isfinite(a)):
        raise FileFormatError(
            f"{name}: '{key}' must be a non-empty 1D array of finite numbers, "
            f"got shape {list(a.shape)}"
        )
    return a


def _numeric(d: h5py.Dataset) -> bool:
    return d.dtype.kind in "fiub"


def _attr(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.decode(errors="replace")
    if isinstance(v, (str, bool, int, float)):
        return v
    if isinstance(v, np.generic) and v.dtype.kind in "fiub":
        return v.item()
    return None


# --------------------------------------------------------------------------- dnn-mode-connectivity


def _npz_keys(path: str) -> list[str]:
    try:
        with np.load(path, allow_pickle=False) as z:
            return list(z.files)
    except Exception as e:  # zipfile.BadZipFile, truncated archives, ...
        raise FileFormatError(
            f"{path}: not a readable .npz file ({type(e).__name__}: {e})".replace("\n", " ")
        ) from None


def _load_npz(path: str) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: np.asarray(z[k]) for k in z.files}
    except Exception as e:  # BadZipFile, truncated members, object arrays (no pickles)
        raise FileFormatError(
            f"{path}: not a readable .npz file ({type(e).__name__}: {e})".replace("\n", " ")
        ) from None


def _array(data: Mapping[str, np.ndarray], key: str, path: str, ndim: int) -> np.ndarray:
    if key not in data:
        raise FileFormatError(f"{path}: no '{key}' array; {_KIND_OF[ndim]}")
    a = data[key]
    if a.dtype.kind not in "fiub" or a.ndim != ndim or a.size == 0:
        raise FileFormatError(
            f"{path}: '{key}' must be a non-empty {ndim}D array of numbers, "
            f"got {a.dtype} of shape {list(a.shape)}"
        )
    a = a.astype(np.float64)
    if not np.all(np.isfinite(a)):
        raise FileFormatError(f"{path}: '{key}' has NaN or infinite entries")
    return a


_KIND_OF = {
    1: "dnn-mode-connectivity's curve.npz (eval_curve.py) has ts, dl and tr_/te_ loss, nll, "
    "acc, err; its plane.npz (plane.py) has alphas, betas, bend_coordinates, "
    "curve_coordinates and tr_/te_ arrays",
    2: "dnn-mode-connectivity's plane.npz (plane.py) has alphas, betas, bend_coordinates, "
    "curve_coordinates and tr_/te_ arrays",
}


def _profiles(data: Mapping[str, np.ndarray], shape: tuple[int, ...], path: str):
    """``{train_loss: array, ...}`` from the ``tr_``/``te_`` arrays of ``shape``."""
    out: dict[str, np.ndarray] = {}
    for prefix, split in _SPLITS.items():
        for metric in _METRICS:
            key = f"{prefix}_{metric}"
            if key not in data:
                continue
            a = np.asarray(data[key])
            if a.dtype.kind not in "fiub" or a.shape != shape:
                raise FileFormatError(
                    f"{path}: '{key}' has shape {list(a.shape)}, expected {list(shape)}"
                )
            out[f"{split}_{metric}"] = a.astype(np.float64)
    if not out:
        raise FileFormatError(f"{path}: no tr_/te_ loss, nll, acc or err arrays")
    return out


def curve_npz_result(path: str | os.PathLike) -> CurveResult:
    """dnn-mode-connectivity's ``curve.npz`` as a `CurveResult` (see the module doc)."""
    path = os.fspath(path)
    data = _load_npz(path)
    if {"alphas", "betas"} <= set(data):
        raise FileFormatError(
            f"{path} is dnn-mode-connectivity's plane.npz, a surface: Surface.load reads it"
        )
    t = _array(data, "ts", path, 1)
    dl = _array(data, "dl", path, 1)
    if len(t) < 2 or np.any(np.diff(t) <= 0):
        raise FileFormatError(f"{path}: 'ts' must hold at least 2 increasing values of t")
    if dl.shape != t.shape or np.any(dl < 0):
        raise FileFormatError(
            f"{path}: 'dl' must hold {len(t)} distances (one per t) >= 0, "
            f"got shape {list(dl.shape)}"
        )
    profiles = _profiles(data, t.shape, path)
    if "train_loss" not in profiles and "test_loss" not in profiles:
        raise FileFormatError(f"{path}: no 'tr_loss' or 'te_loss' array")
    values = {f"curve/{name}": v for name, v in profiles.items()}
    derived = []
    for split in _SPLITS.values():
        if f"curve/{split}_acc" in values and f"curve/{split}_err" not in values:
            values[f"curve/{split}_err"] = 100.0 - values[f"curve/{split}_acc"]
            derived.append(f"{split}_err")
    # dl[i] is the chord from the previous point: arc length s(t), then speed = ds/dt.
    arc = np.concatenate([[0.0], np.cumsum(dl[1:])])
    speed = np.gradient(arc, t)
    reported = {}
    for prefix, split in _SPLITS.items():
        for metric in _METRICS:
            stats = {}
            for stat in _NPZ_SUMMARIES:
                v = data.get(f"{prefix}_{metric}_{stat}")
                if v is None or v.ndim != 0 or v.dtype.kind not in "fiub":
                    break
                stats[stat] = float(v)
            else:  # the tool's own min, max, avg and int (arc-length mean), kept beside ours
                reported[f"curve/{split}_{metric}"] = stats
    splits = [sp for sp in _SPLITS.values() if any(k.startswith(sp) for k in profiles)]
    metrics = [m for m in _METRICS if any(k.endswith(f"_{m}") for k in profiles)]
    note = (
        f"dnn-mode-connectivity curve.npz: {'/'.join(p + '_' for p in _SPLITS)} arrays at "
        f"{len(t)} values of t read as the profiles "
        f"{', '.join(f'curve/{s}_*' for s in splits)} ({', '.join(metrics)}; its loss includes "
        "the weight-decay term, nll does not); speed estimated from dl, the distances between "
        f"consecutive points (length {float(arc[-1]):.4g}); no straight segment, ensembles or "
        "segment_length (NaN) in this file"
    )
    if derived:
        note += f"; {', '.join(derived)} derived as 100 - acc"
    attrs = {
        "source": "dnn-mode-connectivity",
        "curve": {"kind": "dnn-mode-connectivity curve"},  # its kind and bends: not in it
        "length": float(arc[-1]),
        "reported_summaries": reported,
        "imported_from": note,
    }
    return CurveResult(t, values, speed, float("nan"), attrs)


def plane_npz_surface(path: str | os.PathLike) -> Surface:
    """dnn-mode-connectivity's ``plane.npz`` as a `Surface` with its curve in
    ``attrs["curve"]`` (see the module doc)."""
    path = os.fspath(path)
    data = _load_npz(path)
    if "alphas" not in data and {"ts", "dl"} <= set(data):
        raise FileFormatError(
            f"{path} is dnn-mode-connectivity's curve.npz, a curve evaluation: "
            "CurveResult.load reads it"
        )
    alphas = _array(data, "alphas", path, 1)
    betas = _array(data, "betas", path, 1)
    bends = _array(data, "bend_coordinates", path, 2)
    curve = _array(data, "curve_coordinates", path, 2)
    if bends.shape[1] != 2 or len(bends) < 3 or curve.shape[1] != 2:
        raise FileFormatError(
            f"{path}: 'bend_coordinates' must be [n >= 3, 2] and 'curve_coordinates' [S, 2], "
            f"got {list(bends.shape)} and {list(curve.shape)}"
        )
    # w[2] sits at (dx, 0) and w[1] at (·, dy): get_xy against the plane's unit vectors.
    dx, dy = float(bends[2, 0]), float(bends[1, 1])
    if not dx > 0:
        raise FileFormatError(f"{path}: 'bend_coordinates' puts w[2] at x = {dx:g}, not > 0")
    if "grid" in data:
        grid = data["grid"].astype(np.float64) if data["grid"].dtype.kind in "fiub" else None
        expected = np.stack(np.meshgrid(alphas * dx, betas * dy, indexing="ij"), axis=-1)
        if (
            grid is None
            or grid.shape != expected.shape
            or not np.allclose(grid, expected, rtol=1e-4, atol=1e-6 * max(dx, abs(dy)))
        ):
            raise FileFormatError(
                f"{path}: 'grid' is not (alphas·dx, betas·dy) with dx, dy from "
                "'bend_coordinates': not a plane.py file, or a changed one"
            )
    profiles = _profiles(data, (len(alphas), len(betas)), path)
    values = {name: v.T for name, v in profiles.items()}  # [len(alphas), len(betas)]: row = x
    t = _curve_t(data, len(curve), path)
    kind = _curve_kind(bends, curve, t)
    inner = bends[1:-1] / dx
    one = len(inner) == 1
    markers: dict[str, tuple[float, float]] = {"w1": (0.0, 0.0)}
    markers["w2"] = (float(bends[-1, 0] / dx), float(bends[-1, 1] / dx))
    for i, p in enumerate(inner):
        markers["bend" if one else f"bend{i + 1}"] = (float(p[0]), float(p[1]))
    plane = "through w1, w2 and the bend" if one else "through the first three control points"
    unit = "‖w2 − w1‖" if one else "‖w[2] − w[0]‖"
    curve_attrs: dict[str, Any] = {
        "kind": kind or "dnn-mode-connectivity",
        "bends": len(inner),
        "plane": plane,
        "t": t.tolist(),
        "xy": (curve / dx).tolist(),
        "bends_xy": inner.tolist(),
    }
    if one:  # in the plane exactly; with more bends the file does not say how far off
        curve_attrs["residual"] = 0.0
    attrs: dict[str, Any] = {
        "source": "dnn-mode-connectivity",
        "curve": curve_attrs,
        "xlabel": f"x (units of {unit})",
        "ylabel": f"y (units of {unit})",
        "aspect": "equal",
    }
    renamed = ", ".join(f"{p}_ as {s}_" for p, s in _SPLITS.items())
    attrs["imported_from"] = (
        f"dnn-mode-connectivity plane.npz: arrays stored [len(alphas), len(betas)] = "
        f"{[len(alphas), len(betas)]} (row = x) were transposed to fastloss's [len(y), len(x)]; "
        f"coordinates in units of {unit} (x = alphas, y = betas·{dy / dx:.4g}); {renamed} "
        f"(*_loss include the weight-decay term, *_nll do not); the curve "
        + (f"read as a {kind} curve" if kind else "of an unrecognised kind")
        + f" with {len(inner)} bend{'s' if not one else ''}"
    )
    return Surface(alphas, betas * dy / dx, values, attrs=attrs, markers=markers)


def _curve_t(data: Mapping[str, np.ndarray], points: int, path: str) -> np.ndarray:
    if "ts" not in data:
        return np.linspace(0.0, 1.0, points)
    t = _array(data, "ts", path, 1)
    if len(t) != points:
        raise FileFormatError(f"{path}: 'ts' has {len(t)} values for {points} curve_coordinates")
    return t


def _curve_kind(bends: np.ndarray, curve: np.ndarray, t: np.ndarray) -> str | None:
    """ "bezier" or "polychain": the one whose coefficients of ``t`` on the projected control
    points give the projected curve (projection is affine, so this holds for any number of
    bends); None if neither does."""
    n = len(bends) - 1
    bernstein = np.stack([comb(n, k) * t**k * (1 - t) ** (n - k) for k in range(n + 1)], 1)
    knots = np.linspace(0.0, 1.0, n + 1)
    hats = np.stack([np.interp(t, knots, np.eye(n + 1)[k]) for k in range(n + 1)], 1)
    scale = max(float(np.abs(bends).max()), 1e-30)
    for kind, coeffs in (("bezier", bernstein), ("polychain", hats)):
        if np.abs(coeffs @ bends - curve).max() <= 1e-3 * scale:
            return kind
    return None
