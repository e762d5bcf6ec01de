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
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, cast

import matplotlib.patheffects as path_effects
import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from fastloss.io import Surface

__all__ = [
    "plot_contour",
    "plot_file",
    "plot_heatmap",
    "plot_profile",
    "plot_surface3d",
    "save_figures",
    "shared_limits",
]

KINDS = ("contour", "heatmap", "surface3d", "profile")
_FILL_LEVELS = 40
_LINE_LEVELS = 10
_STROKE = [path_effects.withStroke(linewidth=2.5, foreground="black")]


def _is_log(metric: str, log: bool | None) -> bool:
    if log is not None:
        return log
    return "loss" in metric or "nll" in metric


def _label(metric: str) -> str:
    split, _, kind = metric.rpartition("_")
    names = {"loss": "loss", "acc": "accuracy (%)", "err": "error (%)", "nll": "NLL"}
    if not split or kind not in names:
        return metric.replace("_", " ")
    return f"{split.replace('_', ' ')} {names[kind]}"


def _valid(surface: Surface, z: np.ndarray, log: bool) -> tuple[np.ndarray, list[str]]:
    """Mask of drawable points, and notes for the title about the rest."""
    assert surface.done is not None
    computed = surface.done & np.isfinite(z)
    notes = []
    missing = int(z.size - computed.sum())
    if missing:
        notes.append(f"{missing}/{z.size} points not computed")
    valid = computed
    if log:
        valid = computed & (z > 0)
        nonpositive = int(computed.sum() - valid.sum())
        if nonpositive:
            notes.append(f"{nonpositive} values ≤ 0 masked (log scale)")
    return valid, notes


def _limits(values: Iterable[np.ndarray]) -> tuple[float, float] | None:
    finite = [v for v in values if v.size]
    if not finite:
        return None
    lo = min(float(v.min()) for v in finite)
    hi = max(float(v.max()) for v in finite)
    return lo, hi


def shared_limits(
    surfaces: Iterable[Surface], metric: str, log: bool | None = None
) -> tuple[float, float]:
    """``(vmin, vmax)`` over the computed values of ``metric`` in all ``surfaces`` (positive
    ones only on a log scale), to pass to the plot functions for one colour scale."""
    is_log = _is_log(metric, log)
    parts = []
    for s in surfaces:
        z = s.metric(metric)
        valid, _ = _valid(s, z, is_log)
        parts.append(z[valid])
    found = _limits(parts)
    if found is None:
        raise ValueError(f"no computed values of {metric!r} in these surfaces")
    return found


def _norm_and_levels(
    z: np.ndarray, valid: np.ndarray, log: bool, vmin: float | None, vmax: float | None, n: int
) -> tuple[Normalize, np.ndarray, str] | None:
    data = _limits([z[valid]])
    if data is None:
        return None
    lo = data[0] if vmin is None else float(vmin)
    hi = data[1] if vmax is None else float(vmax)
    if log and lo <= 0:
        raise ValueError(f"vmin must be positive on a log scale, got {lo}")
    if not hi > lo:  # a flat surface: widen so the colour scale exists
        hi, lo = (lo * 1.01, lo / 1.01) if log else (lo + 0.5, lo - 0.5)
    extend = {(False, False): "neither", (True, False): "min", (False, True): "max"}.get(
        (data[0] < lo, data[1] > hi), "both"
    )
    if log:
        return LogNorm(lo, hi), np.geomspace(lo, hi, n), extend
    return Normalize(lo, hi), np.linspace(lo, hi, n), extend


def _figure_axes(ax: Axes | None, projection: str | None = None) -> tuple[Figure, Axes]:
    if ax is not None:
        return ax.get_figure(), ax  # type: ignore[return-value]
    fig = Figure(figsize=(6.4, 5.2), layout="constrained")
    return fig, fig.add_subplot(projection=projection)


def _decorate(ax: Axes, surface: Surface, metric: str, notes: list[str], title: str | None):
    ax.set_xlabel(str(surface.attrs.get("xlabel", "x")))
    ax.set_ylabel(str(surface.attrs.get("ylabel", "y")))
    text = _label(metric) if title is None else title
    if notes:
        text += "\n(" + "; ".join(notes) + ")"
    ax.set_title(text, fontsize=10)


def _nice_levels(lo: float, hi: float, n: int, log: bool) -> np.ndarray:
    """About ``n`` contour values strictly inside ``(lo, hi)``, at round numbers when that
    gives about as many (1-2-5 per decade and the like on a log scale), else evenly spaced."""
    if log:
        options: list[np.ndarray] = [np.geomspace(lo, hi, n + 2)[1:-1]]
        for subs in ((1.0,), (1.0, 3.0), (1.0, 2.0, 5.0), (1.0, 1.5, 2.0, 3.0, 5.0, 7.0)):
            found = np.asarray(LogLocator(subs=subs, numticks=1000).tick_values(lo, hi))
            options.append(found[(found > lo) & (found < hi)])
        if hi < 10 * lo:  # under a decade, round linear steps read best
            found = np.asarray(MaxNLocator(n + 1).tick_values(lo, hi))
            options.append(found[(found > lo) & (found < hi)])
        # round numbers unless evenly spaced values come clearly closer to n lines
        best = min(options[1:], key=lambda o: abs(o.size - n))
        return best if abs(best.size - n) <= n // 3 else options[0]
    found = np.asarray(MaxNLocator(n + 1).tick_values(lo, hi))
    found = found[(found > lo) & (found < hi)]
    return found if found.size >= n // 2 else np.linspace(lo, hi, n + 2)[1:-1]


