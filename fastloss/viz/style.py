"""What every fastloss figure shares: metric labels, linear or log colour scales, limits
shared across figures, contour levels, colour bars, markers, and the look of masked points.

Built on matplotlib's object API (`Figure` rendered by Agg), never pyplot: no global state,
no backend to select, nothing left open.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import matplotlib.patheffects as path_effects
import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from fastloss.errors import ArgumentError
from fastloss.io import Surface

FILL_LEVELS = 40
LINE_LEVELS = 10
STROKE = [path_effects.withStroke(linewidth=2.5, foreground="black")]


def uses_log_scale(metric: str, log: bool | None) -> bool:
    if log is not None:
        return log
    return "loss" in metric or "nll" in metric


def metric_label(metric: str) -> str:
    split, _, kind = metric.rpartition("_")
    names = {"loss": "loss", "acc": "accuracy (%)", "err": "error (%)", "nll": "NLL"}
    if not split or kind not in names:
        return metric.replace("_", " ")
    return f"{split.replace('_', ' ')} {names[kind]}"


def valid_mask(surface: Surface, z: np.ndarray, log: bool) -> tuple[np.ndarray, list[str]]:
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


def value_range(values: Iterable[np.ndarray]) -> tuple[float, float] | None:
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
    is_log = uses_log_scale(metric, log)
    parts = []
    for s in surfaces:
        z = s.metric(metric)
        valid, _ = valid_mask(s, z, is_log)
        parts.append(z[valid])
    found = value_range(parts)
    if found is None:
        raise ArgumentError(f"no computed values of {metric!r} in these surfaces")
    return found


def norm_and_levels(
    z: np.ndarray, valid: np.ndarray, log: bool, vmin: float | None, vmax: float | None, n: int
) -> tuple[Normalize, np.ndarray, str] | None:
    data = value_range([z[valid]])
    if data is None:
        return None
    lo = data[0] if vmin is None else float(vmin)
    hi = data[1] if vmax is None else float(vmax)
    if log and lo <= 0:
        raise ArgumentError(f"vmin must be positive on a log scale, got {lo}")
    if not hi > lo:  # a flat surface: widen so the colour scale exists
        hi, lo = (lo * 1.01, lo / 1.01) if log else (lo + 0.5, lo - 0.5)
    extend = {(False, False): "neither", (True, False): "min", (False, True): "max"}.get(
        (data[0] < lo, data[1] > hi), "both"
    )
    if log:
        return LogNorm(lo, hi), np.geomspace(lo, hi, n), extend
    return Normalize(lo, hi), np.linspace(lo, hi, n), extend


def figure_axes(ax: Axes | None, projection: str | None = None) -> tuple[Figure, Axes]:
    if ax is not None:
        return ax.get_figure(), ax  # type: ignore[return-value]
    fig = Figure(figsize=(6.4, 5.2), layout="constrained")
    return fig, fig.add_subplot(projection=projection)


def decorate(ax: Axes, surface: Surface, metric: str, notes: list[str], title: str | None):
    ax.set_xlabel(str(surface.attrs.get("xlabel", "x")))
    ax.set_ylabel(str(surface.attrs.get("ylabel", "y")))
    text = metric_label(metric) if title is None else title
    if notes:
        text += "\n(" + "; ".join(notes) + ")"
    ax.set_title(text, fontsize=10)


def nice_levels(lo: float, hi: float, n: int, log: bool) -> np.ndarray:
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


def add_colorbar(fig: Figure, mappable: Any, ax: Axes, text: str, log: bool, **kw: Any) -> None:
    bar = fig.colorbar(mappable, ax=ax, label=text, **kw)
    if log:
        log_ticks(bar.ax.yaxis)
    else:  # not the 40 fill boundaries
        bar.ax.yaxis.set_major_locator(MaxNLocator(8))


def log_ticks(axis: Any) -> None:
    """Readable ticks (1, 2, 5 per decade) also when the range spans less than a decade."""
    axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
    axis.set_minor_formatter(NullFormatter())


def draw_markers(ax: Axes, surface: Surface) -> None:
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
            path_effects=STROKE,
            zorder=6,
        )


def grid2d(surface: Surface, kind: str) -> tuple[np.ndarray, np.ndarray]:
    if surface.y is None:
        raise ArgumentError(f"a {kind} plot needs a 2D surface; use plot_profile for 1D")
    if kind != "heatmap" and (len(surface.x) < 2 or len(surface.y) < 2):
        raise ArgumentError(
            f"a {kind} plot needs at least 2 points along x and y; got {surface.shape}"
        )
    return np.meshgrid(surface.x, surface.y)  # [ny, nx], the file's layout


def draw_empty(ax: Axes, notes: list[str]) -> None:
    ax.text(0.5, 0.5, "no points computed yet", ha="center", va="center", transform=ax.transAxes)
    notes[:] = [n for n in notes if "not computed" not in n] + ["no points computed yet"]


def finish_2d(ax: Axes, surface: Surface) -> None:
    ax.set_xlim(surface.x.min(), surface.x.max())
    assert surface.y is not None
    ax.set_ylim(surface.y.min(), surface.y.max())
    if surface.attrs.get("aspect") == "equal":
        ax.set_aspect("equal")
