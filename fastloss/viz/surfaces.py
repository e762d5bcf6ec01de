"""Figures of surfaces: contour lines over a filled contour (the papers' plane figures, with
markers at the networks), heatmaps, 3D surfaces and 1D profiles.

Built on matplotlib's object API (`Figure` rendered by Agg), never pyplot: no global state,
no backend to select, nothing left open. Every function returns the `Figure`; pass ``ax`` to
draw into an existing axes instead. Losses use a log colour scale, accuracies and errors a
linear one. Points not computed yet (and, on a log scale, values <= 0) are masked and the
title says how many. To compare figures, give them one colour scale::

    vmin, vmax = shared_limits([s1, s2], "train_loss")
    plot_contour(s1, vmin=vmin, vmax=vmax).savefig("a.png")
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from fastloss.errors import ArgumentError
from fastloss.io import Surface
from fastloss.viz.style import (
    FILL_LEVELS,
    LINE_LEVELS,
    STROKE,
    add_colorbar,
    decorate,
    draw_empty,
    draw_markers,
    figure_axes,
    finish_2d,
    grid2d,
    log_ticks,
    metric_label,
    nice_levels,
    norm_and_levels,
    uses_log_scale,
    valid_mask,
)

__all__ = [
    "plot_contour",
    "plot_heatmap",
    "plot_profile",
    "plot_surface3d",
    "save_figures",
]

KINDS = ("contour", "heatmap", "surface3d", "profile")


def plot_contour(
    surface: Surface,
    metric: str = "train_loss",
    ax: Axes | None = None,
    levels: int | Sequence[float] | None = None,
    vmin: float | None = None,
    vmax: float | None = None,
    markers: bool = True,
    log: bool | None = None,
    cmap: str = "viridis",
    colorbar: bool = True,
    line_labels: bool = True,
    title: str | None = None,
) -> Figure:
    """Contour lines (log-spaced for losses; ``levels``: a count or the values) over a filled
    contour, with the surface's markers labelled. Values beyond ``vmin``/``vmax`` take the end
    colours."""
    X, Y = grid2d(surface, "contour")
    is_log = uses_log_scale(metric, log)
    z = surface.metric(metric)
    valid, notes = valid_mask(surface, z, is_log)
    fig, ax = figure_axes(ax)
    ax.set_facecolor("0.85")  # masked points show as grey
    scale = norm_and_levels(z, valid, is_log, vmin, vmax, FILL_LEVELS)
    if scale is None:
        draw_empty(ax, notes)
    else:
        norm, fill_levels, extend = scale
        zm = np.ma.masked_array(z, ~valid)
        filled = ax.contourf(X, Y, zm, levels=fill_levels, norm=norm, cmap=cmap, extend=extend)
        if levels is None or isinstance(levels, int):
            n = LINE_LEVELS if levels is None else levels
            lo, hi = cast(float, norm.vmin), cast(float, norm.vmax)
            line_levels = nice_levels(lo, hi, n, is_log)
        else:
            line_levels = np.sort(np.asarray(levels, dtype=np.float64))
        lines = ax.contour(X, Y, zm, levels=line_levels, colors="white", linewidths=0.9, alpha=0.9)
        drawn = np.asarray(lines.levels)
        if line_labels and drawn.size:
            ax.clabel(lines, drawn[::2], fmt="%.3g", fontsize=7, inline=True)
        if colorbar:
            add_colorbar(fig, filled, ax, metric_label(metric), is_log)
    if markers:
        draw_markers(ax, surface)
    finish_2d(ax, surface)
    decorate(ax, surface, metric, notes, title)
    return fig


def plot_heatmap(
    surface: Surface,
    metric: str = "train_loss",
    ax: Axes | None = None,
    vmin: float | None = None,
    vmax: float | None = None,
    markers: bool = True,
    log: bool | None = None,
    cmap: str = "viridis",
    colorbar: bool = True,
    title: str | None = None,
) -> Figure:
    """One cell per grid point (no interpolation), markers labelled."""
    grid2d(surface, "heatmap")
    assert surface.y is not None
    is_log = uses_log_scale(metric, log)
    z = surface.metric(metric)
    valid, notes = valid_mask(surface, z, is_log)
    fig, ax = figure_axes(ax)
    ax.set_facecolor("0.85")
    scale = norm_and_levels(z, valid, is_log, vmin, vmax, 2)
    if scale is None:
        draw_empty(ax, notes)
    else:
        norm, _, extend = scale
        mesh = ax.pcolormesh(
            surface.x,
            surface.y,
            np.ma.masked_array(z, ~valid),
            norm=norm,
            cmap=cmap,
            shading="nearest",
        )
        if colorbar:
            add_colorbar(fig, mesh, ax, metric_label(metric), is_log, extend=extend)
    if markers:
        draw_markers(ax, surface)
    if len(surface.x) > 1 and len(surface.y) > 1:
        finish_2d(ax, surface)
    decorate(ax, surface, metric, notes, title)
    return fig


def plot_surface3d(
    surface: Surface,
    metric: str = "train_loss",
    ax: Axes | None = None,
    vmin: float | None = None,
    vmax: float | None = None,
    markers: bool = True,
    log: bool | None = None,
    cmap: str = "viridis",
    colorbar: bool = True,
    title: str | None = None,
) -> Figure:
    """The surface as a 3D mesh; on a log scale the height is log10 of the value. Values are
    clipped to ``[vmin, vmax]`` (so one huge loss does not flatten the rest)."""
    X, Y = grid2d(surface, "surface3d")
    is_log = uses_log_scale(metric, log)
    z = surface.metric(metric)
    valid, notes = valid_mask(surface, z, is_log)
    fig, axes = figure_axes(ax, projection="3d")
    ax3: Any = axes  # Axes3D, whose signatures differ from Axes
    scale = norm_and_levels(z, valid, is_log, vmin, vmax, 2)
    zlabel = f"log10 {metric_label(metric)}" if is_log else metric_label(metric)
    if scale is None:
        draw_empty(ax3, notes)
    else:
        norm, _, _ = scale
        lo, hi = cast(float, norm.vmin), cast(float, norm.vmax)
        height = np.where(valid, np.clip(z, lo, hi), np.nan)
        if is_log:
            height, lo, hi = np.log10(height), np.log10(lo), np.log10(hi)
        mesh = ax3.plot_surface(
            X, Y, height, cmap=cmap, norm=Normalize(lo, hi), linewidth=0, antialiased=True
        )
        ax3.set_zlim(lo, hi)
        if colorbar:
            fig.colorbar(mesh, ax=ax3, shrink=0.6)  # the z axis carries the label
        if markers:
            for name, (mx, my) in surface.markers.items():
                i = int(np.abs(cast(np.ndarray, surface.y) - my).argmin())
                j = int(np.abs(surface.x - mx).argmin())
                mz = height[i, j] if np.isfinite(height[i, j]) else lo
                ax3.scatter([mx], [my], [mz], c="white", edgecolors="black", s=40, depthshade=False)
                ax3.text(
                    mx, my, mz, f"  {name}", fontweight="bold", path_effects=STROKE, color="white"
                )
    ax3.set_zlabel(zlabel)
    decorate(ax3, surface, metric, notes, title)
    return fig


def plot_profile(
    surface: Surface,
    metrics: str | Sequence[str] | None = None,
    ax: Axes | None = None,
    y: float | None = None,
    x: float | None = None,
    log: bool | None = None,
    markers: bool = True,
    title: str | None = None,
) -> Figure:
    """Metrics along a line: a 1D surface, or the row of a 2D surface nearest ``y=...`` (or its
    column nearest ``x=...``). Losses on the left axis (log scale for losses), accuracies and
    errors on a right axis in percent; points not computed are gaps."""
    assert surface.done is not None
    if isinstance(metrics, str):
        metrics = [m.strip() for m in metrics.split(",") if m.strip()]
    metrics = list(surface.values) if metrics is None else list(metrics)
    if surface.y is None:
        if x is not None or y is not None:
            raise ArgumentError("x=/y= select a row or column of a 2D surface; this one is 1D")
        sel: Any = np.s_[:]
        t, where = surface.x, ""
        xlabel = str(surface.attrs.get("xlabel", "t"))
        pins = [(name, p[0]) for name, p in surface.markers.items()]
    elif (x is None) == (y is None):
        raise ArgumentError(
            "a profile of a 2D surface needs exactly one of y= (a row) or x= (a column)"
        )
    elif y is not None:
        i = int(np.abs(surface.y - y).argmin())
        t, sel, where = surface.x, (i, np.s_[:]), f" at y = {surface.y[i]:.4g}"
        xlabel = str(surface.attrs.get("xlabel", "x"))
        half = _half_step(surface.y)
        pins = [(n, p[0]) for n, p in surface.markers.items() if abs(p[1] - surface.y[i]) <= half]
    else:
        j = int(np.abs(surface.x - x).argmin())
        t, sel, where = surface.y, (np.s_[:], j), f" at x = {surface.x[j]:.4g}"
        xlabel = str(surface.attrs.get("ylabel", "y"))
        half = _half_step(surface.x)
        pins = [(n, p[1]) for n, p in surface.markers.items() if abs(p[0] - surface.x[j]) <= half]
    fig, ax = figure_axes(ax)
    left = [m for m in metrics if uses_log_scale(m, None) or not m.endswith(("_acc", "_err"))]
    right = [m for m in metrics if m not in left]
    axes: dict[str, Axes] = {}
    if left:
        axes.update({m: ax for m in left})
    if right:
        twin = ax.twinx() if left else ax
        axes.update({m: twin for m in right})
        twin.set_ylabel("percent")
        twin.set_ylim(0, 100)
    notes: list[str] = []
    lines = []
    styles = {"train": "-", "test": "--"}
    colours: dict[str, str] = {}
    for k, m in enumerate(metrics):
        z = np.array(surface.metric(m)[sel], dtype=np.float64)
        done = surface.done[sel]
        is_log = uses_log_scale(m, log) and axes[m] is ax and bool(left)
        ok = done & np.isfinite(z) & ((z > 0) if is_log else True)
        missing = int((~(done & np.isfinite(z))).sum())
        if missing and not notes:
            notes.append(f"{missing}/{z.size} points not computed")
        z[~ok] = np.nan
        kind = m.rpartition("_")[2]
        colour = colours.setdefault(kind, f"C{len(colours)}")
        style = styles.get(m.partition("_")[0], [":", "-."][k % 2])
        (line,) = axes[m].plot(t, z, style, color=colour, label=metric_label(m), lw=1.5)
        lines.append(line)
        if is_log and ax.get_yscale() != "log":
            ax.set_yscale("log")
            log_ticks(ax.yaxis)
    if left:
        ax.set_ylabel(", ".join(sorted({metric_label(m).rpartition(" ")[2] for m in left})))
    if markers:
        for name, pos in pins:
            ax.axvline(pos, color="0.4", lw=0.8, ls=":")
            ax.annotate(
                name,
                (pos, 1.0),
                xycoords=("data", "axes fraction"),
                xytext=(2, -12),
                textcoords="offset points",
                fontsize=10,
                fontweight="bold",
            )
    ax.set_xlabel(xlabel)
    ax.set_xlim(t.min(), t.max())
    ax.legend(
        lines,
        [str(ln.get_label()) for ln in lines],
        fontsize=9,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.13),
        ncol=2,
        frameon=False,
    )
    if title is None:
        title = metric_label(metrics[0]) if len(metrics) == 1 else ""
    text = (title + where).strip()
    if notes:
        text += "\n(" + "; ".join(notes) + ")"
    ax.set_title(text, fontsize=10)
    return fig


def _half_step(a: np.ndarray) -> float:
    return float(np.abs(np.diff(a)).min()) / 2 if a.size > 1 else float("inf")


PLOTTERS: dict[str, Callable[..., Figure]] = {
    "contour": plot_contour,
    "heatmap": plot_heatmap,
    "surface3d": plot_surface3d,
}


def save_figures(
    surface: Surface,
    out_dir: str | os.PathLike,
    metrics: Sequence[str] | None = None,
    kinds: Sequence[str] = ("contour", "heatmap", "surface3d"),
    limits: Mapping[str, tuple[float, float]] | None = None,
    dpi: int = 150,
) -> list[str]:
    """Write ``<metric>_<kind>.png`` for each metric and kind (``<metric>_profile.png`` for a
    1D surface) into ``out_dir``; ``limits[metric] = (vmin, vmax)`` fixes colour scales.
    Returns the paths written."""
    os.makedirs(out_dir, exist_ok=True)
    metrics = list(surface.values) if metrics is None else list(metrics)
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ArgumentError(f"unknown kinds {unknown}; choose from {list(KINDS)}")
    written = []
    for m in metrics:
        vmin, vmax = (limits or {}).get(m, (None, None))
        todo = ["profile"] if surface.y is None else list(kinds)
        for kind in todo:
            if kind != "profile":
                fig = PLOTTERS[kind](surface, m, vmin=vmin, vmax=vmax)
            elif surface.y is None:
                fig = plot_profile(surface, [m])
            else:  # the middle row of a 2D surface
                fig = plot_profile(surface, [m], y=float(surface.y[len(surface.y) // 2]))
            path = os.path.join(os.fspath(out_dir), f"{m}_{kind}.png")
            fig.savefig(path, dpi=dpi)
            written.append(path)
    return written