def _colorbar(fig: Figure, mappable: Any, ax: Axes, label: str, log: bool, **kw: Any) -> None:
    bar = fig.colorbar(mappable, ax=ax, label=label, **kw)
    if log:
        _log_ticks(bar.ax.yaxis)
    else:  # not the 40 fill boundaries
        bar.ax.yaxis.set_major_locator(MaxNLocator(8))


def _log_ticks(axis: Any) -> None:
    """Readable ticks (1, 2, 5 per decade) also when the range spans less than a decade."""
    axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
    axis.set_minor_formatter(NullFormatter())


def _draw_markers(ax: Axes, surface: Surface) -> None:
    for name, (mx, my) in surface.markers.items():
        ax.plot([mx], [my], "o", ms=8, mfc="white", mec="black", mew=1.5, zorder=5)
        ax.annotate(
            name,
            (mx, my),
            xytext=(7, 7),
            textcoords="offset points",
            fontsize=11,
            fontweight="bold",
            color="white",
            path_effects=_STROKE,
            zorder=6,
        )


def _grid2d(surface: Surface, kind: str) -> tuple[np.ndarray, np.ndarray]:
    if surface.y is None:
        raise ValueError(f"a {kind} plot needs a 2D surface; use plot_profile for 1D")
    if kind != "heatmap" and (len(surface.x) < 2 or len(surface.y) < 2):
        raise ValueError(
            f"a {kind} plot needs at least 2 points along x and y; got {surface.shape}"
        )
    return np.meshgrid(surface.x, surface.y)  # [ny, nx], the file's layout


def _empty(ax: Axes, notes: list[str]) -> None:
    ax.text(0.5, 0.5, "no points computed yet", ha="center", va="center", transform=ax.transAxes)
    notes[:] = [n for n in notes if "not computed" not in n] + ["no points computed yet"]


