"""`view_file`: any result file as one self-contained HTML page to explore in a browser (the
``fastloss view`` command).

Drawn with plotly, whose JavaScript is embedded, so the page opens without a network. What it
shows follows the file (`fastloss.io.kinds.result_kind`):

- a 2D surface (a plane, an MPO plane, a curve's plane): the 3D surface and a filled contour
  side by side on one colour scale per metric, buttons for the metrics the file holds and for
  a log or linear scale (log10 of the losses; hover shows the value itself), the networks'
  markers and the curve over the contour;
- a line and a curve evaluation: the metrics against x or t, losses on a log axis;
- an ensemble evaluation: each member and the growing ensemble, and the reliability diagram;
- a video's frames: the surface and contour of each frame, with a slider, a play button and
  the frame's curve and markers; one colour scale for all frames, losses in log10 (a frame's
  data replaces the traces' values, so there is no log/linear switch).

Every switch is a plotly button (``updatemenus``) or slider; there is no JavaScript of ours.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go

from fastloss.errors import OutputExistsError
from fastloss.io import CurveResult, Frames, Surface
from fastloss.io.atomic import check_output_path
from fastloss.io.ensemble_file import load_ensemble_file
from fastloss.io.foreign import imported_note
from fastloss.io.kinds import result_kind
from fastloss.viz.curves import CURVE_MAGENTA
from fastloss.viz.page_lines import (
    FONT,
    MENU,
    Page,
    curve_page,
    ensemble_page,
    line_page,
    numbers,
)
from fastloss.viz.style import metric_label, uses_log_scale

__all__ = ["Page", "build_page", "page_output", "view_file"]

LOG_TITLE = "value (losses: log10)"
MAX_SIDE = 201  # points drawn per axis: browsers draw a million-point surface slowly, if at all


def view_file(path: str | os.PathLike, out: str | os.PathLike | None = None) -> str:
    """Write the page of a result file to ``out`` (default ``<file>.html``, the extension
    replaced). Returns the path written."""
    out = page_output(path, out)
    return build_page(path).save(out)


def page_output(path: str | os.PathLike, out: str | os.PathLike | None) -> str:
    """The page's path, checked before any work: its folder is writable, it is not the
    result itself, and whatever it replaces is a page (the output is derived, so an old
    page may go; a result or any other file may be a typo for another path)."""
    path = os.fspath(path)
    out = f"{os.path.splitext(path)[0]}.html" if out is None else os.fspath(out)
    check_output_path(out, overwrite=True)
    if os.path.exists(out):
        if os.path.exists(path) and os.path.samefile(path, out):
            raise OutputExistsError(f"{out} is the file to view; choose another out=PATH")
        with open(out, "rb") as f:
            start = f.read(512).lstrip().lower()
        if not start.startswith((b"<html", b"<!doctype html")):
            raise OutputExistsError(
                f"{out} exists and is not an HTML page; refusing to replace it (is the output "
                "path a typo?). Remove it yourself or choose another out=PATH"
            )
    return out


def build_page(path: str | os.PathLike) -> Page:
    """The page of a result file, whatever it holds (`fastloss.io.kinds.result_kind`)."""
    path = os.fspath(path)
    kind = result_kind(path)
    name = os.path.basename(path)
    if kind == "curve":
        result = CurveResult.load(path)
        page = curve_page(result, name)
        page.note = imported_note(result.attrs)
    elif kind == "ensemble":
        page = ensemble_page(load_ensemble_file(path), name)
    elif kind == "frames":
        page = _frames_page(Frames.load(path), name)
    else:
        surface = Surface.load(path)
        page = line_page(surface, name) if surface.y is None else _plane_page(surface, name)
        page.note = imported_note(surface.attrs)
    page.kind = kind
    return page


# --------------------------------------------------------------------------- values


def _drawn(z: np.ndarray, log: bool) -> np.ndarray:
    """The values as drawn: log10 on a log scale, NaN where that is undefined (≤ 0)."""
    z = np.asarray(z, dtype=np.float64)
    if not log:
        return z
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(z > 0, np.log10(np.where(z > 0, z, 1.0)), np.nan)


def _log_ticks(lo: float, hi: float) -> tuple[list[float], list[str]]:
    """Colour bar ticks of a log scale over values ``[lo, hi]``, as ``(log10 value, label)``:
    1, 2, 5 per decade (every multiple under one decade, powers of ten over four)."""
    if not (lo > 0 and hi >= lo):
        return [], []
    subs: tuple[int, ...] = (1, 2, 5)
    if hi < 10 * lo:
        subs = tuple(range(1, 10))
    elif hi > 1e4 * lo:
        subs = (1,)
    values = [
        s * 10.0**e
        for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
        for s in subs
    ]
    values = [v for v in values if lo <= v <= hi] or [lo, hi]
    return [math.log10(v) for v in values], [f"{v:.3g}" for v in values]


def _colour_axis(values: np.ndarray, label: str, log: bool, shown: bool) -> dict[str, Any]:
    finite = values[np.isfinite(values) & ((values > 0) if log else True)]
    bar: dict[str, Any] = {"title": {"text": label, "side": "right"}, "len": 0.85}
    if log and finite.size:
        bar["tickvals"], bar["ticktext"] = _log_ticks(float(finite.min()), float(finite.max()))
    else:
        bar["tickvals"] = bar["ticktext"] = None
    return {"colorscale": "Viridis", "showscale": shown, "colorbar": bar}


def _axis_name(k: int) -> str:
    return "coloraxis" if k == 0 else f"coloraxis{k + 1}"


def _first_metric(metrics: Sequence[str]) -> int:
    return metrics.index("train_loss") if "train_loss" in metrics else 0


# --------------------------------------------------------------------------- surfaces


def _surface_traces(
    x: np.ndarray, y: np.ndarray, z: np.ndarray, metric: str, axis: str, log: bool, shown: bool
) -> list[go.BaseTraceType]:
    """The 3D surface and the filled contour of one metric, on the colour axis ``axis``. A
    loss carries its values as ``customdata`` for the tooltip, whichever scale is drawn."""
    label = metric_label(metric)
    value = "%{customdata:.4g}" if log else "%{z:.4g}"
    hover = f"x %{{x:.3g}}<br>y %{{y:.3g}}<br>{label} {value}<extra></extra>"
    common: dict[str, Any] = {
        "x": numbers(x),
        "y": numbers(y),
        "z": numbers(_drawn(z, log)),
        "coloraxis": axis,
        "visible": shown,
        "name": metric,
        "hovertemplate": hover,
    }
    if log:
        common["customdata"] = numbers(z)
    return [
        go.Surface(**common, scene="scene"),
        go.Contour(
            **common,
            xaxis="x",
            yaxis="y",
            ncontours=25,
            # plotly shares a colour axis only between traces coloured alike (it drops the
            # axis otherwise): the surface is coloured as a heatmap, so the contour is too
            contours={"coloring": "heatmap", "showlines": True},
            line={"color": "rgba(255,255,255,0.5)", "width": 0.8},
        ),
    ]


def _overlays(
    markers: dict[str, tuple[float, float]], curve: dict[str, Any] | None
) -> list[go.Scatter]:
    """The networks (labelled markers) and a curve with its straight segment, over the
    contour."""
    traces = []
    if curve and "xy" in curve:
        xy = np.asarray(curve["xy"], dtype=np.float64).reshape(-1, 2)
        w2 = markers.get("w2", tuple(xy[-1]))
        traces.append(
            go.Scatter(
                x=[0.0, w2[0]],
                y=[0.0, w2[1]],
                mode="lines",
                line={"color": "white", "dash": "dash", "width": 1.5},
                name="segment",
                hoverinfo="skip",
            )
        )
        traces.append(
            go.Scatter(
                x=numbers(xy[:, 0]),
                y=numbers(xy[:, 1]),
                mode="lines",
                line={"color": CURVE_MAGENTA, "width": 3},
                name="curve",
                hoverinfo="skip",
            )
        )
        bends = np.asarray(curve.get("bends_xy", []), dtype=np.float64).reshape(-1, 2)
        if not markers:
            markers = {f"bend{i + 1}": (float(b[0]), float(b[1])) for i, b in enumerate(bends)}
    if markers:
        names = list(markers)
        traces.append(
            go.Scatter(
                x=[markers[n][0] for n in names],
                y=[markers[n][1] for n in names],
                mode="markers+text",
                text=names,
                textposition="top right",
                textfont={"color": "white", "size": 14, "shadow": "1px 1px 2px black"},
                marker={"color": "white", "size": 10, "line": {"color": "black", "width": 1.5}},
                name="networks",
                hovertemplate="%{text} (%{x:.3g}, %{y:.3g})<extra></extra>",
            )
        )
    return traces


def _metric_buttons(
    metrics: Sequence[str], per_metric: int, overlays: int, extra: list[dict] | None = None
) -> dict[str, Any]:
    """One button per metric: its traces (``per_metric`` each) and its colour bar shown,
    the others hidden; ``extra[k]``: more layout for metric k."""
    buttons = []
    for k, m in enumerate(metrics):
        visible = [j == k for j in range(len(metrics)) for _ in range(per_metric)]
        layout = {f"{_axis_name(j)}.showscale": j == k for j in range(len(metrics))}
        layout.update((extra or [{}] * len(metrics))[k])
        buttons.append(
            {
                "label": metric_label(m),
                "method": "update",
                "args": [{"visible": visible + [True] * overlays}, layout],
            }
        )
    return {**MENU, "buttons": buttons, "active": _first_metric(metrics), "x": 0.0, "y": 1.06}


def _scale_buttons(values: Sequence[np.ndarray], metrics: Sequence[str]) -> dict[str, Any] | None:
    """Log (log10 of the losses) or linear: the losses' values and colour bars, and the 3D
    axis title. None when no metric is a loss."""
    logged = [k for k, m in enumerate(metrics) if uses_log_scale(m, None)]
    if not logged:
        return None
    buttons = []
    for log in (True, False):
        z = []
        for k in logged:
            z += [numbers(_drawn(values[k], log))] * 2
        layout: dict[str, Any] = {"scene.zaxis.title.text": LOG_TITLE if log else "value"}
        for k in logged:
            axis = _colour_axis(values[k], metric_label(metrics[k]), log, True)
            for key in ("tickvals", "ticktext"):
                layout[f"{_axis_name(k)}.colorbar.{key}"] = axis["colorbar"][key]
        indices = [2 * k + i for k in logged for i in range(2)]
        buttons.append(
            {
                "label": "log" if log else "linear",
                "method": "update",
                "args": [{"z": z}, layout, indices],
            }
        )
    return {**MENU, "buttons": buttons, "active": 0, "x": 1.0, "xanchor": "right", "y": 1.06}


def _plane_layout(fig: go.Figure, attrs: dict[str, Any], x: np.ndarray, y: np.ndarray) -> None:
    xlabel, ylabel = str(attrs.get("xlabel", "x")), str(attrs.get("ylabel", "y"))
    fig.update_layout(
        font=FONT,
        template="plotly_white",
        height=640,
        margin={"l": 20, "r": 20, "t": 110, "b": 50},
        showlegend=False,
        scene={
            "domain": {"x": [0.0, 0.46], "y": [0.0, 1.0]},
            "xaxis": {"title": {"text": xlabel}},
            "yaxis": {"title": {"text": ylabel}},
            "zaxis": {"title": {"text": LOG_TITLE}},
            "camera": {"eye": {"x": 0.9, "y": -1.9, "z": 1.3}},
        },
        xaxis={
            "domain": [0.55, 0.98],
            "range": [float(x.min()), float(x.max())],
            "title": {"text": xlabel},
        },
        yaxis={"range": [float(y.min()), float(y.max())], "title": {"text": ylabel}},
    )
    if attrs.get("aspect") == "equal":
        fig.update_yaxes(scaleanchor="x", scaleratio=1)


def _plane_page(surface: Surface, name: str) -> Page:
    assert surface.y is not None and surface.done is not None
    metrics = surface.metrics
    first = _first_metric(metrics)
    fig = go.Figure()
    rows, cols = (slice(None, None, math.ceil(len(a) / MAX_SIDE)) for a in (surface.y, surface.x))
    x, y = surface.x[cols], surface.y[rows]
    values = [np.where(surface.done, surface.metric(m), np.nan)[rows, cols] for m in metrics]
    for k, (m, z) in enumerate(zip(metrics, values, strict=True)):
        log = uses_log_scale(m, None)
        traces = _surface_traces(x, y, z, m, _axis_name(k), log, k == first)
        fig.add_traces(traces)
        fig.layout[_axis_name(k)] = _colour_axis(z, metric_label(m), log, k == first)
    curve = surface.attrs.get("curve") if isinstance(surface.attrs.get("curve"), dict) else None
    overlays = _overlays(surface.markers, curve)
    fig.add_traces(overlays)
    menus = [_metric_buttons(metrics, 2, len(overlays))]
    scale = _scale_buttons(values, metrics)
    if scale is not None:
        menus.append(scale)
    what, shape = _describe(surface)
    _plane_layout(fig, surface.attrs, surface.x, surface.y)
    fig.update_layout(title={"text": f"{name}: {what}", "y": 0.97}, updatemenus=menus)
    done = int(surface.done.sum())
    left = "" if done == surface.done.size else f" ({done} computed)"
    if values[0].shape != surface.shape:
        left += f", drawn at {values[0].shape[0]}x{values[0].shape[1]}"
    summary = f"{what}, {shape} points{left}; metrics {', '.join(metrics)}"
    return Page(fig, summary)


def _describe(surface: Surface) -> tuple[str, str]:
    """What a surface is, and its shape as rows x columns."""
    shape = "x".join(str(n) for n in surface.shape)
    if surface.y is None:
        return "line", shape
    if "mpo_pattern" in surface.attrs:
        return f"MPO plane, pattern {surface.attrs['mpo_pattern']}", shape
    if isinstance(surface.attrs.get("curve"), dict) and "xy" in surface.attrs["curve"]:
        return "the plane of a curve", shape
    if len(surface.markers) == 3:
        return f"surface on the plane through {', '.join(surface.markers)}", shape
    return "surface", shape


# --------------------------------------------------------------------------- frames


def _frames_page(frames: Frames, name: str) -> Page:
    """The first finished frame drawn as a surface page (losses in log10, one colour scale
    per metric over all frames), each finished frame a plotly frame of the same traces."""
    metrics = list(frames.values)
    first = _first_metric(metrics)
    finished = [int(f) for f in np.flatnonzero(frames.done)]
    shape = f"{len(frames.y)}x{len(frames.x)}"
    if not finished:
        fig = go.Figure(layout={"title": {"text": f"{name}: no finished frames yet"}})
        return Page(fig, f"video frames, 0 of {frames.count} finished, {shape} points")
    logs = [uses_log_scale(m, None) for m in metrics]
    drawn = {
        m: _drawn(np.where(frames.done[:, None, None], frames.metric(m), np.nan), log)
        for m, log in zip(metrics, logs, strict=True)
    }
    fig = go.Figure()

    def frame_data(f: int) -> list[go.BaseTraceType]:
        traces = []
        for k, m in enumerate(metrics):
            z = frames.metric(m)[f]
            traces += _surface_traces(frames.x, frames.y, z, m, _axis_name(k), logs[k], k == first)
        markers = frames.frame_markers(f)
        curve = {"xy": frames.curve_xy[f], "bends_xy": frames.bends_xy[f]}
        return traces + _overlays(markers, curve)

    start = frame_data(finished[0])
    fig.add_traces(start)
    zranges = []
    for k, m in enumerate(metrics):
        values = frames.metric(m)[finished]
        axis = _colour_axis(values, metric_label(m), logs[k], k == first)
        finite = drawn[m][np.isfinite(drawn[m])]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        axis.update(cmin=lo, cmax=hi)
        fig.layout[_axis_name(k)] = axis
        label = f"log10 {metric_label(m)}" if logs[k] else metric_label(m)
        zranges.append({"scene.zaxis.range": [lo, hi], "scene.zaxis.title.text": label})
    _plane_layout(fig, {"xlabel": "x (units of ‖w2 − w1‖)", "ylabel": "y"}, frames.x, frames.y)
    shown = zranges[first]
    fig.update_layout(
        scene={
            "zaxis": {
                "range": shown["scene.zaxis.range"],
                "title": {"text": shown["scene.zaxis.title.text"]},
            }
        }
    )
    titles = {f: _frame_title(name, frames, f) for f in finished}
    fig.frames = [
        go.Frame(
            name=str(f),
            data=frame_data(f) if f != finished[0] else start,
            traces=list(range(len(start))),
            layout={"title": {"text": titles[f]}},
        )
        for f in finished
    ]
    animate = {"mode": "immediate", "frame": {"duration": 0, "redraw": True}}
    steps = [
        {"label": str(int(frames.steps[f])), "method": "animate", "args": [[str(f)], animate]}
        for f in finished
    ]
    play = {
        **MENU,
        "showactive": False,
        "x": 0.0,
        "y": -0.04,
        "yanchor": "top",
        "pad": {"t": 30},
        "buttons": [
            {
                "label": "play",
                "method": "animate",
                "args": [
                    None,
                    {**animate, "frame": {"duration": 600, "redraw": True}, "fromcurrent": True},
                ],
            },
            {"label": "pause", "method": "animate", "args": [[None], animate]},
        ],
    }
    fig.update_layout(
        title={"text": titles[finished[0]], "y": 0.97},
        updatemenus=[_metric_buttons(metrics, 2, len(start) - 2 * len(metrics), zranges), play],
        sliders=[
            {
                "steps": steps,
                "active": 0,
                "x": 0.14,
                "len": 0.84,
                "y": -0.04,
                "yanchor": "top",
                "currentvalue": {"prefix": "step "},
            }
        ],
        height=720,
        margin={"b": 130},
    )
    summary = (
        f"video frames, {len(finished)} of {frames.count} finished, {shape} points each; "
        f"metrics {', '.join(metrics)}"
    )
    return Page(fig, summary)


def _frame_title(name: str, frames: Frames, f: int) -> str:
    title = f"{name}: step {int(frames.steps[f])}"
    source = int(frames.plane_source[f])
    if source != f:
        title += f" (in the plane of step {int(frames.steps[source])})"
    return title
