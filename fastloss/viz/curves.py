"""Figures of curves between two networks (Garipov et al. 2018): profiles along t against the
straight segment, the ensembles of w1 with each point (Fig. 8), the curve over the loss
contours of its plane (Fig. 2, middle and right), and the functions along a curve of a
regression network (Fig. 7).

Matplotlib's object API (no pyplot); every function returns a `Figure`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from fastloss.errors import ArgumentError
from fastloss.io import CurveResult, Surface
from fastloss.io.curve_result import PATHS
from fastloss.viz.style import figure_axes, log_ticks, metric_label
from fastloss.viz.surfaces import plot_contour

__all__ = ["plot_curve_ensemble", "plot_curve_plane", "plot_curve_profile", "save_curve_figures"]

_COLOURS = {"curve": "C0", "segment": "C3"}
_STYLES = {"train": "-", "test": "--"}


def _curve_name(attrs: Mapping[str, Any]) -> str:
    curve = attrs.get("curve") or {}
    kind, bends = curve.get("kind", "curve"), curve.get("bends")
    if bends is None:
        return str(kind)
    return f"{kind} curve, {bends} bend{'s' if bends != 1 else ''}"


def _bend_times(attrs: Mapping[str, Any]) -> list[float]:
    """Where a polygonal chain turns (its bends lie on it); a Bezier curve's do not."""
    curve = attrs.get("curve") or {}
    if curve.get("kind") != "polychain" or not curve.get("bends"):
        return []
    n = int(curve["bends"])
    return [i / (n + 1) for i in range(1, n + 1)]


def _decorate_t(ax: Axes, result: CurveResult) -> None:
    for tb in _bend_times(result.attrs):
        ax.axvline(tb, color="0.5", lw=0.8, ls=":")
    ax.set_xlim(0, 1)
    ax.set_xlabel("t  (w1 at 0, w2 at 1)")
    ax.grid(alpha=0.3)


def plot_curve_profile(result: CurveResult) -> Figure:
    """Loss (left, log scale when positive) and error (right; classification only) against
    t, for the curve and for the segment (when the result has it), train solid and test
    dashed."""
    metrics = ("loss", "err") if result.classification else ("loss",)
    fig = Figure(figsize=(5.5 * len(metrics), 4.4), layout="constrained")
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    paths = [p for p in PATHS if f"{p}/{result.splits[0]}_loss" in result.values]
    for ax, metric in zip(axes, metrics, strict=True):
        drawn = []
        for path in paths:  # an imported curve (curve.npz) has no segment
            for split in result.splits:
                v = result[f"{path}/{split}_{metric}"]
                ax.plot(
                    result.t,
                    v,
                    _STYLES[split],
                    color=_COLOURS[path],
                    lw=1.6,
                    label=f"{path}, {split}",
                )
                drawn.append(v)
        if metric == "loss" and all(np.all(v > 0) for v in drawn):
            ax.set_yscale("log")
            log_ticks(ax.yaxis)
        _decorate_t(ax, result)
        ax.legend(fontsize=9)
    wd = float((result.attrs.get("settings") or {}).get("wd", 0.0))
    base = "NLL" if result.classification else "loss"
    if "settings" not in result.attrs:  # imported (curve.npz): its weight decay is unknown
        axes[0].set_ylabel("loss")
    else:
        axes[0].set_ylabel("loss" + (f" ({base} + {wd:g}/2 ‖w‖²)" if wd else f" ({base})"))
    if result.classification:
        axes[1].set_ylabel("error (%)")
    against = ", against the straight segment" if "segment" in paths else ""
    fig.suptitle(f"{_curve_name(result.attrs)}{against}", fontsize=11)
    return fig


def plot_curve_ensemble(result: CurveResult) -> Figure:
    """Accuracy of the ensemble of w1 and the point at t (mean of the two softmax outputs),
    along the curve and along the segment, with w1 alone for reference (Garipov et al. 2018,
    Fig. 8)."""
    fig, ax = figure_axes(None)
    split = result.ensemble_split
    for path in PATHS:
        ax.plot(
            result.t,
            result[f"ensemble/{path}/{split}_acc"],
            color=_COLOURS[path],
            lw=1.8,
            label=f"w1 + {'φ(t)' if path == 'curve' else 'segment at t'}",
        )
    alone = float(result[f"curve/{split}_acc"][0])
    ax.axhline(alone, color="0.3", lw=1.0, ls=":", label=f"w1 alone ({alone:.2f}%)")
    both = float(result[f"ensemble/curve/{split}_acc"][-1])
    ax.plot([1.0], [both], "o", color="black", ms=5, label=f"w1 + w2 ({both:.2f}%)", zorder=5)
    _decorate_t(ax, result)
    ax.set_ylabel(f"ensemble {split} accuracy (%)")
    ax.legend(fontsize=9)
    ax.set_title(
        f"Ensembles of w1 and a point on the path\n{_curve_name(result.attrs)}", fontsize=10
    )
    return fig


