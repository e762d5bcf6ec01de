"""Figures of curves between two networks (paper 000): profiles along t against the straight
segment, the ensembles of w1 with each point (Fig. 8), and the curve over the loss contours
of its plane (Fig. 2, middle and right).

Like `fastloss.plot`, matplotlib's object API (no pyplot); every function returns a `Figure`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from fastloss.curve_results import PATHS, CurveResult
from fastloss.io import Surface
from fastloss.plot import _figure_axes, _label, _log_ticks, plot_contour

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
    """Loss (left, log scale when positive) and error (right) against t, for the curve and
    for the segment, train solid and test dashed."""
    fig = Figure(figsize=(11, 4.4), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, metric in zip(axes, ("loss", "err"), strict=True):
        drawn = []
        for path in PATHS:
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
            _log_ticks(ax.yaxis)
        _decorate_t(ax, result)
        ax.legend(fontsize=9)
    wd = float((result.attrs.get("settings") or {}).get("wd", 0.0))
    axes[0].set_ylabel("loss" + (f" (NLL + {wd:g}/2 ‖w‖²)" if wd else " (NLL)"))
    axes[1].set_ylabel("error (%)")
    fig.suptitle(f"{_curve_name(result.attrs)}, against the straight segment", fontsize=11)
    return fig


def plot_curve_ensemble(result: CurveResult) -> Figure:
    """Accuracy of the ensemble of w1 and the point at t (mean of the two softmax outputs),
    along the curve and along the segment, with w1 alone for reference (paper 000, Fig. 8)."""
    fig, ax = _figure_axes(None)
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
    """Write the profile and ensemble figures to the given PNG paths; returns them."""
    written = []
    for fig, path in (
        (plot_curve_profile(result), profile),
        (plot_curve_ensemble(result), ensemble),
    ):
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
            raise ValueError(
                "this surface holds no curve (attrs['curve']); pass info from curve_plane, "
                "or evaluate it with evaluate_curve_plane"
            )
        info = stored
    xy = np.asarray(info["xy"], dtype=np.float64).reshape(-1, 2)
    bends = np.asarray(info.get("bends_xy", []), dtype=np.float64).reshape(-1, 2)
    residual = float(info.get("residual", 0.0))
    if title is None:
        name = _curve_name({"curve": {**stored, "bends": stored.get("bends", len(bends))}})
        if len(bends) > 1:
            where = f"PCA plane of the curve ({residual:.1%} of it lies outside)"
        else:
            where = "plane through w1, w2 and the bend"
        title = f"{_label(metric)}: {name}\n{where}"
    fig = plot_contour(surface, metric, ax=ax, title=title, **contour_kwargs)
    ax = ax or fig.axes[0]
    w2 = xy[-1]
    ax.plot([0.0, w2[0]], [0.0, w2[1]], ls="--", color="white", lw=1.2, alpha=0.8, zorder=3)
    ax.plot(xy[:, 0], xy[:, 1], color="black", lw=3.2, zorder=3)  # dark edge, light core
    ax.plot(xy[:, 0], xy[:, 1], color="white", lw=1.6, zorder=4, label="curve")
    if len(bends) and not surface.markers:  # markers normally come with the surface
        ax.plot(bends[:, 0], bends[:, 1], "o", mfc="white", mec="black", ms=7, zorder=5)
    return fig