def _finish_2d(ax: Axes, surface: Surface) -> None:
    ax.set_xlim(surface.x.min(), surface.x.max())
    assert surface.y is not None
    ax.set_ylim(surface.y.min(), surface.y.max())
    if surface.attrs.get("aspect") == "equal":
        ax.set_aspect("equal")


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
    X, Y = _grid2d(surface, "contour")
    is_log = _is_log(metric, log)
    z = surface.metric(metric)
    valid, notes = _valid(surface, z, is_log)
    fig, ax = _figure_axes(ax)
    ax.set_facecolor("0.85")  # masked points show as grey
    scale = _norm_and_levels(z, valid, is_log, vmin, vmax, _FILL_LEVELS)
    if scale is None:
        _empty(ax, notes)
    else:
        norm, fill_levels, extend = scale
        zm = np.ma.masked_array(z, ~valid)
        filled = ax.contourf(X, Y, zm, levels=fill_levels, norm=norm, cmap=cmap, extend=extend)
        if levels is None or isinstance(levels, int):
            n = _LINE_LEVELS if levels is None else levels
            lo, hi = cast(float, norm.vmin), cast(float, norm.vmax)
            line_levels = _nice_levels(lo, hi, n, is_log)
        else:
            line_levels = np.sort(np.asarray(levels, dtype=np.float64))
        lines = ax.contour(X, Y, zm, levels=line_levels, colors="white", linewidths=0.9, alpha=0.9)
        drawn = np.asarray(lines.levels)
        if line_labels and drawn.size:
            ax.clabel(lines, drawn[::2], fmt="%.3g", fontsize=7, inline=True)
        if colorbar:
            _colorbar(fig, filled, ax, _label(metric), is_log)
    if markers:
        _draw_markers(ax, surface)
    _finish_2d(ax, surface)
    _decorate(ax, surface, metric, notes, title)
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
    _grid2d(surface, "heatmap")
    assert surface.y is not None
    is_log = _is_log(metric, log)
    z = surface.metric(metric)
    valid, notes = _valid(surface, z, is_log)
    fig, ax = _figure_axes(ax)
    ax.set_facecolor("0.85")
    scale = _norm_and_levels(z, valid, is_log, vmin, vmax, 2)
    if scale is None:
        _empty(ax, notes)
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
            _colorbar(fig, mesh, ax, _label(metric), is_log, extend=extend)
    if markers:
        _draw_markers(ax, surface)
    if len(surface.x) > 1 and len(surface.y) > 1:
        _finish_2d(ax, surface)
    _decorate(ax, surface, metric, notes, title)
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
    X, Y = _grid2d(surface, "surface3d")
    is_log = _is_log(metric, log)
    z = surface.metric(metric)
    valid, notes = _valid(surface, z, is_log)
    fig, axes = _figure_axes(ax, projection="3d")
    ax3: Any = axes  # Axes3D, whose signatures differ from Axes
    scale = _norm_and_levels(z, valid, is_log, vmin, vmax, 2)
    zlabel = f"log10 {_label(metric)}" if is_log else _label(metric)
    if scale is None:
        _empty(ax3, notes)
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
                    mx, my, mz, f"  {name}", fontweight="bold", path_effects=_STROKE, color="white"
                )
    ax3.set_zlabel(zlabel)
    _decorate(ax3, surface, metric, notes, title)
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
            raise ValueError("x=/y= select a row or column of a 2D surface; this one is 1D")
        sel: Any = np.s_[:]
        t, where = surface.x, ""
        xlabel = str(surface.attrs.get("xlabel", "t"))
        pins = [(name, p[0]) for name, p in surface.markers.items()]
    elif (x is None) == (y is None):
        raise ValueError(
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
    fig, ax = _figure_axes(ax)
    left = [m for m in metrics if _is_log(m, None) or not m.endswith(("_acc", "_err"))]
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
        is_log = _is_log(m, log) and axes[m] is ax and bool(left)
        ok = done & np.isfinite(z) & ((z > 0) if is_log else True)
        missing = int((~(done & np.isfinite(z))).sum())
        if missing and not notes:
            notes.append(f"{missing}/{z.size} points not computed")
        z[~ok] = np.nan
        kind = m.rpartition("_")[2]
        colour = colours.setdefault(kind, f"C{len(colours)}")
        style = styles.get(m.partition("_")[0], [":", "-."][k % 2])
        (line,) = axes[m].plot(t, z, style, color=colour, label=_label(m), lw=1.5)
        lines.append(line)
        if is_log and ax.get_yscale() != "log":
            ax.set_yscale("log")
            _log_ticks(ax.yaxis)
    if left:
        ax.set_ylabel(", ".join(sorted({_label(m).rpartition(" ")[2] for m in left})))
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
        title = _label(metrics[0]) if len(metrics) == 1 else ""
    text = (title + where).strip()
    if notes:
        text += "\n(" + "; ".join(notes) + ")"
    ax.set_title(text, fontsize=10)
    return fig


def _half_step(a: np.ndarray) -> float:
    return float(np.abs(np.diff(a)).min()) / 2 if a.size > 1 else float("inf")


_PLOTTERS: dict[str, Callable[..., Figure]] = {
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
        raise ValueError(f"unknown kinds {unknown}; choose from {list(KINDS)}")
    written = []
    for m in metrics:
        vmin, vmax = (limits or {}).get(m, (None, None))
        todo = ["profile"] if surface.y is None else list(kinds)
        for kind in todo:
            if kind != "profile":
                fig = _PLOTTERS[kind](surface, m, vmin=vmin, vmax=vmax)
            elif surface.y is None:
                fig = plot_profile(surface, [m])
            else:  # the middle row of a 2D surface
                fig = plot_profile(surface, [m], y=float(surface.y[len(surface.y) // 2]))
            path = os.path.join(os.fspath(out_dir), f"{m}_{kind}.png")
            fig.savefig(path, dpi=dpi)
            written.append(path)
    return written


def plot_file(
    path: str | os.PathLike,
    out: str | os.PathLike | None = None,
    metric: str = "train_loss",
    kind: str = "contour",
    dpi: int = 150,
    **kwargs: Any,
) -> str:
    """Plot one metric of a surface file (the ``fastloss plot`` command). A 1D surface is
    always drawn as a profile (``metric`` may then list several, comma-separated). ``out``
    defaults to ``<file>_<metric>_<kind>.png``; its extension picks the format. Returns the
    path written."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; choose from {list(KINDS)}")
    surface = Surface.load(path)
    names = [m.strip() for m in metric.split(",") if m.strip()]
    for name in names:
        surface.metric(name)  # KeyError listing the metrics the file has
    if surface.y is None or kind == "profile":
        kind = "profile"
        fig = plot_profile(surface, names, **kwargs)
    else:
        if len(names) != 1:
            raise ValueError(f"a {kind} plot shows one metric, got {names}")
        if kind == "contour" and "xy" in (surface.attrs.get("curve") or {}):
            from fastloss.plot_curves import plot_curve_plane  # a curve plane: draw the curve

            fig = plot_curve_plane(surface, metric=names[0], **kwargs)
        else:
            fig = _PLOTTERS[kind](surface, names[0], **kwargs)
    if out is None:
        out = f"{os.path.splitext(os.fspath(path))[0]}_{'+'.join(names)}_{kind}.png"
    fig.savefig(out, dpi=dpi)
    return os.fspath(out)