def save_curve_figures(
    result: CurveResult, profile: str | os.PathLike, ensemble: str | os.PathLike, dpi: int = 150
) -> list[str]:
    """Write the profile and (classification only) ensemble figures to the given PNG paths;
    returns the paths written."""
    written = []
    figures = [(plot_curve_profile(result), profile)]
    if result.classification:
        figures.append((plot_curve_ensemble(result), ensemble))
    for fig, path in figures:
        fig.savefig(path, dpi=dpi)
        written.append(os.fspath(path))
    return written


def plot_curve_plane(
    surface: Surface,
    info: Mapping[str, Any] | None = None,
    metric: str = "train_loss",
    ax: Axes | None = None,
    title: str | None = None,
    **contour_kwargs: Any,
) -> Figure:
    """The contour of ``metric`` on the curve's plane (`fastloss.plot.plot_contour`, with
    w1, w2 and the bends as labelled markers), the curve drawn over it as a line and the
    straight segment w1 → w2 dashed. ``info`` is `fastloss.curves.curve_plane`'s (``xy``,
    ``bends_xy``, ``residual``); by default it comes from ``surface.attrs["curve"]``, which
    `evaluate_curve_plane` stores in the file. A PCA plane (more than one bend) says so in
    the title, with the fraction of the curve that lies outside it."""
    stored = dict(surface.attrs.get("curve") or {})
    if info is None:
        if "xy" not in stored:
            raise ArgumentError(
                "this surface holds no curve (attrs['curve']); pass info from curve_plane, "
                "or evaluate it with evaluate_curve_plane"
            )
        info = stored
    xy = np.asarray(info["xy"], dtype=np.float64).reshape(-1, 2)
    bends = np.asarray(info.get("bends_xy", []), dtype=np.float64).reshape(-1, 2)
    residual = float(info.get("residual", 0.0))
    if title is None:
        name = _curve_name({"curve": {**stored, "bends": stored.get("bends", len(bends))}})
        plane = stored.get("plane")
        if len(bends) > 1 and plane in (None, "pca"):
            where = f"PCA plane of the curve ({residual:.1%} of it lies outside)"
        else:  # an imported plane.npz says which plane it is
            where = f"plane {plane or 'through w1, w2 and the bend'}"
        title = f"{metric_label(metric)}: {name}\n{where}"
    fig = plot_contour(surface, metric, ax=ax, title=title, **contour_kwargs)
    ax = ax or fig.axes[0]
    w2 = xy[-1]
    ax.plot([0.0, w2[0]], [0.0, w2[1]], ls="--", color="white", lw=1.2, alpha=0.8, zorder=3)
    ax.plot(xy[:, 0], xy[:, 1], color="black", lw=3.2, zorder=3)  # dark edge, light core
    ax.plot(xy[:, 0], xy[:, 1], color="white", lw=1.6, zorder=4, label="curve")
    if len(bends) and not surface.markers:  # markers normally come with the surface
        ax.plot(bends[:, 0], bends[:, 1], "o", mfc="white", mec="black", ms=7, zorder=5)
    return fig


CURVE_MAGENTA = "#ff2fd0"


def plot_curve_functions(
    surface: Surface,
    t: Sequence[float],
    x_probe: np.ndarray,
    predictions: np.ndarray,
    data: tuple[Any, Any],
    metric: str = "train_loss",
) -> Figure:
    """The functions along a low-loss curve of a 1D regression network (Garipov et al. 2018,
    Fig. 7). Left: the predictions ``[T, P]`` at the curve's points ``φ(t)`` over the probe
    inputs ``x_probe [P]``, with the training ``data`` (x, y) as dots. Right: the loss in the
    curve's plane (a surface from `evaluate_curve_plane`) with the T points as magenta
    circles on the curve."""
    ts = np.asarray(t, dtype=np.float64)
    predictions = np.asarray(predictions, dtype=np.float64).reshape(len(ts), -1)
    x_probe = np.asarray(x_probe, dtype=np.float64).reshape(-1)
    fig = Figure(figsize=(12, 4.8), layout="constrained")
    left, right = fig.subplots(1, 2)
    x, y = (np.asarray(a, dtype=np.float64).reshape(len(a), -1)[:, 0] for a in data)
    for k, (tk, f) in enumerate(zip(ts, predictions, strict=True)):
        shade = 0.35 + 0.65 * k / max(len(ts) - 1, 1)
        left.plot(x_probe, f, color=CURVE_MAGENTA, alpha=shade, lw=1.6, label=f"t = {tk:.2g}")
    left.plot(x, y, "o", color="black", ms=3, label="train data", zorder=5)
    left.set_xlabel("x")
    left.set_ylabel("prediction")
    left.set_title("Functions at points along the curve", fontsize=10)
    left.legend(fontsize=8, ncol=2)
    left.grid(alpha=0.3)
    plot_curve_plane(surface, metric=metric, ax=right)
    stored = surface.attrs["curve"]
    along, xy = np.asarray(stored["t"]), np.asarray(stored["xy"])
    px, py = np.interp(ts, along, xy[:, 0]), np.interp(ts, along, xy[:, 1])
    right.plot(px, py, "o", ms=9, mfc="none", mec=CURVE_MAGENTA, mew=2.2, zorder=6)
    return fig
